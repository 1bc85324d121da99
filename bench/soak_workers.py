"""Correctness soak of ``podium worker`` on PostgreSQL: kills and zombies, nothing lost or twice.

    python bench/soak_workers.py             # 300 runs / 100 kill -9, then 20 zombie rounds
    python bench/soak_workers.py --quick     # CI smoke: 30 runs / 5 kills, 2 rounds, < 60 s
    python bench/soak_workers.py --seed 7 --json out.json

Starts its own PostgreSQL (tests/pg.py: initdb, pg_ctl, 127.0.0.1, fsync on) and
real workers (``python -m podium worker --lease 2s``), whose one agent
(bench/soak_agents.py) writes a ledger line when a call starts and when it ends,
naming the worker and the call; its output names them too, so the soak knows which
call's result each committed ``step_succeeded`` holds.

Part A (kills): three workers; runs of three sleeping steps are submitted at a steady
pace while a random live worker is ``kill -9``-ed every 0.5-1.5 s and restarted at
once under a new ``--name`` (as a supervisor would); then the soak waits for every
run to end.

Part B (zombies): three workers; each round SIGSTOPs the worker holding the most
runs for 3.5 s (longer than its lease), so the others take its runs over, then
SIGCONTs it and lets the fleet settle.

Checked on each part's own database and ledger, and counted:

- lost: runs not ``succeeded`` at the end (ended otherwise, or stuck past the
  timeout), and steps with no committed ``step_succeeded``;
- duplicates: steps with more than one committed success; calls of a step started
  after its committed success (the ``step_succeeded`` event's time: the engine makes
  it before the commit, so a call after it can only come from a worker that did not
  see a committed result, or from a commit that got through a fence); a step called
  again although the worker of its earlier call was neither killed nor stopped after
  that call began; and in part B, a zombie's call for, or commit to, a run another
  worker took over while it was frozen;
- the log: gapless seqs, one ``run_finished`` and last, no ``step_started`` of a step
  after its success;
- takeover delay: from a kill (or SIGSTOP) to when another worker owned each run the
  worker held (the owners of live runs are polled every 0.1 s: a claim writes no
  event, and a claimer killed at once writes none), target lease + 1 s plus the
  claim's poison backoff of 1, 2, 4... s when the run had been taken over before; and
  to the run's next ``step_started`` (later when its next owner was killed too);
- workers that did not exit 0 within 30 s of SIGTERM at the end of a part.

Prints a table on stderr and one JSON document on stdout; exits 1 when anything was
lost or run twice, 0 otherwise, 2 when PostgreSQL is not there. Each part's folder
(ledger, workers' stderr, the run ids) is kept when something failed (``--keep``
keeps it anyway), and the seed is printed, for a reproduction.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' harness starts the cluster

try:
    import psycopg
except ImportError:
    sys.exit("bench/soak_workers.py needs psycopg (fix: pip install -e '.[postgres]')")

from tests.pg import PgCluster, PgUnavailable  # noqa: E402 - after the path above

AGENTS = Path(__file__).resolve().parent / "soak_agents.yaml"
LEASE_S = 2.0
STEPS = 3
SLEEP_MS = (50, 300)
SIGTERM_WAIT_S = 30.0


def backoff(recoveries: int) -> float:
    """The claim's poison backoff for a run taken over ``recoveries`` times before."""
    return 0.0 if recoveries == 0 else min(2.0 ** (recoveries - 1), 300.0)


