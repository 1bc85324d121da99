"""The shared vocabulary: every state change is a typed event.

The engine emits events; the store persists them, metrics count them, alerts
evaluate them and the CLI displays them. Nobody polls the engine's internals.
Events are small frozen records; ``to_dict``/``from_dict`` give the stable
JSON form kept in the event log.

They are ``msgspec.Struct`` classes rather than dataclasses: a run makes three
or more events per step, and a Struct is built in ~0.2 µs where a frozen
dataclass takes ~1.9 µs; defining the 25 classes also costs ~1 ms instead of
the ~25 ms of dataclass code generation, paid by every ``podium`` start.
Instances are not tracked by the garbage collector (``gc=False``): an event is
data, it never refers back to anything that refers to it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec

__all__ = [
    "EVENT_TYPES",
    "AgentHealthChanged",
    "AgentRegistered",
    "AgentUnregistered",
    "AlertEscalated",
    "AlertFired",
    "AlertResolved",
    "CircuitStateChanged",
    "CompensationAttemptFailed",
    "CompensationFailed",
    "CompensationRetryScheduled",
    "CompensationStarted",
    "CompensationSucceeded",
    "ErrorInfo",
    "Event",
    "EventBus",
    "RollbackStarted",
    "RunAbandoned",
    "RunCancelRequested",
    "RunFinished",
    "RunStarted",
    "RunSubmitted",
    "RunTraced",
    "RunWaiting",
    "StepAttemptFailed",
    "StepBackPressure",
    "StepCancelled",
    "StepFailed",
    "StepMapStarted",
    "StepReady",
    "StepRetryScheduled",
    "StepSkipped",
    "StepStarted",
    "StepSucceeded",
    "StepWaiting",
    "event_from_dict",
]

log = logging.getLogger("podium.events")


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A failure as data: its type (what ``retry_on`` names), message and origin."""

    type: str
    message: str
    retryable: bool | None = None
    agent_id: str | None = None
    traceback: str | None = None
    retry_after_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.retryable is not None:
            d["retryable"] = self.retryable
        if self.agent_id is not None:
            d["agent_id"] = self.agent_id
        if self.traceback is not None:
            d["traceback"] = self.traceback
        if self.retry_after_s is not None:
            d["retry_after_s"] = self.retry_after_s
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ErrorInfo:
        return cls(
            type=d["type"], message=d["message"], retryable=d.get("retryable"),
            agent_id=d.get("agent_id"), traceback=d.get("traceback"),
            retry_after_s=d.get("retry_after_s"),
        )

    def public(self) -> dict[str, Any]:
        """Without the traceback: what ``podium run`` shows (status --verbose shows all)."""
        d = self.to_dict()
        d.pop("traceback", None)
        return d


class Event(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    type: ClassVar[str] = "event"
    run_id: str
    ts: float

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type}
        for name in self.__struct_fields__:
            v = getattr(self, name)
            d[name] = v.to_dict() if isinstance(v, ErrorInfo) else v
        return d


class RunStarted(Event, frozen=True, kw_only=True, gc=False):
    type: ClassVar[str] = "run_started"
    workflow: str
    version: int | str
    resumed: bool = False
    # The W3C trace context this execution's span is a child of, when traced: the
    # submitter's at the first start; on a resume, the one the store recorded for the
    # run (see ``RunTraced``), so every execution of a run lands in one trace.
    traceparent: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = Event.to_dict(self)
        if d["traceparent"] is None:
            del d["traceparent"]  # untraced runs read as they always did
        return d


class RunSubmitted(Event, frozen=True, kw_only=True, gc=False):
    """Stored without executing (``podium submit``): a worker starts it."""

    type: ClassVar[str] = "run_submitted"
    workflow: str
    version: int | str
    queue: str = "default"
    # The submitter's W3C trace context: the worker that executes the run has nothing
    # else to join the submitter's trace with.
    traceparent: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = Event.to_dict(self)
        if d["traceparent"] is None:
            del d["traceparent"]  # untraced runs read as they always did
        return d


class RunTraced(Event, frozen=True, kw_only=True, gc=False):
    """The trace of a run that started with no trace context of its own: its first
    execution's span (a root) as W3C ``traceparent``.

    Written only when traced. Whoever continues the run later (``podium resume``, a
    worker taking over a dead one's run, a wake after waiting) has only the store to
    go by: its spans become children of this one, in the same trace. A Podium that
    does not know this event skips it when reading.
    """

    type: ClassVar[str] = "run_traced"
    traceparent: str


class RunCancelRequested(Event, frozen=True, kw_only=True, gc=False):
    type: ClassVar[str] = "run_cancel_requested"
    reason: str = "cancelled"


class RunFinished(Event, frozen=True, kw_only=True, gc=False):
    type: ClassVar[str] = "run_finished"
    workflow: str
    status: str
    output: Any = None
    error: ErrorInfo | None = None
    duration_s: float = 0.0


