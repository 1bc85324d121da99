"""Approvals, signals and timers from the command line, with real processes.

- `podium run` reaching an approval exits 0 saying what it waits for and how to go on;
  `podium runs --status waiting` lists it; `podium approve --wait` continues it here;
  a second approval, a signal nobody waits for, bad JSON: exit 2, nothing changed.
- Killed (`kill -9`) while it waits (another branch still running), approved, resumed:
  the run ends, and no step that succeeded ran again.
- `podium serve` continues an approved run at once, with no command to resume it.
"""

from __future__ import annotations

import json
import signal
from collections import Counter

from tests.integration.observe_tools import free_port
from tests.integration.podium_proc import Sandbox, wait_for

APPROVAL = {"name": "order", "mode": "sequential", "steps": [
    {"id": "prep", "agent": "record"},
    {"id": "ok", "approval": {"prompt": "Ship it?"}},
    {"id": "ship", "agent": "record", "input": {"approval": "${{ steps.ok.output }}"}}]}


def test_run_waits_then_approve_continues_it_and_errors_exit_2(sandbox: Sandbox) -> None:
    sb = sandbox
    wf = sb.workflow("order", APPROVAL)
    out = sb.podium("run", str(wf), agents=True)
    assert out.returncode == 0, out.stderr
    assert "is waiting; no process holds it" in out.stdout
    (run_id,) = sb.run_ids()
    assert f"podium approve {run_id} ok" in out.stdout
    listed = json.loads(sb.podium("runs", "--status", "waiting", "--json").stdout)
    assert [r["run_id"] for r in listed] == [run_id]
    assert "an approval" in listed[0]["waits_for"][0]

    bad = sb.podium("signal", run_id, "nope")
    assert bad.returncode == 2
    assert "has no step that waits for signal 'nope' (fix: one of: approve:ok)" in bad.stderr
    bad = sb.podium("signal", run_id, "approve:ok", "--data", "{nope")
    assert bad.returncode == 2
    assert "--data: not JSON" in bad.stderr
    assert "Traceback" not in bad.stderr

    done = sb.podium("approve", run_id, "ok", "-i", "note=fine", "--by", "ann", "--wait",
                     "--json", agents=True)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["status"] == "succeeded"
    assert doc["steps"]["ship"]["output"]["input"] == {
        "approval": {"approved": True, "by": "ann", "data": {"note": "fine"}}}
    again = sb.podium("approve", run_id, "ok")
    assert again.returncode == 2
    assert "is succeeded" in again.stderr or "already" in again.stderr
    calls = Counter(x.step_id for x in sb.executions())
    assert calls == Counter({"prep": 1, "ship": 1})


def test_killed_while_waiting_approved_and_resumed(sandbox: Sandbox) -> None:
    sb = sandbox
    wf = sb.workflow("both", {"name": "both", "steps": [
        {"id": "prep", "agent": "record"},
        {"id": "ok", "approval": {}, "depends_on": ["prep"]},
        {"id": "long", "agent": "hang-once", "depends_on": ["prep"], "input": {"hang_s": 60}},
        {"id": "ship", "agent": "record", "depends_on": ["ok", "long"]}]})
    proc = sb.spawn("run", str(wf), agents=True)
    assert wait_for(lambda: any(x.step_id == "long" for x in sb.executions()), 30)
    (run_id,) = sb.run_ids()
    assert wait_for(lambda: sb.steps(run_id).get("ok", {}).get("status") == "waiting", 10)
    sb.kill(proc)
    out = sb.podium("approve", run_id, "ok")
    assert out.returncode == 0, out.stderr  # stored: the run takes it when resumed
    done = sb.podium("resume", run_id, "--json", agents=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"
    calls = Counter(x.step_id for x in sb.executions())
    assert calls == Counter({"prep": 1, "long": 2, "ship": 1})  # long was in flight


def test_serve_continues_an_approved_run_at_once(sandbox: Sandbox) -> None:
    sb = sandbox
    wf = sb.workflow("order", APPROVAL)
    server = sb.spawn("serve", "--port", str(free_port()), agents=True)
    out = sb.podium("run", str(wf), agents=True)
    assert out.returncode == 0, out.stderr
    (run_id,) = sb.run_ids()
    assert sb.run_row(run_id)["status"] == "waiting"
    approved = sb.podium("approve", run_id, "ok")
    assert approved.returncode == 0, approved.stderr
    assert "it goes on in `podium serve`" in approved.stderr
    assert wait_for(lambda: sb.run_row(run_id)["status"] == "succeeded", 15, 0.1), \
        sb.stderr_of(server)
    server.send_signal(signal.SIGTERM)
    server.wait(30)
    assert Counter(x.step_id for x in sb.executions()) == Counter({"prep": 1, "ship": 1})
