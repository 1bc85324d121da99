"""bench/soak_workers.py --quick works: kills and zombies, nothing lost or run twice.

The soak starts its own PostgreSQL cluster and workers; this runs its quick mode
(30 runs and 5 ``kill -9``, 2 SIGSTOP rounds) and reads the JSON it prints.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pg import find_bindir, unavailable

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_the_quick_soak_loses_nothing_and_runs_nothing_twice() -> None:
    if find_bindir() is None:
        unavailable("PostgreSQL server binaries not found")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "soak_workers.py"), "--quick"],
                          cwd=ROOT, capture_output=True, text=True, timeout=200, check=False)
    assert done.stdout.strip(), done.stderr[-4000:]
    out = json.loads(done.stdout)
    zombies = out["parts"]["zombies"]
    assert done.returncode == 0, done.stderr[-4000:]
    assert out["ok"]
    assert out["quick"]
    assert out["duplicates"] == 0
    assert out["lost"] == 0
    kills = out["parts"]["kills"]
    assert kills["kills"] == 5
    assert kills["runs"] == 30
    assert kills["runs_not_succeeded"] == 0
    assert kills["steps_not_one_success"] == 0
    assert kills["held_runs_at_disruptions"] > 0, "no kill hit a busy worker: nothing tested"
    assert zombies["rounds"] == 2
    assert zombies["runs_taken_over"] > 0
    assert zombies["zombie_calls_after_takeover"] == 0
    assert zombies["zombie_commits_after_takeover"] == 0
    for part in (kills, zombies):
        assert part["all_ended"]
        assert part["sigterm_failures"] == {}
        assert part["problems"] == []
    assert not Path(out["folder"]).exists(), "a clean soak leaves no folder behind"
