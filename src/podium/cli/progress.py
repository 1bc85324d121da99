"""Live run progress: a subscriber of the event stream, nothing more.

On a terminal it is a rich table redrawn as events arrive, with what the
table cannot show (a retry and its wait, a failover, a circuit, an alert, a
compensation) printed above it as it happens; otherwise one plain line per
event, so logs and CI output stay readable.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from podium.cli.common import plural
from podium.definition.durations import format_duration
from podium.definition.models import RetryPolicy
from podium.events import (
    AgentHealthChanged,
    AgentRegistered,
    AlertFired,
    AlertResolved,
    CircuitStateChanged,
    CompensationAttemptFailed,
    CompensationFailed,
    CompensationRetryScheduled,
    CompensationStarted,
    CompensationSucceeded,
    Event,
    RollbackStarted,
    RunStarted,
    StepAttemptFailed,
    StepCancelled,
    StepFailed,
    StepMapStarted,
    StepRetryScheduled,
    StepSkipped,
    StepStarted,
    StepSucceeded,
)
from podium.state import StepStatus

__all__ = ["PlainProgress", "RichProgress", "make_progress"]

_STYLE = {
    StepStatus.PENDING: ("·", "dim"),
    StepStatus.RUNNING: ("▶", "cyan"),
    "retrying": ("↻", "yellow"),
    StepStatus.SUCCEEDED: ("✓", "green"),
    StepStatus.FAILED: ("✗", "red"),
    StepStatus.CANCELLED: ("⊘", "magenta"),
    StepStatus.SKIPPED: ("-", "dim"),
    StepStatus.COMPENSATED: ("↺", "blue"),
}


@dataclass
class _Row:
    status: str = StepStatus.PENDING
    attempt: int = 0
    agent: str = ""
    started: float | None = None
    finished: float | None = None
    note: str = ""
    # A for_each step: its items, how many succeeded and failed so far.
    total: int = 0
    done: int = 0
    failed: int = 0


@dataclass
class _State:
    rows: dict[str, _Row] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    regions: dict[str, str] = field(default_factory=dict)  # agent id -> its region
    # The agent each step's last attempt ran on: a retry elsewhere is a failover.
    last_agent: dict[str, str] = field(default_factory=dict)
    # Each step's retry policy, when known: a retry line then says how its wait was drawn.
    retry: Mapping[str, RetryPolicy] = field(default_factory=dict)

    def on(self, e: Event) -> None:
        if isinstance(e, AgentRegistered):
            if e.region:
                self.regions[e.agent_id] = e.region
            return
        step = getattr(e, "step_id", None)
        if step is None or "." in e.run_id:  # a child run: its step row says how it goes
            return
        if "[" in step:  # an item of a for_each step: counted on its step's row
            self._item(step[:step.index("[")], e)
            return
        row = self.rows.setdefault(step, _Row())
        if isinstance(e, StepMapStarted):
            row.status, row.total, row.agent = StepStatus.RUNNING, e.items, "(items)"
            row.started = row.started or e.ts
            row.note = f"0/{e.items} items"
        elif isinstance(e, StepStarted):
            self.last_agent[step] = e.agent_id
            row.status, row.attempt = StepStatus.RUNNING, e.attempt
            row.agent, row.note = e.agent_id, ""
            row.started = row.started or e.ts
        elif isinstance(e, StepSucceeded):
            row.status, row.finished = StepStatus.SUCCEEDED, e.ts
        elif isinstance(e, StepAttemptFailed):
            row.note = f"{e.error.type}: {e.error.message}"
            self.failures.append(
                f"{step} attempt {e.attempt}"
                + (f" on {e.agent_id}" if e.agent_id else "")
                + f": {e.error.type}: {e.error.message}"
            )
        elif isinstance(e, StepRetryScheduled):
            row.status = "retrying"
            row.note += f" (retry in {format_duration(e.delay_s)})"
        elif isinstance(e, StepFailed):
            row.status, row.finished = StepStatus.FAILED, e.ts
        elif isinstance(e, StepSkipped):
            row.status, row.note = StepStatus.SKIPPED, e.reason
        elif isinstance(e, StepCancelled):
            row.status, row.finished = StepStatus.CANCELLED, e.ts

    def _item(self, parent: str, e: Event) -> None:
        row = self.rows.setdefault(parent, _Row())
        if isinstance(e, StepSucceeded):
            row.done += 1
        elif isinstance(e, StepFailed):
            row.failed += 1
        elif isinstance(e, StepAttemptFailed):
            self.failures.append(f"{getattr(e, 'step_id', parent)} attempt {e.attempt}:"
                                 f" {e.error.type}: {e.error.message}")
        else:
            return
        row.note = f"{row.done}/{row.total} items" + (f", {row.failed} failed"
                                                       if row.failed else "")


def _agent(state: _State, agent_id: str | None) -> str:
    if not agent_id:
        return "?"
    region = state.regions.get(agent_id)
    return f"{agent_id} ({region})" if region else agent_id


def _wait(e: StepRetryScheduled, policy: RetryPolicy | None) -> str:
    """The wait, and how it was drawn when the policy is plain exponential backoff."""
    text = f"in {format_duration(e.delay_s)}"
    if policy is None or policy.delays is not None or policy.initial_delay <= 0:
        return text
    ceiling = min(policy.initial_delay * policy.backoff ** max(e.attempt - 2, 0),
                  policy.max_delay)
    jitter = policy.effective_jitter
    if jitter in ("none", "decorrelated"):
        return f"{text} ({jitter} jitter)" if jitter != "none" else f"{text} (backoff)"
    return f"{text} (backoff {format_duration(ceiling)}, {jitter} jitter)"


def describe(e: Event, state: _State) -> str | None:
    """One line for people about ``e``, read before ``state`` hears of it; None: say nothing.

    A run's steps, and what the run's fleet and alerts did meanwhile: a circuit
    breaker opening or closing, an agent turning unhealthy or back, an alert
    firing or resolving, a rollback's compensations.
    """
    if isinstance(e, RunStarted):
        verb = "resumed" if e.resumed else "started"
        return f"run {e.run_id} {verb}: {e.workflow} v{e.version}"
    if isinstance(e, CircuitStateChanged):
        return f"⚡ circuit of {e.agent_id}: {e.old} → {e.new}"
    if isinstance(e, AgentHealthChanged):
        if "unhealthy" not in (e.old, e.new):
            return None  # a first check, healthy or degraded: not news
        why = f" ({e.reason})" if e.reason else ""
        return f"♥ {_agent(state, e.agent_id)} {e.old} → {e.new}{why}"
    if isinstance(e, AlertFired):
        return f"🔔 alert fired [{e.severity}] {e.rule}: {e.summary}"
    if isinstance(e, AlertResolved):
        return f"🔕 alert resolved {e.rule}"
    if isinstance(e, RollbackStarted):
        return f"↺ rolling back ({e.reason}): compensating finished steps, newest first"
    if isinstance(e, CompensationStarted):
        return f"↺ compensate {e.step_id} attempt {e.attempt} on {e.agent_id}"
    if isinstance(e, CompensationSucceeded):
        return f"↺ {e.step_id} compensated in {format_duration(e.duration_s)}"
    if isinstance(e, CompensationAttemptFailed):
        return (f"✗ compensation of {e.step_id} attempt {e.attempt} failed:"
                f" {e.error.type}: {e.error.message}")
    if isinstance(e, CompensationRetryScheduled):
        return (f"↻ compensation of {e.step_id} retry (attempt {e.attempt})"
                f" in {format_duration(e.delay_s)}")
    if isinstance(e, CompensationFailed):
        return f"✗ compensation of {e.step_id} failed after {plural(e.attempts, 'attempt')}"
    if isinstance(e, StepMapStarted):
        return f"▶ {e.step_id}: {plural(e.items, 'item')}"
    if isinstance(e, StepStarted | StepSucceeded | StepCancelled) and "[" in e.step_id:
        return None  # items speak only of failures (the step's line sums them up)
    if isinstance(e, StepStarted):
        line = f"▶ {e.step_id} attempt {e.attempt} on {_agent(state, e.agent_id)}"
        before = state.last_agent.get(e.step_id)
        if before is not None and before != e.agent_id:
            was, now = state.regions.get(before), state.regions.get(e.agent_id)
            kind = "failover to another region" if was and now and was != now else "failover"
            line += f" ({kind}: was {_agent(state, before)})"
        return line
    if isinstance(e, StepSucceeded):
        return f"✓ {e.step_id} succeeded in {format_duration(e.duration_s)}"
    if isinstance(e, StepAttemptFailed):
        return f"✗ {e.step_id} attempt {e.attempt} failed: {e.error.type}: {e.error.message}"
    if isinstance(e, StepRetryScheduled):
        return (f"↻ {e.step_id} retry (attempt {e.attempt})"
                f" {_wait(e, state.retry.get(e.step_id))}")
    if isinstance(e, StepFailed):
        return f"✗ {e.step_id} failed after {plural(e.attempts, 'attempt')}" + (
            " (optional, run goes on)" if e.optional else ""
        )
    if isinstance(e, StepSkipped):
        return f"- {e.step_id} skipped ({e.reason})"
    if isinstance(e, StepCancelled):
        return f"⊘ {e.step_id} cancelled"
    return None


class PlainProgress:
    """One line per state change."""

    def __init__(self, out: IO[str] | None = None,
                 retry: Mapping[str, RetryPolicy] | None = None) -> None:
        self.out: IO[str] | None = out or sys.stdout
        self.state = _State(retry=retry or {})

    def __call__(self, e: Event) -> None:
        line = describe(e, self.state)
        self.state.on(e)
        child = e.run_id.partition(".")[2]
        if line and child and not isinstance(e, RunStarted):
            line = f"  {child} › {line}"  # a child run's step, under its parent's
        if line and self.out is not None:
            try:
                print(line, file=self.out, flush=True)
            except BrokenPipeError:  # nobody reads any more (`| head`): the run goes on
                self.out = None

    def close(self) -> None:
        return None


class RichProgress:
    """A live table: per step status, attempt, agent, duration."""

    def __init__(self, steps: list[str], clock: Any,
                 retry: Mapping[str, RetryPolicy] | None = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self.state = _State(retry=retry or {})
        for s in steps:
            self.state.rows[s] = _Row()
        self._clock = clock
        self._console = Console()
        self._title = ""
        self._live = Live(self._render(), console=self._console, refresh_per_second=12,
                          transient=False, get_renderable=self._render)
        self._live.start()

    def _render(self) -> Any:
        from rich.table import Table

        table = Table(title=self._title, title_justify="left", expand=False, show_edge=False,
                      pad_edge=False)
        for col in ("", "step", "status", "attempt", "agent", "duration", ""):
            table.add_column(col)
        now = self._clock.now()
        for name, row in self.state.rows.items():
            symbol, style = _STYLE.get(row.status, ("?", ""))
            dur = ""
            if row.started is not None:
                dur = format_duration((row.finished or now) - row.started)
            table.add_row(f"[{style}]{symbol}[/]", name, f"[{style}]{row.status}[/]",
                          str(row.attempt or ""), row.agent, dur, f"[dim]{row.note[:60]}[/]")
        return table

    def __call__(self, e: Event) -> None:
        if isinstance(e, RunStarted):
            self._title = f"run {e.run_id} · {e.workflow} v{e.version}" + (
                " (resumed)" if e.resumed else "")
        # What a row cannot show goes above the table, as it happens; a step that
        # starts or ends on its first try is the table's news alone.
        line = None if isinstance(e, RunStarted | StepSucceeded) or (
            isinstance(e, StepStarted) and e.attempt == 1) else describe(e, self.state)
        self.state.on(e)
        if line:
            self._live.console.print(line, markup=False, highlight=False)

    def close(self) -> None:
        self._live.refresh()
        self._live.stop()


def make_progress(
    steps: list[str], clock: Any, *, tty: bool | None = None,
    retry: Mapping[str, RetryPolicy] | None = None,
) -> PlainProgress | RichProgress:
    """``retry``: each step's first retry policy, so a retry line says how its wait was drawn."""
    if tty is None:
        tty = sys.stdout.isatty()
    return RichProgress(steps, clock, retry) if tty else PlainProgress(retry=retry)