def sql(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        return conn.execute(query, args).fetchall()


@dataclass
class Call:
    """One agent call, from its ledger lines."""

    start: float
    worker: str
    run_id: str
    step_id: str
    attempt: int
    call: str
    end: float | None = None


def read_ledger(path: Path) -> dict[str, Call]:
    calls: dict[str, Call] = {}
    if not path.exists():
        return calls
    for line in path.read_text().splitlines():
        parts = line.split(" ")
        if len(parts) != 8:  # a line cut by a kill (the write is one call: never seen)
            continue
        kind, ts, worker, _pid, run_id, step_id, attempt, call = parts
        if kind == "S":
            calls[call] = Call(float(ts), worker, run_id, step_id, int(attempt), call)
        elif call in calls:
            calls[call].end = float(ts)
    return calls


@dataclass
class Disruption:
    """A kill -9 or a SIGSTOP of one worker, and the runs it held then."""

    kind: str  # "kill" | "stop"
    worker: str
    at: float
    held: dict[str, int]  # run id -> its recoveries before this
    until: float | None = None  # SIGCONT, for a stop


@dataclass
class Fleet:
    """The workers of one part, in one folder, on one database."""

    url: str
    folder: Path
    ledger: Path
    concurrency: int
    live: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    everyone: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _files: list[Any] = field(default_factory=list)
    _n: int = 0

    def env(self, name: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PODIUM_DB", "PODIUM_AGENTS", "PODIUM_DEBUG")}
        env.update(PODIUM_SOAK_LEDGER=str(self.ledger), PODIUM_SOAK_WORKER=name,
                   PYTHONUNBUFFERED="1")
        return env

    def spawn(self) -> str:
        name = f"w{self._n:03d}"
        self._n += 1
        err = (self.folder / f"{name}.stderr").open("wb")
        self._files.append(err)
        proc = subprocess.Popen(
            [sys.executable, "-m", "podium", "worker", "--db", self.url, "--agents",
             str(AGENTS), "--name", name, "--lease", f"{LEASE_S:g}s", "--concurrency",
             str(self.concurrency)],
            cwd=self.folder, env=self.env(name), stdin=subprocess.DEVNULL,
            stdout=err, stderr=subprocess.STDOUT)
        self.live[name] = proc
        self.everyone[name] = proc
        return name

    def held(self, name: str) -> dict[str, int]:
        rows = sql(self.url, "SELECT run_id, recoveries FROM runs WHERE owner = %s"
                             " AND status IN ('pending', 'running')", name)
        return dict(rows)

    def kill(self, name: str) -> Disruption:
        proc = self.live.pop(name)
        proc.kill()
        at = time.time()
        proc.wait()
        # Dead: nobody can claim its runs before its lease ends, so this is what it held.
        return Disruption("kill", name, at, self.held(name))

    def stderr(self, name: str) -> str:
        return (self.folder / f"{name}.stderr").read_text(errors="replace")

    def stop_all(self) -> dict[str, Any]:
        """SIGTERM every live worker; each must hand its runs back and exit 0."""
        for proc in self.live.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        bad: dict[str, Any] = {}
        for name, proc in self.live.items():
            try:
                code = proc.wait(SIGTERM_WAIT_S)
            except subprocess.TimeoutExpired:
                bad[name] = "no exit within 30 s of SIGTERM"
                proc.kill()
                proc.wait()
                continue
            if code != 0:
                bad[name] = f"exit {code}"
        for proc in self.everyone.values():  # none should be left, but never an orphan
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for f in self._files:
            f.close()
        return bad


def workflow_file(folder: Path) -> Path:
    # recovery.max high: the soak kills so often that a run may be taken over more
    # than the default 5 times; ending it worker_lost would be the design, not a loss.
    steps = [{"id": f"s{i:02d}", "agent": "record", "input": {"sleep_ms": list(SLEEP_MS)}}
             for i in range(STEPS)]
    path = folder / "soak.yaml"
    path.write_text(yaml.safe_dump({"name": "soak", "mode": "sequential",
                                    "recovery": {"max": 1000}, "steps": steps,
                                    "output": f"${{{{ steps.s{STEPS - 1:02d}.output }}}}"},
                                   sort_keys=False))
    return path


class Submitter(threading.Thread):
    """Submits ``total`` runs, one every ``every`` seconds, from one Runtime."""

    def __init__(self, url: str, wf: Path, total: int, every: float) -> None:
        super().__init__(daemon=True)
        self.url, self.wf, self.total, self.every = url, wf, total, every
        self.run_ids: list[str] = []
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._go())
        except Exception as exc:  # noqa: BLE001 - reported by the part, not lost in a thread
            self.error = exc

    async def _go(self) -> None:
        from podium.agents.registry import AgentRegistry
        from podium.definition.loader import load_workflow
        from podium.runtime import Runtime, RuntimeConfig

        workflow = load_workflow(self.wf)
        t0 = time.monotonic()
        async with Runtime(RuntimeConfig(db=self.url, registry=AgentRegistry(),
                                         alerts=False)) as rt:
            for i in range(self.total):
                await asyncio.sleep(max(0.0, t0 + i * self.every - time.monotonic()))
                self.run_ids.append((await rt.engine.submit(workflow, {"i": i})).run_id)


class OwnerWatch(threading.Thread):
    """Polls who owns each live run every 0.1 s: when a run changed hands (a claim
    writes no event, and a claimer killed at once leaves none)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.changes: dict[str, list[tuple[float, str]]] = defaultdict(list)
        self.done = threading.Event()

    def run(self) -> None:
        last: dict[str, str] = {}
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            while not self.done.wait(0.1):
                rows = conn.execute("SELECT run_id, owner FROM runs WHERE owner IS NOT NULL"
                                    " AND status IN ('pending', 'running')").fetchall()
                now = time.time()
                for run_id, owner in rows:
                    if last.get(run_id) != owner:
                        last[run_id] = owner
                        self.changes[run_id].append((now, owner))

    def stop(self) -> None:
        self.done.set()
        self.join(10)


def wait_registered(url: str, names: list[str], timeout: float = 60.0) -> None:
    """Until every worker named has its row (the first one makes the schema)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if sql(url, "SELECT count(*) FROM workers WHERE id = ANY(%s)", names)[0][0] \
                    == len(names):
                return
        except psycopg.errors.UndefinedTable:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"workers {names} did not register within {timeout:g} s")


