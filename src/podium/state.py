"""Run and step state as records, their statuses, and the one function that moves them.

``apply_event`` is the only place that knows how an event changes state: the
engine keeps its live view with it and the stores keep theirs with it (or its
SQL twin), so what is persisted cannot drift from what ran. This module sits
on the ground floor beside ``events``: the engine, the stores and the
observers all read records, and none of them owns them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from podium.events import (
    CompensationAttemptFailed,
    CompensationFailed,
    CompensationStarted,
    CompensationSucceeded,
    ErrorInfo,
    Event,
    RollbackStarted,
    RunCancelRequested,
    RunFinished,
    RunStarted,
    RunWaiting,
    StepAttemptFailed,
    StepCancelled,
    StepFailed,
    StepMapStarted,
    StepReady,
    StepRetryScheduled,
    StepSkipped,
    StepStarted,
    StepSucceeded,
    StepWaiting,
)

__all__ = [
    "RUN_STATUSES",
    "STEP_STATUSES",
    "TERMINAL_RUN_STATUSES",
    "AlertRecord",
    "AttemptOutcome",
    "CompensationStatus",
    "RunRecord",
    "RunStatus",
    "StepRecord",
    "StepStatus",
    "apply_event",
    "decided_skip",
]

# The error types a step skipped by the workflow's own logic carries: a false ``when:``,
# and a trigger rule whose inputs were so skipped.
CONDITION_FALSE, UPSTREAM_SKIPPED = "condition_false", "upstream_skipped"
DECIDED_SKIPS = frozenset({CONDITION_FALSE, UPSTREAM_SKIPPED})


class RunStatus(StrEnum):
    """Where a run is. Members are strings: they compare, store and print as their value."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    WAITING = "waiting"  # for a signal, an approval or a timer; no process holds it


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    COMPENSATED = "compensated"
    WAITING = "waiting"


class CompensationStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


RUN_STATUSES = tuple(RunStatus)
TERMINAL_RUN_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED,
                                   RunStatus.ROLLED_BACK, RunStatus.ROLLBACK_FAILED})
# A run some process should be executing (or take over when that process is gone).
LIVE_RUN_STATUSES = frozenset({RunStatus.PENDING, RunStatus.RUNNING})
STEP_STATUSES = tuple(StepStatus)

# The hot transitions read these module globals: one dict lookup, not two.
_PENDING, _RUNNING, _SUCCEEDED, _FAILED = (StepStatus.PENDING, StepStatus.RUNNING,
                                           StepStatus.SUCCEEDED, StepStatus.FAILED)


@dataclass(slots=True)
class StepRecord:
    step_id: str
    status: str = StepStatus.PENDING
    attempts: int = 0
    agent_id: str | None = None
    output: Any = None
    error: ErrorInfo | None = None
    started_at: float | None = None
    finished_at: float | None = None
    next_retry_at: float | None = None
    optional: bool = False
    # Order of success within the run (1, 2, ...): rollback undoes in reverse.
    completed_seq: int | None = None
    compensation_status: str | None = None  # running | succeeded | failed
    compensation_attempts: int = 0
    compensation_error: ErrorInfo | None = None

    def to_dict(self, *, verbose: bool = False) -> dict[str, Any]:
        err = None
        if self.error is not None:
            err = self.error.to_dict() if verbose else self.error.public()
        d: dict[str, Any] = {
            "status": self.status,
            "attempts": self.attempts,
            "agent": self.agent_id,
            "output": self.output,
            "error": err,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }
        if self.compensation_status is not None:
            cerr = self.compensation_error
            d["compensation"] = {
                "status": self.compensation_status,
                "attempts": self.compensation_attempts,
                "error": None if cerr is None else (cerr.to_dict() if verbose else cerr.public()),
            }
        return d


