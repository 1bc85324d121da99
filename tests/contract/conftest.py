"""Every store backend, behind one fixture, and two fault wrappers around any of them.

``store`` is an open store of each backend in turn: the in-memory reference, a
real SQLite file and a real PostgreSQL database (a fresh one per test, on the
session's throwaway cluster; ``backend`` is then that database's URL). The contract tests use only
the ``RunStore`` and ``AlertStore`` protocols, so what one backend passes, every
backend must.

``DelayedStore`` makes every commit take a random few milliseconds (the latency
of a network database), so batches are in flight while the engine appends more;
``CutOffStore`` commits some batches and then reports the connection lost
(``CommitUnknown``), or loses them before they land: the engine must find out
which from the store, and write nothing twice and lose nothing.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import pytest

from podium.events import Event
from podium.state import AlertRecord, AttemptOutcome, RunRecord
from podium.store.base import (
    Batch,
    CommitUnknown,
    FeedPosition,
    JoinedAgent,
    JoinLimits,
    RegisteredWorkflow,
    ScheduleRecord,
    Signal,
    SlotRecord,
    Store,
    TokenRecord,
    WorkflowVersion,
)
from podium.store.memory import MemoryStore
from podium.store.sqlite import SQLiteStore

BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def make_store(kind: str, tmp_path: Path) -> Store:
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SQLiteStore(tmp_path / "contract.db")
    if kind.startswith("postgresql://"):
        from podium.store.postgres import PostgresStore

        return PostgresStore.from_url(kind)
    raise AssertionError(kind)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(request.param)


@pytest.fixture
async def store(backend: str, tmp_path: Path) -> AsyncIterator[Store]:
    s = make_store(backend, tmp_path)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


class _Wrapper:
    """Passes every call on to ``inner``; subclasses change how batches are written.

    Deliberately not a ``SyncRunStore``: the engine must go through the async path.
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = inner.url
        # Events committed, by (run, step, type): what an agent may rely on.
        self.committed: set[tuple[str, str | None, str]] = set()

    def _landed(self, batch: Batch) -> None:
        for e in batch.source:
            self.committed.add((e.run_id, getattr(e, "step_id", None), e.type))

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def save_workflow(self, name: str, version: int | str,
                            definition: dict[str, Any]) -> None:
        await self.inner.save_workflow(name, version, definition)

    async def now(self) -> float:
        return await self.inner.now()

    async def write_batch(self, batch: Batch) -> frozenset[str]:
        lost = await self.inner.write_batch(batch)
        self._landed(batch.without(lost))
        return lost

    async def batch_committed(self, batch: Batch) -> bool:
        landed = await self.inner.batch_committed(batch)
        if landed:
            self._landed(batch)
        return landed

    async def last_seq(self, run_id: str) -> int:
        return await self.inner.last_seq(run_id)

    async def get_run(self, run_id: str) -> RunRecord:
        return await self.inner.get_run(run_id)

    async def list_runs(self, *, status: str | None = None, workflow: str | None = None,
                        limit: int = 50, before: tuple[float, str] | None = None,
                        ) -> list[RunRecord]:
        return await self.inner.list_runs(status=status, workflow=workflow, limit=limit,
                                          before=before)

    async def get_events(self, run_id: str) -> Sequence[Event]:
        return await self.inner.get_events(run_id)

    async def trace_context(self, run_id: str) -> str | None:
        return await self.inner.trace_context(run_id)

    async def request_cancel(self, run_id: str) -> bool:
        return await self.inner.request_cancel(run_id)

    async def cancel_requests(self, run_ids: Collection[str]) -> set[str]:
        return await self.inner.cancel_requests(run_ids)

    async def claim_run(self, run: RunRecord, owner: str, *, lease_s: float,
                        recoveries: int, owner_dead: bool = False) -> bool:
        return await self.inner.claim_run(run, owner, lease_s=lease_s, recoveries=recoveries,
                                          owner_dead=owner_dead)

    async def release_run(self, run_id: str, owner: str, *, force: bool = False) -> None:
        await self.inner.release_run(run_id, owner, force=force)

    async def renew_leases(self, owner: str, run_ids: Collection[str],
                           lease_s: float) -> set[str]:
        return await self.inner.renew_leases(owner, run_ids, lease_s)

    async def save_alert(self, alert: AlertRecord, what: str, detail: str = "",
                         ts: float | None = None) -> None:
        await self.inner.save_alert(alert, what, detail, ts)

    async def list_alerts(self, *, status: str | None = None,
                          limit: int = 100) -> list[AlertRecord]:
        return await self.inner.list_alerts(status=status, limit=limit)

    async def get_alert(self, key: str) -> AlertRecord | None:
        return await self.inner.get_alert(key)

    async def ack_alert(self, key: str, by: str, now: float) -> bool:
        return await self.inner.ack_alert(key, by, now)

    async def alert_history(self, key: str) -> list[dict[str, Any]]:
        return await self.inner.alert_history(key)

    async def attempt_outcomes(self, since: float) -> list[AttemptOutcome]:
        return await self.inner.attempt_outcomes(since)

    async def add_schedule(self, schedule: ScheduleRecord) -> None:
        await self.inner.add_schedule(schedule)

    async def list_schedules(self) -> list[ScheduleRecord]:
        return await self.inner.list_schedules()

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord:
        return await self.inner.get_schedule(schedule_id)

    async def set_schedule_paused(self, schedule_id: str, paused: bool,
                                  next_at: float | None = None) -> bool:
        return await self.inner.set_schedule_paused(schedule_id, paused, next_at)

    async def delete_schedule(self, schedule_id: str) -> bool:
        return await self.inner.delete_schedule(schedule_id)

    async def record_slot(self, schedule_id: str, slot: SlotRecord, next_at: float) -> bool:
        return await self.inner.record_slot(schedule_id, slot, next_at)

    async def schedule_slots(self, schedule_id: str, limit: int = 20) -> list[SlotRecord]:
        return await self.inner.schedule_slots(schedule_id, limit)

    async def send_signal(self, run_id: str, name: str, data: Any, at: float) -> bool:
        return await self.inner.send_signal(run_id, name, data, at)

    async def get_signal(self, run_id: str, name: str) -> Signal | None:
        return await self.inner.get_signal(run_id, name)

    async def set_wake(self, run_id: str, wake_at: float | None) -> None:
        await self.inner.set_wake(run_id, wake_at)

    async def wake_run(self, run_id: str) -> bool:
        return await self.inner.wake_run(run_id)

    async def wakes_due(self, now: float, limit: int = 100) -> list[str]:
        return await self.inner.wakes_due(now, limit)

    async def register_workflow(self, name: str, version: int | str,
                                definition: dict[str, Any]) -> tuple[RegisteredWorkflow, bool]:
        return await self.inner.register_workflow(name, version, definition)

    async def registered_workflow(self, name: str,
                                  version: int | str | None = None) -> RegisteredWorkflow | None:
        return await self.inner.registered_workflow(name, version)

    async def registered_workflows(self) -> list[WorkflowVersion]:
        return await self.inner.registered_workflows()

    async def add_token(self, record: TokenRecord, salt: bytes, hash: bytes) -> None:
        await self.inner.add_token(record, salt, hash)

    async def token_secret(self, token_id: str) -> tuple[TokenRecord, bytes, bytes] | None:
        return await self.inner.token_secret(token_id)

    async def list_tokens(self) -> list[TokenRecord]:
        return await self.inner.list_tokens()

    async def revoke_token(self, token_id: str, at: float) -> bool:
        return await self.inner.revoke_token(token_id, at)

    async def count_usable_tokens(self, now: float) -> int:
        return await self.inner.count_usable_tokens(now)

    async def touch_token(self, token_id: str, at: float) -> None:
        await self.inner.touch_token(token_id, at)

    async def read_feed(self, after: FeedPosition, *, limit: int = 500
                        ) -> tuple[list[tuple[FeedPosition, Event]], FeedPosition]:
        return await self.inner.read_feed(after, limit=limit)

    async def feed_head(self) -> FeedPosition:
        return await self.inner.feed_head()

    async def join_agent(self, agent_id: str, spec: dict[str, Any], token_id: str,
                         ttl_s: float, limits: JoinLimits | None = None
                         ) -> tuple[JoinedAgent, bool]:
        return await self.inner.join_agent(agent_id, spec, token_id, ttl_s, limits)

    async def agent_heartbeat(self, agent_id: str, token_id: str, ttl_s: float
                              ) -> float | None:
        return await self.inner.agent_heartbeat(agent_id, token_id, ttl_s)

    async def leave_agent(self, agent_id: str, token_id: str | None) -> bool:
        return await self.inner.leave_agent(agent_id, token_id)

    async def joined_agents(self) -> list[JoinedAgent]:
        return await self.inner.joined_agents()

    async def prune_runs(self, finished_before: float, *,
                         statuses: Collection[str] | None = None,
                         workflow: str | None = None, dry_run: bool = False,
                         batch_runs: int = 1000) -> int:
        return await self.inner.prune_runs(finished_before, statuses=statuses,
                                           workflow=workflow, dry_run=dry_run,
                                           batch_runs=batch_runs)


