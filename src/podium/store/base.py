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
runs of one that died: ``claim_run`` is a compare-and-swap on the epoch, and a
batch is *fenced*: the runs it writes must still be its owner's at the epoch
the journal holds, or their part of the batch is dropped (never the whole
batch) and ``write_batch`` names them, so their executions stop. Leases are
measured on the store's clock (``now``): the database server's for
PostgreSQL, so clock skew between hosts moves no lease.

``WorkflowRegistry`` keeps workflows registered by name and version (``podium
workflow register``) for steps that call them by name; a version, once there, never
changes.

``TokenStore`` keeps the API tokens of ``podium serve`` (``podium token``): each
token's record and a slow hash of its secret with the hash's salt, never the secret;
``podium.auth`` makes and checks them.

A store that many workers share (PostgreSQL) also offers ``WorkerStore``:
worker rows whose heartbeat is the lease of every run they hold, and a claim
of many runs in one statement.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple, Protocol, runtime_checkable

import orjson

from podium.errors import ConfigError, StoreError
from podium.events import Event
from podium.state import TERMINAL_RUN_STATUSES, AlertRecord, AttemptOutcome, RunRecord

__all__ = [
    "FEED_POSITION_STALE_S",
    "NO_RUNS",
    "PRUNE_BATCH_RUNS",
    "AgentDirectory",
    "AlertStore",
    "Batch",
    "CommitUnknown",
    "EventFeed",
    "EventRow",
    "FeedPosition",
    "JoinLimits",
    "JoinedAgent",
    "RegisteredWorkflow",
    "RunPruner",
    "RunRow",
    "RunStore",
    "ScheduleRecord",
    "ScheduleStore",
    "Scope",
    "Signal",
    "SlotRecord",
    "StepRow",
    "Store",
    "SyncRunStore",
    "TokenRecord",
    "TokenStore",
    "WaitStore",
    "WorkerInfo",
    "WorkerStore",
    "WorkflowRegistry",
    "WorkflowVersion",
    "encode_event",
    "event_rows",
    "prune_statuses",
    "workflow_digest",
]

NO_RUNS: frozenset[str] = frozenset()  # what write_batch returns when no run was lost


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
    queue: str = "default"
    # What executing it needs: capability names, and agent ids as "@id" (a worker
    # claims only runs whose needs its registry meets).
    needs: tuple[str, ...] = ()


# An event as stored: run id, number in its run, type, time, and its other fields as
# compact JSON (``encode_event``), the parameters of an insert in this order.
EventRow = tuple[str, int, str, float, str]

# Kept elsewhere: run_id and ts have their columns, a step's output is in its row.
_NOT_IN_DATA = frozenset({"run_id", "ts", "output", "output_json"})
# Per event type, its encoder (made on first use, see ``_encoder``).
_ENCODERS: dict[type[Event], Callable[[Event], str]] = {}
# Events of a type encoded by the plain loop before its straight-line code is made.
_GENERATE_AFTER = 64


def _encoder(cls: type[Event]) -> Callable[[Event], str]:
    """The encoder of one event type: at first a loop over its field names, then,
    from its ``_GENERATE_AFTER``-th event, straight-line code reading each field once.

    Generated, as dataclasses and namedtuple make their methods: the loop with
    ``getattr`` cost about a fifth more per event, and three events are encoded for
    every step of a chain. Compiling that code costs ~0.1 ms per type, though: a
    short run met seven types at its first commits (0.7 ms of a 5-step run in a
    fresh process), so the loop encodes a type's first events. Both write the same.
    """
    names = tuple(name for name in cls.__struct_fields__ if name not in _NOT_IN_DATA)
    for name in names:
        if not name.isidentifier():  # (field names are identifiers; never trust, check)
            raise ValueError(f"event field {name!r} of {cls.__name__}")
    dumps = orjson.dumps
    left = _GENERATE_AFTER

    def encode(e: Event) -> str:
        nonlocal left
        left -= 1
        if left == 0:
            _ENCODERS[cls] = _generated(names)
        data = {}
        for name in names:
            v = getattr(e, name)
            if v is not None:
                data[name] = v
        return dumps(data).decode()

    _ENCODERS[cls] = encode
    return encode


