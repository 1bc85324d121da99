"""A parent run killed (``kill -9``) while its child run executes, then resumed.

The child's id is made from the parent's and the step's, so the resume finds the
child it started and continues it: one child run, its succeeded steps not run
again, the parent's step given the child's output. ``podium runs`` lists the
child with its parent.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.integration.podium_proc import Sandbox, wait_for


@pytest.mark.parametrize("how", ["the parent", "--all"])
def test_a_resumed_parent_resumes_its_child_and_never_starts_a_second(
        sandbox: Sandbox, how: str) -> None:
    sb = sandbox
    sb.workflow("child", {"name": "child", "mode": "sequential", "steps": [
        {"id": "c1", "agent": "record"},
        {"id": "c2", "agent": "hang-once", "input": {"hang_s": 60}},
    ]})
    wf = sb.workflow("parent", {"name": "parent", "mode": "sequential", "steps": [
        {"id": "first", "agent": "record"},
        {"id": "call", "workflow": "child"},
        {"id": "last", "agent": "record"},
    ]})
    proc = sb.spawn("run", str(wf), agents=True)
    assert wait_for(lambda: any(x.step_id == "c2" for x in sb.executions()), 30)
    sb.kill(proc)
    runs = sb.run_ids()
    (parent,) = [r for r in runs if "." not in r]
    assert sorted(runs) == sorted([parent, f"{parent}.call"])

    listed = sb.podium("runs", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["run_id"]: r for r in json.loads(listed.stdout)}
    assert rows[f"{parent}.call"]["parent"] == parent
    assert rows[parent]["parent"] is None

    which = [parent] if how == "the parent" else ["--all"]
    done = sb.podium("resume", *which, "--json", agents=True)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    ended = {r["run_id"]: r["status"] for r in (out if isinstance(out, list) else [out])}
    assert ended[parent] == "succeeded"
    assert sorted(sb.run_ids()) == sorted([parent, f"{parent}.call"])  # no second child
    calls = Counter((x.run_id, x.step_id) for x in sb.executions())
    assert calls == Counter({(parent, "first"): 1, (f"{parent}.call", "c1"): 1,
                             (f"{parent}.call", "c2"): 2, (parent, "last"): 1})
    child = sb.run_row(f"{parent}.call")
    assert child["status"] == "succeeded"
    steps = sb.steps(parent)
    assert steps["call"]["output"] == json.loads(child["output"])
