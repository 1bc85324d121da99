"""Agents for the durability tests, run inside real ``podium`` subprocesses.

Loaded through ``crash_agents.yaml`` (the loader puts that file's folder on
``sys.path``). Every call first appends one line to the file named by
``$PODIUM_TEST_LOG`` and fsyncs it (only "first call" markers are made before),
so that a test can count executions even of attempts that a SIGKILL cut short::

    <run_id> <step_id> <attempt> <idempotency_key> <capability> <input as compact JSON>

Behaviour is chosen by the step's input (``sleep_ms: [lo, hi]`` sleeps a random
time in that range, so kills land at many different points) and, for "fail
once" agents, by marker files in ``$PODIUM_TEST_DIR``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from pathlib import Path
from typing import Any

from podium.agents.base import Task

LOG_ENV = "PODIUM_TEST_LOG"
DIR_ENV = "PODIUM_TEST_DIR"


def log_line(task: Task) -> None:
    """Append one execution record and make it durable before the agent does anything."""
    text = json.dumps(task.input, separators=(",", ":"), sort_keys=True)
    line = (f"{task.run_id} {task.step_id} {task.attempt} {task.idempotency_key}"
            f" {task.capability} {text}\n")
    fd = os.open(os.environ[LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _opt(task: Task, key: str, default: Any) -> Any:
    return task.input.get(key, default) if isinstance(task.input, dict) else default


async def _nap(task: Task) -> None:
    lo, hi = _opt(task, "sleep_ms", [0, 0])
    if hi > 0:
        await asyncio.sleep(random.uniform(lo, hi) / 1000)


def _marker(task: Task, tag: str) -> Path:
    return Path(os.environ[DIR_ENV]) / f"{tag}.{task.run_id}.{task.step_id}"


async def record(task: Task) -> Any:
    """Log, nap, succeed; the output names the step and carries its input back."""
    log_line(task)
    await _nap(task)
    return {"step": task.step_id, "attempt": task.attempt, "input": task.input,
            "token": f"tok-{task.step_id}"}


async def lookup(task: Task) -> Any:
    """Log, read the run's own database read-only (as agents that look things up in it
    do, in the engine's process), nap, succeed."""
    import sqlite3

    log_line(task)
    db = Path(os.environ[DIR_ENV]) / "podium.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        runs = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    finally:
        conn.close()
    await _nap(task)
    return {"step": task.step_id, "input": task.input, "runs_seen": runs > 0}


async def suicide(task: Task) -> Any:
    """Kill the process running it (as an out-of-memory kill or a native crash would),
    every time, until a file named ``cured`` exists in the test folder."""
    import signal

    log_line(task)
    if not (Path(os.environ[DIR_ENV]) / "cured").exists():
        os.kill(os.getpid(), signal.SIGKILL)
    return {"step": task.step_id, "survived": True}


async def flaky(task: Task) -> Any:
    """Fail attempts up to ``fail_attempts`` (by attempt number, so it survives a resume)."""
    log_line(task)
    await _nap(task)
    if task.attempt <= int(_opt(task, "fail_attempts", 1)):
        raise RuntimeError(f"flaky failure on attempt {task.attempt}")
    return {"step": task.step_id, "attempt": task.attempt, "token": f"tok-{task.step_id}"}


def _first_call(task: Task, tag: str) -> bool:
    """Whether this is the first call for this run and step (marked before it is logged)."""
    marker = _marker(task, tag)
    first = not marker.exists()
    marker.touch()
    return first


async def fail_once(task: Task) -> Any:
    """Fail the first call for this run and step, succeed on every later one."""
    first = _first_call(task, "failed")
    log_line(task)
    await _nap(task)
    if first:
        raise RuntimeError(f"first call of {task.step_id} fails")
    return {"step": task.step_id, "attempt": task.attempt, "token": f"tok-{task.step_id}"}


async def always_fail(task: Task) -> Any:
    log_line(task)
    await _nap(task)
    raise RuntimeError(f"{task.step_id} always fails")


async def hang_once(task: Task) -> Any:
    """The first call for this run and step sleeps ``hang_s`` (long); later ones return.

    The marker is made before the call is logged: a test that kills the process as soon
    as it sees the line must not leave the next call to hang too.
    """
    first = _first_call(task, "hung")
    log_line(task)
    if first:
        await asyncio.sleep(float(_opt(task, "hang_s", 60)))
    return {"step": task.step_id, "attempt": task.attempt, "input": task.input}


async def slow(task: Task) -> Any:
    """Sleep ``seconds`` (cancellable), then succeed."""
    log_line(task)
    await asyncio.sleep(float(_opt(task, "seconds", 30)))
    return {"step": task.step_id}


async def undo(task: Task) -> Any:
    """A compensation: log, nap, succeed."""
    log_line(task)
    await _nap(task)
    return {"undone": task.step_id}


async def undo_flaky(task: Task) -> Any:
    """A compensation whose first attempt fails."""
    log_line(task)
    await _nap(task)
    if task.attempt <= int(_opt(task, "fail_attempts", 1)):
        raise RuntimeError(f"undo of {task.step_id} failed on attempt {task.attempt}")
    return {"undone": task.step_id}


async def undo_fail(task: Task) -> Any:
    """A compensation that never succeeds."""
    log_line(task)
    raise RuntimeError(f"cannot undo {task.step_id}")