def wait_all_ended(url: str, n: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        (live,) = sql(url, "SELECT count(*) FROM runs WHERE status IN ('pending', 'running')")[0]
        (total,) = sql(url, "SELECT count(*) FROM runs")[0]
        if total >= n and live == 0:
            return True
        time.sleep(0.25)
    return False


# --- the checks ---------------------------------------------------------------------


def check(url: str, run_ids: list[str], ledger: Path, disruptions: list[Disruption],
          owners: dict[str, list[tuple[float, str]]]) -> dict[str, Any]:
    """Everything the database and the ledger say about one part; see the module doc."""
    calls = read_ledger(ledger)
    by_step: dict[tuple[str, str], list[Call]] = defaultdict(list)
    for c in calls.values():
        by_step[(c.run_id, c.step_id)].append(c)
    # When each worker was disrupted (killed, or stopped): a call of it before then may
    # have been cut off, and run again by the next owner.
    hit: dict[str, list[float]] = defaultdict(list)
    for d in disruptions:
        hit[d.worker].append(d.at)

    statuses = dict(sql(url, "SELECT run_id, status FROM runs"))
    events: dict[str, list[tuple[int, str, float, dict[str, Any]]]] = defaultdict(list)
    for run_id, seq, kind, ts, data in sql(
            url, "SELECT run_id, seq, type, ts, data FROM events ORDER BY run_id, seq"):
        events[run_id].append((seq, kind, ts, json.loads(data)))

    # The events hold no outputs: the steps' rows say which call's result was committed.
    committed_call: dict[tuple[str, str], str] = {}
    committed_by: dict[tuple[str, str], str] = {}
    for run_id, step_id, output in sql(url, "SELECT run_id, step_id, output FROM steps"
                                            " WHERE status = 'succeeded'"):
        out = json.loads(output) if output else {}
        committed_call[(run_id, step_id)] = out.get("call", "?")
        committed_by[(run_id, step_id)] = out.get("worker", "?")

    problems: list[str] = []
    not_succeeded = {r: statuses.get(r, "missing") for r in run_ids
                     if statuses.get(r) != "succeeded"}
    for r, s in sorted(not_succeeded.items())[:10]:
        problems.append(f"lost: run {r} is {s}")
    steps_wrong: list[str] = []
    missing_steps = 0
    extra_successes = 0
    after_success: list[str] = []
    unexplained: list[str] = []
    flagged: set[str] = set()  # calls counted as duplicates, each once
    log_bad: list[str] = []
    success_ts: dict[tuple[str, str], float] = {}
    for r in run_ids:
        evs = events.get(r, [])
        if [e[0] for e in evs] != list(range(1, len(evs) + 1)):
            log_bad.append(f"run {r}: seqs {[e[0] for e in evs]} have gaps")
        finished = [i for i, e in enumerate(evs) if e[1] == "run_finished"]
        if len(finished) > 1 or (finished and finished[0] != len(evs) - 1):
            log_bad.append(f"run {r}: run_finished at {finished} of {len(evs)} events")
        done: set[str] = set()
        successes: Counter[str] = Counter()
        for _seq, kind, ts, data in evs:
            step = str(data.get("step_id"))
            if kind == "step_started" and step in done:
                log_bad.append(f"run {r}: {step} started again after its success")
            if kind == "step_succeeded":
                successes[step] += 1
                done.add(step)
                if successes[step] == 1:
                    success_ts[(r, step)] = ts
        for i in range(STEPS):
            sid = f"s{i:02d}"
            n = successes[sid]
            if n != 1:
                steps_wrong.append(f"run {r} step {sid}: {n} committed successes")
                if n == 0 and statuses.get(r) == "succeeded":
                    missing_steps += 1
                extra_successes += max(0, n - 1)
            key = (r, sid)
            mine = sorted(by_step.get(key, []), key=lambda c: c.start)
            if n and committed_call.get(key) not in {c.call for c in mine}:
                problems.append(f"run {r} step {sid}: committed call"
                                f" {committed_call.get(key)} is not in the ledger")
            for c in mine:
                if c.call == committed_call.get(key):
                    continue
                if key in success_ts and c.start > success_ts[key]:
                    flagged.add(c.call)
                    after_success.append(
                        f"run {r} step {sid}: call {c.call} by {c.worker} at {c.start:.3f}"
                        f" after the committed success at {success_ts[key]:.3f}")
                elif not any(t >= c.start for t in hit.get(c.worker, [])):
                    flagged.add(c.call)
                    unexplained.append(
                        f"run {r} step {sid}: call {c.call} by {c.worker} at {c.start:.3f}"
                        " not committed, and that worker was never disrupted after it")

    # Zombies: after a frozen worker's run was taken over, nothing of it. Taken over:
    # the first call of the run after the SIGSTOP is another worker's (at T). Then no
    # step may be committed with the zombie's result from a success made after T, and
    # the zombie may call nothing for the run after T, unless the run was claimed again
    # since (a resumed run_started after T: it may have come back to it legitimately).
    zombie_calls: list[str] = []
    zombie_commits: list[str] = []
    taken_over = 0
    for d in disruptions:
        if d.kind != "stop":
            continue
        for r in d.held:
            after = sorted((c for c in calls.values() if c.run_id == r and c.start > d.at),
                           key=lambda c: c.start)
            if not after or after[0].worker == d.worker:
                continue  # nobody took it: the zombie kept (or handed back) its own run
            taken_over += 1
            t = after[0].start
            for (run_id, step), ts in success_ts.items():
                if run_id == r and ts > t and committed_by.get((r, step)) == d.worker:
                    zombie_commits.append(f"run {r}: {step} committed by the zombie"
                                          f" {d.worker} (success at {ts:.3f}) after the"
                                          f" takeover at {t:.3f}")
            claims = [e[2] for e in events.get(r, []) if e[1] == "run_started"
                      and e[3].get("resumed") and e[2] > t]
            for c in after:
                if c.worker == d.worker and not any(ts < c.start for ts in claims):
                    zombie_calls.append(f"run {r}: {c.step_id} called by the zombie"
                                        f" {d.worker} at {c.start:.3f}, after the takeover"
                                        f" at {t:.3f}")
                    flagged.add(c.call)

    # Takeover delays: from the disruption to when another worker owned each held run
    # (seen by OwnerWatch, 0.1 s apart; a claim writes no event), and to the run's first
    # step_started after it (later when its next owner was killed in between).
    delays: list[dict[str, Any]] = []
    for d in disruptions:
        for r, rec in d.held.items():
            taken = [t for t, who in owners.get(r, []) if t > d.at and who != d.worker]
            started = [e[2] for e in events.get(r, []) if e[2] > d.at
                       and e[1] == "step_started"]
            delays.append({"kind": d.kind, "worker": d.worker, "run": r, "recoveries": rec,
                           "owned_s": round(taken[0] - d.at, 3) if taken else None,
                           "step_started_s": round(min(started) - d.at, 3) if started
                           else None, "target_s": LEASE_S + 1.0 + backoff(rec)})
    # A zombie that kept its runs (nobody took them while it was frozen) is no takeover.
    moved = [x for x in delays if x["owned_s"] is not None]
    first_takeovers = [x["owned_s"] for x in moved if x["recoveries"] == 0]
    all_owned = [x["owned_s"] for x in moved]
    step_delays = [x["step_started_s"] for x in delays if x["step_started_s"] is not None]
    over = [x for x in delays if (x["owned_s"] is None and x["kind"] == "kill")
            or (x["owned_s"] is not None and x["owned_s"] > x["target_s"])]

    calls_per_step = Counter(len(v) for v in by_step.values())
    duplicates = extra_successes + len(flagged) + len(zombie_commits)
    lost = len(not_succeeded) + missing_steps
    problems += (steps_wrong[:10] + after_success[:10] + unexplained[:10] + zombie_calls[:10]
                 + zombie_commits[:10] + log_bad[:10])
    return {
        "runs": len(run_ids), "runs_not_succeeded": len(not_succeeded),
        "steps_not_one_success": len(steps_wrong), "calls": len(calls),
        "steps_called": dict(sorted(calls_per_step.items())),
        "calls_after_committed_success": len(after_success),
        "unexplained_reruns": len(unexplained), "zombie_calls_after_takeover":
        len(zombie_calls), "zombie_commits_after_takeover": len(zombie_commits),
        "log_inconsistencies": len(log_bad), "runs_taken_over": taken_over,
        "held_runs_at_disruptions": len(delays),
        "takeover_max_s": max(all_owned, default=None),
        "takeover_p50_s": round(statistics.median(all_owned), 3) if all_owned else None,
        "first_takeover_max_s": max(first_takeovers, default=None),
        "step_started_max_s": max(step_delays, default=None),
        "takeovers_over_target": len(over),
        "worst_takeovers": sorted(delays, key=lambda x: -(x["owned_s"] or 1e9))[:5],
        "worst_to_step_started": sorted(delays,
                                        key=lambda x: -(x["step_started_s"] or 1e9))[:3],
        "disruptions": [[d.kind, d.worker, round(d.at, 3), len(d.held)]
                        for d in disruptions],
        "max_recoveries": max((n for (n,) in sql(url, "SELECT recoveries FROM runs")),
                              default=0),
        "duplicates": duplicates, "lost": lost, "problems": problems,
    }


# --- the parts ----------------------------------------------------------------------


def part_kills(cluster: PgCluster, work: Path, rng: random.Random, runs: int, kills: int,
               timeout: float, every: tuple[float, float] = (0.5, 1.5),
               concurrency: int = 4) -> dict[str, Any]:
    folder = work / "kills"
    folder.mkdir()
    url = cluster.url(cluster.create_database("soak_kills"))
    fleet = Fleet(url, folder, folder / "ledger.txt", concurrency=concurrency)
    wf = workflow_file(folder)
    t0 = time.monotonic()
    disruptions: list[Disruption] = []
    wait_registered(url, [fleet.spawn() for _ in range(3)])
    # Runs arrive over the whole kill schedule, so that every kill lands on a busy fleet.
    submitter = Submitter(url, wf, runs, every=kills * sum(every) / 2 / runs)
    submitter.start()
    watch = OwnerWatch(url)
    watch.start()
    ended = False
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(*every))
            victim = rng.choice(sorted(fleet.live))
            disruptions.append(fleet.kill(victim))
            fleet.spawn()  # a supervisor restarts it, under a new name
        submitter.join(timeout)
        ended = wait_all_ended(url, runs, timeout)
    finally:
        # A worker SIGTERM-ed while still importing dies of it (-15) holding nothing:
        # wait until each is registered, so that what is judged is its shutdown.
        with contextlib.suppress(RuntimeError, psycopg.Error):
            wait_registered(url, list(fleet.live), 30)
        term = fleet.stop_all()
        watch.stop()
    time.sleep(0.5)
    out = check(url, submitter.run_ids, fleet.ledger, disruptions, watch.changes)
    if submitter.error is not None or len(submitter.run_ids) < runs:
        out["problems"].insert(0, f"submitted {len(submitter.run_ids)} of {runs}:"
                                  f" {submitter.error!r}")
        out["lost"] += runs - len(submitter.run_ids)
    out.update(kills=len(disruptions), workers_started=len(fleet.everyone),
               all_ended=ended, sigterm_failures=term,
               elapsed_s=round(time.monotonic() - t0, 1), folder=str(folder))
    if not ended:
        out["problems"].insert(0, f"runs still live after {timeout:g} s (stuck)")
    return out


