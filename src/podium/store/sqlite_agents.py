"""SQLite queries of the agents that joined through the API (``POST /agents``).

A mixin of ``SQLiteStore``: its connection and short ``BEGIN IMMEDIATE`` write
transactions, so a registration and its read-back see the same row, and a join's count
of live agents (its limits) holds until its insert commits, against every process.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from podium.store.base import JoinedAgent, JoinLimits
from podium.store.queries import queries
from podium.store.registry import agent_taken, too_many_agents
from podium.store.rows import dumps, loads
from podium.store.sqlite_db import SQLitePart, store_error

__all__ = ["JoinedAgentQueries"]

Q = queries("sqlite")


class JoinedAgentQueries(SQLitePart):
    """Needs the store's ``conn`` and ``_write`` (provided by ``SQLiteStore``)."""

    async def join_agent(self, agent_id: str, spec: dict[str, Any], token_id: str,
                         ttl_s: float, limits: JoinLimits | None = None
                         ) -> tuple[JoinedAgent, bool]:
        limits = limits or JoinLimits()
        now = time.time()

        def do(conn: sqlite3.Connection) -> tuple[Any, Any, Any]:
            before = conn.execute(Q["agent_joined_row"], (agent_id,)).fetchone()
            conn.execute(Q["agents_expired_delete"], (now,))
            written = conn.execute(Q["agent_join"], (
                agent_id, dumps(spec), token_id, now, ttl_s, limits.per_token,
                limits.total)).rowcount
            counts = None if written else conn.execute(
                Q["agents_live_count"], (token_id, now)).fetchone()
            return before, conn.execute(Q["agent_joined_row"], (agent_id,)).fetchone(), counts

        before, row, counts = self._write(do)
        if row is not None and row[0] != token_id:  # another token's, alive: left as it was
            raise agent_taken(agent_id)
        if row is None or counts is not None:
            raise too_many_agents(limits, int(counts[0]), int(counts[1]))
        new = before is None or before[0] != token_id or before[2] <= now
        return JoinedAgent(agent_id, spec, float(row[1]), float(row[2])), new

    async def agent_heartbeat(self, agent_id: str, token_id: str, ttl_s: float
                              ) -> float | None:
        now = time.time()
        changed = self._write(lambda conn: conn.execute(
            Q["agent_heartbeat"], (agent_id, token_id, now, ttl_s)).rowcount)
        return now + ttl_s if changed else None

    async def leave_agent(self, agent_id: str, token_id: str | None) -> bool:
        return bool(self._write(lambda conn: conn.execute(
            Q["agent_leave"], (agent_id, token_id)).rowcount))

    async def joined_agents(self) -> list[JoinedAgent]:
        now = time.time()
        try:
            rows = self.conn.execute(Q["agents_joined"], (now,)).fetchall()
        except sqlite3.Error as exc:
            raise store_error(exc, self.path) from None
        return [JoinedAgent(r[0], loads(r[1]), float(r[2]), float(r[3])) for r in rows]
