"""What a store must do, in two small protocols, and the batch it is given to write.

The engine states *what must be durable before what* (its ``Journal``); a store
only writes batches. ``RunStore.write_batch`` commits one ``Batch`` (events,
the rows they changed, new runs) in one transaction, or raises; a commit
whose outcome the store cannot know (a connection cut during COMMIT) raises
``CommitUnknown``, and ``batch_committed`` tells afterwards, from the store
itself, whether it landed, so a batch is never written twice. Everything in a
batch is a value taken when the batch was cut: no store ever reads the
engine's live records.

``RunStore`` holds runs, steps, events, leases and cancel requests;
``AlertStore`` alerts and the attempt history that failure summaries read.
A store that can commit without waiting (a local SQLite file) also offers
``write_batch_now``: the engine then commits on the spot instead of a loop
turn later (``SyncRunStore``).

Runs carry an ``owner``, a lease and an ``epoch`` so that several processes
(and, on PostgreSQL, several hosts) can share a database and take over the
runs of one that died: ``claim_run`` is a compare-and-swap.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

import orjson

from podium.errors import StoreError
from podium.events import Event
from podium.state import AlertRecord, AttemptOutcome, RunRecord

__all__ = [
    "AlertStore",
    "Batch",
    "CommitUnknown",
    "EventRow",
    "RunRow",
    "RunStore",
    "StepRow",
    "Store",
    "SyncRunStore",
    "encode_event",
]


class CommitUnknown(StoreError):
    """The commit was sent but its answer never came: it may or may not have landed."""


class StepRow(NamedTuple):
    """A step's row as a batch leaves it, in the order of the steps table's columns.

    ``output_json`` is None for "as stored": only a success carries its output, and
    nothing later (a compensation) may erase it. Errors are their JSON text.
    """

    run_id: str
    step_id: str
    status: str
    attempts: int
    agent_id: str | None
    output_json: str | None
    error_json: str | None
    started_at: float | None
    finished_at: float | None
    next_retry_at: float | None
    optional: bool
    completed_seq: int | None
    compensation_status: str | None
    compensation_attempts: int
    compensation_error_json: str | None


class RunRow(NamedTuple):
    """A run's row as a batch leaves it (all of it for a new run; the columns that
    events change for an existing one)."""

    run_id: str
    status: str
    output_json: str
    error_json: str | None
    started_at: float | None
    finished_at: float | None
    phase: str
    # Only read for a new run:
    workflow: str = ""
    version: int | str = 0
    definition: Any = None  # the workflow's snapshot (one object shared by its runs)
    input_json: str = "null"
    created_at: float = 0.0
    owner: str | None = None
    lease_expires_at: float | None = None
    agents_source: Any = None


# An event as stored: run id, number in its run, type, time, and its other fields as
# compact JSON (``encode_event``), the parameters of an insert in this order.
EventRow = tuple[str, int, str, float, str]

_EVENT_FIELDS: dict[type[Event], tuple[str, ...]] = {}
# Kept elsewhere: run_id and ts have their columns, a step's output is in its row.
_NOT_IN_DATA = frozenset({"run_id", "ts", "output", "output_json"})


def encode_event(e: Event) -> str:
    """Compact JSON of an event: only fields with a value, none that a column holds.

    Commit cost grows with the bytes written, and an event log row is written for
    every state change, so a few dozen bytes less per event shows per step.
    """
    names = _EVENT_FIELDS.get(type(e))
    if names is None:
        names = _EVENT_FIELDS[type(e)] = tuple(
            name for name in e.__struct_fields__ if name not in _NOT_IN_DATA)
    data = {}
    for name in names:
        value = getattr(e, name)
        if value is not None:
            data[name] = value
    return orjson.dumps(data).decode()


@dataclass(slots=True)
class Batch:
    """One transaction's worth: new runs, then events in order, then the rows they left.

    ``source`` holds the events in order and ``seqs`` each one's number in its
    run; ``last_seq`` is each run's last number in the batch (what
    ``batch_committed`` looks for). Events are encoded only when a store asks
    (``event_rows``): a store that keeps objects never pays for JSON.
    """

    new_runs: list[RunRow] = field(default_factory=list)
    source: list[Event] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    runs: list[RunRow] = field(default_factory=list)
    steps: list[StepRow] = field(default_factory=list)
    last_seq: dict[str, int] = field(default_factory=dict)
    # Runs whose row this batch ends (terminal status): stores may forget them after.
    finished: list[str] = field(default_factory=list)

    def event_rows(self) -> list[EventRow]:
        """The events as rows to insert: (run id, seq, type, ts, JSON)."""
        return [(e.run_id, seq, e.type, e.ts, encode_event(e))
                for e, seq in zip(self.source, self.seqs, strict=True)]


@runtime_checkable
class RunStore(Protocol):
    url: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def save_workflow(
        self, name: str, version: int | str, definition: dict[str, Any]
    ) -> None:
        """Keep a definition by name and version (idempotent for the same content)."""
        ...

    async def write_batch(self, batch: Batch) -> None:
        """Commit the batch in one transaction or raise (``CommitUnknown`` when the
        outcome could not be known); nothing of a failed batch stays written."""
        ...

    async def batch_committed(self, batch: Batch) -> bool:
        """Whether ``batch`` landed after ``CommitUnknown`` (read back from the store)."""
        ...

    async def last_seq(self, run_id: str) -> int:
        """The number of the run's last committed event (0: none)."""
        ...

    async def get_run(self, run_id: str) -> RunRecord:
        """The run with its steps; ``run_id`` may be a unique prefix. Raises ``RunNotFound``."""
        ...

    async def list_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """Newest first, without steps."""
        ...

    async def get_events(self, run_id: str) -> Sequence[Event]: ...

    async def request_cancel(self, run_id: str) -> bool:
        """Ask whoever runs ``run_id`` to cancel it; False if it is already finished."""
        ...

    async def cancel_requests(self, run_ids: Collection[str]) -> set[str]:
        """Which of these runs someone asked to cancel."""
        ...

    async def claim_run(self, run: RunRecord, owner: str, until: float, *,
                        recoveries: int, now: float) -> bool:
        """Take the run for ``owner`` if nobody claimed nor renewed it since ``run`` was read.

        A compare-and-swap on the run's epoch, owner and lease as ``run`` holds them:
        of two processes that both found its owner dead, exactly one wins. On success
        the epoch goes up by one, ``recoveries`` is stored (with ``now`` as the time of
        the takeover when it grew) and ``run`` is updated to match.
        """
        ...

    async def release_run(self, run_id: str, owner: str, *, force: bool = False) -> None:
        """Give up ownership of a run (``force``: whoever holds it)."""
        ...

    async def renew_leases(self, owner: str, run_ids: Collection[str], until: float) -> None: ...


@runtime_checkable
class SyncRunStore(RunStore, Protocol):
    def write_batch_now(self, batch: Batch) -> None:
        """``write_batch`` without a loop turn: a local commit of tens of microseconds."""
        ...


@runtime_checkable
class AlertStore(Protocol):
    async def save_alert(
        self, alert: AlertRecord, what: str, detail: str = "", ts: float | None = None
    ) -> None:
        """Upsert an alert and add ``what`` (fired, escalated, resolved...) to its history."""
        ...

    async def list_alerts(
        self, *, status: str | None = None, limit: int = 100
    ) -> list[AlertRecord]: ...

    async def get_alert(self, key: str) -> AlertRecord | None: ...

    async def ack_alert(self, key: str, by: str, now: float) -> bool:
        """Acknowledge a firing alert (stops its escalation); False if none is firing."""
        ...

    async def alert_history(self, key: str) -> list[dict[str, Any]]: ...

    async def attempt_outcomes(self, since: float) -> list[AttemptOutcome]:
        """Every attempt that finished at or after ``since`` (epoch seconds)."""
        ...


@runtime_checkable
class Store(RunStore, AlertStore, Protocol):
    """Both: what ``open_store`` gives (one database holds runs and alerts)."""