def part_zombies(cluster: PgCluster, work: Path, rng: random.Random, rounds: int,
                 timeout: float) -> dict[str, Any]:
    folder = work / "zombies"
    folder.mkdir()
    url = cluster.url(cluster.create_database("soak_zombies"))
    fleet = Fleet(url, folder, folder / "ledger.txt", concurrency=4)
    wf = workflow_file(folder)
    t0 = time.monotonic()
    disruptions: list[Disruption] = []
    frozen_s = LEASE_S + 1.5
    settle_s = 2.5
    round_s = frozen_s + settle_s + 0.5
    runs = max(10, int(rounds * round_s * 3))  # ~3 runs a second: ~5 in flight
    wait_registered(url, [fleet.spawn() for _ in range(3)])
    submitter = Submitter(url, wf, runs, every=rounds * round_s / runs)
    submitter.start()
    watch = OwnerWatch(url)
    watch.start()
    skipped = 0
    ended = False
    try:
        for _ in range(rounds):
            time.sleep(rng.uniform(0.3, 0.7))
            # The worker holding the most runs (the first with any, after a short wait).
            held: dict[str, dict[str, int]] = {}
            end = time.monotonic() + 5
            while time.monotonic() < end:
                held = {n: fleet.held(n) for n in fleet.live}
                if any(held.values()):
                    break
                time.sleep(0.05)
            victim = max(sorted(held), key=lambda n: len(held[n]))
            if not held[victim]:
                skipped += 1
                continue
            proc = fleet.live[victim]
            os.kill(proc.pid, signal.SIGSTOP)
            d = Disruption("stop", victim, time.time(), fleet.held(victim))
            time.sleep(frozen_s)
            os.kill(proc.pid, signal.SIGCONT)
            d.until = time.time()
            disruptions.append(d)
            time.sleep(settle_s)
        submitter.join(timeout)
        ended = wait_all_ended(url, runs, timeout)
        time.sleep(1.0)  # a zombie's late commits, if any, would land now
    finally:
        # A worker SIGTERM-ed while still importing dies of it (-15) holding nothing:
        # wait until each is registered, so that what is judged is its shutdown.
        with contextlib.suppress(RuntimeError, psycopg.Error):
            wait_registered(url, list(fleet.live), 30)
        term = fleet.stop_all()
        watch.stop()
    out = check(url, submitter.run_ids, fleet.ledger, disruptions, watch.changes)
    if submitter.error is not None or len(submitter.run_ids) < runs:
        out["problems"].insert(0, f"submitted {len(submitter.run_ids)} of {runs}:"
                                  f" {submitter.error!r}")
        out["lost"] += runs - len(submitter.run_ids)
    out.update(rounds=len(disruptions), rounds_skipped=skipped,
               frozen_s=frozen_s, all_ended=ended, sigterm_failures=term,
               elapsed_s=round(time.monotonic() - t0, 1), folder=str(folder))
    if not ended:
        out["problems"].insert(0, f"runs still live after {timeout:g} s (stuck)")
    return out