@dataclass(slots=True)
class RunRecord:
    run_id: str
    workflow: str
    version: int | str
    definition: dict[str, Any]
    input: Any
    status: str = RunStatus.PENDING
    output: Any = None
    error: ErrorInfo | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    owner: str | None = None
    lease_expires_at: float | None = None
    cancel_requested: bool = False
    # Where the run's agents came from (agents file path...), so resume needs no flags.
    agents_source: dict[str, Any] = field(default_factory=dict)
    # "execute", then "compensate" once a rollback starts (so a crash resumes the rollback).
    phase: str = "execute"
    # +1 on every claim: a claim is a compare-and-swap on it (see Store.claim_run).
    epoch: int = 0
    # Takeovers from a dead process since the run last ran to an end or was redriven
    # by hand, and when the last one was: poison runs stop being taken over.
    recoveries: int = 0
    recovered_at: float | None = None
    # The queue a worker takes it from (workflow file ``queue:``, ``submit --queue``).
    queue: str = "default"
    # Steps succeeded so far (a counter, so ordering a success is O(1)).
    completions: int = 0
    steps: dict[str, StepRecord] = field(default_factory=dict)
    # The seq of its last stored event, when the store read it with the run in the
    # claim (``WorkerStore.claim_runs``): the engine adopting it numbers on from there
    # without asking again. None: unknown (ask ``RunStore.last_seq``).
    last_seq: int | None = field(default=None, compare=False, repr=False)

    @property
    def parent(self) -> str | None:
        """The run whose ``workflow:`` step this child run is (``PARENT.STEP``), if any."""
        return self.run_id.rsplit(".", 1)[0] if "." in self.run_id else None

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at
        return None if end is None else end - self.started_at

    def to_dict(self, *, verbose: bool = False) -> dict[str, Any]:
        err = None
        if self.error is not None:
            err = self.error.to_dict() if verbose else self.error.public()
        return {
            "run_id": self.run_id,
            "parent": self.parent,
            "workflow": self.workflow,
            "version": self.version,
            "status": self.status,
            "output": self.output,
            "error": err,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "steps": {k: s.to_dict(verbose=verbose) for k, s in self.steps.items()},
        }


@dataclass(slots=True)
class AlertRecord:
    """One alert: a rule's condition for one subject (a run, an agent...), over time."""

    key: str
    rule: str
    kind: str
    severity: str
    status: str  # firing | resolved
    summary: str
    fired_at: float
    labels: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None
    workflow: str | None = None
    resolved_at: float | None = None
    acked_at: float | None = None
    acked_by: str | None = None
    level: int = -1  # highest escalation level notified
    last_notified_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key, "rule": self.rule, "kind": self.kind, "severity": self.severity,
            "status": self.status, "summary": self.summary, "labels": self.labels,
            "run_id": self.run_id, "workflow": self.workflow, "fired_at": self.fired_at,
            "resolved_at": self.resolved_at, "acked_at": self.acked_at,
            "acked_by": self.acked_by, "level": self.level,
            "last_notified_at": self.last_notified_at,
        }


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """One finished attempt, for failure tracking (success rates, top errors)."""

    ts: float
    run_id: str
    workflow: str
    step_id: str
    agent_id: str | None
    attempt: int
    ok: bool
    error_type: str | None = None
    message: str | None = None


def _step(run: RunRecord, step_id: str) -> StepRecord:
    rec = run.steps.get(step_id)
    if rec is None:
        rec = run.steps[step_id] = StepRecord(step_id)
    return rec


def _run_started(run: RunRecord, e: Event) -> None:
    assert isinstance(e, RunStarted)
    run.status = RunStatus.RUNNING
    if run.started_at is None:
        run.started_at = e.ts
    run.finished_at = None


def _run_finished(run: RunRecord, e: Event) -> None:
    assert isinstance(e, RunFinished)
    run.status = e.status
    run.output = e.output
    run.error = e.error
    run.finished_at = e.ts
    run.cancel_requested = False


def _cancel_requested(run: RunRecord, e: Event) -> None:
    run.cancel_requested = True


def _ready(run: RunRecord, e: Event) -> None:
    assert isinstance(e, StepReady)
    rec = _step(run, e.step_id)
    rec.status = _PENDING


def _started(run: RunRecord, e: Event) -> None:
    assert isinstance(e, StepStarted)
    rec = _step(run, e.step_id)
    rec.status = _RUNNING
    rec.attempts = e.attempt
    rec.agent_id = e.agent_id
    rec.next_retry_at = None
    if rec.started_at is None:
        rec.started_at = e.ts
    rec.finished_at = None


def _map_started(run: RunRecord, e: Event) -> None:
    assert isinstance(e, StepMapStarted)
    rec = _step(run, e.step_id)
    rec.status = _RUNNING
    rec.next_retry_at = None
    if rec.started_at is None:
        rec.started_at = e.ts
    rec.finished_at = None


def _step_waiting(run: RunRecord, e: Event) -> None:
    assert isinstance(e, StepWaiting)
    rec = _step(run, e.step_id)
    rec.status = StepStatus.WAITING
    rec.next_retry_at = e.until  # when it wakes (a timer, or its signal's timeout)
    if rec.started_at is None:
        rec.started_at = e.ts
    rec.finished_at = None


def _run_waiting(run: RunRecord, e: Event) -> None:
    run.status = RunStatus.WAITING