class DelayedStore(_Wrapper):
    """Every commit takes 1-5 ms, as over a network: batches are in flight meanwhile."""

    def __init__(self, inner: Store, rng: random.Random) -> None:
        super().__init__(inner)
        self.rng = rng
        self.batches = 0

    async def write_batch(self, batch: Batch) -> frozenset[str]:
        await asyncio.sleep(self.rng.uniform(0.001, 0.005))
        lost = await self.inner.write_batch(batch)
        self.batches += 1
        self._landed(batch.without(lost))
        return lost


class CutOffStore(_Wrapper):
    """Some commits are cut off: landed then reported lost, or lost for real.

    ``landed_then_cut`` of the batches are written and then raise ``CommitUnknown``
    (the server got the COMMIT, its answer never came); ``lost`` raise it without
    writing anything (the connection dropped before COMMIT). Reading back
    (``batch_committed``) always works.
    """

    def __init__(self, inner: Store, rng: random.Random, *, landed_then_cut: float = 0.3,
                 lost: float = 0.2) -> None:
        super().__init__(inner)
        self.rng = rng
        self.landed_then_cut, self.lost = landed_then_cut, lost
        self.cut = self.dropped = 0

    async def write_batch(self, batch: Batch) -> frozenset[str]:
        await asyncio.sleep(0)
        roll = self.rng.random()
        if roll < self.lost:
            self.dropped += 1
            raise CommitUnknown("connection lost before COMMIT (test)")
        lost = await self.inner.write_batch(batch)
        self._landed(batch.without(lost))
        if roll < self.lost + self.landed_then_cut:
            self.cut += 1
            raise CommitUnknown("connection lost after COMMIT (test)")
        return lost


Wrap = Callable[[Store], _Wrapper]
