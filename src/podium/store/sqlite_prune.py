"""SQLite retention (``podium prune``): deleting runs that ended long ago.

A mixin of ``SQLiteStore``. A prune walks the runs that may go in keyset order
(when they ended, then id) and deletes ``batch_runs`` top-level runs, with their
child runs and every row of theirs, per ``BEGIN IMMEDIATE`` transaction: the
candidates are read under the same write lock that deletes them, so no run can
start, be claimed or resumed in between, and the engines writing beside a big
prune wait for one batch at most, never for the whole prune.

The feed (``sqlite_feed``) is a log of batches read by position (``GET
/events``, ``podium runs --watch``), positions kept only by its readers (a
client's ``Last-Event-ID``; no SQLite reader saves one in the file). A feed row
names runs and event ranges; a row whose runs are all gone would only send its
readers to events that are not there, so it goes too, in bounded transactions
of its own. Never the last row: ``pos`` is an ``INTEGER PRIMARY KEY``, so a new
batch takes the highest pos plus one, and deleting the highest row would give
its number again to a batch that a reader already past it would skip.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Collection
from typing import Any

from podium.state import TERMINAL_RUN_STATUSES
from podium.store.base import PRUNE_BATCH_RUNS, prune_statuses
from podium.store.queries import queries
from podium.store.rows import dumps
from podium.store.sqlite_db import SQLitePart, store_error

__all__ = ["PruneQueries"]

Q = queries("sqlite")
# Feed rows looked at per transaction: one JSON parse and a key lookup or two each.
_FEED_ROWS_PER_TX = 5000
_TERMINAL = dumps(sorted(TERMINAL_RUN_STATUSES))


class PruneQueries(SQLitePart):
    """Needs the store's ``conn``, ``_write`` and ``_written`` (provided by ``SQLiteStore``)."""

    _written: dict[str, dict[str, tuple[str, int]]]

    async def prune_runs(self, finished_before: float, *,
                         statuses: Collection[str] | None = None,
                         workflow: str | None = None, dry_run: bool = False,
                         batch_runs: int = PRUNE_BATCH_RUNS) -> int:
        if batch_runs < 1:
            raise ValueError(f"batch_runs {batch_runs}: at least 1")
        picked = dumps(prune_statuses(statuses))
        after: tuple[float, str] = (float("-inf"), "")
        total = 0
        while True:
            def batch(conn: sqlite3.Connection, key: tuple[float, str] = after
                      ) -> tuple[int, tuple[float, str] | None]:
                now = time.time()  # (the store's clock: ``SQLiteStore.now``)
                roots = conn.execute(Q["prune_roots"], (
                    finished_before, key[0], key[1], picked, workflow, _TERMINAL,
                    batch_runs, now)).fetchall()
                if not roots:
                    return 0, None
                ids = [str(r[0]) for r in roots]
                members = [str(r[0]) for r in conn.execute(Q["prune_tree"], (dumps(ids),))]
                last = (float(roots[-1][1]), ids[-1])
                if dry_run:
                    return len(members), last
                tree = dumps(members)
                for name in ("prune_steps", "prune_events", "prune_signals", "prune_wakes"):
                    conn.execute(Q[name], (tree,))
                gone = conn.execute(Q["prune_runs"], (tree, _TERMINAL, now)).rowcount
                for rid in members:  # (ended runs are forgotten already; never trust, drop)
                    self._written.pop(rid, None)
                return gone, last

            if dry_run:
                try:
                    n, key = batch(self.conn)
                except sqlite3.Error as exc:
                    raise store_error(exc, self.path) from None
            else:
                n, key = self._write(batch)
            total += n
            if key is None:
                break
            after = key
        if total and not dry_run:
            self._prune_feed()
        return total

    def _prune_feed(self) -> None:
        row: Any = self.conn.execute(Q["prune_feed_bounds"]).fetchone()
        if row is None or row[0] is None:
            return
        low, high = int(row[0]), int(row[1])
        while low < high:
            upto = min(low + _FEED_ROWS_PER_TX, high)
            self._write(lambda conn, lo=low, hi=upto: conn.execute(Q["prune_feed"], (lo, hi)))
            low = upto
