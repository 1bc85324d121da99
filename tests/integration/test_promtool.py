"""Podium's Prometheus exposition is valid: ``promtool check metrics`` accepts it.

Checked three ways: the registry of an engine after real runs (with alerts and
health changes, so every metric family has samples); ``/metrics`` scraped over
HTTP from ``podium run --metrics-port`` while the run is in flight; and
``/metrics`` plus ``/healthz`` of ``podium serve`` after it took over a run
that a killed process left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from podium import FakeClock
from podium.definition.alerts import AlertsFile
from podium.events import AgentHealthChanged, CircuitStateChanged, StepStarted
from podium.observe.alerts import AlertManager
from podium.observe.receivers import Dispatcher, Notification
from tests.integration.observe_tools import (
    INSTALL,
    free_port,
    get,
    promtool_check,
    require_tool,
    stop,
    wait_until,
)
from tests.unit.test_metrics import run_known

AGENTS_MODULE = '''
"""Agents of the metrics scrape tests (imported by the podium process)."""
import time
from pathlib import Path


def ok(task):
    return {"ok": True}


def broken(task):
    raise ValueError("this step always breaks")


def gate(task):
    """Say we are waiting, then wait until the test opens the gate."""
    Path("gate.waiting").write_text(task.run_id, encoding="utf-8")
    end = time.monotonic() + 40
    while not Path("gate.open").exists():
        if time.monotonic() > end:
            raise TimeoutError("the gate never opened")
        time.sleep(0.02)
    return {"passed": True}
'''

AGENTS_FILE = """\
agents:
  - {id: oker, capabilities: [ok], python: "obs_agents:ok"}
  - {id: breaker, capabilities: [broken], python: "obs_agents:broken"}
  - {id: gatekeeper, capabilities: [gate], python: "obs_agents:gate"}
"""

GATED = """\
name: gated
sla: 1h
steps:
  - {id: first, agent: ok}
  - {id: oops, agent: broken, optional: true}
  - {id: wait, agent: gate, depends_on: [first]}
