"""The shared vocabulary: every state change is a typed event.

The engine emits events; the store persists them, metrics count them, alerts
evaluate them and the CLI displays them. Nobody polls the engine's internals.
Events are small frozen records; ``to_dict``/``from_dict`` give the stable
JSON form kept in the event log.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

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
    "RunCancelRequested",
    "RunFinished",
    "RunStarted",
    "StepAttemptFailed",
    "StepCancelled",
    "StepFailed",
    "StepReady",
    "StepRetryScheduled",
    "StepSkipped",
    "StepStarted",
    "StepSucceeded",
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    type: ClassVar[str] = "event"
    run_id: str
    ts: float

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = v.to_dict() if isinstance(v, ErrorInfo) else v
        return d


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted(Event):
    type: ClassVar[str] = "run_started"
    workflow: str
    version: int | str
    resumed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RunCancelRequested(Event):
    type: ClassVar[str] = "run_cancel_requested"
    reason: str = "cancelled"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished(Event):
    type: ClassVar[str] = "run_finished"
    workflow: str
    status: str
    output: Any = None
    error: ErrorInfo | None = None
    duration_s: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class StepReady(Event):
    type: ClassVar[str] = "step_ready"
    step_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StepStarted(Event):
    type: ClassVar[str] = "step_started"
    step_id: str
    attempt: int
    agent_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSucceeded(Event):
    type: ClassVar[str] = "step_succeeded"
    step_id: str
    attempt: int
    agent_id: str
    output: Any
    duration_s: float
    # The output already encoded as JSON by the engine, so stores don't encode twice.
    output_json: str = dataclasses.field(default="null", repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = Event.to_dict(self)
        d.pop("output_json", None)
        return d


@dataclass(frozen=True, slots=True, kw_only=True)
class StepAttemptFailed(Event):
    type: ClassVar[str] = "step_attempt_failed"
    step_id: str
    attempt: int
    agent_id: str | None
    error: ErrorInfo
    duration_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class StepRetryScheduled(Event):
    type: ClassVar[str] = "step_retry_scheduled"
    step_id: str
    attempt: int  # the attempt that will run next
    delay_s: float
    at: float  # wall-clock time it is due


@dataclass(frozen=True, slots=True, kw_only=True)
class StepFailed(Event):
    type: ClassVar[str] = "step_failed"
    step_id: str
    attempts: int
    error: ErrorInfo
    optional: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSkipped(Event):
    type: ClassVar[str] = "step_skipped"
    step_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StepCancelled(Event):
    type: ClassVar[str] = "step_cancelled"
    step_id: str
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RollbackStarted(Event):
    type: ClassVar[str] = "rollback_started"
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CompensationStarted(Event):
    type: ClassVar[str] = "compensation_started"
    step_id: str
    attempt: int
    agent_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CompensationAttemptFailed(Event):
    type: ClassVar[str] = "compensation_attempt_failed"
    step_id: str
    attempt: int
    agent_id: str | None
    error: ErrorInfo
    duration_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CompensationRetryScheduled(Event):
    type: ClassVar[str] = "compensation_retry_scheduled"
    step_id: str
    attempt: int
    delay_s: float
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CompensationSucceeded(Event):
    type: ClassVar[str] = "compensation_succeeded"
    step_id: str
    attempt: int
    agent_id: str
    duration_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CompensationFailed(Event):
    type: ClassVar[str] = "compensation_failed"
    step_id: str
    attempts: int
    error: ErrorInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRegistered(Event):
    type: ClassVar[str] = "agent_registered"
    run_id: str = ""  # fleet events belong to no run
    agent_id: str
    capabilities: tuple[str, ...]
    transport: str
    region: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentUnregistered(Event):
    type: ClassVar[str] = "agent_unregistered"
    run_id: str = ""
    agent_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentHealthChanged(Event):
    type: ClassVar[str] = "agent_health_changed"
    run_id: str = ""
    agent_id: str
    old: str
    new: str
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitStateChanged(Event):
    type: ClassVar[str] = "circuit_state_changed"
    run_id: str = ""
    agent_id: str
    old: str
    new: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertFired(Event):
    type: ClassVar[str] = "alert_fired"
    run_id: str = ""  # set when the alert is about one run (an SLA)
    key: str
    rule: str
    kind: str
    severity: str
    summary: str
    workflow: str | None = None
    scope: str | None = None
    labels: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertResolved(Event):
    type: ClassVar[str] = "alert_resolved"
    run_id: str = ""
    key: str
    rule: str
    kind: str
    severity: str
    summary: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertEscalated(Event):
    type: ClassVar[str] = "alert_escalated"
    run_id: str = ""
    key: str
    level: int
    severity: str
    receivers: tuple[str, ...]


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        RunStarted, RunCancelRequested, RunFinished, StepReady, StepStarted,
        StepSucceeded, StepAttemptFailed, StepRetryScheduled, StepFailed,
        StepSkipped, StepCancelled, RollbackStarted, CompensationStarted,
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
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


Subscriber = Callable[[Event], None]


class EventBus:
    """Delivers each event, in order, to every subscriber, synchronously.

    Subscribers must be quick (buffer and return); one that raises is logged
    and skipped, never allowed to break the run that emitted the event.
    """

    __slots__ = ("_subscribers",)

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn) if fn in self._subscribers else None

    def emit(self, event: Event) -> None:
        for fn in self._subscribers:
            try:
                fn(event)
            except Exception:
                log.exception("event subscriber %r failed on %s", fn, event.type)
