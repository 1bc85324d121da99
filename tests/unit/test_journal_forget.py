"""A run the journal forgets (self-fencing, a hand-back) and then tracks anew (claimed
again by the same process) gets none of its stopped execution's events, and nobody
waiting on the journal spins or hangs for the events that were dropped.

Found on PostgreSQL: a worker cut off from a restarting server stopped its runs,
claimed them back, and the old execution's pending ``step_succeeded`` was written as
the new one's (two successes of one step in the log); a hand-back after that waited
for ever for positions nobody would commit.
"""

from __future__ import annotations

import asyncio

from podium.engine.journal import Journal
from podium.events import RunCancelRequested
from podium.state import RunRecord
from podium.store.base import Batch
from podium.store.memory import MemoryStore


class _SlowStore(MemoryStore):
    """Commits take a while, as over a network (and the journal must use the async path)."""

    write_batch_now = None  # type: ignore[assignment]

    async def write_batch(self, batch: Batch) -> frozenset[str]:
        await asyncio.sleep(0.02)
        return MemoryStore.write_batch_now(self, batch)


def _run(run_id: str) -> RunRecord:
    return RunRecord(run_id=run_id, workflow="w", version=1, definition={"name": "w"},
                     input=None, owner="me")


def _event(run_id: str, reason: str) -> RunCancelRequested:
    return RunCancelRequested(run_id=run_id, ts=1.0, reason=reason)


async def _reasons(store: MemoryStore, run_id: str) -> list[str]:
    return [getattr(e, "reason", "") for e in await store.get_events(run_id)]


async def test_a_forgotten_runs_pending_events_never_reach_its_next_tracking() -> None:
    store = MemoryStore()
    await store.open()
    journal = Journal(store, owner="me")
    run = _run("r")
    journal.track(run, new=True)
    journal.append(_event("r", "first"))
    await journal.commit_through(journal.position)
    journal.append(_event("r", "stale"))  # the stopped execution's, not committed yet
    journal.forget("r")
    journal.track(run, new=False, seq=await store.last_seq("r"))
    journal.append(_event("r", "fresh"))
    await asyncio.wait_for(journal.commit_through(journal.position), 2)
    assert await _reasons(store, "r") == ["first", "fresh"]


async def test_forgetting_while_a_batch_is_on_the_wire_keeps_the_new_trackings_count(
) -> None:
    store = _SlowStore()
    await store.open()
    journal = Journal(store, owner="me")
    run = _run("r")
    journal.track(run, new=True)
    journal.append(_event("r", "first"))
    waiting = asyncio.ensure_future(journal.commit_through(journal.position))
    await asyncio.sleep(0.005)  # cut and on the wire
    journal.forget("r")
    await asyncio.wait_for(waiting, 2)  # it lands; its run is no longer tracked: no error
    journal.track(run, new=False, seq=await store.last_seq("r"))
    journal.append(_event("r", "second"))
    await asyncio.wait_for(journal.commit_through(journal.position), 2)
    assert await _reasons(store, "r") == ["first", "second"]


async def test_waiting_for_positions_of_dropped_events_returns_at_once() -> None:
    store = _SlowStore()
    await store.open()
    journal = Journal(store, owner="me")
    journal.track(_run("a"), new=True)
    journal.track(_run("b"), new=True)
    journal.append(_event("a", "kept"))
    journal.append(_event("b", "dropped"))
    journal.forget("b")
    await asyncio.wait_for(journal.commit_through(journal.position), 2)
    assert journal.durable == journal.position
    assert await _reasons(store, "a") == ["kept"]
