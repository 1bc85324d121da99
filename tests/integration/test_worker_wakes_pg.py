"""A worker that wakes from a freeze longer than its lease, in one process.

The whole process stops (the event loop blocked, as SIGSTOP stops it) with runs
in flight, long enough for the database to see their leases expire. On waking,
the worker's claim loop and the supervisor's lease check both have timers due;
whichever runs first, the worker must never execute a run twice: if its claim
finds its own runs (their leases expired by the database's clock, nobody else
took them), the execution still running here must stop before a new one starts,
and the old one must never write again. Counted: each step's committed successes
(exactly one) and every call an agent got.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Collection
from typing import Any

import pytest

from podium.agents.base import Task
from podium.agents.python import PythonAgent
from podium.agents.registry import AgentRegistry
from podium.definition import workflow_from_dict
from podium.engine import Engine, EngineConfig
from podium.engine.worker import Worker, WorkerConfig
from podium.events import StepSucceeded
from podium.state import RunRecord
from podium.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres

LEASE_S = 1.5
FROZEN_S = LEASE_S + 0.5


class FreezingStore(PostgresStore):
    """A real store whose process freezes once, at the worker's claim, when told: the
    claim is sent the moment the process wakes, before anything else here runs (a
    freeze that falls between the worker's lease check and its claim). The first
    look for cancel requests after it answers 0.3 s late (a database slow after the
    pause), so the claim's answer comes first: the order that ran every step twice."""

    freeze_at_claim = False
    _slow_look = False

    async def claim_runs(self, worker_id: str, **how: Any) -> list[RunRecord]:
        if self.freeze_at_claim:
            self.freeze_at_claim = False
            time.sleep(FROZEN_S)  # noqa: ASYNC251 - the freeze itself
            self._slow_look = True
        return await super().claim_runs(worker_id, **how)

    async def cancel_requests(self, run_ids: Collection[str]) -> set[str]:
        if self._slow_look:
            self._slow_look = False
            await asyncio.sleep(0.3)
        return await super().cancel_requests(run_ids)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("where", ["in a step", "in a step, twice", "at the claim"])
async def test_a_worker_woken_past_its_lease_never_executes_a_run_twice(
        pg_url: str, where: str) -> None:
    calls: Counter[tuple[str, str]] = Counter()

    async def work(task: Task) -> dict[str, bool]:
        calls[(task.run_id, task.step_id)] += 1
        await asyncio.sleep(1.0)
        return {"ok": True}

    registry = AgentRegistry([PythonAgent(work, id="work", capabilities=["work"])])
    wf = workflow_from_dict({"name": "woken", "mode": "sequential",
                             "steps": [{"id": f"s{i}", "agent": "work"} for i in range(4)]})
    store = FreezingStore.from_url(pg_url)
    engine = Engine(EngineConfig(registry=registry, store=store, lease_s=LEASE_S,
                                 poll_interval_s=0.2))
    # The claim loop polls far more often than the supervisor looks: after a freeze
    # its timer is likely the first due (the order that let a claim overtake fencing).
    worker = Worker(engine, store, WorkerConfig(poll_s=0.05, concurrency=8))
    stop = asyncio.Event()
    freezes = 2 if where.endswith("twice") else 1
    async with engine:
        runs = [(await engine.submit(wf, {"i": i})).run_id for i in range(4)]
        task = asyncio.create_task(worker.run(stop))
        for _ in range(freezes):
            started = sum(calls.values())
            while sum(calls.values()) < started + 4:  # a step of each run in flight
                await asyncio.sleep(0.01)
            if where == "at the claim":
                store.freeze_at_claim = True
            else:
                time.sleep(FROZEN_S)  # noqa: ASYNC251 - the whole process frozen
        for _ in range(600):
            statuses = [(await store.get_run(r)).status for r in runs]
            if statuses == ["succeeded"] * len(runs):
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 30)
        assert not store.freeze_at_claim, "the worker never claimed again: nothing tested"
        for r in runs:
            assert (await store.get_run(r)).status == "succeeded", r
            events = await store.get_events(r)
            won = Counter(e.step_id for e in events if isinstance(e, StepSucceeded))
            assert won == Counter({f"s{i}": 1 for i in range(4)}), (r, won)
        # A step runs again only if it was in flight at a freeze (stopped, then
        # re-run by the next execution): never more than once per freeze.
        assert max(calls.values()) <= 1 + freezes, calls
