"""Rows as every SQL store reads them back: the same columns in the same order.

SQLite and PostgreSQL keep the same tables with the same columns (their schemas are
compared version by version), and JSON as the text the store wrote; so a row read
back becomes a record in one way, here, whichever database it came from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from podium.events import ErrorInfo, Event, StepSucceeded, event_from_dict
from podium.state import AlertRecord, RunRecord, StepRecord
from podium.store.base import ScheduleRecord

__all__ = [
    "DefinitionJson",
    "alert_from_row",
    "dumps",
    "error_of",
    "event_from_row",
    "events_from_rows",
    "loads",
    "run_from_row",
    "schedule_from_row",
    "schedule_row",
    "step_from_row",
    "traceparent_of",
]


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def error_of(text: str | None) -> ErrorInfo | None:
    return None if text is None else ErrorInfo.from_dict(orjson.loads(text))


def run_from_row(row: Sequence[Any]) -> RunRecord:
    """A run without its steps from: run_id, workflow, version, definition, input,
    status, output, error, created_at, started_at, finished_at, owner,
    lease_expires_at, cancel_requested, agents_source, phase, epoch, recoveries,
    recovered_at, queue."""
    return RunRecord(
        run_id=row[0],
        workflow=row[1],
        version=loads(row[2]),
        definition=loads(row[3]),
        input=loads(row[4]),
        status=row[5],
        output=loads(row[6]),
        error=error_of(row[7]),
        created_at=row[8],
        started_at=row[9],
        finished_at=row[10],
        owner=row[11],
        lease_expires_at=row[12],
        cancel_requested=bool(row[13]),
        agents_source=loads(row[14]) or {},
        phase=row[15],
        epoch=row[16],
        recoveries=row[17],
        recovered_at=row[18],
        queue=row[19],
    )


def step_from_row(s: Sequence[Any]) -> StepRecord:
    """A step from: step_id, status, attempts, agent_id, output, error, started_at,
    finished_at, next_retry_at, optional, completed_seq, compensation_status,
    compensation_attempts, compensation_error."""
    return StepRecord(
        step_id=s[0],
        status=s[1],
        attempts=s[2],
        agent_id=s[3],
        output=loads(s[4]),
        error=error_of(s[5]),
        started_at=s[6],
        finished_at=s[7],
        next_retry_at=s[8],
        optional=bool(s[9]),
        completed_seq=s[10],
        compensation_status=s[11],
        compensation_attempts=s[12],
        compensation_error=error_of(s[13]),
    )


def alert_from_row(row: Sequence[Any]) -> AlertRecord:
    return AlertRecord(
        key=row[0],
        rule=row[1],
        kind=row[2],
        severity=row[3],
        status=row[4],
        summary=row[5],
        labels=loads(row[6]) or {},
        run_id=row[7],
        workflow=row[8],
        fired_at=row[9],
        resolved_at=row[10],
        acked_at=row[11],
        acked_by=row[12],
        level=row[13],
        last_notified_at=row[14],
    )


def event_from_row(run_id: str, kind: str, ts: float, data: str | bytes) -> Event | None:
    """One event from its row; None for a type this Podium does not know (written by a
    newer one), as ``events_from_rows`` skips it."""
    found = events_from_rows(run_id, ((kind, ts, data),))
    return found[0] if found else None


def traceparent_of(data: str) -> str | None:
    """The ``traceparent`` of a run-level event's stored JSON (``trace_context``)."""
    found = orjson.loads(data).get("traceparent")
    return found if isinstance(found, str) else None


def events_from_rows(run_id: str, rows: Iterable[Sequence[Any]]) -> list[Event]:
    """A run's events from (type, ts, data) rows in order; a type this Podium does not
    know (written by a newer one) is skipped, not an error."""
    out = []
    for kind, ts, data in rows:
        d = orjson.loads(data)
        d["type"] = kind
        d.setdefault("run_id", run_id)
        d.setdefault("ts", ts)
        if kind == StepSucceeded.type:
            d.setdefault("output", None)
        try:
            out.append(event_from_dict(d))
        except (KeyError, TypeError):
            continue
    return out


class DefinitionJson:
    """The JSON of run definitions, encoded once per snapshot object.

    The engine gives every run of a workflow the same snapshot object, and a
    1,000-step definition is ~0.3 ms of JSON: a store writing many runs encodes it
    once, not once per run. A text over ``max_chars`` is not kept: a 100,000-step
    definition's is 6 MB for the whole of a run that takes seconds, and encoding it
    again for the next run takes ~10 ms.
    """

    def __init__(self, size: int = 64, max_chars: int = 1 << 20) -> None:
        self._size = size
        self._max_chars = max_chars
        self._seen: dict[int, tuple[Any, str]] = {}

    def __call__(self, definition: Any) -> str:
        hit = self._seen.get(id(definition))
        if hit is not None and hit[0] is definition:
            return hit[1]
        text = dumps(definition)
        if len(text) > self._max_chars:
            return text
        if len(self._seen) >= self._size:
            self._seen.clear()
        self._seen[id(definition)] = (definition, text)  # kept alive: its id stays its own
        return text


def schedule_row(s: ScheduleRecord) -> tuple[Any, ...]:
    """A schedule as the columns of its row, in the table's order."""
    return (s.id, s.workflow, dumps(s.definition), dumps(s.input), s.cron, s.every_s, s.tz,
            s.overlap, s.catch_up, s.paused, s.created_at, s.next_at, dumps(s.agents_source),
            s.queue)


def schedule_from_row(r: Sequence[Any]) -> ScheduleRecord:
    return ScheduleRecord(id=r[0], workflow=r[1], definition=loads(r[2]), input=loads(r[3]),
                          cron=r[4], every_s=r[5], tz=r[6], overlap=r[7], catch_up=int(r[8]),
                          paused=bool(r[9]), created_at=r[10], next_at=r[11],
                          agents_source=loads(r[12]) or {}, queue=r[13], last_run_id=r[14])
