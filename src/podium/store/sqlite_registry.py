"""SQLite queries of the workflow registry (``podium workflow register``).

A mixin of ``SQLiteStore``, as the schedule queries are: the store's connection and
its short ``BEGIN IMMEDIATE`` write transactions (one registration at a time per file,
so the insert and the digest read back see the same row).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from podium.store.base import RegisteredWorkflow, WorkflowVersion
from podium.store.queries import queries
from podium.store.registry import prepare_registration, version_taken
from podium.store.rows import loads
from podium.store.sqlite_db import SQLitePart, store_error

__all__ = ["RegistryQueries", "registered_from_row"]

Q = queries("sqlite")


def registered_from_row(r: Sequence[Any]) -> RegisteredWorkflow:
    return RegisteredWorkflow(name=r[0], version=r[1], digest=r[2],
                              registered_at=float(r[3]), definition=loads(r[4]))


class RegistryQueries(SQLitePart):
    """Needs the store's ``conn`` and ``_write`` (provided by ``SQLiteStore``)."""

    async def register_workflow(self, name: str, version: int | str,
                                definition: dict[str, Any]) -> tuple[RegisteredWorkflow, bool]:
        reg = prepare_registration(name, version, definition)

        def do(conn: sqlite3.Connection) -> tuple[Any, bool]:
            added = conn.execute(Q["registered_add"], (*reg, time.time())).rowcount
            return conn.execute(Q["registered_get"], (name, reg.version)).fetchone(), added > 0

        row, added = self._write(do)
        if row[2] != reg.digest:
            raise version_taken(name, reg.version)
        return registered_from_row(row), added

    async def registered_workflow(self, name: str,
                                  version: int | str | None = None) -> RegisteredWorkflow | None:
        if version is None:
            rows = self._read(Q["registered_newest"], (name,))
        else:
            rows = self._read(Q["registered_get"], (name, str(version)))
        return registered_from_row(rows[0]) if rows else None

    async def registered_workflows(self) -> list[WorkflowVersion]:
        return [WorkflowVersion(r[0], r[1], r[2], float(r[3]))
                for r in self._read(Q["registered_list"])]

    def _read(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self.conn.execute(query, params).fetchall()
        except sqlite3.OperationalError as exc:
            # Read-only (``podium validate``) a file of schema 8 or older, which nothing
            # has migrated yet: it has no registry, so nothing is registered in it.
            if "no such table: registered_workflows" in str(exc):
                return []
            raise store_error(exc, self.path) from None
        except sqlite3.Error as exc:
            raise store_error(exc, self.path) from None
