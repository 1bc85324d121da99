"""SQLite retention (``podium prune``): deleting runs that ended long ago.

A mixin of ``SQLiteStore``. Each ``BEGIN IMMEDIATE`` transaction deletes the
``batch_runs`` top-level runs that ended first (the index on ``finished_at`` read
in order), with their child runs and every row of theirs: the candidates are read
under the same write lock that deletes them, so no run can
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

import asyncio
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
        if dry_run:
            try:
                # What a prune would pick now, all of it (LIMIT -1), with its child runs:
                # reads only, which in WAL mode block no writer.
                roots = [str(r[0]) for r in self.conn.execute(Q["prune_roots"], (
                    finished_before, picked, workflow, time.time(), _TERMINAL, -1))]
                children = 0
                for at in range(0, len(roots), batch_runs):
                    row: Any = self.conn.execute(Q["prune_children"],
                                                 (dumps(roots[at:at + batch_runs]),)).fetchone()
                    children += int(row[0])
            except sqlite3.Error as exc:
                raise store_error(exc, self.path) from None
            return len(roots) + children

        def batch(conn: sqlite3.Connection) -> int:
            now = time.time()  # (the store's clock: ``SQLiteStore.now``)
            roots = [str(r[0]) for r in conn.execute(Q["prune_roots"], (
                finished_before, picked, workflow, now, _TERMINAL, batch_runs))]
            if not roots:
                return 0
            members = [str(r[0]) for r in conn.execute(Q["prune_tree"], (dumps(roots),))]
            tree = dumps(members)
            for name in ("prune_steps", "prune_events", "prune_signals", "prune_wakes"):
                conn.execute(Q[name], (tree,))
            gone: int = conn.execute(Q["prune_runs"], (tree, _TERMINAL, now)).rowcount
            for rid in members:  # (ended runs are forgotten already; never trust, drop)
                self._written.pop(rid, None)
            return gone

        total = 0
        while n := self._write(batch):
            total += n
            # Writes run on the loop's thread: between two batches, this process's own
            # engine (``podium serve``) gets its turn at the lock too.
            await asyncio.sleep(0)
        if total:
            await self._prune_feed()
        return total

    async def _prune_feed(self) -> None:
        row: Any = self.conn.execute(Q["prune_feed_bounds"]).fetchone()
        if row is None or row[0] is None:
            return
        low, high = int(row[0]), int(row[1])
        while low < high:
            upto = min(low + _FEED_ROWS_PER_TX, high)
            self._write(lambda conn, lo=low, hi=upto: conn.execute(Q["prune_feed"], (lo, hi)))
            low = upto
            await asyncio.sleep(0)