def _generated(names: tuple[str, ...]) -> Callable[[Event], str]:
    lines = ["def encode(e):", "    data = {}"]
    for name in names:
        lines += [f"    v = e.{name}", "    if v is not None:", f"        data[{name!r}] = v"]
    lines.append("    return dumps(data).decode()")
    scope: dict[str, Any] = {"dumps": orjson.dumps}
    exec("\n".join(lines), scope)  # noqa: S102 - built from the type's own field names
    encode: Callable[[Event], str] = scope["encode"]
    return encode


def encode_event(e: Event) -> str:
    """Compact JSON of an event: only fields with a value, none that a column holds.

    Commit cost grows with the bytes written, and an event log row is written for
    every state change, so a few dozen bytes less per event shows per step.
    """
    encode = _ENCODERS.get(type(e))
    if encode is None:
        encode = _encoder(type(e))
    return encode(e)


def event_rows(source: Sequence[Event], seqs: Sequence[int]) -> list[EventRow]:
    """The events as rows to insert: (run id, seq, type, ts, JSON), ``encode_event``
    inlined (a call less per event)."""
    if len(source) != len(seqs):  # (not zip's strict=True: a keyword call costs more)
        raise ValueError(f"{len(source)} events but {len(seqs)} event numbers")
    encoders = _ENCODERS
    return [(e.run_id, seq, e.type, e.ts, (encoders.get(type(e)) or _encoder(type(e)))(e))
            for e, seq in zip(source, seqs)]  # noqa: B905 - lengths checked above


