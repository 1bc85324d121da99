"""SQLite's feed of every committed event in commit order (schema 11).

Each committed batch leaves one row in ``feed`` naming the events it wrote (run id,
first and last number); ``SQLiteStore._batch`` writes it in the batch's own
transaction. A position is (the batch's row, run id, number), the order PostgreSQL's
feed has by transaction: within a batch, runs by id, then events by number.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from podium.events import Event
from podium.store.base import Batch, FeedPosition
from podium.store.queries import queries
from podium.store.rows import dumps, event_from_row, loads
from podium.store.sqlite_db import SQLitePart, store_error

__all__ = ["FeedQueries", "feed_ranges"]

Q = queries("sqlite")


def feed_ranges(batch: Batch) -> str:
    """The feed row of a batch: ``[[run_id, first, last], ...]`` as JSON.

    A batch mostly holds one run's events (a step of a chain), whose range needs no
    walk over the events."""
    last = batch.last_seq
    if len(last) == 1 and len(batch.source) == len(batch.seqs):
        ((rid, hi),) = last.items()
        return dumps([[rid, batch.seqs[0], hi]])
    first: dict[str, int] = {}
    high: dict[str, int] = {}
    for e, seq in zip(batch.source, batch.seqs, strict=True):
        first.setdefault(e.run_id, seq)
        high[e.run_id] = seq
    return dumps([[rid, first[rid], hi] for rid, hi in high.items()])


class FeedQueries(SQLitePart):
    """Needs the store's ``conn`` (reads only: the rows are written with each batch)."""

    async def read_feed(self, after: FeedPosition, *, limit: int = 500
                        ) -> tuple[list[tuple[FeedPosition, Event]], FeedPosition]:
        out: list[tuple[FeedPosition, Event]] = []
        scanned = after
        if limit <= 0:
            return out, scanned
        key = (after.tx, after.run_id, after.seq)
        looked = 0  # events looked at: known types or not, a page ends at ``limit``
        try:
            conn = self.conn
            # A batch holds at least one event, and only the first (``after``'s own) can
            # have been read already: ``limit + 1`` batches are enough.
            for pos, text in conn.execute(Q["feed_batches"], (max(after.tx, 1), limit + 1)):
                for rid, lo, hi in sorted(loads(text)):
                    if (pos, rid, hi) <= key:
                        continue  # read already
                    if pos == after.tx and rid == after.run_id:
                        lo = max(lo, after.seq + 1)
                    for seq, kind, ts, data in conn.execute(Q["feed_events"], (rid, lo, hi)):
                        scanned = FeedPosition(pos, rid, seq)
                        looked += 1
                        event = event_from_row(rid, kind, ts, data)
                        if event is not None:  # (a newer Podium's type: left out)
                            out.append((scanned, event))
                        if looked >= limit:
                            return out, scanned
                    # Past the whole range, events there or not: a pruned run's range
                    # (its feed row still names a run that is kept) has none.
                    scanned = FeedPosition(pos, rid, hi)
        except sqlite3.Error as exc:
            raise store_error(exc, self.path) from None
        return out, scanned

    async def feed_head(self) -> FeedPosition:
        try:
            row: Sequence[Any] | None = self.conn.execute(Q["feed_last"]).fetchone()
        except sqlite3.Error as exc:
            raise store_error(exc, self.path) from None
        if row is None:
            return FeedPosition()
        rid, _lo, hi = max(loads(row[1]))
        return FeedPosition(int(row[0]), rid, int(hi))
