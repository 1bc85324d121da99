"""SQLite queries for schedules (``podium schedule``), kept apart from run state.

A mixin of ``SQLiteStore``, as the alert queries are: the store's connection and
its short ``BEGIN IMMEDIATE`` write transactions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from podium.errors import ConfigError
from podium.store.base import ScheduleRecord, SlotRecord
from podium.store.queries import queries
from podium.store.rows import schedule_from_row, schedule_row

__all__ = ["ScheduleQueries"]

Q = queries("sqlite")


class ScheduleQueries:
    """Needs the store's ``conn`` and ``_write`` (provided by ``SQLiteStore``)."""

    @property
    def conn(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _write(self, fn: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

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
                conn.execute(Q["schedule_move"], (next_at, schedule_id, next_at))
            return added

        return bool(self._write(do))

    async def schedule_slots(self, schedule_id: str, limit: int = 20) -> list[SlotRecord]:
        rows = self.conn.execute(Q["slots_of"], (schedule_id, limit)).fetchall()
        return [SlotRecord(r[0], r[1], r[2], r[3]) for r in rows]