def _succeeded(run: RunRecord, e: Event) -> None:
    assert isinstance(e, StepSucceeded)
    rec = _step(run, e.step_id)
    rec.status = _SUCCEEDED
    rec.output = e.output
    rec.error = None
    rec.finished_at = e.ts
    run.completions += 1
    rec.completed_seq = run.completions


def _attempt_failed(run: RunRecord, e: Event) -> None:
    assert isinstance(e, StepAttemptFailed)
    rec = _step(run, e.step_id)
    rec.attempts = max(rec.attempts, e.attempt)
    rec.error = e.error
    if e.agent_id is not None:
        rec.agent_id = e.agent_id


def _retry(run: RunRecord, e: Event) -> None:
    assert isinstance(e, StepRetryScheduled)
    _step(run, e.step_id).next_retry_at = e.at


def _failed(run: RunRecord, e: Event) -> None:
    assert isinstance(e, StepFailed)
    rec = _step(run, e.step_id)
    rec.status = _FAILED
    rec.error = e.error
    rec.optional = e.optional
    rec.finished_at = e.ts
    rec.next_retry_at = None


def _skipped(run: RunRecord, e: Event) -> None:
    assert isinstance(e, StepSkipped)
    rec = _step(run, e.step_id)
    rec.status = StepStatus.SKIPPED
    rec.finished_at = e.ts
    if e.decided:  # why, kept with the step: what a resume reads to keep the branch
        rec.error = ErrorInfo(CONDITION_FALSE if e.condition is not None else UPSTREAM_SKIPPED,
                              e.reason, False)


def decided_skip(rec: StepRecord) -> bool:
    """Skipped by the workflow's own logic (a false ``when:``, or a trigger rule over
    inputs so skipped): settled for good, a resume does not reconsider it."""
    return rec.status == StepStatus.SKIPPED and rec.error is not None and \
        rec.error.type in DECIDED_SKIPS


def _cancelled(run: RunRecord, e: Event) -> None:
    assert isinstance(e, StepCancelled)
    rec = _step(run, e.step_id)
    rec.status = StepStatus.CANCELLED
    rec.finished_at = e.ts
    rec.next_retry_at = None


def _rollback_started(run: RunRecord, e: Event) -> None:
    run.phase = "compensate"
    run.status = RunStatus.RUNNING
    run.finished_at = None


def _comp_started(run: RunRecord, e: Event) -> None:
    assert isinstance(e, CompensationStarted)
    rec = _step(run, e.step_id)
    rec.compensation_status = CompensationStatus.RUNNING
    rec.compensation_attempts = e.attempt


def _comp_attempt_failed(run: RunRecord, e: Event) -> None:
    assert isinstance(e, CompensationAttemptFailed)
    rec = _step(run, e.step_id)
    rec.compensation_attempts = max(rec.compensation_attempts, e.attempt)
    rec.compensation_error = e.error


def _comp_succeeded(run: RunRecord, e: Event) -> None:
    assert isinstance(e, CompensationSucceeded)
    rec = _step(run, e.step_id)
    rec.compensation_status = CompensationStatus.SUCCEEDED
    rec.compensation_error = None
    rec.status = StepStatus.COMPENSATED


def _comp_failed(run: RunRecord, e: Event) -> None:
    assert isinstance(e, CompensationFailed)
    rec = _step(run, e.step_id)
    rec.compensation_status = CompensationStatus.FAILED
    rec.compensation_error = e.error


APPLY: dict[str, Callable[[RunRecord, Event], None]] = {
    RollbackStarted.type: _rollback_started,
    CompensationStarted.type: _comp_started,
    CompensationAttemptFailed.type: _comp_attempt_failed,
    CompensationSucceeded.type: _comp_succeeded,
    CompensationFailed.type: _comp_failed,
    RunStarted.type: _run_started,
    RunFinished.type: _run_finished,
    RunCancelRequested.type: _cancel_requested,
    StepReady.type: _ready,
    StepStarted.type: _started,
    StepMapStarted.type: _map_started,
    StepWaiting.type: _step_waiting,
    RunWaiting.type: _run_waiting,
    StepSucceeded.type: _succeeded,
    StepAttemptFailed.type: _attempt_failed,
    StepRetryScheduled.type: _retry,
    StepFailed.type: _failed,
    StepSkipped.type: _skipped,
    StepCancelled.type: _cancelled,
}


def apply_event(run: RunRecord, event: Event) -> None:
    """Move ``run`` by one event; events this layer does not know are ignored."""
    fn = APPLY.get(event.type)
    if fn is not None:
        fn(run, event)
