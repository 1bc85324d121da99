"""PostgreSQL queries of the agents that joined through the API (``POST /agents``).

A mixin of ``PostgresStore``. Expiry is the database's time, so a registration made
through one server and renewed through another is judged by one clock.
"""

from __future__ import annotations

from typing import Any

from podium.store.base import JoinedAgent
from podium.store.postgres_registry import PostgresPart
from podium.store.queries import queries
from podium.store.registry import agent_taken
from podium.store.rows import dumps, loads

__all__ = ["PostgresAgents"]

Q = queries("postgres")


class PostgresAgents(PostgresPart):
    async def join_agent(self, agent_id: str, spec: dict[str, Any], token_id: str,
                         ttl_s: float) -> tuple[JoinedAgent, bool]:
        import psycopg

        self._writable()
        try:
            async with self.pool.connection() as conn, conn.transaction():
                cur = await conn.execute(Q["agent_joined_row"] + " FOR UPDATE", (agent_id,))
                before = await cur.fetchone()
                cur = await conn.execute(Q["agent_join"], {
                    "id": agent_id, "spec": dumps(spec), "token_id": token_id, "ttl": ttl_s})
                changed = cur.rowcount
                cur = await conn.execute(Q["agent_joined_row"], (agent_id,))
                row = await cur.fetchone()
        except psycopg.Error as exc:
            raise self._error(exc) from None
        if not changed or row is None or row[0] != token_id:
            raise agent_taken(agent_id)
        new = before is None or before[0] != token_id or before[2] < row[1]
        return JoinedAgent(agent_id, spec, float(row[1]), float(row[2])), new

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