class RunAbandoned(Event, frozen=True, kw_only=True, gc=False):
    """This process stopped executing the run without ending it: another process holds
    it now, or may soon (its lease lapsed and the run was taken over, its id was taken
    by another process's run, it was handed back at shutdown). Nothing more of this
    execution follows, not even the end of the calls it had in flight.

    A fact about this process, not about the run: never stored (``EventBus.emit_local``
    passes it by the journal, and it is no word of ``EVENT_TYPES``); the run's own
    story goes on in the events of whoever continues it. What counts a run or a call
    while it is in flight here (metrics, open spans) lets go of it on this.
    """

    type: ClassVar[str] = "run_abandoned"
    reason: str


class StepReady(Event, frozen=True, kw_only=True, gc=False):
    type: ClassVar[str] = "step_ready"
    step_id: str


class StepStarted(Event, frozen=True, kw_only=True, gc=False):
    type: ClassVar[str] = "step_started"
    step_id: str
    attempt: int
    agent_id: str


class StepMapStarted(Event, frozen=True, kw_only=True, gc=False):
    """A for_each step began (or went on with) its items: ``items`` in all. Each item
    then speaks as a step of its own, ``ID[i]``."""

    type: ClassVar[str] = "step_map_started"
    step_id: str
    items: int


class StepWaiting(Event, frozen=True, kw_only=True, gc=False):
    """A step waits: for ``signal`` (an approval is the signal ``approve:STEP``), until
    ``until`` (a durable timer, or the signal's timeout), or both."""

    type: ClassVar[str] = "step_waiting"
    step_id: str
    until: float | None = None
    signal: str | None = None


class RunWaiting(Event, frozen=True, kw_only=True, gc=False):
    """Nothing more runs until a signal comes or a timer is due: no process holds the
    run (``podium approve``/``signal`` wakes it, or the timer at ``wake_at``)."""

    type: ClassVar[str] = "run_waiting"
    steps: tuple[str, ...]
    wake_at: float | None = None


class StepSucceeded(Event, frozen=True, kw_only=True, gc=False):
    type: ClassVar[str] = "step_succeeded"
    step_id: str
    attempt: int
    agent_id: str
    output: Any
    duration_s: float
    # The output already encoded as JSON by the engine, so stores don't encode twice.
    output_json: str = "null"

    def to_dict(self) -> dict[str, Any]:
        d = Event.to_dict(self)
        d.pop("output_json", None)
        return d


class StepAttemptFailed(Event, frozen=True, kw_only=True, gc=False):
    type: ClassVar[str] = "step_attempt_failed"
    step_id: str
    attempt: int
    agent_id: str | None
    error: ErrorInfo
    duration_s: float


class StepBackPressure(Event, frozen=True, kw_only=True, gc=False):
    """An agent answered that it is busy (at capacity): not a failure, and not an
    attempt used up; the same attempt goes to another agent or waits."""

    type: ClassVar[str] = "step_back_pressure"
    step_id: str
    attempt: int
    agent_id: str
    message: str
    retry_after_s: float | None = None


class StepRetryScheduled(Event, frozen=True, kw_only=True, gc=False):
    type: ClassVar[str] = "step_retry_scheduled"
    step_id: str
    attempt: int  # the attempt that will run next
    delay_s: float
    at: float  # wall-clock time it is due


class StepFailed(Event, frozen=True, kw_only=True, gc=False):
    type: ClassVar[str] = "step_failed"
    step_id: str
    attempts: int
    error: ErrorInfo
    optional: bool = False


class StepSkipped(Event, frozen=True, kw_only=True, gc=False):
    type: ClassVar[str] = "step_skipped"
    step_id: str
    reason: str
    # The workflow's own logic skipped it (its ``when:`` was false, or its trigger rule
    # over inputs so decided): a resume keeps it skipped, never takes the other branch.
    decided: bool = False
    condition: str | None = None  # the expression that was false


class StepCancelled(Event, frozen=True, kw_only=True, gc=False):
    type: ClassVar[str] = "step_cancelled"
    step_id: str
    attempt: int


class RollbackStarted(Event, frozen=True, kw_only=True, gc=False):
    type: ClassVar[str] = "rollback_started"
    reason: str


class CompensationStarted(Event, frozen=True, kw_only=True, gc=False):
    type: ClassVar[str] = "compensation_started"
    step_id: str
    attempt: int
    agent_id: str


class CompensationAttemptFailed(Event, frozen=True, kw_only=True, gc=False):
    type: ClassVar[str] = "compensation_attempt_failed"
    step_id: str
    attempt: int
    agent_id: str | None
    error: ErrorInfo
    duration_s: float


