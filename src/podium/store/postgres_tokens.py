"""PostgreSQL queries of the API tokens (``podium token``, checked by ``podium serve``).

A mixin of ``PostgresStore``: its pool (``_fetch``, one statement per connection
checkout, committed on return) and its read-only guard. Only a salted slow hash of
each secret is ever written (``podium.auth`` makes it).
"""

from __future__ import annotations

from typing import Any

from podium.store.base import TokenRecord
from podium.store.postgres_registry import PostgresPart
from podium.store.queries import queries
from podium.store.sqlite_tokens import token_from_row, token_row, token_taken

__all__ = ["PostgresTokens"]

Q = queries("postgres")


class PostgresTokens(PostgresPart):
    async def add_token(self, record: TokenRecord, salt: bytes, hash: bytes) -> None:
        import psycopg

        self._writable()
        try:
            async with self.pool.connection() as conn:
                await conn.execute(Q["token_add"], token_row(record, salt, hash))
        except psycopg.errors.UniqueViolation:
            raise token_taken(record.id) from None
        except psycopg.Error as exc:
            raise self._error(exc) from None

    async def token_secret(self, token_id: str) -> tuple[TokenRecord, bytes, bytes] | None:
        rows = await self._token_rows(Q["token_secret"], (token_id,))
        if not rows:
            return None
        r = rows[0]
        return token_from_row(r), bytes(r[7]), bytes(r[8])

    async def list_tokens(self) -> list[TokenRecord]:
        return [token_from_row(r) for r in await self._token_rows(Q["tokens_list"])]

    async def revoke_token(self, token_id: str, at: float) -> bool:
        self._writable()
        return bool(await self._fetch(Q["token_revoke"], (at, token_id)))

    async def count_usable_tokens(self, now: float) -> int:
        rows = await self._token_rows(Q["tokens_usable"], {"now": now})
        return int(rows[0][0]) if rows else 0

    async def touch_token(self, token_id: str, at: float) -> None:
        self._writable()
        await self._fetch(Q["token_touch"], {"at": at, "id": token_id})

    async def _token_rows(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        import psycopg

        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(query, params)
                return await cur.fetchall()
        except psycopg.errors.UndefinedTable:
            # Read-only (``podium token list``) a database of schema 9 or older, not
            # migrated yet: it has no tokens table, so it holds no token.
            return []
        except psycopg.Error as exc:
            raise self._error(exc) from None
