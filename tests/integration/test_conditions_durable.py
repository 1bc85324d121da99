"""A router killed mid-branch (``kill -9``) and resumed: the decision stands.

The branch not taken is recorded as skipped, with its condition, in the same
durable log as the step it read; a resume keeps it skipped, runs only the branch
in flight again, and the join once. Agents log every call (crash_agents.py), so
what ran, and how often, is counted, not assumed.
"""

from __future__ import annotations

import json
from collections import Counter

from tests.integration.podium_proc import Sandbox, wait_for


def test_a_resumed_router_keeps_its_branch_and_runs_the_join_once(sandbox: Sandbox) -> None:
    sb = sandbox
    wf = sb.workflow("router", {"name": "router", "steps": [
        {"id": "classify", "agent": "record", "input": {"kind": "${{ input.kind }}"}},
        {"id": "slow_branch", "agent": "hang-once", "depends_on": ["classify"],
         "input": {"hang_s": 60},
         "when": "steps.classify.output.input.kind == 'a'"},
        {"id": "other_branch", "agent": "record", "depends_on": ["classify"],
         "when": "steps.classify.output.input.kind == 'b'"},
        {"id": "join", "agent": "record", "depends_on": {"any_of": ["slow_branch",
                                                                   "other_branch"]}},
    ]})
    proc = sb.spawn("run", str(wf), "-i", "kind=a", "--json", agents=True)
    assert wait_for(lambda: any(x.step_id == "slow_branch" for x in sb.executions()), 30)
    (run_id,) = sb.run_ids()
    # Committed before the kill: the skip, with why, beside classify's success.
    assert wait_for(lambda: sb.steps(run_id).get("other_branch", {}).get("status") == "skipped",
                    10), sb.steps(run_id)
    sb.kill(proc)
    steps = sb.steps(run_id)
    assert steps["classify"]["status"] == "succeeded"
    assert steps["slow_branch"]["status"] == "running"
    error = json.loads(steps["other_branch"]["error"])
    assert error["type"] == "condition_false"
    assert "steps.classify.output.input.kind == 'b'" in error["message"]

    done = sb.podium("resume", run_id, "--json", agents=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"
    calls = Counter(x.step_id for x in sb.executions())
    assert calls == Counter({"classify": 1, "slow_branch": 2, "join": 1})
    final = sb.steps(run_id)
    assert final["other_branch"]["status"] == "skipped"
    assert final["join"]["status"] == "succeeded"
    # The timeline says it too: one skip, with its condition.
    skips = [e for e in sb.events(run_id) if e.type == "step_skipped"]
    assert len(skips) == 1, skips
    assert skips[0].data["decided"] is True
    assert skips[0].data["condition"] == "steps.classify.output.input.kind == 'b'"
