"""PostgreSQL queries of the workflow registry (``podium workflow register``).

A mixin of ``PostgresStore``: its pool (``_fetch``, one statement per connection
checkout, committed on return) and its read-only guard. Two registrations of one
version at once, from any hosts, are settled by the primary key: the second insert
waits for the first to commit, then does nothing, and reads the row that won.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from podium.errors import StoreError
from podium.store.base import RegisteredWorkflow, WorkflowVersion
from podium.store.queries import queries
from podium.store.registry import prepare_registration, version_taken
from podium.store.sqlite_registry import registered_from_row

if TYPE_CHECKING:  # psycopg is the postgres extra: imported (and its absence explained)
    import psycopg  # by postgres.py, which imports this module
    from psycopg_pool import AsyncConnectionPool

__all__ = ["PostgresPart", "PostgresRegistry"]

Q = queries("postgres")


class PostgresPart:
    """A part of ``PostgresStore`` kept in a module of its own (the registry, tokens): it
    uses the store's ``pool``, ``_error``, ``_fetch`` and ``_writable``."""

    @property
    def pool(self) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        raise NotImplementedError

    def _error(self, exc: BaseException, doing: str = "") -> StoreError:
        raise NotImplementedError

    def _writable(self) -> None:
        raise NotImplementedError

    async def _fetch(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        raise NotImplementedError


class PostgresRegistry(PostgresPart):

    async def register_workflow(self, name: str, version: int | str,
                                definition: dict[str, Any]) -> tuple[RegisteredWorkflow, bool]:
        self._writable()
        reg = prepare_registration(name, version, definition)
        added = await self._fetch(Q["registered_add"], tuple(reg))
        if added:
            r = added[0]
            return RegisteredWorkflow(r[0], r[1], r[2], float(r[3]), definition), True
        rows = await self._fetch(Q["registered_get"], (name, reg.version))
        if rows[0][2] != reg.digest:
            raise version_taken(name, reg.version)
        return registered_from_row(rows[0]), False

    async def registered_workflow(self, name: str,
                                  version: int | str | None = None) -> RegisteredWorkflow | None:
        if version is None:
            rows = await self._read(Q["registered_newest"], (name,))
        else:
            rows = await self._read(Q["registered_get"], (name, str(version)))
        return registered_from_row(rows[0]) if rows else None

    async def registered_workflows(self) -> list[WorkflowVersion]:
        return [WorkflowVersion(r[0], r[1], r[2], float(r[3]))
                for r in await self._read(Q["registered_list"])]

    async def _read(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        import psycopg

        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(query, params)
                return await cur.fetchall()
        except psycopg.errors.UndefinedTable:
            # Read-only (how commands look a sub-workflow up before they run) a database
            # of schema 8 or older, not migrated yet: nothing is registered in it.
            return []
        except psycopg.Error as exc:
            raise self._error(exc) from None
