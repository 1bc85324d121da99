"""Two resumes racing for one crashed run lose nothing and run nothing twice.

The failure this guards against: after a ``kill -9``, two ``podium resume RUN``
(or two ``podium resume --all``) started at once, with agents that read the
same database read-only in the engine's process. One resume printed
"succeeded" while the file still held the crash-time state: a raw
``open()``/``close()`` of the database file (to read its header) dropped the
process's SQLite locks, another process deleted the write-ahead log under it,
and everything it committed after taking over went to a deleted file. And
both resumes could claim the run (the claim ignored the lease of a live
taker), so both executed it.

Each iteration crashes real ``podium run`` processes at a random point,
races two real resume processes, and then reads the file: every run
``succeeded``; every step has exactly one committed success (row and one
``step_succeeded`` event); outputs are right; no step whose success was
committed before the kill was called again; and no step was called by both
resumes (each step runs at most once after the kill). The seed is printed;
``PODIUM_CRASH_SEED`` replays one.
"""

from __future__ import annotations

import os
import random
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.podium_proc import Sandbox, chain, wait_for

SEED = int(os.environ.get("PODIUM_CRASH_SEED") or random.randrange(1_000_000))
STEPS = 12


def _crash_runs(sb: Sandbox, rng: random.Random, n: int) -> dict[str, frozenset[str]]:
    """Start ``n`` runs at once and kill them all once each has committed some (not
    all) steps; return each run left unfinished, with its steps committed at the kill.

    A process that starts late may find the others done or may not have made its
    run yet when the kill comes: such runs are not part of the race.
    """
    wf = sb.workflow("race", chain(STEPS, (5, 25), name="race") | {"steps": [
        {"id": f"s{i:02d}", "agent": "lookup", "input": {"sleep_ms": [10, 40], "i": i}}
        for i in range(STEPS)]})
    before = set(sb.run_ids())
    procs = [sb.spawn("run", str(wf), "--json", agents=True) for _ in range(n)]
    want = rng.randrange(1, STEPS - 3)

    def progressed() -> bool:
        ids = [r for r in sb.run_ids() if r not in before]
        return any(p.poll() is not None for p in procs) or (
            len(ids) == n and min(len(sb.succeeded_steps(r)) for r in ids) >= want)

    assert wait_for(progressed, 60, 0.005), "no progress before the kill"
    for p in procs:
        sb.kill(p)
    new = [r for r in sb.run_ids() if r not in before]
    return {r: sb.succeeded_steps(r) for r in new if sb.run_row(r)["status"] != "succeeded"}


def _check(sb: Sandbox, committed: dict[str, frozenset[str]], calls_before: int) -> None:
    after_kill = sb.executions()[calls_before:]
    for run_id, done in committed.items():
        assert sb.run_row(run_id)["status"] == "succeeded", run_id
        steps = sb.steps(run_id)
        assert {k: s["status"] for k, s in steps.items()} == {
            f"s{i:02d}": "succeeded" for i in range(STEPS)}
        successes = Counter(e.data["step_id"] for e in sb.events(run_id)
                            if e.type == "step_succeeded")
        assert successes == Counter({f"s{i:02d}": 1 for i in range(STEPS)}), (
            "a committed success was lost or recorded twice")
        for sid, row in steps.items():
            assert row["output"]["step"] == sid
            assert row["output"]["input"]["i"] == int(sid[1:])
        calls = Counter(x.step_id for x in after_kill if x.run_id == run_id)
        assert not (set(calls) & done), "a step that had committed success ran again"
        assert all(n == 1 for n in calls.values()), f"steps ran twice after the kill: {calls}"


