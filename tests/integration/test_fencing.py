"""A process that lost its lease writes nothing more of the run, and stops executing it.

Real ``podium`` processes on one SQLite file, with a 2-second lease
(``PODIUM_LEASE``): a run's process is frozen (SIGSTOP) past its lease, another
process resumes the run and finishes it, and then the frozen one wakes up (a
zombie: its agent call came back meanwhile). Its success must not be written
(the run's step would be recorded twice, or worse, the batch would fail on the
new owner's event numbers and be retried for ever), it must not start another
step, and it must say why it stopped. Then the same at the engine's level, for
the two ways a run is given back without ending: a worker's hand-off at
shutdown, and the store telling a writer it lost the run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from podium import AgentRegistry, Engine, EngineConfig, PythonAgent, Step, Workflow
from podium.errors import RunLost
from podium.store.sqlite import SQLiteStore
from tests.integration.podium_proc import Sandbox, wait_for

LEASE = "2s"


def _zombie_workflow(sb: Sandbox) -> Path:
    return sb.workflow("zombie", {
        "name": "zombie", "mode": "sequential", "steps": [
            {"id": "s00", "agent": "record", "input": {"sleep_ms": [0, 0]}},
            {"id": "s01", "agent": "record", "input": {"sleep_ms": [3000, 3000]}},
            {"id": "s02", "agent": "record", "input": {"sleep_ms": [0, 0]}},
        ]})


@pytest.mark.timeout(120)
def test_a_frozen_process_past_its_lease_commits_nothing_for_the_run_it_lost(
        sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODIUM_LEASE", LEASE)
    sb = sandbox
    wf = _zombie_workflow(sb)
    zombie = sb.spawn("run", str(wf), "--json", agents=True)
    assert wait_for(lambda: any(x.step_id == "s01" for x in sb.executions()), 30), \
        sb.stderr_of(zombie)
    os.kill(zombie.pid, signal.SIGSTOP)
    try:
        (run_id,) = sb.run_ids()
        time.sleep(2.5)  # past the lease: the run is free to take over (its pid lives)
        taker = sb.spawn("resume", run_id, "--json", agents=True)
        # The taker is in s01 (its start was not committed by the zombie, so it is
        # attempt 1 again): wake the zombie, whose own s01 call (3 s, started before
        # the freeze) has come back by now.
        assert wait_for(lambda: sum(x.step_id == "s01" for x in sb.executions()) == 2, 30), \
            sb.stderr_of(taker)
    finally:
        os.kill(zombie.pid, signal.SIGCONT)
    assert zombie.wait(timeout=30) == 1
    assert "this process stopped executing it" in sb.stderr_of(zombie), sb.stderr_of(zombie)
    assert taker.wait(timeout=60) == 0, sb.stderr_of(taker)

    assert sb.run_row(run_id)["status"] == "succeeded"
    events = sb.events(run_id)
    successes = Counter(e.data["step_id"] for e in events if e.type == "step_succeeded")
    assert successes == Counter({"s00": 1, "s01": 1, "s02": 1})
    resumed = next(e.seq for e in events if e.type == "run_started" and e.data["resumed"])
    s01 = next(e for e in events if e.type == "step_succeeded" and e.data["step_id"] == "s01")
    assert s01.seq > resumed, "the zombie's success was written"
    calls = Counter(x.step_id for x in sb.executions())
    assert calls == Counter({"s00": 1, "s01": 2, "s02": 1}), "the zombie went on executing"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


# --- the engine's side ----------------------------------------------------------------


class Gate:
    """An agent whose calls wait for the test to let them go; it counts every call."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.open: dict[str, asyncio.Event] = {}
        self.entered: dict[str, asyncio.Event] = {}

    def of(self, step: str) -> asyncio.Event:
        return self.open.setdefault(step, asyncio.Event())

    def came(self, step: str) -> asyncio.Event:
        return self.entered.setdefault(step, asyncio.Event())

    async def __call__(self, task: Any) -> Any:
        self.calls[task.step_id] += 1
        self.came(task.step_id).set()
        await self.of(task.step_id).wait()
        return {"step": task.step_id}


