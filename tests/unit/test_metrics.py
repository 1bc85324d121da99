"""Prometheus metrics counted from a real engine's event stream, checked to the exact value.

The known workflow: ``burn`` (a CPU-burning in-process agent) succeeds at
once; ``flaky`` fails twice with ``unavailable`` and succeeds on attempt 3
(retries wait on a fake clock, so no real time passes); ``extra`` is optional
and fails once with ``agent_error``. The run succeeds. A second workflow fails
fast so failed runs and skipped steps are counted too.
"""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from podium import Engine, EngineConfig, FakeClock, Unavailable
from podium.definition import workflow_from_dict
from podium.definition.alerts import AlertsFile
from podium.events import ErrorInfo, RunStarted, StepAttemptFailed, StepSucceeded
from podium.observe.alerts import AlertManager
from podium.observe.metrics import EngineMetrics
from podium.observe.receivers import Dispatcher, Notification
from podium.runtime import StoreLedger
from podium.store import MemoryStore, RunRecord
from tests.conftest import registry_of

KNOWN = {
    "name": "known",
    "steps": [
        {"id": "burn", "agent": "burner"},
        {"id": "flaky", "agent": "flake", "depends_on": ["burn"],
         "retry": {"max_attempts": 3, "initial_delay": "1s", "backoff": 2, "jitter": "none"}},
        {"id": "extra", "agent": "broken", "depends_on": ["burn"], "optional": True},
    ],
}
DOOMED = {
    "name": "doomed",
    "steps": [{"id": "first", "agent": "broken"},
              {"id": "second", "agent": "burner", "depends_on": ["first"]}],
}


def burner(task: Any) -> Any:
    """Spend about 30 ms of CPU in this thread."""
    t0 = time.thread_time()
    n = 0
    while time.thread_time() - t0 < 0.03:
        n += 1
    return {"spins": n}


def flake(task: Any) -> Any:
    if task.attempt < 3:
        raise Unavailable(f"busy (attempt {task.attempt})")
    return {"attempt": task.attempt}


def broken(task: Any) -> Any:
    raise ValueError("the extra step always breaks")


def make_engine(clock: FakeClock | None = None) -> tuple[Engine, EngineMetrics]:
    cfg = EngineConfig(registry=registry_of(burner=burner, flake=flake, broken=broken),
                       store=MemoryStore(), clock=clock or FakeClock(), rng=random.Random(1))
    engine = Engine(cfg)
    metrics = EngineMetrics(agents=lambda: engine.registry.agents)
    engine.bus.subscribe(metrics)
    # As the CLI and the server do: agents registered before the metrics listened are
    # announced again, so every agent has its health and circuit series from the start.
    engine.registry.attach(engine.bus.emit, engine.clock)
    return engine, metrics