class CompensationRetryScheduled(Event, frozen=True, kw_only=True, gc=False):
    type: ClassVar[str] = "compensation_retry_scheduled"
    step_id: str
    attempt: int
    delay_s: float
    at: float


class CompensationSucceeded(Event, frozen=True, kw_only=True, gc=False):
    type: ClassVar[str] = "compensation_succeeded"
    step_id: str
    attempt: int
    agent_id: str
    duration_s: float


class CompensationFailed(Event, frozen=True, kw_only=True, gc=False):
    type: ClassVar[str] = "compensation_failed"
    step_id: str
    attempts: int
    error: ErrorInfo


class AgentRegistered(Event, frozen=True, kw_only=True, gc=False):
    type: ClassVar[str] = "agent_registered"
    run_id: str = ""  # fleet events belong to no run
    agent_id: str
    capabilities: tuple[str, ...]
    transport: str
    region: str | None = None


class AgentUnregistered(Event, frozen=True, kw_only=True, gc=False):
    type: ClassVar[str] = "agent_unregistered"
    run_id: str = ""
    agent_id: str


class AgentHealthChanged(Event, frozen=True, kw_only=True, gc=False):
    type: ClassVar[str] = "agent_health_changed"
    run_id: str = ""
    agent_id: str
    old: str
    new: str
    reason: str | None = None


class CircuitStateChanged(Event, frozen=True, kw_only=True, gc=False):
    type: ClassVar[str] = "circuit_state_changed"
    run_id: str = ""  # the run whose call moved it (kept in its history), else none
    agent_id: str
    old: str
    new: str


class AlertFired(Event, frozen=True, kw_only=True, gc=False):
    type: ClassVar[str] = "alert_fired"
    run_id: str = ""  # set when the alert is about one run (an SLA)
    key: str
    rule: str
    kind: str
    severity: str
    summary: str
    workflow: str | None = None
    scope: str | None = None
    labels: dict[str, str] = msgspec.field(default_factory=dict)


class AlertResolved(Event, frozen=True, kw_only=True, gc=False):
    type: ClassVar[str] = "alert_resolved"
    run_id: str = ""
    key: str
    rule: str
    kind: str
    severity: str
    summary: str


class AlertEscalated(Event, frozen=True, kw_only=True, gc=False):
    type: ClassVar[str] = "alert_escalated"
    run_id: str = ""
    key: str
    level: int
    severity: str
    receivers: tuple[str, ...]


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        RunSubmitted, RunStarted, RunTraced, RunCancelRequested, RunFinished, StepReady,
        StepStarted, StepMapStarted, StepWaiting, RunWaiting, StepSucceeded, StepAttemptFailed,
        StepBackPressure, StepRetryScheduled, StepFailed, StepSkipped, StepCancelled,
        RollbackStarted, CompensationStarted,
        CompensationAttemptFailed, CompensationRetryScheduled, CompensationSucceeded,
        CompensationFailed, AgentRegistered, AgentUnregistered, AgentHealthChanged,
        CircuitStateChanged, AlertFired, AlertResolved, AlertEscalated,
    )
}


def register_event_type(cls: type[Event]) -> type[Event]:
    """Let other layers (compensation, agents, alerts) add their own words."""
    EVENT_TYPES[cls.type] = cls
    return cls


def event_from_dict(d: dict[str, Any]) -> Event:
    d = dict(d)
    cls = EVENT_TYPES[d.pop("type")]
    if isinstance(d.get("error"), dict):
        d["error"] = ErrorInfo.from_dict(d["error"])
    names = cls.__struct_fields__
    return cls(**{k: v for k, v in d.items() if k in names})


Subscriber = Callable[[Event], None]


class EventBus:
    """Delivers each event, in order, to every subscriber, synchronously.

    Subscribers must be quick (buffer and return); one that raises is logged
    and skipped, never allowed to break the run that emitted the event.
    """

    __slots__ = ("_local", "_subscribers")

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._local: list[Subscriber] = []

    def subscribe(self, fn: Subscriber, *, local: bool = True) -> Callable[[], None]:
        """``local``: also hear this process's own facts (``emit_local``); the journal,
        which stores what it hears, does not."""
        self._subscribers.append(fn)
        if local:
            self._local.append(fn)

        def unsubscribe() -> None:
            for subscribers in (self._subscribers, self._local):
                if fn in subscribers:
                    subscribers.remove(fn)

        return unsubscribe

    def emit(self, event: Event) -> None:
        for fn in self._subscribers:
            try:
                fn(event)
            except Exception:
                log.exception("event subscriber %r failed on %s", fn, event.type)

    def emit_local(self, event: Event) -> None:
        """An event about this process only (``RunAbandoned``), never stored."""
        for fn in self._local:
            try:
                fn(event)
            except Exception:
                log.exception("event subscriber %r failed on %s", fn, event.type)