def _engine(path: Path, gate: Gate) -> Engine:
    reg = AgentRegistry()
    reg.register(PythonAgent(gate, id="gate", capabilities=["gate"]))
    return Engine(EngineConfig(registry=reg, store=SQLiteStore.shared(path), lease_s=30.0))


def _three() -> Workflow:
    return Workflow(name="handoff", mode="sequential",
                    steps=[Step(id=s, agent="gate") for s in ("a", "b", "c")])


async def _in_b(engine: Engine, gate: Gate) -> Any:
    """Start the three-step run; return its handle once step b's attempt is in flight."""
    gate.of("a").set()
    handle = await engine.start(_three())
    await asyncio.wait_for(gate.came("b").wait(), 10)
    return handle


async def test_a_hand_off_lets_the_attempt_finish_commits_it_and_starts_nothing_more(
        tmp_path: Path) -> None:
    gate = Gate()
    engine = _engine(tmp_path / "h.db", gate)
    async with engine:
        handle = await _in_b(engine, gate)
        off = asyncio.create_task(engine.hand_off(grace_s=30))
        await asyncio.sleep(0.05)
        assert not off.done()  # waiting for b's attempt
        gate.of("b").set()
        handed = await asyncio.wait_for(off, 10)
        assert handed == [handle.run_id]
        with pytest.raises(RunLost, match="handed back"):
            await handle.result()
        run = await engine.store.get_run(handle.run_id)
        assert run.status == "running"
        assert {k: s.status for k, s in run.steps.items()} == {
            "a": "succeeded", "b": "succeeded", "c": "pending"}
        await engine.store.release_run(run.run_id, engine.owner)
    gate.of("c").set()
    other = _engine(tmp_path / "h.db", gate)
    async with other:
        done = await (await other.resume(run.run_id)).result()
    assert done.status == "succeeded"
    assert gate.calls == Counter({"a": 1, "b": 1, "c": 1})


async def test_a_second_signal_cuts_the_hand_off_short_and_writes_nothing_of_the_cut(
        tmp_path: Path) -> None:
    gate = Gate()
    engine = _engine(tmp_path / "h.db", gate)
    async with engine:
        handle = await _in_b(engine, gate)
        hurry = asyncio.Event()
        off = asyncio.create_task(engine.hand_off(grace_s=600, hurry=hurry))
        await asyncio.sleep(0.05)
        hurry.set()
        assert await asyncio.wait_for(off, 10) == [handle.run_id]
        run = await engine.store.get_run(handle.run_id)
        assert run.status == "running"
        assert "b" not in run.steps or run.steps["b"].status != "succeeded"  # runs again
        assert "step_cancelled" not in {e.type for e in await engine.store.get_events(
            run.run_id)}


async def test_a_writer_told_it_lost_the_run_stops_it_and_writes_nothing_more(
        tmp_path: Path) -> None:
    """The store's fence, seen from the engine: another process claimed the run."""
    gate = Gate()
    engine = _engine(tmp_path / "f.db", gate)
    async with engine:
        handle = await _in_b(engine, gate)
        seen = await engine.store.get_run(handle.run_id)
        assert await engine.store.claim_run(seen, "someone-else", lease_s=60, recoveries=1,
                                            owner_dead=True)
        engine.journal.leases_good_until = float("-inf")  # as after a freeze
        gate.of("b").set()
        with pytest.raises(RunLost):
            await asyncio.wait_for(handle.result(), 10)
        run = await engine.store.get_run(handle.run_id)
        assert run.owner == "someone-else"
        assert "b" not in run.steps or run.steps["b"].status != "succeeded"
        assert [e.step_id for e in await engine.store.get_events(run.run_id)
                if e.type == "step_succeeded"] == ["a"]
        assert gate.calls["c"] == 0
