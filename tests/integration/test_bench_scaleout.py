"""``bench/scaleout.py --quick`` runs to its end: its own cluster, real workers, one JSON document.

Speeds are not asserted (a CI machine is no benchmark); what is checked is that
every case ran, that the document has its keys, and that no case found a Podium
bug (the bench exits 1 then, naming it).
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
CASES = {"dispatch_notify", "dispatch_poll", "io_1", "io_2", "io_4", "noop_1", "noop_2",
         "noop_4", "takeover", "idle"}


@pytest.mark.timeout(180)
def test_the_scaleout_bench_runs_quick_and_prints_its_json() -> None:
    if find_bindir() is None:
        unavailable("PostgreSQL server binaries not found (fix: apt-get install -y postgresql)")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "scaleout.py"), "--quick"],
                          cwd=ROOT, capture_output=True, text=True, timeout=170, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    doc = json.loads(done.stdout)
    assert doc["quick"] is True
    assert doc["reps"] == 1
    assert doc["bugs"] == []
    assert set(doc["cases"]) == CASES, done.stderr[-2000:]
    for key, case in doc["cases"].items():
        assert {"target", "verdict"} <= set(case), key
    for key in ("dispatch_notify", "dispatch_poll"):
        assert {"p50_ms", "p99_ms", "samples"} <= set(doc["cases"][key])
    for key in CASES - {"dispatch_notify", "dispatch_poll"}:
        assert {"median", "min", "max"} <= set(doc["cases"][key]), key
    assert {"LISTEN/NOTIFY round trip", "1 conn sync, sc=on"} <= set(doc["floors"])
    assert "median (min-max)" in done.stderr  # the table
