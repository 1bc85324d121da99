"""SQLite queries for alerts and failure tracking, kept apart from run state.

A mixin of ``SQLiteStore``: it uses the store's connection and its short
``BEGIN IMMEDIATE`` write transactions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from podium.state import AlertRecord, AttemptOutcome

__all__ = ["AlertQueries"]


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


class AlertQueries:
    """Needs the store's ``conn`` and ``_write`` (provided by ``SQLiteStore``)."""

    @property
    def conn(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _write(self, fn: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    _ALERT_COLUMNS = (
        "key, rule, kind, severity, status, summary, labels, run_id, workflow,"
        " fired_at, resolved_at, acked_at, acked_by, level, last_notified_at"
    )

    async def save_alert(
        self, alert: AlertRecord, what: str, detail: str = "", ts: float | None = None
    ) -> None:
        a = alert
        now = ts if ts is not None else (a.last_notified_at or a.resolved_at or a.fired_at)

        def do(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO alerts ({self._ALERT_COLUMNS}, updated_at) VALUES"  # noqa: S608 - fixed column list
                " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
                " rule = excluded.rule, kind = excluded.kind, severity = excluded.severity,"
                " status = excluded.status, summary = excluded.summary, labels = excluded.labels,"
                " run_id = excluded.run_id, workflow = excluded.workflow,"
                " fired_at = excluded.fired_at, resolved_at = excluded.resolved_at,"
                # An ack made by another process (podium alerts ack) must not be lost.
                " acked_at = COALESCE(excluded.acked_at, CASE WHEN excluded.fired_at ="
                " alerts.fired_at THEN alerts.acked_at END),"
                " acked_by = COALESCE(excluded.acked_by, CASE WHEN excluded.fired_at ="
                " alerts.fired_at THEN alerts.acked_by END),"
                " level = excluded.level, last_notified_at = excluded.last_notified_at,"
                " updated_at = excluded.updated_at",
                (
                    a.key,
                    a.rule,
                    a.kind,
                    a.severity,
                    a.status,
                    a.summary,
                    _dumps(a.labels),
                    a.run_id,
                    a.workflow,
                    a.fired_at,
                    a.resolved_at,
                    a.acked_at,
                    a.acked_by,
                    a.level,
                    a.last_notified_at,
                    now,
                ),
            )
            conn.execute(
                "INSERT INTO alert_history (key, ts, what, detail) VALUES (?, ?, ?, ?)",
                (a.key, now, what, detail),
            )

        self._write(do)

    @staticmethod
    def _alert(row: Sequence[Any]) -> AlertRecord:
        return AlertRecord(
            key=row[0],
            rule=row[1],
            kind=row[2],
            severity=row[3],
            status=row[4],
            summary=row[5],
            labels=_loads(row[6]) or {},
            run_id=row[7],
            workflow=row[8],
            fired_at=row[9],
            resolved_at=row[10],
            acked_at=row[11],
            acked_by=row[12],
            level=row[13],
            last_notified_at=row[14],
        )

    async def list_alerts(
        self, *, status: str | None = None, limit: int = 100
    ) -> list[AlertRecord]:
        if status is None:
            rows = self.conn.execute(
                f"SELECT {self._ALERT_COLUMNS} FROM alerts ORDER BY fired_at DESC LIMIT ?",  # noqa: S608 - fixed column list
                (limit,),
            ).fetchall()
        else:
            rows = self.conn.execute(
                f"SELECT {self._ALERT_COLUMNS} FROM alerts WHERE status = ?"  # noqa: S608 - fixed column list
                " ORDER BY fired_at DESC LIMIT ?",
                (status, limit),
            ).fetchall()
        return [self._alert(r) for r in rows]

    async def get_alert(self, key: str) -> AlertRecord | None:
        row = self.conn.execute(
            f"SELECT {self._ALERT_COLUMNS} FROM alerts WHERE key = ?",  # noqa: S608 - fixed column list
            (key,),
        ).fetchone()
        return self._alert(row) if row else None

    async def ack_alert(self, key: str, by: str, now: float) -> bool:
        def do(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE alerts SET acked_at = ?, acked_by = ?, updated_at = ? WHERE key = ?"
                " AND status = 'firing' AND acked_at IS NULL",
                (now, by, now, key),
            )
            if cur.rowcount:
                conn.execute(
                    "INSERT INTO alert_history (key, ts, what, detail) VALUES (?, ?, 'acked', ?)",
                    (key, now, by),
                )
            return cur.rowcount

        return bool(self._write(do))

    async def alert_history(self, key: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT ts, what, detail FROM alert_history WHERE key = ? ORDER BY id", (key,)
        ).fetchall()
        return [{"key": key, "ts": r[0], "what": r[1], "detail": r[2]} for r in rows]

    async def attempt_outcomes(self, since: float) -> list[AttemptOutcome]:
        rows = self.conn.execute(
            "SELECT e.ts, e.run_id, r.workflow, e.type,"
            " json_extract(e.data, '$.step_id'), json_extract(e.data, '$.agent_id'),"
            " json_extract(e.data, '$.attempt'), json_extract(e.data, '$.error.type'),"
            " json_extract(e.data, '$.error.message')"
            " FROM runs r JOIN events e ON e.run_id = r.run_id"
            " WHERE (r.finished_at IS NULL OR r.finished_at >= ?) AND e.ts >= ?"
            " AND e.type IN ('step_succeeded', 'step_attempt_failed') ORDER BY e.ts",
            (since, since),
        ).fetchall()
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
