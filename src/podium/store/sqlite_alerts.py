"""SQLite queries for alerts and failure tracking, kept apart from run state.

A mixin of ``SQLiteStore``: it uses the store's connection and its short
``BEGIN IMMEDIATE`` write transactions.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from podium.state import AlertRecord, AttemptOutcome
from podium.store.queries import queries
from podium.store.rows import alert_from_row, dumps
from podium.store.sqlite_db import SQLitePart

__all__ = ["AlertQueries"]

Q = queries("sqlite")


class AlertQueries(SQLitePart):
    """Needs the store's ``conn`` and ``_write`` (provided by ``SQLiteStore``)."""

    async def save_alert(
        self, alert: AlertRecord, what: str, detail: str = "", ts: float | None = None
    ) -> None:
        a = alert
        now = ts if ts is not None else (a.last_notified_at or a.resolved_at or a.fired_at)
        row = (a.key, a.rule, a.kind, a.severity, a.status, a.summary, dumps(a.labels),
               a.run_id, a.workflow, a.fired_at, a.resolved_at, a.acked_at, a.acked_by, a.level,
               a.last_notified_at, now)

        def do(conn: sqlite3.Connection) -> None:
            conn.execute(Q["alert_upsert"], row)
            conn.execute(Q["alert_history_add"], (a.key, now, what, detail))

        self._write(do)

    async def list_alerts(
        self, *, status: str | None = None, limit: int = 100
    ) -> list[AlertRecord]:
        rows = self.conn.execute(Q["alerts_list"], (status, limit)).fetchall()
        return [alert_from_row(r) for r in rows]

    async def get_alert(self, key: str) -> AlertRecord | None:
        row = self.conn.execute(Q["alert_get"], (key,)).fetchone()
        return alert_from_row(row) if row else None

    async def ack_alert(self, key: str, by: str, now: float) -> bool:
        def do(conn: sqlite3.Connection) -> int:
            cur = conn.execute(Q["alert_ack"], (now, by, now, key))
            if cur.rowcount:
                conn.execute(Q["alert_history_add"], (key, now, "acked", by))
            return cur.rowcount

        return bool(self._write(do))

    async def alert_history(self, key: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(Q["alert_history_of"], (key,)).fetchall()
        return [{"key": key, "ts": r[0], "what": r[1], "detail": r[2]} for r in rows]

    async def attempt_outcomes(self, since: float) -> list[AttemptOutcome]:
        rows = self.conn.execute(Q["attempt_outcomes"], (since,)).fetchall()
        return [
            AttemptOutcome(
                ts=r[0],
                run_id=r[1],
                workflow=r[2],
                step_id=r[4],
                agent_id=r[5],
                attempt=int(r[6] or 0),
                ok=r[3] == "step_succeeded",
                error_type=r[7],
                message=r[8],
            )
            for r in rows
        ]
