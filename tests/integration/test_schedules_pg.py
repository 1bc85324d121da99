"""Schedules on PostgreSQL: two ``podium worker`` processes, one fires (role
"schedules"), both execute; the firer is killed with ``kill -9`` and the other goes
on firing from the next slot. Every slot from the first to the last is recorded
once, with one run, and every run ends with one committed success of its step."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from tests.integration.podium_proc import Sandbox, wait_for

pytestmark = pytest.mark.postgres

WF = {"name": "tick", "steps": [{"id": "a", "agent": "record", "input": {"n": 1}}]}


def _sql(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, args)
        return cur.fetchall() if cur.description else []


def _slots(url: str) -> list[tuple[float, str, str | None]]:
    try:
        return _sql(url, "SELECT slot, status, run_id FROM schedule_slots ORDER BY slot")
    except Exception:
        return []


@pytest.mark.timeout(180)
def test_one_worker_fires_and_another_takes_over_when_it_dies(
        sandbox: Sandbox, pg_url: str) -> None:
    sb, url = sandbox, pg_url
    wf = sb.workflow("tick", WF)
    out = sb.podium("schedule", "add", str(wf), "--every", "1s", "--catch-up", "100",
                    "--overlap", "allow", "--name", "tick", agents=True, db=url)
    assert out.returncode == 0, out.stderr
    workers = [sb.spawn("worker", "--name", f"w{i}", "--lease", "2s", agents=True, db=url)
               for i in range(2)]
    assert wait_for(lambda: len(_slots(url)) >= 4, 30, 0.2), sb.stderr_of(workers[0])
    # Kill whichever fires: the one whose log says it fired a slot.
    firing = [w for w in workers if "fired run" in sb.stderr_of(w)]
    assert len(firing) == 1, [sb.stderr_of(w)[-500:] for w in workers]
    (leader,) = firing
    other = workers[1 - workers.index(leader)]
    sb.kill(leader)
    seen = len(_slots(url))
    time.sleep(1.0)
    assert wait_for(lambda: len(_slots(url)) >= seen + 4, 40, 0.2), sb.stderr_of(other)
    assert "fired run" in sb.stderr_of(other)
    other.terminate()
    assert other.wait(30) == 0, sb.stderr_of(other)

    slots = _slots(url)
    times = [s[0] for s in slots]
    assert times == [times[0] + i for i in range(len(times))], "a slot was left out"
    assert {s[1] for s in slots} == {"fired"}
    runs = [s[2] for s in slots]
    assert len(set(runs)) == len(runs)
    stored = dict(_sql(url, "SELECT run_id, status FROM runs"))
    assert set(stored) == set(runs)
    successes = Counter(r for (r,) in _sql(
        url, "SELECT run_id FROM events WHERE type = 'step_succeeded'"))
    assert all(successes[r] <= 1 for r in runs)
    assert sum(1 for r in runs if successes[r] == 1) >= len(runs) - 4
