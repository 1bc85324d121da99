"""Retention (``prune_runs``) on every backend: what goes, what stays, and in batches.

Each run is written as the engine writes one (a batch with its events and step
rows), given a signal and a timer, then read back only through the store's verbs:
a pruned run has no row, no events, no steps, no signal, no timer and nothing in
the feed; a kept one has all of them, unchanged.
"""

from __future__ import annotations

import orjson
import pytest

from podium.errors import ConfigError, RunNotFound
from podium.events import StepStarted
from podium.store.base import FeedPosition, RunRow, Store
from tests.contract.test_store_contract import DEF, batch, started, step_row

CUT = 1000.0  # "ended before": runs that ended at 100-900 are old, at 5000 recent


LIVE, LAPSED = 1e12, 50.0  # a lease that runs for ever; one long expired


def row(run_id: str, status: str, finished: float | None, *, owner: str | None = None,
        lease: float = LIVE, workflow: str = "w") -> RunRow:
    return RunRow(run_id, status, "null", None, 10.0, finished, "execute", workflow, 1, DEF,
                  orjson.dumps({"in": run_id}).decode(), 10.0, owner,
                  None if owner is None else lease, {"agents_file": None})


async def put(store: Store, run_id: str, status: str = "succeeded",
              finished: float | None = 100.0, *, owner: str | None = None,
              lease: float = LIVE, workflow: str = "w") -> None:
    """A run with three events, a step row, a signal and a timer (``owner`` holds it
    until ``lease``, the store's clock)."""
    ev = [started(run_id), StepStarted(run_id=run_id, ts=3.0, step_id="a", attempt=1,
                                       agent_id="agent-1"),
          StepStarted(run_id=run_id, ts=4.0, step_id="b", attempt=1, agent_id="agent-1")]
    await store.write_batch(batch([row(run_id, status, finished, owner=owner, lease=lease,
                                       workflow=workflow)], ev,
                                  steps=[step_row(run_id, "a", "succeeded", output=1)]))
    await store.send_signal(run_id, "go", {"from": run_id}, 5.0)
    await store.set_wake(run_id, 7.0)


async def gone(store: Store, run_id: str) -> bool:
    """True if nothing of the run is left; fails if only part of it went."""
    try:
        await store.get_run(run_id)
    except RunNotFound:
        found = False
    else:
        found = True
    parts = (found, await store.last_seq(run_id) > 0,
             await store.get_signal(run_id, "go") is not None,
             run_id in await store.wakes_due(1e12, limit=10_000))
    assert len(set(parts)) == 1, f"{run_id}: only part of it is left: {parts}"
    return not found


async def intact(store: Store, run_id: str) -> bool:
    run = await store.get_run(run_id)
    return (run.steps["a"].output == 1 and len(await store.get_events(run_id)) == 3
            and await store.get_signal(run_id, "go") is not None
            and run_id in await store.wakes_due(1e12, limit=10_000))


async def feed_runs(store: Store) -> list[str]:
    out: list[str] = []
    after = FeedPosition()
    while True:
        page, after = await store.read_feed(after, limit=7)
        if not page:
            return out
        out += [e.run_id for _, e in page]


async def test_old_ended_runs_go_with_all_their_rows_and_live_or_recent_ones_stay_whole(
        store: Store) -> None:
    await put(store, "old-ok", "succeeded", 100.0)
    await put(store, "old-failed", "failed", 200.0)
    await put(store, "old-rolled", "rolled_back", 300.0, workflow="other")
    await put(store, "recent", "succeeded", 5000.0)
    await put(store, "waiting", "waiting", None)
    await put(store, "pending", "pending", None)
    await put(store, "running", "running", None, owner="worker-1")
    # Ended long ago but held by a process (claimed to roll it back): not touched.
    await put(store, "owned-failed", "failed", 100.0, owner="worker-1")
    # Its owner (the process that ended it) kept it, but the lease ran out: it goes.
    await put(store, "left-owned", "succeeded", 100.0, owner="gone-1", lease=LAPSED)
    kept = ["recent", "waiting", "pending", "running", "owned-failed"]

    assert await store.prune_runs(CUT) == 4
    for rid in ("old-ok", "old-failed", "old-rolled", "left-owned"):
        assert await gone(store, rid)
    for rid in kept:
        assert await intact(store, rid), rid
    assert sorted(set(await feed_runs(store))) == sorted(kept)
    assert await store.prune_runs(CUT) == 0  # nothing more to do
    assert {r.run_id for r in await store.list_runs(limit=100)} == set(kept)


