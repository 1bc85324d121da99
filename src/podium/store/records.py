"""Run and step state as records, and the one function that moves them.

``apply_event`` is the only place that knows how an event changes state: the
engine keeps its live view with it and the stores keep theirs with it (or its
SQL twin), so what is persisted cannot drift from what ran.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from podium.events import (
    ErrorInfo,
    Event,
    RunCancelRequested,
    RunFinished,
    RunStarted,
    StepAttemptFailed,
    StepCancelled,
    StepFailed,
    StepReady,
    StepRetryScheduled,
    StepSkipped,
    StepStarted,
    StepSucceeded,
)

__all__ = [
    "RUN_STATUSES",
    "STEP_STATUSES",
    "TERMINAL_RUN_STATUSES",
    "RunRecord",
    "StepRecord",
    "apply_event",
]

RUN_STATUSES = ("pending", "running", "succeeded", "failed", "cancelled", "rolled_back",
                "rollback_failed")
TERMINAL_RUN_STATUSES = frozenset(RUN_STATUSES[2:])
STEP_STATUSES = ("pending", "running", "succeeded", "failed", "cancelled", "skipped",
                 "compensated")


@dataclass(slots=True)
class StepRecord:
    step_id: str
    status: str = "pending"
    attempts: int = 0
    agent_id: str | None = None
    output: Any = None
    error: ErrorInfo | None = None
    started_at: float | None = None
    finished_at: float | None = None
    next_retry_at: float | None = None
    optional: bool = False

    def to_dict(self, *, verbose: bool = False) -> dict[str, Any]:
        err = None
        if self.error is not None:
            err = self.error.to_dict() if verbose else self.error.public()
        return {
            "status": self.status,
            "attempts": self.attempts,
            "agent": self.agent_id,
            "output": self.output,
            "error": err,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


@dataclass(slots=True)
class RunRecord:
    run_id: str
    workflow: str
    version: int | str
    definition: dict[str, Any]
    input: Any
    status: str = "pending"
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
    steps: dict[str, StepRecord] = field(default_factory=dict)

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


def _step(run: RunRecord, step_id: str) -> StepRecord:
    rec = run.steps.get(step_id)
    if rec is None:
        rec = run.steps[step_id] = StepRecord(step_id)
    return rec


def _run_started(run: RunRecord, e: Event) -> None:
    assert isinstance(e, RunStarted)
    run.status = "running"
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
    rec.status = "pending"


def _started(run: RunRecord, e: Event) -> None:
    assert isinstance(e, StepStarted)
    rec = _step(run, e.step_id)
    rec.status = "running"
    rec.attempts = e.attempt
    rec.agent_id = e.agent_id
    rec.next_retry_at = None
    if rec.started_at is None:
        rec.started_at = e.ts
    rec.finished_at = None


def _succeeded(run: RunRecord, e: Event) -> None:
    assert isinstance(e, StepSucceeded)
    rec = _step(run, e.step_id)
    rec.status = "succeeded"
    rec.output = e.output
    rec.error = None
    rec.finished_at = e.ts


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
    rec.status = "failed"
    rec.error = e.error
    rec.optional = e.optional
    rec.finished_at = e.ts
    rec.next_retry_at = None


def _skipped(run: RunRecord, e: Event) -> None:
    assert isinstance(e, StepSkipped)
    rec = _step(run, e.step_id)
    rec.status = "skipped"
    rec.finished_at = e.ts


def _cancelled(run: RunRecord, e: Event) -> None:
    assert isinstance(e, StepCancelled)
    rec = _step(run, e.step_id)
    rec.status = "cancelled"
    rec.finished_at = e.ts
    rec.next_retry_at = None


APPLY: dict[str, Callable[[RunRecord, Event], None]] = {
    RunStarted.type: _run_started,
    RunFinished.type: _run_finished,
    RunCancelRequested.type: _cancel_requested,
    StepReady.type: _ready,
    StepStarted.type: _started,
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
