"""A run this process stops executing without ending it (another process took it over,
its id was taken, it was handed back) leaves what counts it here: the in-progress gauge,
the agent's calls in flight, the run's and attempt's open spans, the SLA clock.

Before ``RunAbandoned`` each of these stayed counted for as long as the process lived:
a long-lived worker's gauges drifted up by one for every run it lost, and the spans of
the execution that was cut off were never exported. Real SQLite files and engines; the
other process is played by a second claim on the same file (as in ``test_fencing``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from podium import Engine, EngineConfig, RunExists
from podium.agents.python import PythonAgent
from podium.agents.registry import AgentRegistry
from podium.clock import FakeClock
from podium.definition.models import Step, Workflow
from podium.errors import RunLost
from podium.events import Event, EventBus, RunAbandoned, StepStarted
from podium.observe.alerts import AlertManager
from podium.observe.metrics import EngineMetrics
from podium.observe.tracing import Tracing
from podium.store.sqlite import SQLiteStore


class Gate:
    """An agent whose calls wait until their step's gate opens."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.came: dict[str, asyncio.Event] = {}
        self.calls: Counter[str] = Counter()

    def of(self, step: str) -> asyncio.Event:
        return self.gates.setdefault(step, asyncio.Event())

    def arrived(self, step: str) -> asyncio.Event:
        return self.came.setdefault(step, asyncio.Event())

    async def __call__(self, task: Any) -> Any:
        self.calls[task.step_id] += 1
        self.arrived(task.step_id).set()
        await self.of(task.step_id).wait()
        return {"step": task.step_id}


def _three() -> Workflow:
    return Workflow(name="handoff", mode="sequential", sla="1h",
                    steps=[Step(id=s, agent="gate") for s in ("a", "b", "c")])


class _Watched:
    """One engine on ``path`` with metrics, tracing and alerts subscribed, as a worker
    has them."""

    def __init__(self, store: SQLiteStore, gate: Gate) -> None:
        self.metrics = EngineMetrics()
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracing = Tracing(provider.get_tracer("test"))
        # Its clock is far past any run's start here: a tick fires every SLA it watches.
        self.alerts = AlertManager(clock=FakeClock(start=time.time() + 86_400))
        self.alerts.watch_workflow(_three())
        self.local: list[Event] = []
        reg = AgentRegistry()
        reg.register(PythonAgent(gate, id="gate", capabilities=["gate"]))
        self.engine = Engine(EngineConfig(
            registry=reg, store=store, lease_s=30.0,
            observers=(self.metrics, self.tracing, self.alerts, self.local.append)))

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)

    async def assert_let_go(self, run_id: str) -> None:
        assert self.sample("podium_runs_in_progress", workflow="handoff") == 0
        assert self.sample("podium_agent_inflight", agent="gate") == 0
        # Both spans of the cut-off execution ended (so exported), the run's as abandoned.
        spans = {s.name: s for s in self.exporter.get_finished_spans()}
        assert spans["run handoff"].attributes["podium.outcome"] == "abandoned"
        assert spans["run handoff"].attributes["podium.run_id"] == run_id
        assert "step b" in spans
        await self.alerts.tick()  # its SLA (1h) is long past on the alerts' clock
        assert not [a for a in self.alerts.active.values() if a.kind == "sla"]
        told = [e for e in self.local if isinstance(e, RunAbandoned)]
        assert [e.run_id for e in told] == [run_id]


async def _in_b(watched: _Watched, gate: Gate) -> Any:
    gate.of("a").set()
    handle = await watched.engine.start(_three())
    await asyncio.wait_for(gate.arrived("b").wait(), 10)
    assert watched.sample("podium_runs_in_progress", workflow="handoff") == 1
    assert watched.sample("podium_agent_inflight", agent="gate") == 1
    return handle


async def test_a_run_taken_over_by_another_process_leaves_gauges_spans_and_slas(
        tmp_path: Path) -> None:
    gate = Gate()
    watched = _Watched(SQLiteStore(tmp_path / "f.db"), gate)
    async with watched.engine as engine:
        handle = await _in_b(watched, gate)
        seen = await engine.store.get_run(handle.run_id)
        assert await engine.store.claim_run(seen, "someone-else", lease_s=60, recoveries=1,
                                            owner_dead=True)
        engine.journal.leases_good_until = float("-inf")  # as after a freeze
        gate.of("b").set()
        with pytest.raises(RunLost):
            await asyncio.wait_for(handle.result(), 10)
        await watched.assert_let_go(handle.run_id)
        # Nothing of it was stored: the other process's story of the run goes on alone.
        assert "run_abandoned" not in {e.type for e in await engine.store.get_events(
            handle.run_id)}


async def test_a_run_handed_back_with_its_attempt_cut_short_leaves_them_too(
        tmp_path: Path) -> None:
    gate = Gate()
    watched = _Watched(SQLiteStore(tmp_path / "h.db"), gate)
    async with watched.engine as engine:
        handle = await _in_b(watched, gate)
        hurry = asyncio.Event()
        off = asyncio.create_task(engine.hand_off(grace_s=600, hurry=hurry))
        await asyncio.sleep(0.05)
        hurry.set()
        assert await asyncio.wait_for(off, 10) == [handle.run_id]
        await watched.assert_let_go(handle.run_id)
        events = await engine.store.get_events(handle.run_id)
        assert "run_abandoned" not in {e.type for e in events}


async def test_a_new_run_whose_id_was_taken_leaves_the_gauge(tmp_path: Path) -> None:
    gate = Gate()
    gate.of("a").set()
    store = SQLiteStore(tmp_path / "t.db")  # one per file and process, as two engines share it
    first, second = _Watched(store, gate), _Watched(store, gate)
    async with first.engine, second.engine:
        await first.engine.start(_three(), run_id="dup")
        with pytest.raises(RunExists):
            await second.engine.start(_three(), run_id="dup")
        assert second.sample("podium_runs_in_progress", workflow="handoff") == 0
        assert [e.run_id for e in second.local if isinstance(e, RunAbandoned)] == ["dup"]
        gate.of("b").set()
        gate.of("c").set()


def test_the_bus_tells_local_facts_to_all_but_who_stores_them() -> None:
    bus = EventBus()
    stored: list[Event] = []
    heard: list[Event] = []
    bus.subscribe(stored.append, local=False)
    off = bus.subscribe(heard.append)
    started = StepStarted(run_id="r", ts=1.0, step_id="a", attempt=1, agent_id="x")
    left = RunAbandoned(run_id="r", ts=2.0, reason="taken over")
    bus.emit(started)
    bus.emit_local(left)
    assert stored == [started]
    assert heard == [started, left]
    off()
    bus.emit_local(left)
    bus.emit(started)
    assert heard == [started, left]
