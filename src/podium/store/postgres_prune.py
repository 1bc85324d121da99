"""PostgreSQL retention (``podium prune``): deleting runs that ended long ago.

A mixin of ``PostgresStore``. Each transaction picks the ``batch_runs`` top-level runs
that ended first (reading the index on ``finished_at`` in order, so a batch never
looks at every run), locks them and their child runs (``FOR UPDATE``), keeps only
the trees still all ended and free once locked, and deletes them with their
steps, events, signals, timers and slots. A dry run is one counting read.

The feed here is the events table itself (ordered by the writing transaction,
schema 6), so an event deleted leaves the feed with it, and positions stay
comparable: a reader past a gap reads on. The one reader that saves its place is
the alert leader (``feed_positions``), and a new leader carries on from a
position saved less than ``FEED_POSITION_STALE_S`` ago: a run with events past
such a position is kept until the leader has read them.
"""

from __future__ import annotations

from collections.abc import Collection

from podium.state import TERMINAL_RUN_STATUSES
from podium.store.base import FEED_POSITION_STALE_S, PRUNE_BATCH_RUNS, prune_statuses
from podium.store.postgres_registry import PostgresPart
from podium.store.queries import queries

__all__ = ["PostgresPrune"]

Q = queries("postgres")
_TERMINAL = sorted(TERMINAL_RUN_STATUSES)


class PostgresPrune(PostgresPart):
    async def prune_runs(self, finished_before: float, *,
                         statuses: Collection[str] | None = None,
                         workflow: str | None = None, dry_run: bool = False,
                         batch_runs: int = PRUNE_BATCH_RUNS) -> int:
        import psycopg

        if batch_runs < 1:
            raise ValueError(f"batch_runs {batch_runs}: at least 1")
        if not dry_run:
            self._writable()
        params = {"before": finished_before, "statuses": prune_statuses(statuses),
                  "workflow": workflow, "terminal": _TERMINAL,
                  "stale": FEED_POSITION_STALE_S, "limit": batch_runs}
        try:
            if dry_run:  # what a prune would pick now, all of it, with its child runs
                roots = [str(r[0]) for r in await self._fetch(
                    Q["prune_roots"], {**params, "skip": [], "limit": None})]
                children = 0
                for at in range(0, len(roots), batch_runs):
                    rows = await self._fetch(Q["prune_children"],
                                             {"roots": roots[at:at + batch_runs]})
                    children += int(rows[0][0])
                return len(roots) + children
            # Runs found held once locked (claimed since they were read): not picked again.
            skip: list[str] = []
            total = 0
            while True:
                async with self.pool.connection() as conn, conn.transaction():
                    cur = await conn.execute(Q["prune_roots"], {**params, "skip": skip})
                    ids = [str(r[0]) for r in await cur.fetchall()]
                    if not ids:
                        return total
                    cur = await conn.execute(Q["prune_tree"], {"roots": ids})
                    trees: dict[str, list[str]] = {}
                    live: set[str] = set()
                    for root, rid, status, held in await cur.fetchall():
                        trees.setdefault(root, []).append(rid)
                        if held or status not in TERMINAL_RUN_STATUSES:
                            live.add(root)
                    skip += sorted(live)
                    going = [rid for root, tree in trees.items() if root not in live
                             for rid in tree]
                    if going:
                        cur = await conn.execute(Q["prune_delete"],
                                                 {"ids": going, "terminal": _TERMINAL})
                        total += cur.rowcount
        except psycopg.Error as exc:
            raise self._error(exc, "prune") from None
