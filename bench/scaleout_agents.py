"""Agents of bench/scaleout.py, run inside real ``podium worker`` processes.

Loaded through ``scaleout_agents.yaml`` (the loader puts that file's folder on
``sys.path``). ``nap`` sleeps ``ms`` milliseconds of its input (an I/O-bound
agent: a call to a slow service); ``noop`` returns at once (what is left is
Podium's own cost per step).
"""

from __future__ import annotations

import asyncio
from typing import Any

from podium.agents.base import Task


async def nap(task: Task) -> Any:
    ms = task.input.get("ms", 100) if isinstance(task.input, dict) else 100
    await asyncio.sleep(float(ms) / 1000)
    return {"slept_ms": ms}


async def noop(task: Task) -> Any:
    return {"ok": True}
