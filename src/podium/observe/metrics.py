"""Prometheus metrics, counted from the event stream.

Each engine owns a ``CollectorRegistry`` (never the global one), so two
engines in one process do not collide. Labels are bounded: workflow names,
step ids and agent ids (from files), statuses, and error types from a fixed
set (an agent's own types count as ``other``: an agent may send anything);
never run ids.

Series cost memory in Prometheus and in every scrape. Per-step labels stay on
the counters (steps finished, attempts, retries: one series per step and
outcome), not on the duration histogram (18 series per step); ``_created``
series are not exported. A 31-step workflow once made 674 series, now ~120.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from podium.events import (
    AgentHealthChanged,
    AgentRegistered,
    AlertEscalated,
    AlertFired,
    AlertResolved,
    CircuitStateChanged,
    CompensationAttemptFailed,
    CompensationStarted,
    CompensationSucceeded,
    Event,
    RunAbandoned,
    RunFinished,
    RunStarted,
    RunWaiting,
    StepAttemptFailed,
    StepBackPressure,
    StepCancelled,
    StepFailed,
    StepRetryScheduled,
    StepSkipped,
    StepStarted,
    StepSucceeded,
)
from podium.state import StepStatus

__all__ = ["CONTENT_TYPE", "EngineMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The call outcomes a metric label may take; any other error type counts as "other".
OUTCOMES = frozenset({
    "success", "busy", "cancelled", "timeout", "unavailable", "rate_limited", "agent_error",
    "invalid_input", "no_capacity", "worker_lost", "output_too_large", "internal",
    "store_error",
})
_RUN_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_STEP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
HEALTH_STATES = ["healthy", "degraded", "unhealthy", "unknown"]
CIRCUIT_STATES = ["closed", "open", "half_open"]


class _AgentCpu(Collector):
    """CPU seconds spent inside in-process agents, read from the agents at scrape time."""

    def __init__(self, agents: Callable[[], Iterable[Any]]) -> None:
        self._agents = agents

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily(
            "podium_agent_cpu_seconds",
            "CPU time of in-process (Python) agents: their threads' CPU time for plain"
            " functions, the time their steps hold the event loop for coroutines",
            labels=["agent"])
        for agent in self._agents():
            cpu = getattr(agent, "cpu_seconds", None)
            if isinstance(cpu, float | int):
                family.add_metric([agent.id], float(cpu))
        yield family


class _Exposed:
    """The registry's metrics as served: without their ``_created`` samples (one more
    series per counter and histogram child, which nobody here reads; prometheus-client
    can only switch them off for the whole process, which is not a library's call to
    make), and with this process's own labels on every sample (a worker's id, so
    that the metrics of many workers add up without colliding)."""

    def __init__(self, registry: CollectorRegistry, labels: Mapping[str, str]) -> None:
        self._registry = registry
        self._labels = dict(labels)

    def collect(self) -> Iterable[Metric]:
        extra = self._labels
        for family in self._registry.collect():
            samples = [s for s in family.samples if not s.name.endswith("_created")]
            if extra:
                samples = [s._replace(labels={**s.labels, **extra}) for s in samples]
            family.samples = samples
            yield family


class EngineMetrics:
    """An event subscriber that keeps Prometheus metrics for one engine."""

    def __init__(self, agents: Callable[[], Iterable[Any]] | None = None,
                 labels: Mapping[str, str] | None = None) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        # What is served (``exposition``, ``--metrics-port``): see ``_Exposed``.
        self.exposed = CollectorRegistry(auto_describe=False)
        self.exposed.register(_Exposed(r, labels or {}))
        self.runs = Counter("podium_runs", "Runs finished, by workflow and final status",
                            ["workflow", "status"], registry=r)
        self.run_duration = Histogram("podium_run_duration_seconds", "Run duration",
                                      ["workflow", "status"], buckets=_RUN_BUCKETS, registry=r)
        self.runs_active = Gauge("podium_runs_in_progress", "Runs executing now",
                                 ["workflow"], registry=r)
        self.steps = Counter("podium_steps", "Steps finished, by workflow, step and status",
                             ["workflow", "step", "status"], registry=r)
        self.step_duration = Histogram(
            "podium_step_duration_seconds", "Duration of a step's successful attempt",
            ["workflow"], buckets=_STEP_BUCKETS, registry=r)
        self.attempts = Counter("podium_step_attempts", "Step attempts started",
                                ["workflow", "step"], registry=r)
        self.retries = Counter("podium_step_retries", "Retries scheduled",
                               ["workflow", "step"], registry=r)
        self.agent_calls = Counter("podium_agent_calls", "Agent calls by outcome",
                                   ["agent", "outcome"], registry=r)
        self.agent_latency = Histogram("podium_agent_call_duration_seconds", "Agent call latency",
                                       ["agent"], buckets=_STEP_BUCKETS, registry=r)
        self.agent_inflight = Gauge("podium_agent_inflight", "Calls in flight per agent",
                                    ["agent"], registry=r)
        self.agent_health = Enum("podium_agent_health", "Agent health level", ["agent"],
                                 states=HEALTH_STATES, registry=r)
        self.circuit = Enum("podium_agent_circuit", "Circuit breaker state", ["agent"],
                            states=CIRCUIT_STATES, registry=r)
        self.sla = Counter("podium_sla_violations", "SLA violations by workflow and scope",
                           ["workflow", "scope"], registry=r)
        self.alerts_firing = Gauge("podium_alerts_firing", "Alerts firing now",
                                   ["rule", "severity"], registry=r)
        ProcessCollector(registry=r)  # process CPU seconds and resident memory
        if agents is not None:
            r.register(_AgentCpu(agents))
        # run id -> workflow, and (run, step) -> agent of the attempt in flight:
        # kept only while the run executes, so memory stays bounded.
        self._workflow: dict[str, str] = {}
        self._calls: dict[tuple[str, str], str] = {}
        # (run, step) told "busy" by its agent: its next start is the same attempt again.
        self._busy: set[tuple[str, str]] = set()
        # alert key -> (rule, severity) it is counted under while it fires
        self._firing: dict[str, tuple[str, str]] = {}
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            RunStarted: self._run_started, RunFinished: self._run_finished,
            RunWaiting: self._run_waiting, RunAbandoned: self._run_abandoned,
            StepStarted: self._step_started, StepSucceeded: self._step_succeeded,
            StepAttemptFailed: self._attempt_failed, StepRetryScheduled: self._retry,
            StepBackPressure: self._back_pressure,
            StepFailed: self._step_failed, StepSkipped: self._step_skipped,
            StepCancelled: self._step_cancelled,
            CompensationStarted: self._comp_started,
            CompensationSucceeded: self._comp_succeeded,
            CompensationAttemptFailed: self._comp_failed,
            AgentRegistered: self._agent_registered, AgentHealthChanged: self._health,
            CircuitStateChanged: self._circuit, AlertFired: self._alert_fired,
            AlertEscalated: self._alert_escalated, AlertResolved: self._alert_resolved,
        }

    def __call__(self, event: Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def exposition(self) -> bytes:
        return generate_latest(self.exposed)

    # --- runs and steps ---------------------------------------------------
    def _wf(self, run_id: str) -> str:
        return self._workflow.get(run_id, "unknown")

    # A run is in progress here from its start (or resume) to its end or its wait for a
    # signal or timer (it then holds no process; another may continue it): counted by
    # run id, so neither an execution that waited nor an end seen without a start here
    # (a waiting run cancelled) moves the gauge twice.
    def _run_started(self, e: RunStarted) -> None:
        if e.run_id not in self._workflow:
            self.runs_active.labels(e.workflow).inc()
        self._workflow[e.run_id] = e.workflow

    def _run_waiting(self, e: RunWaiting | RunAbandoned) -> None:
        wf = self._workflow.pop(e.run_id, None)
        if wf is not None:
            self.runs_active.labels(wf).dec()

    def _run_abandoned(self, e: RunAbandoned) -> None:
        """Another process goes on with the run: it leaves the gauge, and so do its calls
        in flight here (cancelled, their ends never told), counted under no outcome."""
        self._run_waiting(e)
        run_id = e.run_id
        for key in [k for k in self._calls if k[0] == run_id]:
            self.agent_inflight.labels(self._calls.pop(key)).dec()
        self._busy = {k for k in self._busy if k[0] != run_id}

    def _run_finished(self, e: RunFinished) -> None:
        wf = self._workflow.pop(e.run_id, None)
        if wf is not None:
            self.runs_active.labels(wf).dec()
        else:
            wf = e.workflow
        self.runs.labels(wf, e.status).inc()
        self.run_duration.labels(wf, e.status).observe(e.duration_s)

    def _call_started(self, run_id: str, step_id: str, agent_id: str) -> None:
        self._calls[(run_id, step_id)] = agent_id
        self.agent_inflight.labels(agent_id).inc()

    def _call_ended(self, run_id: str, step_id: str, outcome: str,
                    duration_s: float | None) -> None:
        agent_id = self._calls.pop((run_id, step_id), None)
        if agent_id is None:
            return
        self.agent_inflight.labels(agent_id).dec()
        self.agent_calls.labels(agent_id, outcome if outcome in OUTCOMES else "other").inc()
        if duration_s is not None:
            self.agent_latency.labels(agent_id).observe(duration_s)

    def _step_started(self, e: StepStarted) -> None:
        key = (e.run_id, e.step_id)
        if key in self._busy:
            self._busy.discard(key)  # the attempt an agent turned away, started again
        else:
            self.attempts.labels(self._wf(e.run_id), _label(e.step_id)).inc()
        self._call_started(e.run_id, e.step_id, e.agent_id)

    def _back_pressure(self, e: StepBackPressure) -> None:
        """Counted as a call that met back-pressure (outcome ``busy``), never a failure."""
        self._busy.add((e.run_id, e.step_id))
        self._call_ended(e.run_id, e.step_id, "busy", None)

    def _step_succeeded(self, e: StepSucceeded) -> None:
        wf = self._wf(e.run_id)
        self.steps.labels(wf, _label(e.step_id), StepStatus.SUCCEEDED).inc()
        self.step_duration.labels(wf).observe(e.duration_s)
        self._call_ended(e.run_id, e.step_id, "success", e.duration_s)

    def _attempt_failed(self, e: StepAttemptFailed) -> None:
        self._busy.discard((e.run_id, e.step_id))  # the turned-away attempt ended here
        self._call_ended(e.run_id, e.step_id, e.error.type, e.duration_s)

    def _retry(self, e: StepRetryScheduled) -> None:
        self.retries.labels(self._wf(e.run_id), _label(e.step_id)).inc()

    def _step_failed(self, e: StepFailed) -> None:
        self.steps.labels(self._wf(e.run_id), _label(e.step_id), StepStatus.FAILED).inc()

    def _step_skipped(self, e: StepSkipped) -> None:
        self.steps.labels(self._wf(e.run_id), _label(e.step_id), StepStatus.SKIPPED).inc()

    def _step_cancelled(self, e: StepCancelled) -> None:
        self._busy.discard((e.run_id, e.step_id))
        self.steps.labels(self._wf(e.run_id), _label(e.step_id),
                         StepStatus.CANCELLED).inc()
        self._call_ended(e.run_id, e.step_id, "cancelled", None)

    def _comp_started(self, e: CompensationStarted) -> None:
        self._call_started(e.run_id, e.step_id, e.agent_id)

    def _comp_succeeded(self, e: CompensationSucceeded) -> None:
        self.steps.labels(self._wf(e.run_id), e.step_id, StepStatus.COMPENSATED).inc()
        self._call_ended(e.run_id, e.step_id, "success", e.duration_s)

    def _comp_failed(self, e: CompensationAttemptFailed) -> None:
        self._call_ended(e.run_id, e.step_id, e.error.type, e.duration_s)

    # --- fleet and alerts -------------------------------------------------
    def _agent_registered(self, e: AgentRegistered) -> None:
        self.agent_health.labels(e.agent_id).state("unknown")
        self.circuit.labels(e.agent_id).state("closed")
        self.agent_inflight.labels(e.agent_id).set(0)

    def _health(self, e: AgentHealthChanged) -> None:
        self.agent_health.labels(e.agent_id).state(e.new)

    def _circuit(self, e: CircuitStateChanged) -> None:
        self.circuit.labels(e.agent_id).state(e.new)

    def _alert_fired(self, e: AlertFired) -> None:
        if e.key not in self._firing:
            self._firing[e.key] = (e.rule, e.severity)
            self.alerts_firing.labels(e.rule, e.severity).inc()
        if e.kind == "sla":
            self.sla.labels(e.workflow or "unknown", e.scope or "run").inc()

    def _alert_escalated(self, e: AlertEscalated) -> None:
        # An escalated alert is counted under its new severity (and no longer the old one).
        counted = self._firing.get(e.key)
        if counted is None or counted[1] == e.severity:
            return
        rule, old = counted
        self.alerts_firing.labels(rule, old).dec()
        self.alerts_firing.labels(rule, e.severity).inc()
        self._firing[e.key] = (rule, e.severity)

    def _alert_resolved(self, e: AlertResolved) -> None:
        # Decrement what was counted, whatever severity the alert ended with; an alert
        # that fired before these metrics listened was never counted.
        counted = self._firing.pop(e.key, None)
        if counted is not None:
            self.alerts_firing.labels(*counted).dec()


def _label(step_id: str) -> str:
    """The step label of a sample: items of a for_each step (``docs[7]``) count together
    as ``docs[]``, so a 10,000-item map is one series, not 10,000."""
    return step_id if "[" not in step_id else step_id[:step_id.index("[")] + "[]"
