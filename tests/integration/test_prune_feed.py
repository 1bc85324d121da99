"""What a prune does to the feed readers follow (``GET /events``, the alert leader).

SQLite: a feed row goes once every run it names is gone, never the last row (its
number would be handed to the next batch, which a reader already past it would
skip). PostgreSQL: a run whose events the alert leader's fresh saved position has
not reached yet stays until the leader has read them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from podium.events import StepStarted
from podium.store.base import FeedPosition, Store
from podium.store.sqlite import SQLiteStore
from tests.contract.test_prune_contract import CUT, put
from tests.contract.test_store_contract import batch, new_run, started


def feed_rows(path: Path) -> list[tuple[int, str]]:
    conn = sqlite3.connect(path)
    try:
        return [(int(p), str(r))
                for p, r in conn.execute("SELECT pos, runs FROM feed ORDER BY pos")]
    finally:
        conn.close()


async def read_all(store: Store, after: FeedPosition) -> tuple[list[str], FeedPosition]:
    """Every event after ``after`` as a reader polls: on until its position stops."""
    out: list[str] = []
    while True:
        page, moved = await store.read_feed(after, limit=3)
        if not page and moved == after:
            return out, after
        out += [e.run_id for _, e in page]
        after = moved


async def test_sqlite_feed_rows_of_pruned_runs_go_but_the_last_row_and_shared_rows_stay(
        tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "feed.db")
    await store.open()
    try:
        await put(store, "old-1")
        await put(store, "old-2")
        # One batch naming an old run and a kept one: its row stays (the kept run's
        # events are read through it).
        await store.write_batch(batch([new_run("keep", owner=None)], [
            started("keep"), StepStarted(run_id="old-2", ts=9.0, step_id="z", attempt=1,
                                         agent_id="x")], seq_from={"old-2": 3}))
        await put(store, "old-3")  # the last row names only a pruned run
        rows_before = feed_rows(tmp_path / "feed.db")
        _, head = await read_all(store, FeedPosition())
        assert await store.prune_runs(CUT) == 3
        rows = feed_rows(tmp_path / "feed.db")
        assert [loads_ids(r) for _, r in rows] == [["keep", "old-2"], ["old-3"]]
        assert rows[-1] == rows_before[-1]
        # Read from the start: only the kept run; from the old head: nothing.
        assert (await read_all(store, FeedPosition()))[0] == ["keep"]
        assert (await read_all(store, head))[0] == []
        # The next batch takes a new number: a reader at the old head sees it.
        await store.write_batch(batch([new_run("new", owner=None)], [started("new")]))
        assert feed_rows(tmp_path / "feed.db")[-1][0] > rows_before[-1][0]
        assert (await read_all(store, head))[0] == ["new"]
    finally:
        await store.close()


def loads_ids(text: str) -> list[str]:
    import json

    return sorted(r[0] for r in json.loads(text))


async def test_sqlite_a_reader_moves_past_feed_rows_whose_events_are_all_gone(
        tmp_path: Path) -> None:
    """Between a prune's transactions that delete runs and the later ones that delete
    their feed rows, a reader meets more such rows than a page holds: it reads on."""
    store = SQLiteStore(tmp_path / "gap.db")
    await store.open()
    try:
        for i in range(12):
            await put(store, f"old-{i:02}")
        await store.write_batch(batch([new_run("keep", owner=None)], [started("keep")]))
        conn = sqlite3.connect(tmp_path / "gap.db")
        with conn:  # the state the runs' own transactions leave
            conn.execute("DELETE FROM events WHERE run_id LIKE 'old-%'")
        conn.close()
        seen, _ = await read_all(store, FeedPosition())
        assert seen == ["keep"]
    finally:
        await store.close()


@pytest.mark.postgres
async def test_postgres_keeps_runs_the_alert_leader_has_not_read_yet(pg_url: str) -> None:
    from podium.store.postgres import PostgresStore

    store = PostgresStore.from_url(pg_url)
    await store.open()
    try:
        assert await store.lead("alerts")
        start = await store.feed_head()
        await store.feed("alerts", start, holder="leader-1", limit=0)  # saved: before all
        await put(store, "old-1")
        await put(store, "old-2")
        assert await store.prune_runs(CUT, dry_run=True) == 0
        assert await store.prune_runs(CUT) == 0
        assert {r.run_id for r in await store.list_runs()} == {"old-1", "old-2"}
        # The leader reads on past them: now they may go.
        events, pos = await store.feed("alerts", start, holder="leader-1", limit=1000)
        assert {e.run_id for e in events} == {"old-1", "old-2"}
        await store.feed("alerts", pos, holder="leader-1", limit=0)
        assert await store.prune_runs(CUT, dry_run=True) == 2
        assert await store.prune_runs(CUT) == 2
        assert await store.list_runs() == []
    finally:
        await store.close()