# --- report -------------------------------------------------------------------------

ROWS = [
    ("runs", "runs submitted"),
    ("runs_not_succeeded", "runs not succeeded (must be 0)"),
    ("steps_not_one_success", "steps with != 1 committed success (must be 0)"),
    ("calls", "agent calls"),
    ("steps_called", "steps by number of calls"),
    ("calls_after_committed_success", "calls after the committed success (must be 0)"),
    ("unexplained_reruns", "reruns with no disruption to explain them (must be 0)"),
    ("zombie_calls_after_takeover", "zombie calls after the takeover (must be 0)"),
    ("zombie_commits_after_takeover", "zombie commits after the takeover (must be 0)"),
    ("log_inconsistencies", "event log inconsistencies (must be 0)"),
    ("kills", "kill -9 done"),
    ("rounds", "SIGSTOP rounds done"),
    ("runs_taken_over", "runs taken from a zombie"),
    ("held_runs_at_disruptions", "runs held by the disrupted workers"),
    ("takeover_p50_s", "takeover delay p50 (s; to a new owner)"),
    ("takeover_max_s", "takeover delay max (s)"),
    ("first_takeover_max_s", "  of first takeovers, max (s; target <= lease + 1 s)"),
    ("step_started_max_s", "to the next step_started, max (s)"),
    ("takeovers_over_target", "takeovers over lease + 1 s + backoff"),
    ("max_recoveries", "most takeovers of one run"),
    ("sigterm_failures", "workers not exiting 0 on SIGTERM"),
    ("duplicates", "DUPLICATES"),
    ("lost", "LOST"),
    ("elapsed_s", "elapsed (s)"),
]