@dataclass(slots=True)
class Batch:
    """One transaction's worth: new runs, then events in order, then the rows they left.

    ``source`` holds the events in order and ``seqs`` each one's number in its
    run; ``last_seq`` is each run's last number in the batch (what
    ``batch_committed`` looks for). Events are encoded only when a store asks
    (``event_rows``): a store that keeps objects never pays for JSON.

    Fencing: ``epochs`` holds, for each run of the batch that is not new, the epoch
    its writer claimed it at, and ``owner`` the writer. ``fence`` says the writer's
    lease may have lapsed (it could not renew it in time): a store that checks
    ownership only when asked (SQLite, one host, where leases are renewed on time or
    the writer fences itself) checks then; PostgreSQL checks every batch.
    """

    new_runs: list[RunRow] = field(default_factory=list)
    source: list[Event] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    runs: list[RunRow] = field(default_factory=list)
    steps: list[StepRow] = field(default_factory=list)
    last_seq: dict[str, int] = field(default_factory=dict)
    # Runs whose row this batch ends (terminal status): stores may forget them after.
    finished: list[str] = field(default_factory=list)
    owner: str | None = None
    epochs: dict[str, int] = field(default_factory=dict)
    fence: bool = False

    def without(self, lost: Collection[str]) -> Batch:
        """The batch minus everything of the runs in ``lost`` (fenced off)."""
        keep = [i for i, e in enumerate(self.source) if e.run_id not in lost]
        return Batch(
            [r for r in self.new_runs if r.run_id not in lost],
            [self.source[i] for i in keep], [self.seqs[i] for i in keep],
            [r for r in self.runs if r.run_id not in lost],
            [s for s in self.steps if s.run_id not in lost],
            {k: v for k, v in self.last_seq.items() if k not in lost},
            [r for r in self.finished if r not in lost], self.owner,
            {k: v for k, v in self.epochs.items() if k not in lost}, self.fence)

    def event_rows(self) -> list[EventRow]:
        """The events as rows to insert: (run id, seq, type, ts, JSON)."""
        return event_rows(self.source, self.seqs)


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

    async def now(self) -> float:
        """The store's clock (epoch seconds), on which every lease is measured: the
        database server's for PostgreSQL; the host's wall clock for a local file."""
        ...

    async def write_batch(self, batch: Batch) -> frozenset[str]:
        """Commit the batch in one transaction or raise (``CommitUnknown`` when the
        outcome could not be known); nothing of a failed batch stays written.

        Returns the runs the batch was fenced off from (``NO_RUNS`` mostly): runs of
        ``batch.epochs`` that are no longer ``batch.owner``'s at that epoch, found
        under a lock on their rows (always on PostgreSQL; with ``batch.fence`` at
        least), and new runs (``batch.new_runs``) whose id the store holds already
        (another process started a run of that id first). Nothing of theirs was
        written; the rest of the batch was: one taken id fails no other run.
        """
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
        before: tuple[float, str] | None = None,
    ) -> list[RunRecord]:
        """Newest first (by creation, then id), without steps; ``before``: only runs
        older than this ``(created_at, run_id)``, the cursor of the page before."""
        ...

    async def get_events(self, run_id: str) -> Sequence[Event]: ...

    async def trace_context(self, run_id: str) -> str | None:
        """The W3C trace context a run's executions are children of: the first one its
        ``RunSubmitted``, ``RunStarted`` or ``RunTraced`` events recorded (None: never
        traced). ``run_id`` is exact. A process resuming the run has nothing else to
        keep it in one trace with."""
        ...

    async def request_cancel(self, run_id: str) -> bool:
        """Ask whoever runs ``run_id`` to cancel it; False if it is already finished."""
        ...

    async def cancel_requests(self, run_ids: Collection[str]) -> set[str]:
        """Which of these runs someone asked to cancel."""
        ...

    async def claim_run(self, run: RunRecord, owner: str, *, lease_s: float,
                        recoveries: int, owner_dead: bool = False) -> bool:
        """Take the run for ``owner``: a compare-and-swap on the epoch ``run`` was read at.

        It wins only if nobody claimed the run since, and the run is free: no owner,
        ``owner`` itself, an owner the caller knows is dead (``owner_dead``: its
        process is gone from this host), or a lease expired by the store's clock.
        Of two processes that both found the owner dead, exactly one wins. On
        success the epoch goes up by one, the lease runs ``lease_s`` from the store's
        now, ``recoveries`` is stored (with the store's now as ``recovered_at`` when
        it grew), ``cancel_requested`` is kept, and ``run`` is updated to match.
        """
        ...

    async def release_run(self, run_id: str, owner: str, *, force: bool = False) -> None:
        """Give up ownership of a run (``force``: whoever holds it)."""
        ...

    async def renew_leases(self, owner: str, run_ids: Collection[str],
                           lease_s: float) -> set[str]:
        """Extend ``owner``'s leases of these runs to ``lease_s`` from the store's now;
        return those of them it no longer holds (taken over, released, gone): their
        executions must stop."""
        ...


@runtime_checkable
class SyncRunStore(RunStore, Protocol):
    def write_batch_now(self, batch: Batch) -> frozenset[str]:
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


@dataclass(slots=True)
class ScheduleRecord:
    """A schedule (``podium schedule add``): a workflow, its input, when it fires."""

    id: str
    workflow: str
    definition: dict[str, Any]
    input: Any
    cron: str | None = None  # five cron fields, in ``tz``; or every_s
    every_s: float | None = None
    tz: str = "UTC"
    overlap: str = "skip"  # skip | queue | allow: a slot while the last run still goes
    catch_up: int = 1  # missed slots (downtime) fired late; the rest recorded missed
    paused: bool = False
    created_at: float = 0.0
    next_at: float = 0.0  # the next slot, epoch seconds (the store's clock)
    agents_source: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    last_run_id: str | None = None  # the run of the last slot fired (overlap looks at it)


@dataclass(frozen=True, slots=True)
class SlotRecord:
    """What became of one slot of a schedule."""

    slot: float
    status: str  # fired | skipped | missed
    run_id: str | None
    at: float


