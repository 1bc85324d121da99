"""Found by bench/soak_workers.py (part B, seed 1202): a woken zombie calls an agent.

A worker frozen (SIGSTOP) just after committing a step's success, for longer than
its lease, is taken over: another worker runs the remaining steps and finishes the
run. When the frozen one wakes (SIGCONT), it dispatches the run's next step to its
agent (the step the other worker already ran and committed) before its
self-fencing ("leases not renewed for 5.5s ... stopping all 1 runs") stops the run.
Nothing is committed (the journal's fence holds), but the agent is called a second
time, seconds after the step's committed success: an external side effect twice.

``attempt()`` (src/podium/engine/attempt.py) emitted ``step_started`` and called
``agent.invoke`` without looking at ``Journal.leases_good_until``; the supervisor
only fences when its own timer runs, after the ready callbacks of the woken loop.
Now the journal is asked (``leases_hold``) right before the call, and a process
past two thirds of its lease stops its runs there. What is left is the span
between that check and the agent's first instruction (microseconds): a freeze
that lands exactly there still calls the agent once more, with the same
idempotency key, which only the agent can honour.

The window was a few milliseconds (between the commit of one step and the call of
the next), so the test freezes the worker 4-8 ms after the agent's end line, a few
times (it failed in 4 of 6 tries before the fix, none in 16 after).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.podium_proc import wait_for
from tests.integration.test_workers_pg import _registered, _sql, _submit
from tests.pg import PgCluster

pytestmark = pytest.mark.postgres

BENCH = Path(__file__).resolve().parents[2] / "bench"
AGENTS = BENCH / "soak_agents.yaml"


def _worker(tmp: Path, url: str, name: str, ledger: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("PODIUM_DB", "PODIUM_AGENTS")}
    env.update(PODIUM_SOAK_LEDGER=str(ledger), PODIUM_SOAK_WORKER=name)
    with (tmp / f"{name}.stderr").open("wb") as err:  # the child keeps its own copy
        return subprocess.Popen([sys.executable, "-m", "podium", "worker", "--db", url,
                                 "--agents", str(AGENTS), "--name", name, "--lease", "2s"],
                                cwd=tmp, env=env, stdout=err, stderr=subprocess.STDOUT)


def _lines(ledger: Path) -> list[list[str]]:
    return [line.split() for line in ledger.read_text().splitlines()] if ledger.exists() \
        else []


def _one_try(tmp: Path, url: str, delay_s: float) -> list[str]:
    """Freeze the only worker ``delay_s`` after its first step returned, let another
    finish the run, wake it: the calls it makes after waking."""
    ledger = tmp / "ledger.txt"
    wf = tmp / "wf.yaml"
    wf.write_text(yaml.safe_dump({"name": "wake", "mode": "sequential", "steps": [
        {"id": "s00", "agent": "record", "input": {"sleep_ms": [300, 300]}},
        {"id": "s01", "agent": "record", "input": {"sleep_ms": [0, 0]}},
        {"id": "s02", "agent": "record", "input": {"sleep_ms": [0, 0]}}]}))
    zombie = _worker(tmp, url, "zombie", ledger)
    procs = [zombie]
    try:
        assert wait_for(lambda: _registered(url, "zombie"), 30)
        (run,) = _submit(url, wf, 1)
        assert wait_for(lambda: any(x[0] == "E" and x[5] == "s00" for x in _lines(ledger)),
                        30, 0.001)
        time.sleep(delay_s)
        os.kill(zombie.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        procs.append(_worker(tmp, url, "taker", ledger))
        try:
            assert wait_for(lambda: _sql(url, "SELECT status FROM runs WHERE run_id = %s",
                                         run) == [("succeeded",)], 30)
            # Frozen well past its lease (2 s) and past the run's end.
            time.sleep(max(0.0, stopped + 4.0 - time.monotonic()))
        finally:
            woke = time.time()
            os.kill(zombie.pid, signal.SIGCONT)
        time.sleep(2.0)
        return [" ".join(x) for x in _lines(ledger)
                if x[0] == "S" and x[2] == "zombie" and float(x[1]) > woke]
    finally:
        for p in procs:
            p.kill()
            p.wait()


@pytest.mark.timeout(240)
def test_a_woken_zombie_calls_no_agent_for_a_run_another_worker_finished(
        pg_cluster: PgCluster, tmp_path: Path) -> None:
    for i, delay in enumerate([0.004, 0.008] * 2):
        folder = tmp_path / f"try{i}"
        folder.mkdir()
        with pg_cluster.database(f"wake{i}") as url:
            late = _one_try(folder, url, delay)
        assert late == [], f"try {i} (freeze {delay * 1e3:.0f} ms after s00 returned): {late}"