def table(parts: dict[str, dict[str, Any]]) -> str:
    names = list(parts)
    width = max(len(label) for _, label in ROWS)
    lines = [f"{'':<{width}}  " + "  ".join(f"{n:>16}" for n in names)]
    for key, label in ROWS:
        if not any(key in p for p in parts.values()):
            continue
        cells = []
        for n in names:
            v = parts[n].get(key, "")
            if isinstance(v, dict):
                v = ",".join(f"{k}:{x}" for k, x in v.items()) or "0"
            cells.append(f"{v!s:>16}")
        lines.append(f"{label:<{width}}  " + "  ".join(cells))
    for n in names:
        for p in parts[n]["problems"][:20]:
            lines.append(f"[{n}] {p}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description="kill -9 and SIGSTOP soak of podium workers")
    parser.add_argument("--quick", action="store_true", help="CI smoke: < 60 s")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--runs", type=int, default=None, help="part A runs (default 300)")
    parser.add_argument("--kills", type=int, default=None, help="part A kills (default 100)")
    parser.add_argument("--rounds", type=int, default=None, help="part B rounds (default 20)")
    parser.add_argument("--kill-every", default="0.5,1.5",
                        help="part A: seconds between kills, LO,HI (default 0.5,1.5)")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="part A: each worker's --concurrency (default 4)")
    parser.add_argument("--parts", default="kills,zombies", help="kills, zombies or both")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds to wait for runs to end after the disruptions")
    parser.add_argument("--keep", action="store_true", help="keep the folders")
    parser.add_argument("--json", dest="json_path", default=None, help="also write JSON here")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    runs = args.runs or (30 if args.quick else 300)
    kills = args.kills if args.kills is not None else (5 if args.quick else 100)
    rounds = args.rounds if args.rounds is not None else (2 if args.quick else 20)
    timeout = args.timeout or (60.0 if args.quick else 300.0)
    which = {p.strip() for p in args.parts.split(",")}
    print(f"bench/soak_workers.py: seed {seed}", file=sys.stderr)

    try:
        cluster = PgCluster.start()
    except PgUnavailable as exc:
        print(f"bench/soak_workers.py: {exc}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="podium-soak-"))
    parts: dict[str, dict[str, Any]] = {}
    try:
        if "kills" in which:
            lo, hi = (float(x) for x in args.kill_every.split(","))
            parts["kills"] = part_kills(cluster, work, random.Random(seed), runs, kills,
                                        timeout, (lo, hi), args.concurrency)
        if "zombies" in which:
            parts["zombies"] = part_zombies(cluster, work, random.Random(seed + 1), rounds,
                                            timeout)
    finally:
        cluster.stop()
    failed = any(p["duplicates"] or p["lost"] for p in parts.values())
    broken = failed or any(p["sigterm_failures"] or p["problems"] for p in parts.values())
    if not (broken or args.keep):
        shutil.rmtree(work, ignore_errors=True)
    out = {"quick": args.quick, "seed": seed, "lease_s": LEASE_S, "steps": STEPS,
           "sleep_ms": list(SLEEP_MS), "cpus": os.cpu_count(), "folder": str(work),
           "kept": broken or args.keep, "parts": parts,
           "duplicates": sum(p["duplicates"] for p in parts.values()),
           "lost": sum(p["lost"] for p in parts.values()), "ok": not failed}
    print(table(parts), file=sys.stderr)
    given = [a for i, a in enumerate(sys.argv[1:]) if a != "--seed"
             and not (i and sys.argv[i] == "--seed") and not a.startswith("--seed=")]
    argv = " ".join(["python bench/soak_workers.py", *given])
    print(f"seed {seed}; reproduce: {argv} --seed {seed}"
          + (f"; folder kept: {work}" if out["kept"] else ""), file=sys.stderr)
    doc = json.dumps(out, indent=2)
    print(doc)
    if args.json_path:
        Path(args.json_path).write_text(doc + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