def value(metrics: EngineMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def run_known(clock: FakeClock | None = None) -> tuple[EngineMetrics, list[RunRecord]]:
    engine, metrics = make_engine(clock)
    async with engine:
        ok = await engine.run(workflow_from_dict(KNOWN))
        bad = await engine.run(workflow_from_dict(DOOMED))
    return metrics, [ok, bad]


async def test_a_known_workflow_produces_exact_run_step_attempt_and_retry_counts() -> None:
    clock = FakeClock()
    metrics, (ok, bad) = await run_known(clock)
    assert (ok.status, bad.status) == ("succeeded", "failed")
    assert clock.sleeps == [1.0, 2.0]  # flaky's two retries waited on the fake clock

    assert value(metrics, "podium_runs_total", workflow="known", status="succeeded") == 1
    assert value(metrics, "podium_runs_total", workflow="doomed", status="failed") == 1
    assert value(metrics, "podium_runs_total", workflow="known", status="failed") is None
    assert value(metrics, "podium_run_duration_seconds_count", workflow="known",
                 status="succeeded") == 1
    assert value(metrics, "podium_runs_in_progress", workflow="known") == 0
    assert value(metrics, "podium_runs_in_progress", workflow="doomed") == 0

    steps = {(s, st): value(metrics, "podium_steps_total", workflow=wf, step=s, status=st)
             for wf, s, st in [("known", "burn", "succeeded"), ("known", "flaky", "succeeded"),
                               ("known", "extra", "failed"), ("known", "flaky", "failed"),
                               ("doomed", "first", "failed"), ("doomed", "second", "skipped")]}
    assert steps == {("burn", "succeeded"): 1, ("flaky", "succeeded"): 1,
                     ("extra", "failed"): 1, ("flaky", "failed"): None,
                     ("first", "failed"): 1, ("second", "skipped"): 1}

    attempts = {s: value(metrics, "podium_step_attempts_total", workflow="known", step=s)
                for s in ("burn", "flaky", "extra")}
    assert attempts == {"burn": 1, "flaky": 3, "extra": 1}
    assert value(metrics, "podium_step_retries_total", workflow="known", step="flaky") == 2
    assert value(metrics, "podium_step_retries_total", workflow="known", step="extra") is None

    # Only successful attempts are step durations: one each for burn and flaky, counted
    # per workflow (a step label on a histogram costs 18 series per step).
    assert value(metrics, "podium_step_duration_seconds_count", workflow="known") == 2


async def test_agent_calls_by_outcome_latency_inflight_and_cpu_seconds() -> None:
    metrics, _runs = await run_known()
    calls = {(a, o): value(metrics, "podium_agent_calls_total", agent=a, outcome=o)
             for a, o in [("burner", "success"), ("flake", "unavailable"), ("flake", "success"),
                          ("broken", "agent_error")]}
    # burner ran in both workflows; broken failed once in each.
    assert calls == {("burner", "success"): 1, ("flake", "unavailable"): 2,
                     ("flake", "success"): 1, ("broken", "agent_error"): 2}
    assert value(metrics, "podium_agent_call_duration_seconds_count", agent="flake") == 3
    assert value(metrics, "podium_agent_call_duration_seconds_count", agent="burner") == 1
    for agent in ("burner", "flake", "broken"):
        assert value(metrics, "podium_agent_inflight", agent=agent) == 0
        assert value(metrics, "podium_agent_health", agent=agent, podium_agent_health="unknown") \
            == 1  # announced by the registry; in-process agents are never health-checked
        assert value(metrics, "podium_agent_circuit", agent=agent,
                     podium_agent_circuit="closed") == 1
    cpu = value(metrics, "podium_agent_cpu_seconds_total", agent="burner")
    assert cpu is not None
    assert cpu > 0.01  # it burned about 0.03 s of CPU; the other agents almost none
    assert value(metrics, "process_cpu_seconds_total") is not None


async def test_two_engines_in_one_process_keep_separate_registries() -> None:
    engine_a, metrics_a = make_engine()
    engine_b, metrics_b = make_engine()
    async with engine_a, engine_b:
        await engine_a.run(workflow_from_dict(KNOWN))
        await engine_a.run(workflow_from_dict(KNOWN))
        await engine_b.run(workflow_from_dict(DOOMED))
    assert metrics_a.registry is not metrics_b.registry
    assert value(metrics_a, "podium_runs_total", workflow="known", status="succeeded") == 2
    assert value(metrics_b, "podium_runs_total", workflow="known", status="succeeded") is None
    assert value(metrics_b, "podium_runs_total", workflow="doomed", status="failed") == 1
    assert value(metrics_a, "podium_runs_total", workflow="doomed", status="failed") is None
    assert value(metrics_a, "podium_step_attempts_total", workflow="known", step="flaky") == 6
    # The default global registry is never touched.
    from prometheus_client import REGISTRY

    assert REGISTRY.get_sample_value("podium_runs_total",
                                     {"workflow": "known", "status": "succeeded"}) is None


async def test_no_run_id_appears_anywhere_in_the_exposition() -> None:
    metrics, runs = await run_known()
    text = metrics.exposition().decode()
    assert 'podium_runs_total{status="succeeded",workflow="known"} 1.0' in text
    for run in runs:
        assert run.run_id not in text
        assert run.run_id[:8] not in text
    assert "run_id" not in text


class _Sink:
    name = "sink"

    async def send(self, note: Notification) -> None:
        return None

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize("escalate", [False, True])
async def test_alerts_firing_gauge_returns_to_zero_when_an_alert_resolves(
    escalate: bool,
) -> None:
    """Also after the alert escalated to another severity than the one it fired with."""
    clock = FakeClock()
    metrics = EngineMetrics()
    config = AlertsFile.model_validate({
        "rules": [{"name": "streak", "kind": "consecutive_failures", "count": 1,
                   "escalation": "up"}],
        "receivers": [{"name": "sink", "type": "log"}],
        "escalation": {"up": {"levels": [
            {"after": 0, "severity": "warning", "receivers": ["sink"]},
            {"after": "10m", "severity": "critical", "receivers": ["sink"]}]}},
    })
    manager = AlertManager(config, StoreLedger(MemoryStore()), clock=clock, emit=metrics,
                           dispatcher=Dispatcher({"sink": _Sink()}, clock=clock))
    manager.start()
    try:
        manager(RunStarted(run_id="r1", ts=clock.now(), workflow="wf", version=1))
        manager(StepAttemptFailed(run_id="r1", ts=clock.now(), step_id="s", attempt=1,
                                  agent_id="a", error=ErrorInfo("agent_error", "x"),
                                  duration_s=0.0))
        assert value(metrics, "podium_alerts_firing", rule="streak", severity="warning") == 1
        if escalate:
            clock.advance(600)
            await manager.tick()
            assert manager.active["streak:workflow=wf"].severity == "critical"
            assert value(metrics, "podium_alerts_firing", rule="streak",
                         severity="warning") == 0
            assert value(metrics, "podium_alerts_firing", rule="streak",
                         severity="critical") == 1
        manager(StepSucceeded(run_id="r1", ts=clock.now(), step_id="s", attempt=2,
                              agent_id="a", output=None, duration_s=0.0))
        samples = {s.labels["severity"]: s.value
                   for fam in metrics.registry.collect() if fam.name == "podium_alerts_firing"
                   for s in fam.samples}
        assert set(samples.values()) == {0.0}, samples
    finally:
        await manager.aclose()


async def test_sla_violations_are_counted_by_workflow_and_scope() -> None:
    clock = FakeClock()
    metrics = EngineMetrics()
    config = AlertsFile.model_validate({"rules": [
        {"name": "run-sla", "kind": "sla", "after": "1m"},
        {"name": "step-sla", "kind": "sla", "after": "30s", "step": "s"}]})
    manager = AlertManager(config, None, clock=clock, emit=metrics,
                           dispatcher=Dispatcher({"log": _Sink()}, clock=clock))
    manager.start()
    try:
        from podium.events import StepStarted

        manager(RunStarted(run_id="r1", ts=clock.now(), workflow="wf", version=1))
        manager(StepStarted(run_id="r1", ts=clock.now(), step_id="s", attempt=1, agent_id="a"))
        clock.advance(61)
        await manager.tick()
        await manager.tick()
    finally:
        await manager.aclose()
    assert value(metrics, "podium_sla_violations_total", workflow="wf", scope="run") == 1
    assert value(metrics, "podium_sla_violations_total", workflow="wf", scope="step") == 1


async def test_an_async_agent_is_charged_for_its_steps_on_the_loop_not_its_waits() -> None:
    import asyncio

    from podium import PythonAgent
    from podium.agents.base import Task

    async def busy_then_wait(task: Task) -> Any:
        end = time.perf_counter() + 0.03
        while time.perf_counter() < end:  # holds the loop for ~30 ms
            pass
        await asyncio.sleep(1.0)  # other tasks run meanwhile: not the agent's time
        return 1

    async def neighbour() -> None:
        end = time.perf_counter() + 0.05  # 50 ms of someone else's work
        while time.perf_counter() < end:
            await asyncio.sleep(0)

    agent = PythonAgent(busy_then_wait, id="a", capabilities=["a"])
    await asyncio.gather(agent.invoke(Task("r", "s", 1, "k", "a", None)), neighbour())
    # Its 30 ms, far below the more than 1 s the whole await took; the room above is
    # for a loaded machine, where a step on the loop can be paused for a while.
    assert 0.029 <= agent.cpu_seconds < 0.5


async def test_series_stay_few_and_labels_take_only_known_error_types() -> None:
    """A 31-step run made 674 series: per-step histograms and `_created` samples. Now
    the histogram is per workflow and no `_created` is exported; an agent's own error
    type (however long) is counted as `other`, never as a label value of its own."""
    from podium import AgentError

    def odd(task: Any) -> Any:
        if task.step_id == "s00":
            raise AgentError("no", type="x" * 60)  # a valid, but unknown, error type
        return 1

    wf = workflow_from_dict({"name": "wide", "mode": "parallel", "on_failure": "continue",
                             "steps": [{"id": f"s{i:02d}", "agent": "odd"} for i in range(31)]})
    metrics = EngineMetrics()
    cfg = EngineConfig(registry=registry_of(odd=odd), store=MemoryStore())
    async with Engine(cfg) as engine:
        engine.bus.subscribe(metrics)
        run = await engine.run(wf)
    assert run.steps["s00"].error is not None
    text = metrics.exposition().decode()
    series = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert not [ln for ln in series if "_created" in ln]
    assert len(series) < 200, len(series)
    assert 'outcome="other"' in text
    assert "x" * 60 not in text


def test_a_workers_own_label_is_on_every_served_sample_and_created_ones_are_not() -> None:
    """Workers' metrics add up in Prometheus without colliding: each sample carries the
    worker's id (``podium worker --metrics-port``), and none is a ``_created`` series."""
    from prometheus_client.parser import text_string_to_metric_families

    metrics = EngineMetrics(labels={"worker": "w-1"})
    metrics(RunStarted(run_id="r", ts=1.0, workflow="wf", version=1))
    metrics(StepSucceeded(run_id="r", ts=2.0, step_id="s", attempt=1, agent_id="a",
                          output=None, duration_s=0.5))
    samples = [s for fam in text_string_to_metric_families(metrics.exposition().decode())
               for s in fam.samples]
    assert samples
    assert all(s.labels.get("worker") == "w-1" for s in samples)
    assert not any(s.name.endswith("_created") for s in samples)
    plain = EngineMetrics()
    assert all("worker" not in s.labels for fam in text_string_to_metric_families(
        plain.exposition().decode()) for s in fam.samples)


async def test_a_run_that_waits_is_not_in_progress_and_is_counted_once_when_it_ends() -> None:
    """An approval parks the run (no process holds it): it leaves the in-progress gauge
    then, comes back when it is continued, and leaves it again when it ends. It used to
    stay counted from its wait on, for as long as the process lived."""
    cfg = EngineConfig(registry=registry_of(prep=lambda t: 1, ship=lambda t: 2),
                       store=MemoryStore())
    wf = workflow_from_dict({"name": "order", "mode": "sequential", "steps": [
        {"id": "prep", "agent": "prep"}, {"id": "ok", "approval": {"prompt": "Ship?"}},
        {"id": "ship", "agent": "ship"}]})
    metrics = EngineMetrics()
    in_progress: list[float | None] = []
    async with Engine(cfg) as engine:
        engine.bus.subscribe(metrics)
        engine.bus.subscribe(lambda e: in_progress.append(
            value(metrics, "podium_runs_in_progress", workflow="order")))
        run = await engine.run(wf, {})
        assert run.status == "waiting"
        assert value(metrics, "podium_runs_in_progress", workflow="order") == 0
        await engine.signal(run.run_id, "approve:ok", {"approved": True, "by": "ann"})
        done = await (await engine.resume(run.run_id)).result()
        assert done.status == "succeeded"
    assert value(metrics, "podium_runs_in_progress", workflow="order") == 0
    assert max(v or 0 for v in in_progress) == 1  # in progress while it ran, once
    assert value(metrics, "podium_runs_total", workflow="order", status="succeeded") == 1
