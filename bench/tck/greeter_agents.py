"""The agents of greeter.yaml: one takes its time, one answers."""

from __future__ import annotations

import asyncio
from typing import Any


async def ponder(task: Any) -> dict[str, Any]:
    seconds = float(task.input.get("seconds", 3))
    await asyncio.sleep(seconds)
    return {"pondered_s": seconds}


async def greet(task: Any) -> str:
    return f"Hello World! You said: {task.input['text']!r}"
