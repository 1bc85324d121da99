"""A fan-out wider than the engine starts in one loop turn (``run._BURST``): every branch
still runs at the same time as every other, and every result is committed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from podium import Engine, EngineConfig
from podium.definition import workflow_from_dict
from podium.engine import run as run_module
from podium.store.sqlite import SQLiteStore
from tests.conftest import registry_of


async def test_a_fan_out_wider_than_a_burst_has_every_branch_in_flight_at_once(
        tmp_path: Path) -> None:
    """Each branch waits at a barrier that opens only once all of them are there: had
    any branch waited for another to finish before starting, the 30 s bound fails it."""
    width = 2 * run_module._BURST + 5
    barrier = asyncio.Barrier(width)

    async def work(task: Any) -> Any:
        if task.step_id.startswith("b"):
            async with asyncio.timeout(30):
                await barrier.wait()
        return {"step": task.step_id}

    wf = workflow_from_dict({"name": "wide", "steps": [
        {"id": "start", "agent": "work"},
        *({"id": f"b{i}", "agent": "work", "depends_on": ["start"]} for i in range(width)),
        {"id": "join", "agent": "work", "depends_on": [f"b{i}" for i in range(width)],
         "input": {"n": "${{ steps.b7.output.step }}"}},
    ]})
    path = tmp_path / "podium.db"
    async with Engine(EngineConfig(registry=registry_of(work=work),
                                   store=SQLiteStore(path))) as engine:
        run = await engine.run(wf, {})
    assert run.status == "succeeded", run.error
    reader = SQLiteStore(path)  # what is on disk, read by a store of its own
    await reader.open()
    try:
        stored = await reader.get_run(run.run_id)
    finally:
        await reader.close()
    assert stored.status == "succeeded"
    assert all(stored.steps[f"b{i}"].output == {"step": f"b{i}"} for i in range(width))
    assert stored.output == {"join": {"step": "join"}}



def _wide(width: int) -> Any:
    return workflow_from_dict({"name": "wide", "steps": [
        {"id": "start", "agent": "work"},
        *({"id": f"b{i}", "agent": "work", "depends_on": ["start"]} for i in range(width)),
    ]})


async def _run_stopped_mid_burst(tmp_path: Path, stop: str) -> tuple[Any, list[str]]:
    """A 20-branch fan-out started 4 tasks per loop turn; the last branch of the first
    burst stops the run (``cancel`` or ``pause``) in the turn its burst runs, before the
    next burst's turn, so 16 branches are still queued when it stops."""
    calls: list[str] = []
    gate = asyncio.Event()
    handles: list[Any] = []
    paused: list[asyncio.Event] = []

    async def work(task: Any) -> Any:
        calls.append(task.step_id)
        if task.step_id == "b3":
            if stop == "cancel":
                handles[0].cancel("enough")
            else:
                paused.append(handles[0].pause())
                gate.set()
        if task.step_id != "start":
            await gate.wait()
        return {"step": task.step_id}

    async with Engine(EngineConfig(registry=registry_of(work=work),
                                   store=SQLiteStore(tmp_path / "podium.db"))) as engine:
        handles.append(await engine.start(_wide(20), {}))
        if stop == "pause":
            async with asyncio.timeout(10):
                while not paused:
                    await asyncio.sleep(0.001)
                await paused[0].wait()
            for _ in range(5):  # the turns a deferred burst would have taken
                await asyncio.sleep(0)
            record = handles[0].record
            handles[0].cancel("done with the test")
            await handles[0].result()
            return record, calls
        run = await handles[0].result()
        for _ in range(5):
            await asyncio.sleep(0)
        return run, calls


async def test_a_run_cancelled_while_branches_wait_for_their_burst_starts_none_of_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_module, "_BURST", 4)
    run, calls = await _run_stopped_mid_burst(tmp_path, "cancel")
    assert run.status == "cancelled"
    assert calls == ["start", "b0", "b1", "b2", "b3"]  # the queued branches never started


async def test_a_paused_run_starts_no_queued_branch_and_is_idle_once_its_burst_ends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker handing a run back pauses it: the branches still waiting for their turn
    stay for the next owner, the ones in flight finish."""
    monkeypatch.setattr(run_module, "_BURST", 4)
    record, calls = await _run_stopped_mid_burst(tmp_path, "pause")
    assert calls == ["start", "b0", "b1", "b2", "b3"]
    assert sorted(k for k, s in record.steps.items() if s.status == "succeeded") == [
        "b0", "b1", "b2", "b3", "start"]


async def test_branches_committed_pending_when_handed_off_run_once_on_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The queued branches of a fan-out handed back mid-burst are on disk as 'pending'
    rows (SQLite's own insert for them); the engine that resumes the run starts each
    of them once, and what it stores is what it holds."""
    monkeypatch.setattr(run_module, "_BURST", 4)
    calls: list[str] = []
    first_burst = asyncio.Event()
    gate = asyncio.Event()
    handles: list[Any] = []

    async def work(task: Any) -> Any:
        calls.append(task.step_id)
        if task.step_id == "b3" and handles:
            handles[0].pause()  # in the turn of its burst: the next one never starts
            first_burst.set()
        if task.step_id in ("b0", "b1", "b2", "b3"):
            await gate.wait()
        return {"step": task.step_id}

    path = tmp_path / "podium.db"
    wf = _wide(20)
    async with Engine(EngineConfig(registry=registry_of(work=work),
                                   store=SQLiteStore(path))) as engine:
        handle = await engine.start(wf, {})
        handles.append(handle)
        await asyncio.wait_for(first_burst.wait(), 10)
        off = asyncio.create_task(engine.hand_off(grace_s=30))
        await asyncio.sleep(0.02)
        gate.set()
        assert await asyncio.wait_for(off, 10) == [handle.run_id]
        stored = await engine.store.get_run(handle.run_id)
        await engine.store.release_run(handle.run_id, engine.owner)
    assert stored.status == "running"
    statuses = {k: s.status for k, s in stored.steps.items()}
    assert {k for k, s in statuses.items() if s == "succeeded"} == {"start", "b0", "b1", "b2",
                                                                  "b3"}
    assert {k for k, s in statuses.items() if s == "pending"} == {f"b{i}" for i in range(4, 20)}
    async with Engine(EngineConfig(registry=registry_of(work=work),
                                   store=SQLiteStore(path))) as other:
        done = await (await other.resume(handle.run_id)).result()
    assert done.status == "succeeded", done.error
    assert sorted(calls) == sorted(["start", *(f"b{i}" for i in range(20))])
    reader = SQLiteStore(path)
    await reader.open()
    try:
        back = await reader.get_run(handle.run_id)
    finally:
        await reader.close()
    assert back.steps == done.steps
    assert all(back.steps[f"b{i}"].output == {"step": f"b{i}"} for i in range(20))
