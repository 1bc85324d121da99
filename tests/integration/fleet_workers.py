"""Agent functions for the fleet tests, served by ``python -m podium agent serve``.

Every instance is its own process; its environment says who it is and how it
behaves, and files in its control folder change that while it runs, so a
test can make one instance sick or well again without restarting it:

- ``FLEET_NAME`` and ``FLEET_GEN`` come back in every output as
  ``served_by: NAME#GEN``, so a test sees which *process* answered, even
  after an instance was killed and restarted on the same port;
- ``FLEET_DELAY_MS`` is how long one call takes (a step's ``input.ms`` wins);
- ``$FLEET_CONTROL/health`` holds the status ``GET /health`` reports
  (``healthy`` when the file is absent), ``$FLEET_CONTROL/health_delay`` how
  many seconds it takes to answer;
- while ``$FLEET_CONTROL/fail`` exists, every call fails (HTTP 500,
  ``agent_error``);
- every call appends ``step attempt`` to ``$FLEET_CONTROL/calls``, so a test
  can count the calls an instance really received (``throttled`` reads it back).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from podium import RateLimited
from podium.agents.base import Task


def _control() -> Path:
    return Path(os.environ["FLEET_CONTROL"])


def _served_by() -> str:
    return f"{os.environ.get('FLEET_NAME', '?')}#{os.environ.get('FLEET_GEN', '1')}"


def _log_call(task: Task) -> None:
    with (_control() / "calls").open("a", encoding="utf-8") as f:
        f.write(f"{task.step_id} {task.attempt}\n")


async def work(task: Task) -> dict[str, Any]:
    """Take ``input.ms`` (else ``$FLEET_DELAY_MS``) milliseconds, then say who did it."""
    _log_call(task)
    if (_control() / "fail").exists():
        raise RuntimeError(f"{_served_by()} is told to fail")
    data = task.input if isinstance(task.input, dict) else {}
    ms = float(data.get("ms", os.environ.get("FLEET_DELAY_MS", "50")))
    await asyncio.sleep(ms / 1000)
    return {"served_by": _served_by(), "step": task.step_id, "attempt": task.attempt}


async def throttled(task: Task) -> dict[str, Any]:
    """Answer ``429`` with ``Retry-After`` (``input.retry_after`` seconds) to the first
    ``input.busy_calls`` (default 1) calls it receives for a step."""
    _log_call(task)
    data = task.input if isinstance(task.input, dict) else {}
    calls = (_control() / "calls").read_text(encoding="utf-8").splitlines()
    if sum(1 for c in calls if c.split()[0] == task.step_id) <= int(data.get("busy_calls", 1)):
        raise RateLimited("at capacity", retry_after_s=data.get("retry_after", 2))
    return {"served_by": _served_by(), "step": task.step_id, "attempt": task.attempt}


def health() -> str:
    """What ``$FLEET_CONTROL/health`` says; an absent file means healthy."""
    delay = _control() / "health_delay"
    if delay.exists():
        time.sleep(float(delay.read_text(encoding="utf-8")))  # runs in a worker thread
    path = _control() / "health"
    try:
        return path.read_text(encoding="utf-8").strip() or "healthy"
    except FileNotFoundError:
        return "healthy"
