"""The functions behind the HTTP agents of ``fleet.yaml``.

``start-fleet.sh`` serves each one in its own process with ``podium agent
serve fleet_agents:FUNC --capability enrich --port N``; any function taking a
task and returning JSON can be served that way. ``enrich`` is steady,
``enrich_flaky`` answers ``503`` (``unavailable``, which the workflow retries
on another instance) to about one call in five, ``enrich_slow`` takes twice
as long. How long one call takes comes from the step's input (``ms``).

Every output names the process that served it (``pid``), so after a
``kill <pid>`` the run's results show the work moving to the other instances.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from typing import Any

from podium import Unavailable

FLAKY_RATE = 0.2


async def enrich(task: Any) -> dict[str, Any]:
    """Pretend to enrich one document: wait ``input.ms``, return a few derived fields."""
    data = task.input if isinstance(task.input, dict) else {}
    await asyncio.sleep(float(data.get("ms", 1000)) / 1000)
    doc = data.get("doc")
    digest = hashlib.sha256(f"{doc}".encode()).hexdigest()
    language = ("en", "fr", "de")[int(digest, 16) % 3]
    return {"doc": doc, "fingerprint": digest[:12], "language": language, "pid": os.getpid(),
            "attempt": task.attempt}


async def enrich_flaky(task: Any) -> dict[str, Any]:
    """Like ``enrich``, but about one call in five fails as ``unavailable`` (HTTP 503)."""
    if random.random() < FLAKY_RATE:  # a simulated fault, not cryptography
        raise Unavailable(f"enrich-eu-2 (pid {os.getpid()}) dropped the call (simulated)")
    return await enrich(task)


async def enrich_slow(task: Any) -> dict[str, Any]:
    """Like ``enrich``, twice as slow (a far-away region)."""
    data = task.input if isinstance(task.input, dict) else {}
    await asyncio.sleep(float(data.get("ms", 1000)) / 1000)
    return await enrich(task)


def tally(task: Any) -> dict[str, Any]:
    """Count the documents each agent process served, and how many needed a retry."""
    results = [r for r in task.input["results"] if isinstance(r, dict)]
    by_pid: dict[str, int] = {}
    for r in results:
        by_pid[str(r["pid"])] = by_pid.get(str(r["pid"]), 0) + 1
    return {"documents": len(results), "served_by_pid": dict(sorted(by_pid.items())),
            "after_a_retry": sum(1 for r in results if r["attempt"] > 1)}
