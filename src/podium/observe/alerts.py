"""The alert manager: rules evaluated on the event stream, escalated over time.

Each alert has a stable key (``rule:subject``), fires once, stays
deduplicated while firing, and resolves (with a resolve notification) when its
condition clears. An unacknowledged firing alert climbs its escalation
policy's levels as time passes, and is re-sent every ``repeat``; ``podium
alerts ack KEY`` stops that. Time comes from an injected clock, and ``tick``
is the one place where the passing of time is evaluated, so tests drive it
exactly.

Rule kinds:
- ``sla``: a run (or one ``step``) still running past ``after``; fires while it
  runs, resolves when it ends.
- ``error_rate``: failed / finished attempts above ``threshold`` over ``window``
  once ``min_calls`` were made, per ``scope`` (agent, step or workflow).
- ``consecutive_failures``: ``count`` failed attempts in a row, per scope.
- ``agent_unhealthy``: an agent unhealthy for at least ``after``.
- ``no_healthy_agents``: every agent of a capability unhealthy for ``after``.
- ``waiting``: a step waiting (an approval, a signal, a timer) for more than ``after``,
  in any process's run; resolves when it waits no more.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from podium.clock import Clock, SystemClock
from podium.definition.alerts import AlertRule, AlertsFile, EscalationLevel, EscalationPolicy
from podium.definition.durations import format_duration
from podium.definition.models import Workflow
from podium.events import (
    AgentHealthChanged,
    AgentRegistered,
    AgentUnregistered,
    AlertEscalated,
    AlertFired,
    AlertResolved,
    Event,
    RunAbandoned,
    RunFinished,
    RunStarted,
    StepAttemptFailed,
    StepCancelled,
    StepFailed,
    StepSkipped,
    StepStarted,
    StepSucceeded,
    StepWaiting,
)
from podium.observe.receivers import Dispatcher, Notification
from podium.state import AlertRecord

__all__ = ["AlertManager"]

log = logging.getLogger("podium.alerts")

# How often the steps that wait are read back from the store (when a rule watches them).
_WAITS_EVERY_S = 30.0


@dataclass
class _Window:
    calls: deque[tuple[float, bool]] = field(default_factory=deque)

    def add(self, ts: float, ok: bool) -> None:
        self.calls.append((ts, ok))

    def rate(self, now: float, window_s: float) -> tuple[float, int]:
        while self.calls and self.calls[0][0] < now - window_s:
            self.calls.popleft()
        n = len(self.calls)
        return (sum(1 for _, ok in self.calls if not ok) / n if n else 0.0), n


class AlertLedger(Protocol):
    """Where alerts are kept between processes (a store, through the runtime)."""

    async def firing(self) -> list[AlertRecord]:
        """Every alert kept as firing, with any acknowledgement made elsewhere."""
        ...

    async def run_is_live(self, run_id: str) -> bool:
        """Whether a run is still pending or running (an SLA alert of it stays)."""
        ...

    async def record(self, alert: AlertRecord, what: str, detail: str, ts: float) -> None:
        """Keep the alert as it is now, and ``what`` happened to it."""
        ...

    async def waiting(self) -> list[tuple[str, str, str, float]]:
        """(run, workflow, step, since) of every step that waits now, in any process's
        run (an approval waits long after the process that reached it exited)."""
        ...


class AlertManager:
    def __init__(
        self,
        config: AlertsFile | None = None,
        ledger: AlertLedger | None = None,
        *,
        clock: Clock | None = None,
        dispatcher: Dispatcher | None = None,
        emit: Callable[[Event], None] | None = None,
        tick_s: float = 1.0,
        owner: str = "podium",
    ) -> None:
        self.config = config or AlertsFile()
        self.ledger = ledger
        self.clock: Clock = clock or SystemClock()
        if dispatcher is None:
            from podium.observe.receivers import LogReceiver, build_receiver

            receivers = {s.name: build_receiver(s, self.clock) for s in self.config.receivers}
            receivers.setdefault("log", LogReceiver())
            dispatcher = Dispatcher(receivers, clock=self.clock)
        self.dispatcher = dispatcher
        self._emit = emit
        self.tick_s = tick_s
        self.owner = owner
        self._workflow_rules: dict[str, list[AlertRule]] = {}
        self._default_policies: dict[str, EscalationPolicy] = {}
        self.active: dict[str, AlertRecord] = {}
        self._rules_by_key: dict[str, AlertRule] = {}
        self._pending: list[tuple[AlertRecord, str, str, float]] = []
        self._runs: dict[str, tuple[str, float]] = {}
        self._steps: dict[tuple[str, str], float] = {}
        # Steps that wait (approvals, signals, timers): (run, step) -> (workflow, since).
        self._waits: dict[tuple[str, str], tuple[str, float]] = {}
        self._waits_read_at: float | None = None
        self._windows: dict[str, _Window] = {}
        self._streaks: dict[str, int] = {}
        self._health: dict[str, tuple[str, float]] = {}
        self._capabilities: dict[str, set[str]] = {}
        self._no_healthy_since: dict[str, float] = {}
        # (alert key, receiver) -> when a firing alert was last re-sent (see _refresh)
        self._refreshed: dict[tuple[str, str], float] = {}
        self._task: asyncio.Task[None] | None = None
        self._restored = False

    # --- rules ------------------------------------------------------------
    def watch_workflow(self, workflow: Workflow) -> None:
        """Add a workflow's own rules (``alerts:`` and ``sla:``) for its runs."""
        rules = list(workflow.alerts)
        if workflow.sla is not None and not any(r.kind == "sla" and r.step is None
                                                 for r in rules):
            rules.append(AlertRule(name=f"{workflow.name}-sla", kind="sla", after=workflow.sla))
        self._workflow_rules[workflow.name] = rules

    def _rules(self, kind: str, workflow: str | None = None) -> list[AlertRule]:
        out = [r for r in self.config.rules if r.kind == kind
               and (r.workflow is None or workflow is None or r.workflow == workflow)]
        if workflow is not None:
            out += [r for r in self._workflow_rules.get(workflow, []) if r.kind == kind]
        else:
            for rules in self._workflow_rules.values():
                out += [r for r in rules if r.kind == kind]
        return out

    def _policy(self, rule: AlertRule) -> EscalationPolicy:
        if rule.escalation or self.config.default_escalation:
            return self.config.policy_for(rule)
        # No policy: tell the log once, with the severity the rule declares.
        policy = self._default_policies.get(rule.severity)
        if policy is None:
            policy = self._default_policies[rule.severity] = EscalationPolicy(
                levels=[EscalationLevel(after=0, severity=rule.severity, receivers=["log"])])
        return policy

    # --- firing and resolving ---------------------------------------------
    def _send(self, event: Event) -> None:
        if self._emit is not None:
            self._emit(event)

    def _persist(self, rec: AlertRecord, what: str, detail: str, ts: float) -> None:
        self._pending.append((copy.deepcopy(rec), what, detail, ts))

    def fire(self, rule: AlertRule, subject: str, summary: str, now: float, *,
             run_id: str | None = None, workflow: str | None = None,
             labels: dict[str, str] | None = None) -> AlertRecord | None:
        key = f"{rule.name}:{subject}"
        if key in self.active:
            return None  # deduplicated while firing
        rec = AlertRecord(key=key, rule=rule.name, kind=rule.kind, severity=rule.severity,
                          status="firing", summary=rule.summary or summary, fired_at=now,
                          labels=dict(labels or {}), run_id=run_id, workflow=workflow)
        self.active[key] = rec
        self._rules_by_key[key] = rule
        self._persist(rec, "fired", summary, now)
        self._send(AlertFired(run_id=run_id or "", ts=now, key=key, rule=rule.name,
                              kind=rule.kind, severity=rule.severity, summary=rec.summary,
                              workflow=workflow, scope=(rule.step and "step") or "run",
                              labels=rec.labels))
        self._escalate(rec, rule, now)
        return rec

    def resolve(self, key: str, now: float, why: str = "condition cleared") -> None:
        rec = self.active.pop(key, None)
        rule = self._rules_by_key.pop(key, None)
        if rec is None or rule is None:
            return
        rec.status, rec.resolved_at = "resolved", now
        for k in [k for k in self._refreshed if k[0] == key]:
            del self._refreshed[k]
        self._persist(rec, "resolved", why, now)
        self._send(AlertResolved(run_id=rec.run_id or "", ts=now, key=key, rule=rec.rule,
                                 kind=rec.kind, severity=rec.severity, summary=rec.summary))
        policy = self._policy(rule)
        told: set[str] = set()
        for level in policy.levels[: rec.level + 1]:
            for name in level.receivers:
                if name not in told:
                    told.add(name)
                    self.dispatcher.notify(name, Notification(rec, "resolved", rec.severity,
                                                              rec.level))

    def ack(self, key: str, by: str, now: float) -> bool:
        rec = self.active.get(key)
        if rec is None or rec.acked_at is not None:
            return False
        rec.acked_at, rec.acked_by = now, by
        self._persist(rec, "acked", by, now)
        return True

    def _escalate(self, rec: AlertRecord, rule: AlertRule, now: float) -> None:
        if rec.acked_at is not None:
            return
        policy = self._policy(rule)
        elapsed = now - rec.fired_at
        notified = False
        for i, level in enumerate(policy.levels):
            if i <= rec.level or level.after > elapsed:
                continue
            rec.level, rec.severity, rec.last_notified_at = i, level.severity, now
            for name in level.receivers:
                self.dispatcher.notify(name, Notification(rec, "firing", level.severity, i))
            self._persist(rec, "notified" if i == 0 else "escalated",
                          f"level {i}: {level.severity} -> {', '.join(level.receivers)}", now)
            self._send(AlertEscalated(run_id=rec.run_id or "", ts=now, key=rec.key, level=i,
                                      severity=level.severity, receivers=tuple(level.receivers)))
            notified = True
        if notified or rec.level < 0 or policy.repeat is None:
            return
        if rec.last_notified_at is not None and now - rec.last_notified_at >= policy.repeat:
            level = policy.levels[rec.level]
            rec.last_notified_at = now
            for name in level.receivers:
                self.dispatcher.notify(name, Notification(rec, "firing", level.severity,
                                                          rec.level))
            self._persist(rec, "repeated", f"level {rec.level} again", now)

    # --- events -----------------------------------------------------------
    def __call__(self, event: Event) -> None:
        try:
            self._on(event)
        except Exception:
            log.exception("alert evaluation failed on %s", event.type)

    def _on(self, e: Event) -> None:
        if isinstance(e, RunStarted):
            if not (e.resumed and e.run_id in self._runs):  # an SLA runs from the start
                self._runs[e.run_id] = (e.workflow, e.ts)
        elif isinstance(e, RunFinished):
            started = self._runs.pop(e.run_id, None)
            fired = {a.rule for a in self.active.values()
                     if a.run_id == e.run_id and a.kind == "sla"}
            for key in [k for k, a in self.active.items()
                        if a.run_id == e.run_id and a.kind == "sla"]:
                self.resolve(key, e.ts, f"run {e.status}")
            if started is not None:
                # Finished late between two ticks: the violation is still recorded.
                for rule in self._rules("sla", started[0]):
                    if rule.step is None and rule.after is not None and \
                            rule.name not in fired and e.ts - started[1] > rule.after:
                        rec = self._fire_sla(rule, e.run_id, started[0], e.ts - started[1], e.ts)
                        if rec is not None:
                            self.resolve(rec.key, e.ts, f"run {e.status}")
            for k in [k for k in self._steps if k[0] == e.run_id]:
                del self._steps[k]
            for k in [k for k in self._waits if k[0] == e.run_id]:
                del self._waits[k]
                self._stop_waiting(k[0], k[1], e.ts)
        elif isinstance(e, RunAbandoned):
            # Another process goes on with the run and watches its SLAs: not here, too.
            self._runs.pop(e.run_id, None)
            for k in [k for k in self._steps if k[0] == e.run_id]:
                del self._steps[k]
        elif isinstance(e, StepStarted):
            self._steps.setdefault((e.run_id, e.step_id), e.ts)
        elif isinstance(e, StepWaiting):
            workflow = self._runs.get(e.run_id, ("unknown", 0.0))[0]
            self._waits.setdefault((e.run_id, e.step_id), (workflow, e.ts))
        elif isinstance(e, StepSucceeded | StepFailed | StepSkipped | StepCancelled):
            self._steps.pop((e.run_id, e.step_id), None)
            if self._waits.pop((e.run_id, e.step_id), None) is not None:
                self._stop_waiting(e.run_id, e.step_id, e.ts)
            for key in [k for k, a in self.active.items() if a.kind == "sla"
                        and a.run_id == e.run_id and a.labels.get("step") == e.step_id]:
                self.resolve(key, e.ts, f"step {e.step_id} ended")
        if isinstance(e, StepSucceeded):
            self._outcome(e.run_id, e.step_id, e.agent_id, True, e.ts)
        elif isinstance(e, StepAttemptFailed) and e.error.type != "cancelled":
            self._outcome(e.run_id, e.step_id, e.agent_id, False, e.ts)
        elif isinstance(e, AgentRegistered):
            for cap in e.capabilities:
                self._capabilities.setdefault(cap, set()).add(e.agent_id)
            self._health.setdefault(e.agent_id, ("unknown", e.ts))
        elif isinstance(e, AgentUnregistered):
            self._health.pop(e.agent_id, None)
            for members in self._capabilities.values():
                members.discard(e.agent_id)
        elif isinstance(e, AgentHealthChanged):
            self._health[e.agent_id] = (e.new, e.ts)
            if e.new != "unhealthy":
                for key in [k for k, a in self.active.items() if a.kind == "agent_unhealthy"
                            and a.labels.get("agent") == e.agent_id]:
                    self.resolve(key, e.ts, f"agent {e.agent_id} is {e.new}")
            self._check_capabilities(e.ts)

    def _subjects(self, rule: AlertRule, workflow: str, step_id: str,
                  agent_id: str | None) -> str | None:
        if rule.agent is not None and rule.agent != agent_id:
            return None
        if rule.step is not None and rule.step != step_id:
            return None
        if rule.scope == "agent":
            return f"agent={agent_id}" if agent_id else None
        if rule.scope == "step":
            return f"step={workflow}/{step_id}"
        return f"workflow={workflow}"

    def _outcome(self, run_id: str, step_id: str, agent_id: str | None, ok: bool,
                 ts: float) -> None:
        workflow = self._runs.get(run_id, ("unknown", 0.0))[0]
        if "[" in step_id:  # an item of a for_each step counts as its step
            step_id = step_id[:step_id.index("[")]
        for rule in self._rules("error_rate", workflow):
            subject = self._subjects(rule, workflow, step_id, agent_id)
            if subject is None:
                continue
            key = f"{rule.name}:{subject}"
            window = self._windows.setdefault(key, _Window())
            window.add(ts, ok)
            self._check_rate(rule, subject, window, ts, workflow)
        for rule in self._rules("consecutive_failures", workflow):
            subject = self._subjects(rule, workflow, step_id, agent_id)
            if subject is None:
                continue
            key = f"{rule.name}:{subject}"
            if ok:
                self._streaks[key] = 0
                self.resolve(key, ts, "a call succeeded")
                continue
            self._streaks[key] = self._streaks.get(key, 0) + 1
            if self._streaks[key] >= rule.count:
                self.fire(rule, subject, f"{self._streaks[key]} consecutive failures ({subject})",
                          ts, workflow=workflow, labels=_labels(subject))

    def _check_rate(self, rule: AlertRule, subject: str, window: _Window, now: float,
                    workflow: str | None) -> None:
        assert rule.threshold is not None
        rate, n = window.rate(now, rule.window)
        key = f"{rule.name}:{subject}"
        if n >= rule.min_calls and rate > rule.threshold:
            self.fire(rule, subject, f"error rate {rate:.0%} over {n} calls in "
                      f"{format_duration(rule.window)} ({subject}), above "
                      f"{rule.threshold:.0%}", now, workflow=workflow, labels=_labels(subject))
        elif key in self.active and rate <= rule.threshold:
            self.resolve(key, now, f"error rate back to {rate:.0%}")

    def _fire_sla(self, rule: AlertRule, run_id: str, workflow: str, running_s: float,
                  now: float, step: str | None = None) -> AlertRecord | None:
        assert rule.after is not None
        what = f"step '{step}' of run {run_id}" if step else f"run {run_id}"
        labels = {"workflow": workflow, **({"step": step} if step else {})}
        subject = f"{run_id}/{step}" if step else run_id
        return self.fire(rule, subject, f"{what} of {workflow} has been running for "
                         f"{format_duration(running_s)}, past its SLA of "
                         f"{format_duration(rule.after)}", now, run_id=run_id,
                         workflow=workflow, labels=labels)

    def _check_capabilities(self, now: float) -> None:
        for cap, members in self._capabilities.items():
            if members and all(self._health.get(a, ("unknown", now))[0] == "unhealthy"
                               for a in members):
                self._no_healthy_since.setdefault(cap, now)
            else:
                self._no_healthy_since.pop(cap, None)
                for key in [k for k, a in self.active.items() if a.kind == "no_healthy_agents"
                            and a.labels.get("capability") == cap]:
                    self.resolve(key, now, f"capability {cap} has a usable agent again")

    def _stop_waiting(self, run_id: str, step_id: str, now: float) -> None:
        for key in [k for k, a in self.active.items() if a.kind == "waiting"
                    and a.run_id == run_id and a.labels.get("step") == step_id]:
            self.resolve(key, now, f"step {step_id} waits no more")

    async def _read_waits(self, now: float) -> None:
        """What waits, from the store, every ``_WAITS_EVERY_S`` when a rule asks: the
        steps of runs other processes suspended, and the end of their waits."""
        if self.ledger is None or not self._rules("waiting"):
            return
        if self._waits_read_at is not None and now - self._waits_read_at < _WAITS_EVERY_S:
            return
        self._waits_read_at = now
        try:
            found = await self.ledger.waiting()
        except Exception:
            log.warning("could not read the waiting steps from the store", exc_info=True)
            return
        current = {(run, step): (wf, since) for run, wf, step, since in found}
        for key in [k for k in self._waits if k not in current and k[0] not in self._runs]:
            del self._waits[key]
            self._stop_waiting(key[0], key[1], now)
        for key, value in current.items():
            self._waits.setdefault(key, value)

    # --- taking over ---------------------------------------------------------
    def track_run(self, run_id: str, workflow: str, started: float) -> None:
        """A run already going when this manager began to watch (a new fleet leader):
        its SLA counts from when it started."""
        self._runs.setdefault(run_id, (workflow, started))

    def track_step(self, run_id: str, step_id: str, started: float) -> None:
        """A step already running when this manager began to watch."""
        self._steps.setdefault((run_id, step_id), started)

    def watches(self, workflow: str) -> bool:
        """Whether the rules of ``workflow`` itself are known here."""
        return workflow in self._workflow_rules

    def wants_steps(self) -> bool:
        """Whether any rule watches single steps (then running steps are worth tracking)."""
        return any(r.step is not None for r in self._rules("sla"))

    def reset(self) -> None:
        """Forget everything evaluated (another process evaluates the rules now), but
        not what this process knows of its agents' health, which it keeps probing."""
        self.active.clear()
        self._waits.clear()
        self._waits_read_at = None
        self._rules_by_key.clear()
        self._pending.clear()
        self._runs.clear()
        self._steps.clear()
        self._windows.clear()
        self._streaks.clear()
        self._refreshed.clear()
        self._restored = False

    # --- time -------------------------------------------------------------
    async def restore(self) -> None:
        """Take up alerts a previous process left firing, so they can still resolve.

        A streak of failures or an unhealthy agent outlives one ``podium run``; an
        SLA alert whose run has ended meanwhile is resolved at once.
        """
        self._restored = True
        if self.ledger is None:
            return
        try:
            stored = await self.ledger.firing()
        except Exception:
            log.warning("could not read firing alerts from the store", exc_info=True)
            return
        known = {r.name: r for r in self.config.rules}
        for rules in self._workflow_rules.values():
            known.update({r.name: r for r in rules})
        now = self.clock.now()
        for rec in stored:
            rule = known.get(rec.rule)
            if rule is None or rec.key in self.active:
                continue
            self.active[rec.key] = rec
            self._rules_by_key[rec.key] = rule
            if rec.kind == "sla" and rec.run_id is not None and rec.run_id not in self._runs \
                    and not await self.ledger.run_is_live(rec.run_id):
                self.resolve(rec.key, now, "the run ended while no one watched")

    async def tick(self) -> None:
        """Evaluate what depends on time passing; escalate; persist; pick up acks."""
        if not self._restored:
            await self.restore()
        now = self.clock.now()
        for run_id, (workflow, started) in list(self._runs.items()):
            for rule in self._rules("sla", workflow):
                if rule.step is None and rule.after is not None and now - started > rule.after:
                    self._fire_sla(rule, run_id, workflow, now - started, now)
        for (run_id, step_id), started in list(self._steps.items()):
            workflow = self._runs.get(run_id, ("unknown", 0.0))[0]
            for rule in self._rules("sla", workflow):
                if rule.step == step_id and rule.after is not None and now - started > rule.after:
                    self._fire_sla(rule, run_id, workflow, now - started, now, step=step_id)
        await self._read_waits(now)
        for (run_id, step_id), (workflow, since) in list(self._waits.items()):
            for rule in self._rules("waiting", workflow):
                if rule.step in (None, step_id) and rule.after is not None \
                        and now - since > rule.after:
                    self.fire(rule, f"{run_id}/{step_id}",
                              f"step '{step_id}' of run {run_id} ({workflow}) has been waiting"
                              f" for {format_duration(now - since)}, over"
                              f" {format_duration(rule.after)}", now, run_id=run_id,
                              workflow=workflow, labels={"workflow": workflow, "step": step_id})
        for rule in self._rules("agent_unhealthy"):
            for agent_id, (level, since) in self._health.items():
                if level == "unhealthy" and (rule.agent in (None, agent_id)) and \
                        now - since >= (rule.after or 0.0):
                    self.fire(rule, f"agent={agent_id}", f"agent {agent_id} has been unhealthy"
                              f" for {format_duration(now - since)}", now,
                              labels={"agent": agent_id})
        for rule in self._rules("no_healthy_agents"):
            for cap, since in self._no_healthy_since.items():
                if rule.capability in (None, cap) and now - since >= (rule.after or 0.0):
                    self.fire(rule, f"capability={cap}", f"no healthy agent for capability"
                              f" '{cap}' for {format_duration(now - since)}", now,
                              labels={"capability": cap})
        for key, window in list(self._windows.items()):
            rate_rule = self._rules_by_key.get(key)
            if rate_rule is not None and rate_rule.kind == "error_rate":
                # Old failures leave the window with time alone: resolve then.
                self._check_rate(rate_rule, key.split(":", 1)[1], window, now,
                                 self.active[key].workflow if key in self.active else None)
        await self._sync_acks(now)
        for key, rec in list(self.active.items()):
            self._escalate(rec, self._rules_by_key[key], now)
            self._refresh(rec, self._rules_by_key[key], now)
        await self.flush()

    def _refresh(self, rec: AlertRecord, rule: AlertRule, now: float) -> None:
        """Re-send a firing alert to receivers that forget it otherwise (Alertmanager).

        Not a new notification to a person: Alertmanager deduplicates it, and would
        mark the alert resolved after its ``resolve_timeout`` without it.
        """
        told: set[str] = set()
        for level in self._policy(rule).levels[: rec.level + 1]:
            for name in level.receivers:
                every = getattr(self.dispatcher.receivers.get(name), "refresh_s", None)
                if name in told or not isinstance(every, int | float):
                    continue
                told.add(name)
                last = self._refreshed.get((rec.key, name), rec.last_notified_at or rec.fired_at)
                if now - last >= every:
                    self._refreshed[(rec.key, name)] = now
                    self.dispatcher.notify(name, Notification(rec, "firing", rec.severity,
                                                              rec.level))

    async def _sync_acks(self, now: float) -> None:
        """Acks come from other processes (``podium alerts ack``) through the store."""
        if self.ledger is None or not self.active:
            return
        try:
            for stored in await self.ledger.firing():
                rec = self.active.get(stored.key)
                if rec is not None and rec.acked_at is None and stored.acked_at is not None \
                        and stored.fired_at == rec.fired_at:
                    rec.acked_at, rec.acked_by = stored.acked_at, stored.acked_by
        except Exception:
            log.warning("could not read acknowledgements from the store", exc_info=True)

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if self.ledger is None:
            return
        for rec, what, detail, ts in pending:
            try:
                await self.ledger.record(rec, what, detail, ts)
            except Exception:
                log.warning("could not store alert %s", rec.key, exc_info=True)

    # --- lifecycle --------------------------------------------------------
    def start(self, *, ticking: bool = True) -> None:
        """Start delivering notifications, and with ``ticking`` evaluating time every
        ``tick_s`` (without it, whoever feeds the events calls ``tick``)."""
        self.dispatcher.start()
        if ticking and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._loop(),
                                                                name="podium:alerts")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alert tick failed")

    async def aclose(self, timeout_s: float = 2.0) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()
        await self.dispatcher.aclose(timeout_s)


def _labels(subject: str) -> dict[str, Any]:
    kind, _, value = subject.partition("=")
    return {kind: value} if value else {}