async def test_statuses_and_workflow_narrow_a_prune_and_a_dry_run_deletes_nothing(
        store: Store) -> None:
    await put(store, "a-ok", "succeeded")
    await put(store, "a-failed", "failed")
    await put(store, "a-cancelled", "cancelled")
    await put(store, "b-failed", "failed", workflow="b")
    assert await store.prune_runs(CUT, dry_run=True) == 4
    assert await store.prune_runs(CUT, statuses=["failed"], dry_run=True) == 2
    for rid in ("a-ok", "a-failed", "a-cancelled", "b-failed"):
        assert await intact(store, rid)
    assert await store.prune_runs(CUT, statuses=["failed"], workflow="b") == 1
    assert await gone(store, "b-failed")
    assert await store.prune_runs(CUT, statuses=["failed", "cancelled"]) == 2
    assert await intact(store, "a-ok")
    with pytest.raises(ConfigError, match="running"):
        await store.prune_runs(CUT, statuses=["succeeded", "running"])
    assert await intact(store, "a-ok")


async def test_child_runs_go_with_their_parent_and_never_while_one_of_the_tree_lives(
        store: Store) -> None:
    await put(store, "p", "succeeded", 100.0)
    await put(store, "p.call", "succeeded", 90.0)
    await put(store, "p.fan[0]", "failed", 95.0)
    await put(store, "p.call.inner", "succeeded", 80.0)  # a grandchild
    # Names that share the prefix but are other runs (recent: they must stay).
    await put(store, "pa", "succeeded", 5000.0)
    await put(store, "p-x", "succeeded", 5000.0)
    # A parent that ended, with a child still executing: the tree waits, whole.
    await put(store, "q", "failed", 100.0)
    await put(store, "q.call", "running", None, owner="worker-1")
    # ... or with an ended child that a process holds (claimed it to redrive it).
    await put(store, "t", "failed", 100.0)
    await put(store, "t.call", "failed", 100.0, owner="worker-1")
    # A child that ended long ago, its parent still waiting: never before its parent.
    await put(store, "r", "waiting", None)
    await put(store, "r.call", "succeeded", 100.0)

    assert await store.prune_runs(CUT, dry_run=True) == 4
    assert await store.prune_runs(CUT) == 4
    for rid in ("p", "p.call", "p.fan[0]", "p.call.inner"):
        assert await gone(store, rid)
    for rid in ("pa", "p-x", "q", "q.call", "r", "r.call", "t", "t.call"):
        assert await intact(store, rid), rid
    # A status filter picks parents; their children go whatever theirs.
    await put(store, "s", "failed", 100.0)
    await put(store, "s.call", "succeeded", 100.0)
    assert await store.prune_runs(CUT, statuses=["failed"]) == 2
    assert await gone(store, "s.call")


async def test_a_prune_bigger_than_a_batch_deletes_every_run_batch_by_batch(
        store: Store) -> None:
    for i in range(23):
        await put(store, f"run-{i:02}", "succeeded", 100.0 + (i % 5))  # ties on the time
    await put(store, "run-99", "succeeded", 5000.0)
    assert await store.prune_runs(CUT, dry_run=True, batch_runs=4) == 23
    assert await store.prune_runs(CUT, batch_runs=4) == 23
    assert [r.run_id for r in await store.list_runs(limit=100)] == ["run-99"]
    assert await intact(store, "run-99")
    assert set(await feed_runs(store)) == {"run-99"}
