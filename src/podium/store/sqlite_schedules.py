"""SQLite queries for schedules (``podium schedule``), kept apart from run state.

A mixin of ``SQLiteStore``, as the alert queries are: the store's connection and
its short ``BEGIN IMMEDIATE`` write transactions.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from podium.errors import ConfigError
from podium.store.base import ScheduleRecord, Signal, SlotRecord
from podium.store.queries import queries
from podium.store.rows import dumps, loads, schedule_from_row, schedule_row
from podium.store.sqlite_db import SQLitePart

__all__ = ["ScheduleQueries"]

Q = queries("sqlite")


class ScheduleQueries(SQLitePart):
    """Needs the store's ``conn`` and ``_write`` (provided by ``SQLiteStore``)."""

    async def add_schedule(self, schedule: ScheduleRecord) -> None:
        row = schedule_row(schedule)

        def do(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(Q["schedule_add"], row)
            except sqlite3.IntegrityError:
                raise ConfigError(f"a schedule '{schedule.id}' exists already (fix: --name"
                                  " another, or `podium schedule delete` it)") from None

        self._write(do)

    async def list_schedules(self) -> list[ScheduleRecord]:
        return [schedule_from_row(r) for r in self.conn.execute(Q["schedules_list"])]

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord:
        row = self.conn.execute(Q["schedule_get"], (schedule_id,)).fetchone()
        if row is None:
            known = [r[0] for r in self.conn.execute("SELECT id FROM schedules ORDER BY id")]
            raise ConfigError(f"no schedule '{schedule_id}' (fix: one of: "
                              f"{', '.join(known) or 'none yet'}; see `podium schedule list`)")
        return schedule_from_row(row)

    async def set_schedule_paused(self, schedule_id: str, paused: bool,
                                  next_at: float | None = None) -> bool:
        def do(conn: sqlite3.Connection) -> int:
            return conn.execute(Q["schedule_pause"], (int(paused), next_at,
                                                      schedule_id)).rowcount

        return bool(self._write(do))

    async def delete_schedule(self, schedule_id: str) -> bool:
        def do(conn: sqlite3.Connection) -> int:
            conn.execute(Q["schedule_slots_delete"], (schedule_id,))
            return conn.execute(Q["schedule_delete"], (schedule_id,)).rowcount

        return bool(self._write(do))

    async def record_slot(self, schedule_id: str, slot: SlotRecord, next_at: float) -> bool:
        def do(conn: sqlite3.Connection) -> int:
            added = conn.execute(Q["slot_add"], (schedule_id, slot.slot, slot.status,
                                                 slot.run_id, slot.at)).rowcount
            if added:
                conn.execute(Q["schedule_move"], (next_at, next_at, slot.run_id, schedule_id))
            return added

        return bool(self._write(do))

    async def schedule_slots(self, schedule_id: str, limit: int = 20) -> list[SlotRecord]:
        rows = self.conn.execute(Q["slots_of"], (schedule_id, limit)).fetchall()
        return [SlotRecord(r[0], r[1], r[2], r[3]) for r in rows]

    # --- waits (kept here with the schedules: what fires and wakes) -------------
    async def send_signal(self, run_id: str, name: str, data: Any, at: float) -> bool:
        text = dumps(data)
        return bool(self._write(
            lambda conn: conn.execute(Q["signal_add"], (run_id, name, text, at)).rowcount))

    async def get_signal(self, run_id: str, name: str) -> Signal | None:
        row = self.conn.execute(Q["signal_get"], (run_id, name)).fetchone()
        return None if row is None else Signal(name, loads(row[0]), row[1])

    async def set_wake(self, run_id: str, wake_at: float | None) -> None:
        if wake_at is None:
            self._write(lambda conn: conn.execute(Q["wake_clear"], (run_id,)))
        else:
            self._write(lambda conn: conn.execute(Q["wake_set"], (run_id, wake_at)))

    async def wake_run(self, run_id: str) -> bool:
        def do(conn: sqlite3.Connection) -> int:
            woken = conn.execute(Q["run_wake"], (run_id,)).rowcount
            if woken:
                conn.execute(Q["wake_clear"], (run_id,))
            return woken

        return bool(self._write(do))

    async def wakes_due(self, now: float, limit: int = 100) -> list[str]:
        return [r[0] for r in self.conn.execute(Q["wakes_due"], (now, limit))]