class ScheduleStore(Protocol):
    async def add_schedule(self, schedule: ScheduleRecord) -> None:
        """Keep a new schedule; ``ConfigError`` if its id is taken."""
        ...

    async def list_schedules(self) -> list[ScheduleRecord]: ...

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord:
        """``ConfigError`` naming the known ones if there is none by that id."""
        ...

    async def set_schedule_paused(self, schedule_id: str, paused: bool,
                                  next_at: float | None = None) -> bool:
        """Pause or resume (from ``next_at``, when given); False if there is none."""
        ...

    async def delete_schedule(self, schedule_id: str) -> bool: ...

    async def record_slot(self, schedule_id: str, slot: SlotRecord, next_at: float) -> bool:
        """Record what became of ``slot`` and move the schedule on to ``next_at``, in one
        transaction; False (and nothing changed) if that slot was recorded already."""
        ...

    async def schedule_slots(self, schedule_id: str, limit: int = 20) -> list[SlotRecord]:
        """The latest slots, newest first."""
        ...


@dataclass(frozen=True, slots=True)
class Signal:
    """A signal delivered to a run (``podium signal``, ``podium approve``)."""

    name: str
    data: Any
    at: float


class WaitStore(Protocol):
    async def send_signal(self, run_id: str, name: str, data: Any, at: float) -> bool:
        """Keep the signal for the run; False (nothing changed) if it was sent before."""
        ...

    async def get_signal(self, run_id: str, name: str) -> Signal | None: ...

    async def set_wake(self, run_id: str, wake_at: float | None) -> None:
        """When a waiting run's timer is due (None: it has none)."""
        ...

    async def wake_run(self, run_id: str) -> bool:
        """A waiting run made pending again, owned by nobody, its timer cleared; False if
        it was not waiting."""
        ...

    async def wakes_due(self, now: float, limit: int = 100) -> list[str]:
        """Waiting runs whose timer is due at ``now`` (the store's clock)."""
        ...


