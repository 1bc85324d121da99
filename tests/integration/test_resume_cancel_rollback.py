"""Cancel, rollback (compensation) and redrive through the real CLI, across processes.

Every scenario runs ``podium`` in subprocesses against one SQLite file and
checks three witnesses that must agree: the command's exit code and JSON, the
rows and event log in the file, and the agents' own log of every call.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from tests.integration.podium_proc import Exec, Sandbox, wait_for


def undo_calls(sb: Sandbox) -> list[Exec]:
    return [x for x in sb.executions() if x.key.endswith("/compensate")]


def step_calls(sb: Sandbox) -> list[Exec]:
    return [x for x in sb.executions() if not x.key.endswith("/compensate")]


def succeeded_order(sb: Sandbox, run_id: str) -> list[str]:
    """Steps in the order their success was committed, from the event log."""
    return [e.data["step_id"] for e in sb.events(run_id) if e.type == "step_succeeded"]


def run_json(sb: Sandbox, *args: str, agents: bool = False, rc: int) -> dict[str, Any]:
    out = sb.podium(*args, "--json", agents=agents)
    assert out.returncode == rc, f"exit {out.returncode}: {out.stderr}"
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


# --- cancel -----------------------------------------------------------------------


def test_cancel_from_another_process(sandbox: Sandbox) -> None:
    wf = sandbox.workflow("long", {"name": "long", "steps": [
        {"id": "a", "agent": "record"},
        {"id": "long", "agent": "slow", "depends_on": ["a"], "input": {"seconds": 60}},
        {"id": "other", "agent": "slow", "depends_on": ["a"], "input": {"seconds": 60}},
        {"id": "after", "agent": "record", "depends_on": ["long", "other"]},
    ]})
    proc = sandbox.spawn("run", str(wf), "--json", agents=True)
    assert wait_for(lambda: {"long", "other"} <= {x.step_id for x in sandbox.executions()}, 30)
    run_id = sandbox.executions()[0].run_id

    asked = run_json(sandbox, "cancel", run_id, rc=0)
    assert asked == {"run_id": run_id, "cancel_requested": True, "status": "running"}
    t0 = time.monotonic()
    rc = proc.wait(timeout=30)
    took = time.monotonic() - t0
    # The owner polls every 0.5 s: it stops within about a second (generous bound for CI).
    assert took < 5, f"the run took {took:.1f}s to notice the cancel"
    assert rc == 1, sandbox.stderr_of(proc)

    doc = json.loads(sandbox.stdout_of(proc))
    assert doc["status"] == "cancelled"
    assert doc["error"]["type"] == "cancelled"
    states = {k: s["status"] for k, s in doc["steps"].items()}
    assert states == {"a": "succeeded", "long": "cancelled", "other": "cancelled",
                      "after": "skipped"}

    run = sandbox.run_row(run_id)
    assert (run["status"], run["cancel_requested"]) == ("cancelled", 0)
    assert {k: s["status"] for k, s in sandbox.steps(run_id).items()} == states
    kinds = Counter((e.type, e.data.get("step_id")) for e in sandbox.events(run_id))
    assert kinds[("step_cancelled", "long")] == kinds[("step_cancelled", "other")] == 1
    finished = [e.data["status"] for e in sandbox.events(run_id) if e.type == "run_finished"]
    assert finished == ["cancelled"]
    # Each in-flight call was made once and not retried after the cancel.
    assert Counter(x.step_id for x in sandbox.executions()) == {"a": 1, "long": 1, "other": 1}

    again = run_json(sandbox, "cancel", run_id, rc=0)
    assert again == {"run_id": run_id, "cancel_requested": False, "status": "cancelled"}


# --- rollback -----------------------------------------------------------------------


def test_compensate_undoes_in_reverse_completion_order_with_retries(sandbox: Sandbox) -> None:
    def undo(step: str, agent: str = "undo", **extra: Any) -> dict[str, Any]:
        return {"agent": agent, "input": {"tok": f"${{{{ steps.{step}.output.token }}}}", **extra}}

    wf = sandbox.workflow("undo-order", {"name": "undo-order", "on_failure": "compensate",
                                         "steps": [
        # Declared slow first: completion order (quick, medium, slow) is not declaration order.
        {"id": "slow", "agent": "record", "input": {"sleep_ms": [600, 600]},
         "compensate": undo("slow")},
        {"id": "medium", "agent": "record", "input": {"sleep_ms": [300, 300]},
         "compensate": {**undo("medium", "undo-flaky", fail_attempts=1),
                        "retry": {"max_attempts": 3, "initial_delay": "50ms", "jitter": "none"}}},
        {"id": "quick", "agent": "record", "input": {"sleep_ms": [10, 10]},
         "compensate": undo("quick")},
        {"id": "plain", "agent": "record", "depends_on": ["quick"]},  # nothing to undo
        {"id": "boom", "agent": "always-fail", "depends_on": ["slow", "medium", "plain"]},
    ]})
    doc = run_json(sandbox, "run", str(wf), agents=True, rc=1)
    run_id = doc["run_id"]
    assert doc["status"] == "rolled_back"
    assert "'boom'" in doc["error"]["message"]

    done = [s for s in succeeded_order(sandbox, run_id) if s != "plain"]
    assert done == ["quick", "medium", "slow"]
    calls = undo_calls(sandbox)
    assert [(x.step_id, x.attempt) for x in calls] == [
        ("slow", 1), ("medium", 1), ("medium", 2), ("quick", 1)]
    assert [x.step_id for x in calls if x.attempt == 1] == done[::-1]
    for x in calls:
        assert x.key == f"{run_id}/{x.step_id}/compensate"
        assert x.input["tok"] == f"tok-{x.step_id}"  # the step's own committed output

    steps = sandbox.steps(run_id)
    assert {k: (s["status"], s["compensation_status"], s["compensation_attempts"])
            for k, s in steps.items()} == {
        "slow": ("compensated", "succeeded", 1),
        "medium": ("compensated", "succeeded", 2),
        "quick": ("compensated", "succeeded", 1),
        "plain": ("succeeded", None, 0),
        "boom": ("failed", None, 0),
    }
    for k in ("slow", "medium", "quick", "plain"):
        assert steps[k]["output"]["token"] == f"tok-{k}"  # kept after the undo
    kinds = [e.type for e in sandbox.events(run_id)]
    assert kinds.count("compensation_succeeded") == 3
    assert kinds.count("compensation_attempt_failed") == 1
    assert kinds.count("compensation_retry_scheduled") == 1
    assert kinds.index("rollback_started") < kinds.index("compensation_started")
    assert sandbox.run_row(run_id)["status"] == "rolled_back"


def test_compensation_that_always_fails_ends_rollback_failed(sandbox: Sandbox) -> None:
    wf = sandbox.workflow("undo-fails", {"name": "undo-fails", "on_failure": "compensate",
                                         "mode": "sequential", "steps": [
        {"id": "a", "agent": "record", "compensate": {"agent": "undo"}},
        {"id": "b", "agent": "record",
         "compensate": {"agent": "undo-fail",
                        "retry": {"max_attempts": 2, "initial_delay": "10ms"}}},
        {"id": "c", "agent": "always-fail"},
    ]})
    doc = run_json(sandbox, "run", str(wf), agents=True, rc=1)
    run_id = doc["run_id"]
    assert doc["status"] == "rollback_failed"
    assert "'b'" in doc["error"]["message"]
    assert "'a'" not in doc["error"]["message"]
    # The failure is recorded, and the rollback still undid what it could.
    assert [(x.step_id, x.attempt) for x in undo_calls(sandbox)] == [("b", 1), ("b", 2), ("a", 1)]
    steps = sandbox.steps(run_id)
    assert (steps["b"]["status"], steps["b"]["compensation_status"]) == ("succeeded", "failed")
    assert steps["b"]["compensation_attempts"] == 2
    assert json.loads(steps["b"]["compensation_error"])["type"] == "agent_error"
    assert (steps["a"]["status"], steps["a"]["compensation_status"]) == ("compensated", "succeeded")
    assert sandbox.run_row(run_id)["status"] == "rollback_failed"

    # Resuming retries only the compensation that failed (``a`` stays undone, once).
    again = run_json(sandbox, "resume", run_id, rc=1)
    assert again["status"] == "rollback_failed"
    assert [(x.step_id, x.attempt) for x in undo_calls(sandbox)][3:] == [("b", 1), ("b", 2)]
    assert [x.step_id for x in step_calls(sandbox)] == ["a", "b", "c"]


def test_rollback_command_undoes_a_failed_run(sandbox: Sandbox) -> None:
    wf = sandbox.workflow("undo-later", {"name": "undo-later", "mode": "sequential", "steps": [
        {"id": "a", "agent": "record",
         "compensate": {"agent": "undo", "input": {"tok": "${{ steps.a.output.token }}"}}},
        {"id": "b", "agent": "record",
         "compensate": {"agent": "undo", "input": {"tok": "${{ steps.b.output.token }}"}}},
        {"id": "c", "agent": "always-fail"},
    ]})
    doc = run_json(sandbox, "run", str(wf), agents=True, rc=1)  # fail_fast: nothing undone yet
    run_id = doc["run_id"]
    assert doc["status"] == "failed"
    assert undo_calls(sandbox) == []

    done = run_json(sandbox, "rollback", run_id, rc=0)  # no --agents: the run remembers
    assert done["status"] == "rolled_back"
    assert [(x.step_id, x.input["tok"]) for x in undo_calls(sandbox)] == [
        ("b", "tok-b"), ("a", "tok-a")]
    steps = sandbox.steps(run_id)
    assert {k: s["status"] for k, s in steps.items()} == {
        "a": "compensated", "b": "compensated", "c": "failed"}
    # Undone by another process than the one that ran them: the outputs are still there.
    assert [steps[k]["output"]["token"] for k in ("a", "b")] == ["tok-a", "tok-b"]
    assert sandbox.run_row(run_id)["status"] == "rolled_back"

    twice = sandbox.podium("rollback", run_id)
    assert twice.returncode == 2
    assert "already rolled back" in twice.stderr
    assert len(undo_calls(sandbox)) == 2


def test_sigkill_during_compensation_then_resume_finishes_the_rollback(sandbox: Sandbox) -> None:
    """The undos of c4 and c2 hang on their first call (``hang-once``), so each kill
    lands inside one, however slow the machine: no 100 ms sleep inside a 400 ms undo."""
    killed_in = {"c4", "c2"}
    steps: list[dict[str, Any]] = [
        {"id": f"c{i}", "agent": "record",
         "compensate": {"agent": "hang-once" if f"c{i}" in killed_in else "undo",
                        "input": {"hang_s": 60, "sleep_ms": [20, 20],
                                  "tok": f"${{{{ steps.c{i}.output.token }}}}"}}}
        for i in range(1, 6)
    ]
    steps.append({"id": "boom", "agent": "always-fail"})
    wf = sandbox.workflow("undo-crash", {"name": "undo-crash", "mode": "sequential",
                                         "on_failure": "compensate", "steps": steps})

    def undoing(step: str) -> bool:
        return any(x.step_id == step for x in undo_calls(sandbox))

    snapshots: list[tuple[int, set[str]]] = []

    def compensated() -> set[str]:
        return {k for k, s in sandbox.steps(run_id).items() if s["status"] == "compensated"}

    def kill_during(proc: Any, step: str, after: set[str]) -> None:
        """Kill while ``step``'s undo hangs, once the undos before it are committed."""
        assert wait_for(lambda: undoing(step) and after <= compensated(), 30), (
            compensated(), sandbox.stderr_of(proc))
        assert proc.poll() is None
        sandbox.kill(proc)
        snapshots.append((len(sandbox.executions()), compensated()))

    proc = sandbox.spawn("run", str(wf), "--json", agents=True)
    assert wait_for(lambda: bool(sandbox.run_ids()), 30)
    (run_id,) = sandbox.run_ids()
    kill_during(proc, "c4", {"c5"})  # c5 undone and committed; c4 in flight
    assert snapshots[-1][1] == {"c5"}
    row = sandbox.run_row(run_id)
    assert (row["status"], row["phase"]) == ("running", "compensate")

    kill_during(sandbox.spawn("resume", run_id, "--json"), "c2",  # killed again: c3 done
                {"c5", "c4", "c3"})
    assert snapshots[-1][1] == {"c5", "c4", "c3"}

    doc = run_json(sandbox, "resume", run_id, rc=1)
    assert doc["status"] == "rolled_back"
    assert "'boom'" in doc["error"]["message"]

    calls = undo_calls(sandbox)
    # Reverse completion order; an undo in flight at a kill ran again, a finished one never.
    assert [x.step_id for x in calls] == ["c5", "c4", "c4", "c3", "c2", "c2", "c1"]
    for n, undone in snapshots:
        assert not [x for x in sandbox.executions()[n:] if x.step_id in undone]
    for x in calls:
        assert x.key == f"{run_id}/{x.step_id}/compensate"
        assert x.input["tok"] == f"tok-{x.step_id}"
    rows = sandbox.steps(run_id)
    for i in range(1, 6):
        r = rows[f"c{i}"]
        assert (r["status"], r["compensation_status"]) == ("compensated", "succeeded")
        assert r["output"]["token"] == f"tok-c{i}"
    assert sandbox.run_row(run_id)["status"] == "rolled_back"
    events = sandbox.events(run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    done = Counter(e.data["step_id"] for e in events if e.type == "compensation_succeeded")
    assert done == {f"c{i}": 1 for i in range(1, 6)}
    assert [x.step_id for x in step_calls(sandbox)] == ["c1", "c2", "c3", "c4", "c5", "boom"]


# --- redrive -------------------------------------------------------------------------


def test_resume_of_a_failed_chain_reruns_only_failed_and_skipped_steps(sandbox: Sandbox) -> None:
    wf = sandbox.workflow("redrive", {"name": "redrive", "mode": "sequential", "steps": [
        {"id": "s1", "agent": "record"},
        {"id": "s2", "agent": "record"},
        {"id": "s3", "agent": "fail-once"},  # fails its first call only
        {"id": "s4", "agent": "record"},
        {"id": "s5", "agent": "record"},
    ], "output": "${{ steps.s5.output.step }}"})
    first = run_json(sandbox, "run", str(wf), agents=True, rc=1)
    run_id = first["run_id"]
    assert first["status"] == "failed"
    assert {k: s["status"] for k, s in first["steps"].items()} == {
        "s1": "succeeded", "s2": "succeeded", "s3": "failed", "s4": "skipped", "s5": "skipped"}
    kept = {k: (s["output"], s["finished_at"]) for k, s in sandbox.steps(run_id).items()
            if s["status"] == "succeeded"}

    doc = run_json(sandbox, "resume", run_id, rc=0)
    assert doc["status"] == "succeeded"
    assert doc["output"] == "s5"
    assert [(x.step_id, x.attempt) for x in sandbox.executions()] == [
        ("s1", 1), ("s2", 1), ("s3", 1), ("s3", 2), ("s4", 1), ("s5", 1)]
    steps = sandbox.steps(run_id)
    for k, (output, finished_at) in kept.items():
        assert (steps[k]["output"], steps[k]["finished_at"]) == (output, finished_at)
    # s4 was given s3's new output (a sequential step's default input is the one before's).
    s4_input = next(x.input for x in sandbox.executions() if x.step_id == "s4")
    assert (s4_input["step"], s4_input["attempt"]) == ("s3", 2)
    events = sandbox.events(run_id)
    assert Counter(e.data["step_id"] for e in events if e.type == "step_succeeded") == {
        f"s{i}": 1 for i in range(1, 6)}
    assert [e.data["status"] for e in events if e.type == "run_finished"] == [
        "failed", "succeeded"]
    assert sandbox.run_row(run_id)["status"] == "succeeded"


def test_resume_of_a_fan_out_with_failed_branches_reruns_only_those(sandbox: Sandbox) -> None:
    branches = [f"b{i:02d}" for i in range(12)]
    failing = {"b02", "b05", "b09"}
    steps: list[dict[str, Any]] = [{"id": "root", "agent": "record"}]
    steps += [{"id": b, "agent": "fail-once" if b in failing else "record", "depends_on": ["root"],
               "input": {"sleep_ms": [5, 50]}} for b in branches]
    steps.append({"id": "join", "agent": "record", "depends_on": branches})
    wf = sandbox.workflow("fan-redrive", {"name": "fan-redrive", "on_failure": "continue",
                                          "steps": steps})
    first = run_json(sandbox, "run", str(wf), agents=True, rc=1)
    run_id = first["run_id"]
    states = {k: s["status"] for k, s in first["steps"].items()}
    assert states == {"root": "succeeded", "join": "skipped",
                      **{b: "failed" if b in failing else "succeeded" for b in branches}}
    before = len(sandbox.executions())
    kept = {k: s["output"] for k, s in sandbox.steps(run_id).items() if s["status"] == "succeeded"}

    doc = run_json(sandbox, "resume", run_id, rc=0)
    assert doc["status"] == "succeeded"
    again = sandbox.executions()[before:]
    assert sorted(x.step_id for x in again) == sorted([*failing, "join"])
    assert {x.attempt for x in again if x.step_id in failing} == {2}
    steps_now = sandbox.steps(run_id)
    assert all(s["status"] == "succeeded" for s in steps_now.values())
    for k, output in kept.items():
        assert steps_now[k]["output"] == output
    events = sandbox.events(run_id)
    assert Counter(e.data["step_id"] for e in events if e.type == "step_succeeded") == (
        dict.fromkeys(["root", *branches, "join"], 1))