@pytest.mark.timeout(300)
def test_two_resumes_of_one_crashed_run(sandbox: Sandbox) -> None:
    """20 crashes; each time two `podium resume RUN` at once: exactly one drives the run
    (exit 0), the other says who holds it (exit 2); nothing lost, nothing twice."""
    rng = random.Random(SEED)
    print(f"PODIUM_CRASH_SEED={SEED}")
    raced = 0
    while raced < 20:
        committed = _crash_runs(sandbox, rng, 1)
        if not committed:
            continue  # it finished before the kill
        raced += 1
        (run_id,) = committed
        calls_before = len(sandbox.executions())
        racers = [sandbox.spawn("resume", run_id, "--json") for _ in range(2)]
        codes = sorted(p.wait(timeout=120) for p in racers)
        assert codes == [0, 2], [sandbox.stderr_of(p) for p in racers]
        loser = next(p for p in racers if p.returncode == 2)
        text = sandbox.stderr_of(loser)
        assert "another process" in text or "already succeeded" in text, text
        assert "Traceback" not in text
        _check(sandbox, committed, calls_before)


@pytest.mark.timeout(300)
def test_two_resume_all_at_once(sandbox: Sandbox) -> None:
    """Crashes of 3 runs at once until 20 runs were raced; each time two `podium resume
    --all` at once: both exit 0, every run is driven by exactly one of them (the other
    skips it, or finds it finished); nothing lost, nothing twice."""
    rng = random.Random(SEED + 1)
    print(f"PODIUM_CRASH_SEED={SEED}")
    raced = 0
    while raced < 20:
        committed = _crash_runs(sandbox, rng, 3)
        if not committed:
            continue
        raced += len(committed)
        calls_before = len(sandbox.executions())
        racers = [sandbox.spawn("resume", "--all") for _ in range(2)]
        codes = [p.wait(timeout=120) for p in racers]
        assert codes == [0, 0], [sandbox.stderr_of(p) for p in racers]
        for p in racers:
            assert "Traceback" not in sandbox.stderr_of(p) + sandbox.stdout_of(p)
        driven = Counter()
        for p in racers:
            out = sandbox.stdout_of(p)
            for run_id in committed:
                if f"run {run_id} succeeded" in out:
                    driven[run_id] += 1
        assert driven == Counter(dict.fromkeys(committed, 1)), driven
        _check(sandbox, committed, calls_before)


AUDITED = Path(__file__).with_name("audited_podium.py")


def test_no_command_opens_the_database_file_outside_sqlite(sandbox: Sandbox) -> None:
    """Every command that touches the database, run with an audit hook that ends the
    process on any Python-level open of the file or its -wal/-shm: a crash, a resume,
    the readers, cancel and rollback all stay inside SQLite."""
    env = sandbox.env() | {"PODIUM_AUDIT_DB": str(sandbox.db)}

    def podium(*args: str, agents: bool = False) -> subprocess.CompletedProcess[str]:
        argv = sandbox.argv(*args, agents=agents)
        argv[1:3] = [str(AUDITED)]  # python audited_podium.py ... instead of python -m podium
        return subprocess.run(argv, cwd=sandbox.root, env=env, capture_output=True, text=True,
                              timeout=120, check=False)

    wf = sandbox.workflow("w", chain(6, (5, 20)) | {"steps": [
        {"id": f"s{i:02d}", "agent": "lookup", "input": {"sleep_ms": [5, 20], "i": i},
         **({"compensate": {"agent": "undo"}} if i == 0 else {})}
        for i in range(6)]})
    argv = sandbox.argv("run", str(wf), "--json", agents=True)
    argv[1:3] = [str(AUDITED)]
    proc = subprocess.Popen(argv, cwd=sandbox.root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: bool(sandbox.run_ids()) and bool(
            sandbox.succeeded_steps(sandbox.run_ids()[0])), 60, 0.005)
    finally:
        proc.kill()
        _out, err = proc.communicate()
    assert b"FORBIDDEN" not in err, err.decode()
    (run_id,) = sandbox.run_ids()
    for args in (("runs",), ("status", run_id, "--verbose"), ("resume", run_id),
                 ("runs", "--json"), ("failures",), ("alerts",), ("rollback", run_id),
                 ("cancel", run_id), ("resume", "--all")):
        out = podium(*args)
        assert out.returncode != 97, f"podium {' '.join(args)}: {out.stderr}"
        assert out.returncode in (0, 1), f"podium {' '.join(args)}: {out.stderr}"
    assert sandbox.run_row(run_id)["status"] == "rolled_back"
