"""The soak's agent (bench/soak_workers.py): one ledger line per call, before and after.

Loaded through ``soak_agents.yaml`` (the loader puts this folder on ``sys.path``).
Every call appends, and fsyncs, a line to ``$PODIUM_SOAK_LEDGER`` before doing
anything, and another when it is about to return::

    S <epoch time> <worker name> <pid> <run_id> <step_id> <attempt> <call id>
    E <epoch time> <worker name> <pid> <run_id> <step_id> <attempt> <call id>

The worker name comes from ``$PODIUM_SOAK_WORKER`` (the soak starts each worker
with its own). The output names the call, so the soak can tell which call's
result the database committed (the ``step_succeeded`` event carries it).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from typing import Any

from podium.agents.base import Task

LEDGER_ENV = "PODIUM_SOAK_LEDGER"
WORKER_ENV = "PODIUM_SOAK_WORKER"


def _write(kind: str, task: Task, call: str) -> None:
    line = (f"{kind} {time.time():.6f} {os.environ.get(WORKER_ENV, '?')} {os.getpid()}"
            f" {task.run_id} {task.step_id} {task.attempt} {call}\n")
    fd = os.open(os.environ[LEDGER_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


async def record(task: Task) -> Any:
    """Log the call, nap ``sleep_ms: [lo, hi]``, log its end, return who did it."""
    call = uuid.uuid4().hex[:16]
    _write("S", task, call)
    lo, hi = task.input.get("sleep_ms", [0, 0]) if isinstance(task.input, dict) else (0, 0)
    if hi > 0:
        await asyncio.sleep(random.uniform(lo, hi) / 1000)
    _write("E", task, call)
    return {"step": task.step_id, "call": call, "worker": os.environ.get(WORKER_ENV, "?")}
