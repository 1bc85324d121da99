"""SQLite queries of the API tokens (``podium token``, checked by ``podium serve``).

A mixin of ``SQLiteStore``, as the schedule and registry queries are: the store's
connection and its short ``BEGIN IMMEDIATE`` write transactions. Only a salted slow
hash of each secret is ever written (``podium.auth`` makes it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from podium.errors import ConfigError
from podium.store.base import Scope, TokenRecord
from podium.store.queries import queries
from podium.store.sqlite_db import SQLitePart, store_error

__all__ = ["TokenQueries", "token_from_row", "token_row", "token_taken"]

Q = queries("sqlite")


def token_from_row(r: Sequence[Any]) -> TokenRecord:
    """A record from the first seven columns of ``tokens_list`` / ``token_secret``."""
    return TokenRecord(id=r[0], name=r[1], scope=Scope(r[2]), created_at=float(r[3]),
                       expires_at=_time(r[4]), revoked_at=_time(r[5]),
                       last_used_at=_time(r[6]))


def _time(v: Any) -> float | None:
    return None if v is None else float(v)


def token_taken(token_id: str) -> ConfigError:
    return ConfigError(f"a token with id '{token_id}' exists already (fix: create another)")


def token_row(record: TokenRecord, salt: bytes, hash: bytes) -> tuple[Any, ...]:
    return (record.id, record.name, str(record.scope), salt, hash, record.created_at,
            record.expires_at, record.revoked_at, record.last_used_at)


class TokenQueries(SQLitePart):
    """Needs the store's ``conn``, ``path`` and ``_write`` (provided by ``SQLiteStore``)."""

    async def add_token(self, record: TokenRecord, salt: bytes, hash: bytes) -> None:
        row = token_row(record, salt, hash)

        def do(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(Q["token_add"], row)
            except sqlite3.IntegrityError:
                raise token_taken(record.id) from None

        self._write(do)

    async def token_secret(self, token_id: str) -> tuple[TokenRecord, bytes, bytes] | None:
        rows = self._token_rows(Q["token_secret"], (token_id,))
        if not rows:
            return None
        r = rows[0]
        return token_from_row(r), bytes(r[7]), bytes(r[8])

    async def list_tokens(self) -> list[TokenRecord]:
        return [token_from_row(r) for r in self._token_rows(Q["tokens_list"])]

    async def revoke_token(self, token_id: str, at: float) -> bool:
        def do(conn: sqlite3.Connection) -> int:
            return int(conn.execute(Q["token_revoke"], (at, token_id)).rowcount)

        return bool(self._write(do))

    async def count_usable_tokens(self, now: float) -> int:
        rows = self._token_rows(Q["tokens_usable"], (now,))
        return int(rows[0][0]) if rows else 0

    async def touch_token(self, token_id: str, at: float) -> None:
        def do(conn: sqlite3.Connection) -> None:
            conn.execute(Q["token_touch"], (at, token_id))

        self._write(do)

    def _token_rows(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self.conn.execute(query, params).fetchall()
        except sqlite3.OperationalError as exc:
            # Read-only (``podium token list``) a file of schema 9 or older, which nothing
            # has migrated yet: it has no tokens table, so it holds no token.
            if "no such table: api_tokens" in str(exc):
                return []
            raise store_error(exc, self.path) from None
        except sqlite3.Error as exc:
            raise store_error(exc, self.path) from None
