"""An agent for tests/integration/test_agents_join.py, served by ``podium agent serve``:
it answers with its input and the name of the process that served it."""

from __future__ import annotations

import os
from typing import Any

from podium.agents.base import Task


async def echo(task: Task) -> Any:
    return {"echo": task.input, "by": os.environ.get("AGENT_NAME", "?")}
