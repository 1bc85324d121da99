"""``podium demo`` for real, in subprocesses: what it claims to show is in its runs' events.

The pipeline's own timeline (``podium status RUN --json``: its steps, the circuit
changes its calls caused, its SLA alert) and the alert history (``podium alerts
--json``) are read back from the database, and the live lines the command printed
are checked to say the same as it happened. ``--crash``
must die by SIGKILL and ``podium resume`` finish the run with exactly one success
per step; ``--ui`` must serve the dashboard's API to the holder of its one-time link,
and to nobody else. No test asserts on speed.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections import Counter
from typing import Any

import httpx
import pytest

import podium.demo as demo
from tests.acceptance.podium_cli import Podium, assert_no_traceback

STEPS = ["collect", "process", "validate", "report", "forecast", "notify", "deliver",
         "flag_issues", "all_clear"]
ITEMS = ["deliver[0]", "deliver[1]", "deliver[2]"]  # one per default recipient
SUCCEEDED = [*(s for s in STEPS if s != "all_clear"), *ITEMS]  # all_clear: its when is false


def runs_by_workflow(podium: Podium) -> dict[str, dict[str, Any]]:
    res = podium("runs", "--json")
    assert res.code == 0, res
    return {r["workflow"]: r for r in res.json()}


def timeline(podium: Podium, run_id: str) -> list[dict[str, Any]]:
    res = podium("status", run_id, "--json")
    assert res.code == 0, res
    events: list[dict[str, Any]] = res.json()["timeline"]
    return events


def of(events: list[dict[str, Any]], kind: str, step: str | None = None) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind and (step is None or e.get("step_id") == step)]


def test_demo_shows_retries_failover_circuit_sla_and_compensation(podium: Podium) -> None:
    """Every claim the demo makes is in what it recorded: retries with jittered backoff,
    a failover to another region, a circuit opened and closed, an SLA alert fired and
    resolved, and a failed run's finished steps compensated newest first."""
    res = podium("demo", "--report", "r.md", timeout=60)
    assert res.code == 0, res
    assert_no_traceback(res)
    runs = runs_by_workflow(podium)
    assert {w: r["status"] for w, r in runs.items()} == {
        "podium-demo": "succeeded", "podium-demo-publish": "rolled_back",
        "podium-demo-announce": "rolled_back"}  # announce's child run, undone with it
    events = timeline(podium, runs["podium-demo"]["run_id"])

    # Retries: the collector failed twice, each retry waited a draw below its backoff
    # ceiling (200 ms, then 400 ms: full jitter), and the third attempt succeeded.
    failed = of(events, "step_attempt_failed", "collect")
    assert [e["error"]["type"] for e in failed] == [demo.UPSTREAM_BUSY] * demo.COLLECTOR_FAILURES
    waits = of(events, "step_retry_scheduled", "collect")
    assert [e["attempt"] for e in waits] == [2, 3]
    for wait, ceiling in zip(waits, (0.2, 0.4), strict=True):
        assert 0 <= wait["delay_s"] <= ceiling
    assert [e["attempt"] for e in of(events, "step_succeeded", "collect")] == [3]

    # Failover: process and validate started on eu-worker (home region), which died
    # under them; each succeeded on its second attempt on us-worker, another region.
    regions = {a.id: a.region for a in demo.registry().agents}
    for step in ("process", "validate"):
        starts = [(e["attempt"], e["agent_id"]) for e in of(events, "step_started", step)]
        assert starts == [(1, "eu-worker"), (2, "us-worker")], step
        assert "died" in of(events, "step_attempt_failed", step)[0]["error"]["message"]
        assert [e["agent_id"] for e in of(events, "step_succeeded", step)] == ["us-worker"]
    assert regions["eu-worker"] != regions["us-worker"]

    # Circuit: opened by those two failures, half-open after its reset time, closed by
    # forecast's trial call on eu-worker once it was back; in the run's history (its
    # calls moved it) and on the terminal as it happened.
    moves = [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    circuit = [(e["old"], e["new"]) for e in of(events, "circuit_state_changed")
               if e["agent_id"] == "eu-worker"]
    assert circuit == moves, events
    assert re.findall(r"circuit of eu-worker: (\w+) → (\w+)", res.out) == moves, res
    closed = next(i for i, e in enumerate(events) if e["type"] == "circuit_state_changed"
                  and e["new"] == "closed")
    assert events[closed + 1]["type"] == "step_succeeded"
    assert events[closed + 1]["step_id"] == "forecast"
    assert [e["agent_id"] for e in of(events, "step_succeeded", "forecast")] == ["eu-worker"]

    # Map and routing: deliver ran once per recipient; flag_issues ran (the data has
    # issues), all_clear was skipped with its condition recorded.
    assert sorted(e["step_id"] for e in of(events, "step_succeeded")
                  if e["step_id"].startswith("deliver[")) == ITEMS
    assert [e["step_id"] for e in of(events, "step_skipped")] == ["all_clear"]
    assert "flag_issues" in [e["step_id"] for e in of(events, "step_succeeded")]

    # SLA: fired while the run was going, resolved when it ended, in its timeline and
    # in the alert history.
    types = [e["type"] for e in events]
    fired, resolved = types.index("alert_fired"), types.index("alert_resolved")
    assert fired < types.index("run_finished") <= resolved
    alerts = podium("alerts", "--json").json()
    assert [(a["kind"], a["status"], a["run_id"]) for a in alerts] == [
        ("sla", "resolved", runs["podium-demo"]["run_id"])]

    # Compensation: publish failed; announce then stage were undone, newest first.
    published = timeline(podium, runs["podium-demo-publish"]["run_id"])
    done = [e["step_id"] for e in of(published, "step_succeeded")]
    undone = [e["step_id"] for e in of(published, "compensation_succeeded")]
    assert done == ["stage", "announce"]
    assert undone == ["announce", "stage"]
    assert of(published, "step_failed", "publish")[0]["error"]["type"] == "invalid_input"
    warehouse = podium.cwd / ".podium" / "demo-warehouse"
    assert not list(warehouse.glob("*.staged"))  # the staged batch is gone again
    child = timeline(podium, runs["podium-demo-announce"]["run_id"])
    assert [e["step_id"] for e in of(child, "compensation_succeeded")] == ["post"]
    assert runs["podium-demo-announce"]["parent"] == runs["podium-demo-publish"]["run_id"]
    assert (warehouse / "announcements.txt").read_text().splitlines()[-1].endswith(
        "retracted, the publication was rolled back")

    # And the viewer is told what they saw, before the report's path (the last line).
    summary = res.out.split("What you just saw:")[1]
    for claim in ("parallel", "retries", "failover", "circuit", "alerts", "map", "routing",
                  "sub-workflow", "rollback", "checkpoints", "metrics"):
        assert f"- {claim}" in summary, summary
    assert "not seen this time" not in summary
    assert res.out.rstrip().endswith(f"The report is at {podium.cwd / 'r.md'}")


def test_demo_json_is_the_pipeline_run_document_alone(podium: Podium) -> None:
    """--json keeps its one document, the pipeline's run (the publishing run is in
    `podium runs`), with no progress on stdout."""
    res = podium("demo", "--json", "--report", "r.md", timeout=60)
    assert res.code == 0, res
    doc = res.json()
    assert (doc["workflow"], doc["status"]) == ("podium-demo", "succeeded")
    assert list(doc["steps"]) == STEPS + ITEMS
    assert doc["steps"]["collect"]["attempts"] == demo.COLLECTOR_FAILURES + 1


def test_demo_crash_dies_by_sigkill_and_resume_finishes_without_redoing_a_step(
    podium: Podium,
) -> None:
    """--crash prints the resume command, SIGKILLs itself once collect, process and
    validate have committed; `podium resume` (no --agents: the run knows its fleet)
    runs the rest, and every step (and map item) succeeded exactly once."""
    res = podium("demo", "--crash", "--report", "r.md", timeout=60)
    assert res.code == -signal.SIGKILL, res
    m = re.search(r"^ +podium resume (\S+)$", res.out, re.M)
    assert m is not None, res
    run_id = m.group(1)
    before = Counter(e["step_id"] for e in of(timeline(podium, run_id), "step_succeeded"))
    # flag_issues needs validate only: it may have finished before report started, or not.
    assert set(before) - {"flag_issues"} == {"collect", "process", "validate"}, res
    assert set(before.values()) == {1}
    assert not (podium.cwd / "r.md").exists()  # report never ran

    again = podium("resume", run_id, timeout=60)
    assert again.code == 0, again
    assert_no_traceback(again)
    events = timeline(podium, run_id)
    assert Counter(e["step_id"] for e in of(events, "step_succeeded")) == Counter(SUCCEEDED)
    assert [e["resumed"] for e in of(events, "run_started")] == [False, True]
    assert (podium.cwd / "r.md").is_file()
    assert runs_by_workflow(podium)["podium-demo"]["status"] == "succeeded"


def test_demo_flags_that_do_not_go_together_are_usage_errors(podium: Podium) -> None:
    for args in (("--crash", "--ui"), ("--json", "--crash"), ("--port", "8123")):
        res = podium("demo", *args)
        assert res.code == 2, res
        assert_no_traceback(res)
    assert podium("runs", "--json").json() == []


def _read_link(proc: subprocess.Popen[str], deadline: float) -> str:
    assert proc.stdout is not None
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        m = re.search(r"(http://127\.0\.0\.1:\d+/session/link\?code=\S+)", line)
        if m:
            return m.group(1)
    raise AssertionError("no login link printed:\n" + "".join(seen))


@pytest.mark.timeout(90)
def test_demo_ui_serves_the_runs_to_the_holder_of_its_one_time_link(podium: Podium) -> None:
    """--ui binds 127.0.0.1 and prints a link; following it logs a client in (a session
    cookie, no token in sight), the runs can be watched through the API with it, the
    link works once only, nobody gets in without it, and Ctrl-C ends it all with exit 0
    and the demo's token revoked."""
    proc = podium.popen("demo", "--ui", "--report", "r.md")
    try:
        link = _read_link(proc, time.monotonic() + 30)
        base = link.split("/session/")[0]
        with httpx.Client(base_url=base, timeout=10) as browser:
            first = browser.get(link)
            assert first.status_code == 303
            assert first.headers["location"] == "/"
            assert "podium_session" in browser.cookies
            me = browser.get("/session").json()
            assert me["user"]["name"] == "podium demo --ui"
            deadline = time.monotonic() + 45
            statuses: dict[str, str] = {}
            while time.monotonic() < deadline:
                listed = browser.get("/runs")
                assert listed.status_code == 200, listed.text
                statuses = {r["workflow"]: r["status"] for r in listed.json()["runs"]}
                if statuses.get("podium-demo-publish") == "rolled_back":
                    break
                time.sleep(0.2)
            assert statuses["podium-demo"] == "succeeded", statuses
            assert statuses["podium-demo-publish"] == "rolled_back", statuses
            main = next(r for r in browser.get("/runs").json()["runs"]
                        if r["workflow"] == "podium-demo")
            run = browser.get(f"/runs/{main['run_id']}").json()
            assert run["steps"]["process"]["agent"] == "us-worker"
        with httpx.Client(base_url=base, timeout=10) as stranger:
            reused = stranger.get(link)
            assert reused.status_code == 303
            assert "podium_session" not in stranger.cookies
            assert stranger.get("/runs").status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert proc.returncode == 0, (out, err)
    assert "Traceback" not in err, err
    tokens = podium("token", "list", "--json").json()
    assert [(t["name"], t["status"]) for t in tokens] == [("podium demo --ui", "revoked")]
