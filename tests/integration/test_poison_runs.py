"""A step that kills its process every time is not run again without end.

Such a step (out of memory, a segfault in a native library) takes down whatever
process runs it; the start of its attempt is committed with the next batch, so
the store shows no attempt, and a long-running engine that takes over runs of
dead processes would take this one over again and again. Takeovers are counted
in the run's row (one small write at takeover), spaced 1 s, 2 s, 4 s... apart,
and after the workflow's ``recovery.max`` the run ends ``failed`` with
``worker_lost`` naming the step in flight. ``podium resume`` still redrives it.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from collections import Counter

import pytest

from tests.integration.observe_tools import free_port
from tests.integration.podium_proc import Sandbox, wait_for

MAX = 3


@pytest.mark.timeout(180)
def test_a_step_that_kills_its_process_every_time_ends_worker_lost(sandbox: Sandbox) -> None:
    wf = sandbox.workflow("poison", {
        "name": "poison", "mode": "sequential", "recovery": {"max": MAX},
        "steps": [{"id": "first", "agent": "record", "input": {"sleep_ms": [0, 0]}},
                  {"id": "boom", "agent": "suicide"},
                  {"id": "last", "agent": "record", "input": {"sleep_ms": [0, 0]}}]})
    out = sandbox.podium("run", str(wf), "--json", agents=True)
    assert out.returncode == -9  # the step killed `podium run` itself
    (run_id,) = sandbox.run_ids()

    # A supervisor (systemd, a container runtime) restarts `podium serve` whenever it
    # dies; each one takes the run over at once or when its back-off ends.
    servers: list[subprocess.Popen[bytes]] = []
    while sandbox.run_row(run_id)["status"] != "failed":
        assert len(servers) < MAX + 3, "the run was taken over more often than its limit"
        server = sandbox.spawn("serve", "--port", str(free_port()), agents=True)
        servers.append(server)
        wait_for(lambda s=server: s.poll() is not None
                 or sandbox.run_row(run_id)["status"] == "failed", 60, 0.02)
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)
    assert [s.returncode for s in servers[:MAX]] == [-9] * MAX  # each takeover: one death

    row = sandbox.run_row(run_id)
    assert row["recoveries"] == MAX
    error = json.loads(row["error"])
    assert error["type"] == "worker_lost"
    assert "'boom'" in error["message"]
    steps = sandbox.steps(run_id)
    assert (steps["first"]["status"], steps["boom"]["status"]) == ("succeeded", "failed")
    assert json.loads(steps["boom"]["error"])["type"] == "worker_lost"
    assert steps["last"]["status"] == "skipped"
    calls = Counter(x.step_id for x in sandbox.executions())
    assert calls == Counter({"first": 1, "boom": 1 + MAX})  # the run, then each takeover

    # The takeovers were spaced out: 1 s, then 2 s (each counted from the last one).
    starts = [e.ts for e in _events(sandbox, run_id, "run_started") if e.data.get("resumed")]
    assert len(starts) == MAX
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(g >= 2.0 ** i - 0.1 for i, g in enumerate(gaps)), gaps

    # By hand, once the cause is fixed, the run is redriven and its count starts over.
    (sandbox.root / "cured").touch()
    out = sandbox.podium("resume", run_id, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "succeeded"
    assert sandbox.run_row(run_id)["recoveries"] == 0
    assert Counter(x.step_id for x in sandbox.executions())["first"] == 1


class _Ev:
    def __init__(self, ts: float, data: dict[str, object]) -> None:
        self.ts, self.data = ts, data


def _events(sb: Sandbox, run_id: str, kind: str) -> list[_Ev]:
    with sb.read() as conn:
        rows = conn.execute("SELECT ts, data FROM events WHERE run_id = ? AND type = ?"
                            " ORDER BY seq", (run_id, kind)).fetchall()
    return [_Ev(ts, json.loads(data)) for ts, data in rows]
