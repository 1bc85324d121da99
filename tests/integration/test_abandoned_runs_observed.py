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
from collections.abc import Awaitable, Callable
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
from tests.integration.test_fencing import Gate


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
        # Never stored: the run's story goes on in the events of whoever continues it.
        stored = await self.engine.store.get_events(run_id)
        assert "run_abandoned" not in {e.type for e in stored}


async def _in_b(watched: _Watched, gate: Gate) -> Any:
    gate.of("a").set()
    handle = await watched.engine.start(_three())
    await asyncio.wait_for(gate.came("b").wait(), 10)
    assert watched.sample("podium_runs_in_progress", workflow="handoff") == 1
    assert watched.sample("podium_agent_inflight", agent="gate") == 1
    return handle


async def _taken_over(engine: Engine, gate: Gate, handle: Any) -> None:
    """Another process claims the run (its lease lapsed, as after a freeze)."""
    seen = await engine.store.get_run(handle.run_id)
    assert await engine.store.claim_run(seen, "someone-else", lease_s=60, recoveries=1,
                                        owner_dead=True)
    engine.journal.leases_good_until = float("-inf")
    gate.of("b").set()
    with pytest.raises(RunLost):
        await asyncio.wait_for(handle.result(), 10)


async def _handed_back(engine: Engine, _gate: Gate, handle: Any) -> None:
    """A shutdown hands the run back, cutting its attempt in flight short."""
    hurry = asyncio.Event()
    off = asyncio.create_task(engine.hand_off(grace_s=600, hurry=hurry))
    await asyncio.sleep(0.05)
    hurry.set()
    assert await asyncio.wait_for(off, 10) == [handle.run_id]


@pytest.mark.parametrize("let_go", [_taken_over, _handed_back])
async def test_a_run_let_go_of_leaves_gauges_spans_and_slas(
        tmp_path: Path, let_go: Callable[[Engine, Gate, Any], Awaitable[None]]) -> None:
    gate = Gate()
    watched = _Watched(SQLiteStore(tmp_path / "f.db"), gate)
    async with watched.engine as engine:
        handle = await _in_b(watched, gate)
        await let_go(engine, gate, handle)
        await watched.assert_let_go(handle.run_id)


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