"""


def project(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "obs_agents.py").write_text(AGENTS_MODULE, encoding="utf-8")
    (tmp_path / "podium.yaml").write_text(AGENTS_FILE, encoding="utf-8")
    (tmp_path / "gated.yaml").write_text(GATED, encoding="utf-8")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PODIUM_") or k == "PODIUM_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path),
                                                      env.get("PYTHONPATH")]))
    return env


def podium(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "podium", *args,
                             "--db", f"sqlite:///{tmp_path / 'p.db'}"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def sample(text: str, line_start: str) -> float | None:
    """The value of the exposition line starting with ``line_start`` (name and labels)."""
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def assert_promtool_ok(text: str) -> None:
    res = promtool_check(text)
    assert res.returncode == 0, f"promtool rejected the exposition:\n{res.stdout}{res.stderr}"
    assert res.stdout.strip() == "", res  # not even a lint warning
    assert res.stderr.strip() == "", res


class _Sink:
    name = "log"

    async def send(self, note: Notification) -> None:
        return None

    async def aclose(self) -> None:
        return None


def test_a_missing_tool_fails_under_ci_and_skips_with_the_install_line_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must install it"):
        require_tool("no-such-podium-tool")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="is not installed"):
        require_tool("no-such-podium-tool")
    assert INSTALL["promtool"] == "apt-get install -y prometheus"


def test_promtool_rejects_a_bad_exposition_so_the_checks_below_mean_something() -> None:
    res = promtool_check("# HELP jobs Jobs.\n# TYPE jobs counter\njobs 1\n")
    assert res.returncode != 0
    assert "_total" in res.stdout + res.stderr


async def test_an_engine_registry_after_real_runs_alerts_and_health_changes_passes_promtool(
) -> None:
    metrics, _runs = await run_known()
    clock = FakeClock()
    manager = AlertManager(
        AlertsFile.model_validate({"rules": [
            {"name": "run-sla", "kind": "sla", "after": "1m"},
            {"name": "step-sla", "kind": "sla", "step": "s", "after": "1m"}]}),
        None, clock=clock, emit=metrics, dispatcher=Dispatcher({"log": _Sink()}, clock=clock))
    manager.start()
    try:
        from podium.events import RunStarted

        manager(RunStarted(run_id="r1", ts=clock.now(), workflow="known", version=1))
        manager(StepStarted(run_id="r1", ts=clock.now(), step_id="s", attempt=1,
                            agent_id="burner"))
        clock.advance(120)
        await manager.tick()
    finally:
        await manager.aclose()
    metrics(AgentHealthChanged(ts=clock.now(), agent_id="flake", old="unknown",
                               new="unhealthy"))
    metrics(CircuitStateChanged(ts=clock.now(), agent_id="flake", old="closed", new="open"))
    text = metrics.exposition().decode()
    for family in ("podium_runs_total", "podium_run_duration_seconds_bucket",
                   "podium_steps_total", "podium_step_duration_seconds_bucket",
                   "podium_step_attempts_total", "podium_step_retries_total",
                   "podium_agent_calls_total", "podium_agent_call_duration_seconds_bucket",
                   "podium_agent_inflight", "podium_agent_health", "podium_agent_circuit",
                   "podium_sla_violations_total", "podium_alerts_firing",
                   "podium_agent_cpu_seconds_total", "process_cpu_seconds_total"):
        assert f"\n{family}" in text, family
    assert_promtool_ok(text)


def test_podium_run_metrics_port_serves_valid_metrics_while_the_run_is_in_flight(
    tmp_path: Path,
) -> None:
    env = project(tmp_path)
    port = free_port()
    proc = podium(tmp_path, env, "run", "gated.yaml", "--metrics-port", str(port), "--json")
    try:
        wait_until(lambda: (tmp_path / "gate.waiting").exists() or proc.poll() is not None,
                   30)
        assert proc.poll() is None, stop(proc)
        url = f"http://127.0.0.1:{port}/metrics"

        def scraped() -> str | None:
            text = get(url).text
            # both quick steps are done (one succeeded, the optional one failed)
            done = sample(text, 'podium_steps_total{status="failed",step="oops",'
                                'workflow="gated"}')
            return text if done == 1 else None

        text = wait_until(scraped, 20)
        assert sample(text, 'podium_steps_total{status="succeeded",step="first",'
                            'workflow="gated"}') == 1
        assert sample(text, 'podium_runs_in_progress{workflow="gated"}') == 1
        assert sample(text, 'podium_agent_inflight{agent="gatekeeper"}') == 1
        assert sample(text, 'podium_agent_calls_total{agent="breaker",outcome="agent_error"}') \
            == 1
        run_id = (tmp_path / "gate.waiting").read_text(encoding="utf-8")
        assert run_id not in text
        assert_promtool_ok(text)
    finally:
        (tmp_path / "gate.open").touch()
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            out, err = stop(proc)
    assert proc.returncode == 0, (out, err)
    assert '"status": "succeeded"' in out


def test_podium_serve_metrics_and_healthz_after_taking_over_a_dead_process_run(
    tmp_path: Path,
) -> None:
    env = project(tmp_path)
    doomed = podium(tmp_path, env, "run", "gated.yaml", "--json")
    try:
        wait_until(lambda: (tmp_path / "gate.waiting").exists() or doomed.poll() is not None,
                   30)
        assert doomed.poll() is None, stop(doomed)
    finally:
        doomed.kill()  # kill -9 mid-run: the run stays "running" with a dead owner
        doomed.communicate(timeout=10)
    (tmp_path / "gate.open").touch()

    port = free_port()
    server = podium(tmp_path, env, "serve", "--port", str(port))
    try:
        base = f"http://127.0.0.1:{port}"

        def resumed() -> Any:
            doc = get(f"{base}/healthz?verbose").json()  # the detail view, for local clients
            return doc if doc["resumed_runs"] == 1 and doc["active_runs"] == 0 else None

        health = wait_until(resumed, 30)
        assert get(f"{base}/healthz").json() == {"status": "ok"}  # the open view: liveness
        assert health["status"] == "ok"
        assert health["db"] == f"sqlite:///{tmp_path / 'p.db'}"
        assert health["agents"]["agents"] == 3
        assert health["alerts_firing"] == 0
        assert isinstance(health["owner"], str)
        assert health["owner"]

        text = get(f"{base}/metrics").text
        assert sample(text, 'podium_runs_total{status="succeeded",workflow="gated"}') == 1
        # The step that had committed before the kill is not run (nor counted) again.
        assert sample(text, 'podium_steps_total{status="succeeded",step="first",'
                            'workflow="gated"}') is None
        assert sample(text, 'podium_steps_total{status="succeeded",step="wait",'
                            'workflow="gated"}') == 1
        assert sample(text, 'podium_runs_in_progress{workflow="gated"}') == 0
        response = get(f"{base}/metrics")
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert_promtool_ok(text)
    finally:
        _out, err = stop(server)
    assert "Traceback" not in err, textwrap.shorten(err, 2000)
