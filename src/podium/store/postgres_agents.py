"""PostgreSQL queries of the agents that joined through the API (``POST /agents``).

A mixin of ``PostgresStore``. Expiry is the database's time, so a registration made
through one server and renewed through another is judged by one clock. Joins take a
transaction-scoped advisory lock, so the count of live agents a join is judged by
(its limits) cannot miss another server's join in flight.
"""

from __future__ import annotations

from typing import Any

from podium.store.base import JoinedAgent, JoinLimits
from podium.store.postgres_registry import PostgresPart
from podium.store.queries import queries
from podium.store.registry import agent_taken, too_many_agents
from podium.store.rows import dumps, loads

__all__ = ["PostgresAgents"]

Q = queries("postgres")


class PostgresAgents(PostgresPart):
    schema: str  # the store's (PostgresStore sets it)

    async def join_agent(self, agent_id: str, spec: dict[str, Any], token_id: str,
                         ttl_s: float, limits: JoinLimits | None = None
                         ) -> tuple[JoinedAgent, bool]:
        import psycopg

        limits = limits or JoinLimits()
        self._writable()
        counts = None
        try:
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute(Q["agents_join_lock"], (self._join_lock_key(),))
                cur = await conn.execute(Q["agent_joined_row"] + " FOR UPDATE", (agent_id,))
                before = await cur.fetchone()
                await conn.execute(Q["agents_expired_delete"])
                cur = await conn.execute(Q["agent_join"], {
                    "id": agent_id, "spec": dumps(spec), "token_id": token_id, "ttl": ttl_s,
                    "per_token": limits.per_token, "total": limits.total})
                changed = cur.rowcount
                cur = await conn.execute(Q["agent_joined_row"], (agent_id,))
                row = await cur.fetchone()
                if not changed:
                    cur = await conn.execute(Q["agents_live_count"], (token_id,))
                    counts = await cur.fetchone()
        except psycopg.Error as exc:
            raise self._error(exc) from None
        if row is not None and row[0] != token_id:
            raise agent_taken(agent_id)
        if not changed or row is None:
            mine, total = counts or (0, 0)
            raise too_many_agents(limits, int(mine), int(total))
        new = before is None or before[0] != token_id or before[2] < row[1]
        return JoinedAgent(agent_id, spec, float(row[1]), float(row[2])), new

    def _join_lock_key(self) -> str:
        """The advisory lock of joins: one per schema (several Podiums may share a
        database, each in its own schema)."""
        return f"podium:{self.schema}:joined-agents"

    async def agent_heartbeat(self, agent_id: str, token_id: str, ttl_s: float
                              ) -> float | None:
        self._writable()
        rows = await self._fetch(Q["agent_heartbeat"],
                                 {"id": agent_id, "token_id": token_id, "ttl": ttl_s})
        return float(rows[0][0]) if rows else None

    async def leave_agent(self, agent_id: str, token_id: str | None) -> bool:
        import psycopg

        self._writable()
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(Q["agent_leave"], {"id": agent_id, "token_id": token_id})
                return cur.rowcount > 0
        except psycopg.Error as exc:
            raise self._error(exc) from None

    async def joined_agents(self) -> list[JoinedAgent]:
        rows = await self._fetch(Q["agents_joined"])
        return [JoinedAgent(r[0], loads(r[1]), float(r[2]), float(r[3])) for r in rows]