def workflow_digest(definition: dict[str, Any]) -> str:
    """sha256 of the definition's canonical JSON (keys sorted, no spaces): what tells
    the same content registered again from other content under the same version."""
    return hashlib.sha256(orjson.dumps(definition, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True, slots=True)
class WorkflowVersion:
    """One registered version of a workflow, without its definition (listings)."""

    name: str
    version: str  # the string form of the file's ``version:``
    digest: str
    registered_at: float  # the store's clock


@dataclass(frozen=True, slots=True)
class RegisteredWorkflow:
    """A registered version with its definition (``Workflow.to_dict()``, sub-workflows
    embedded)."""

    name: str
    version: str
    digest: str
    registered_at: float
    definition: dict[str, Any]


class WorkflowRegistry(Protocol):
    async def register_workflow(self, name: str, version: int | str,
                                definition: dict[str, Any]) -> tuple[RegisteredWorkflow, bool]:
        """Keep ``definition`` as ``name`` at ``version``: (what is registered, True) if
        it is new; (what was there, False) if that version holds the same content
        already; ``VersionTaken`` if it holds other content. Two registrations at once
        leave one row: the other finds it."""
        ...

    async def registered_workflow(self, name: str,
                                  version: int | str | None = None) -> RegisteredWorkflow | None:
        """That version (None: the most recently registered one), or None."""
        ...

    async def registered_workflows(self) -> list[WorkflowVersion]:
        """Every registered version: by name, each name's newest first."""
        ...


class Scope(StrEnum):
    """What an API token may do (``podium.auth.allows`` orders them)."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"
    AGENT = "agent"  # only what an agent needs to register itself


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An API token as stored and listed: never its secret (times: epoch seconds)."""

    id: str
    name: str
    scope: Scope
    created_at: float
    expires_at: float | None  # None: never
    revoked_at: float | None = None
    last_used_at: float | None = None  # coarse: written at most once a minute


class TokenStore(Protocol):
    async def add_token(self, record: TokenRecord, salt: bytes,
                        hash: bytes) -> None:
        """Keep a new token: its record, its hash's salt and the hash of its secret;
        ``ConfigError`` if its id is taken."""
        ...

    async def token_secret(self, token_id: str) -> tuple[TokenRecord, bytes, bytes] | None:
        """The token's record, salt and hash (revoked and expired ones too), or None."""
        ...

    async def list_tokens(self) -> list[TokenRecord]:
        """Every token, revoked and expired ones too, oldest first."""
        ...

    async def revoke_token(self, token_id: str, at: float) -> bool:
        """Revoke it from ``at`` on; False (nothing changed) if it is unknown or revoked."""
        ...

    async def count_usable_tokens(self, now: float) -> int:
        """Tokens neither revoked nor expired at ``now``."""
        ...

    async def touch_token(self, token_id: str, at: float) -> None:
        """Note that the token was used at ``at`` (its ``last_used_at``; a later time
        is never replaced by an earlier one)."""
        ...


@dataclass(frozen=True, slots=True)
class FeedPosition:
    """A place in the feed of every committed event of a shared database, in commit
    order (``EventFeed.read_feed``, ``WorkerStore.feed``). Opaque to its readers, but
    kept across processes: a new alert leader carries on from where the last one got
    to, a client reconnects with it as ``Last-Event-ID``."""

    tx: int = 0
    run_id: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class JoinedAgent:
    """An agent that joined through the API (``POST /agents``): its agents-file entry
    (``spec``, HTTP or A2A), live until ``expires_at`` (the store's clock)."""

    id: str
    spec: dict[str, Any]
    registered_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class JoinLimits:
    """How many agents may be joined (live) at once: per token, and in the whole
    database (every token, admin ones included).

    Every process that executes runs registers each live registration, health-checks
    it every few seconds and keeps an HTTP client (a socket) for it, so the fleet one
    token can add is bounded. The total stays well under a process's usual 1024 open
    files (``ulimit -n``), with room for the database, clients and the agents file.
    """

    per_token: int = 64
    total: int = 256

    def __post_init__(self) -> None:
        if self.per_token < 1 or self.total < 1:
            raise ValueError(f"join limits must be at least 1: {self}")


@runtime_checkable
class AgentDirectory(Protocol):
    """Agents that joined through the API, shared by every process on the database:
    each row lives while its heartbeats come (the store's clock), and only the token
    that registered it renews or removes it while it lives."""

    async def join_agent(self, agent_id: str, spec: dict[str, Any], token_id: str,
                         ttl_s: float, limits: JoinLimits | None = None
                         ) -> tuple[JoinedAgent, bool]:
        """Add the agent, or renew (and update) the token's own registration: the row
        and whether it is new. Raises ``AgentTaken`` while another token's is live; an
        expired one of any token is replaced.

        A new registration (not the token's own live one renewed) is refused with
        ``TooManyAgents`` while the token holds ``limits.per_token`` live ones or the
        database ``limits.total`` (None: ``JoinLimits()``'s defaults); counted and
        written in one transaction, so joins at once (from any process) never
        overshoot. Expired rows never count, and a join removes them."""
        ...

    async def agent_heartbeat(self, agent_id: str, token_id: str, ttl_s: float
                              ) -> float | None:
        """Renew the token's live registration: its new expiry, None when there is none
        (expired, removed or another token's: the agent registers again)."""
        ...

    async def leave_agent(self, agent_id: str, token_id: str | None) -> bool:
        """Remove the registration (of that token; ``None``: whoever's, for an admin)."""
        ...

    async def joined_agents(self) -> list[JoinedAgent]:
        """Every live registration, by id (an expired row stays until the next join,
        of any id, removes it)."""
        ...


@runtime_checkable
class EventFeed(Protocol):
    """Every committed event of the database in commit order, for readers that follow
    all runs at once (``GET /events``, ``podium runs --watch``), from any process.

    Positions are kept by the reader (a client's ``Last-Event-ID``); nothing is saved.
    An event appears only once its transaction has ended and never behind a position
    already read, so a reader that moves on misses nothing.
    """

    async def read_feed(self, after: FeedPosition, *, limit: int = 500
                        ) -> tuple[list[tuple[FeedPosition, Event]], FeedPosition]:
        """Up to ``limit`` events after ``after``, each with its own position, and the
        position to read on from: past what was looked at, even when all of it was of
        types this Podium does not know (a newer one's), which are left out."""
        ...

    async def feed_head(self) -> FeedPosition:
        """The position after the last event committed so far."""
        ...


# A feed reader's saved position older than this is never read on from: a new alert
# leader starts at the head instead (``AlertLeader``'s ``stale_s``). Prune keeps the
# events a fresher saved position has not reached yet.
FEED_POSITION_STALE_S = 600.0
# Runs (top-level ones; their child runs go with them) deleted per transaction by
# ``prune_runs``: a SQLite file has one writer, and a batch of 1,000 runs with their
# steps and events commits in tens of milliseconds, so the engines writing beside a
# big prune wait no longer than that for the lock.
PRUNE_BATCH_RUNS = 1000


@runtime_checkable
class RunPruner(Protocol):
    """Retention: deleting runs that ended long ago, with everything of theirs."""

    async def prune_runs(self, finished_before: float, *,
                         statuses: Collection[str] | None = None,
                         workflow: str | None = None, dry_run: bool = False,
                         batch_runs: int = PRUNE_BATCH_RUNS) -> int:
        """Delete the runs that ended before ``finished_before`` (the store's clock,
        epoch seconds) and return how many went, child runs counted.

        Only top-level runs are picked (optionally only ``statuses``, all of them
        terminal, and one ``workflow``); a run goes only if its status is terminal and
        no process holds it (no owner, or the owner's lease expired by the store's
        clock, as ``claim_run`` counts a run free: the process that ended a run keeps
        its owner until that lease runs out, one that claimed it to resume or roll it
        back holds a live one), with all its child runs (``RUN.step...``), and only
        if every one of those is terminal and not held too: a tree with one live
        child waits, whole. With a run go its steps, events, signals, timer and feed entries.
        ``batch_runs`` top-level runs per transaction, so a big prune never holds the
        write lock long. ``dry_run``: count what would go, delete nothing.
        On PostgreSQL, runs with events that a feed reader's fresh saved position
        (``FEED_POSITION_STALE_S``) has not read yet are kept for now."""
        ...


def prune_statuses(statuses: Collection[str] | None) -> list[str]:
    """The statuses ``prune_runs`` may delete, sorted: every terminal one when None;
    ``ConfigError`` for a status that is not terminal (a live run is never pruned)."""
    if statuses is None:
        return sorted(TERMINAL_RUN_STATUSES)
    wrong = sorted(set(statuses) - TERMINAL_RUN_STATUSES)
    if wrong:
        raise ConfigError(f"cannot prune runs that are {', '.join(wrong)}: only ended runs go"
                          f" (fix: use {', '.join(sorted(TERMINAL_RUN_STATUSES))})")
    return sorted(set(statuses))


@runtime_checkable
class Store(RunStore, AlertStore, ScheduleStore, WaitStore, WorkflowRegistry, TokenStore,
            EventFeed, AgentDirectory, RunPruner, Protocol):
    """What ``open_store`` gives: one database holds runs, alerts, schedules, the
    signals of waiting runs, the registered workflows, the API tokens and the agents
    that joined through the API, and reads back every run's events in commit order."""


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A process that executes runs of a shared database (``podium worker``, and any
    engine owning runs there). Times are the store's clock."""

    id: str
    host: str
    pid: int
    lease_s: float
    concurrency: int = 1
    queues: tuple[str, ...] = ("default",)
    capabilities: tuple[str, ...] = ()
    # Liveness by pid is a same-host fast path only when both match this process's.
    boot_id: str | None = None
    pid_ns: str | None = None
    # Filled in by the store when read:
    started: float = 0.0
    heartbeat: float = 0.0
    stopping: bool = False
    runs_held: int = 0
    roles: tuple[str, ...] = ()  # the roles it leads (``lead``): "alerts"


@runtime_checkable
class WorkerStore(Protocol):
    """What many workers on one database need beyond ``RunStore`` (PostgreSQL).

    A worker's heartbeat row is the lease of every run it holds: ``renew_leases``
    with the worker's id as owner renews it with one small write.
    """

    async def register_worker(self, info: WorkerInfo) -> None:
        """Add the worker's row, its heartbeat now. Raises ``WorkerNameTaken`` when a
        live worker has this id; the row of a dead one with this id is taken over."""
        ...

    async def set_stopping(self, worker_id: str) -> None:
        """Graceful shutdown under way: shown by ``list_workers``."""
        ...

    async def unregister_worker(self, worker_id: str) -> None:
        """Hand back every run the worker still holds and delete its row."""
        ...

    async def list_workers(self) -> list[WorkerInfo]: ...

    async def claim_runs(self, worker_id: str, *, queues: Sequence[str],
                         capabilities: Collection[str], limit: int,
                         takeovers_only: bool = False) -> list[RunRecord]:
        """Claim up to ``limit`` runs in one statement, oldest first, none that another
        claimer holds locked (``FOR UPDATE SKIP LOCKED``): pending runs nobody owns
        (not with ``takeovers_only``), and live runs whose owner's lease expired by the
        store's clock once their poison backoff has passed (1 s, 2 s, 4 s... after the
        last takeover, at most 60 s); only runs of ``queues`` whose needs are all in
        ``capabilities``.

        Each claim bumps the epoch; a takeover from an owner also counts a recovery
        (``recovered_at`` the store's now). Returns the runs as claimed, with their
        steps, ``cancel_requested`` kept.
        """
        ...

    async def release_runs(self, worker_id: str, run_ids: Collection[str]) -> None:
        """Hand runs back (owner cleared) for another worker to claim at once."""
        ...

    async def missing_capabilities(self, older_than_s: float) -> dict[str, list[str]]:
        """Pending runs older than ``older_than_s`` that no live worker can execute:
        run id -> the needs no live worker provides."""
        ...

    async def announce(self) -> None:
        """Tell the workers there are runs to claim (coalesced: many calls within a few
        milliseconds send one notification; never inside a step's commit)."""
        ...

    async def listen(self, on_notice: Callable[[str, str], None]) -> None:
        """From now until ``close``: ``on_notice("runs", "")`` when runs may be
        claimable, ``on_notice("cancel", run_id)`` when a cancel is asked; reconnects
        by itself. Does nothing with notifications off (polling is the safety net)."""
        ...

    async def lead(self, role: str) -> bool:
        """Whether this process holds ``role`` (one holder per database, e.g. the alert
        evaluator): taken if free, kept while this process lives and is connected."""
        ...

    async def feed(self, role: str, after: FeedPosition, *, holder: str,
                   limit: int = 1000) -> tuple[list[Event], FeedPosition]:
        """Up to ``limit`` committed events after ``after``, in commit order, with the
        position after the last of them; in the same statement, ``after`` is saved as
        ``role``'s position, read by ``holder``. Only for the holder of ``role``
        (``lead``): a process that lost it (its connection dropped, or was closed by the
        server) gets ``StoreError`` and must lead again before reading on.
        An event is in the feed once its transaction has ended, never before an
        earlier position's: a reader that moves on misses nothing. ``limit=0`` only
        saves the position."""
        ...

    async def feed_head(self) -> FeedPosition:
        """The position after the last event committed so far."""
        ...

    async def feed_position(self, role: str) -> tuple[FeedPosition, float] | None:
        """Where ``role``'s last holder got to, and how many seconds ago it saved it."""
        ...
