"""A for_each step of 1,000 items killed in the middle (``kill -9``) and resumed.

Every item is committed on its own: what the database holds as succeeded at the
kill never runs again; the items in flight at the kill run again (with the same
idempotency key); the step's output is all 1,000 results in input order. The
agent logs each call (crash_agents.py), so calls are counted, not assumed.
"""

from __future__ import annotations

import json
from collections import Counter

from tests.integration.podium_proc import Sandbox, wait_for

N = 1000


def test_a_map_killed_midway_resumes_only_its_unfinished_items(sandbox: Sandbox) -> None:
    sb = sandbox
    wf = sb.workflow("map", {"name": "map", "steps": [
        {"id": "each", "agent": "record", "for_each": "${{ input.items }}",
         "max_concurrency": 16,
         "input": {"n": "${{ item }}", "at": "${{ item_index }}", "sleep_ms": [2, 15]}},
        {"id": "after", "agent": "record", "depends_on": ["each"],
         "input": {"count": "${{ steps.each.output }}"}},
    ]})
    data = sb.root / "input.json"
    data.write_text(json.dumps({"items": [i * 10 for i in range(N)]}))
    proc = sb.spawn("run", str(wf), "--input-file", str(data), agents=True)
    assert wait_for(lambda: len(sb.executions()) >= 300, 60)
    sb.kill(proc)
    (run_id,) = sb.run_ids()
    steps = sb.steps(run_id)
    done_at_kill = {sid for sid, s in steps.items() if s["status"] == "succeeded"}
    assert 100 <= len(done_at_kill) < N, len(done_at_kill)
    calls_at_kill = len(sb.executions())

    out = sb.podium("resume", run_id, "--json", agents=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "succeeded"
    later = Counter(x.step_id for x in sb.executions()[calls_at_kill:])
    assert not (set(later) & done_at_kill), "an item committed as succeeded ran again"
    assert all(n == 1 for n in later.values()), later.most_common(3)
    every = Counter(x.step_id for x in sb.executions())
    assert set(every) == {f"each[{i}]" for i in range(N)} | {"after"}
    # Ran twice: only items called before the kill whose success was not yet committed
    # (in flight, or done within the last commit's few milliseconds).
    twice = {k for k, n in every.items() if n > 1}
    before = {x.step_id for x in sb.executions()[:calls_at_kill]}
    assert twice <= before - done_at_kill
    assert len(twice) < 16 + 50, len(twice)
    final = sb.steps(run_id)
    output = final["each"]["output"]
    assert [o["input"]["n"] for o in output] == [i * 10 for i in range(N)]
    assert [o["input"]["at"] for o in output] == list(range(N))
    assert all(final[f"each[{i}]"]["status"] == "succeeded" for i in range(N))
    assert final["after"]["status"] == "succeeded"
