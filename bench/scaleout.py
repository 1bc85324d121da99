"""Podium on PostgreSQL, scaled out: real ``podium worker`` processes against a throwaway cluster.

    python bench/scaleout.py               # 5 repetitions, full sizes (many minutes)
    python bench/scaleout.py --quick       # CI smoke: 1 repetition, small sizes, < 40 s
    python bench/scaleout.py --reps 3      # fewer repetitions
    python bench/scaleout.py --json out.json   # also write the JSON document there
    python bench/scaleout.py --dir /data   # where the cluster lives (a real disk)

The bench starts its own cluster with the tests' harness (tests/pg.py), as
bench/pg_floor.py does, measures a few of pg_floor's floors on it (one short
window each) and then, each case in a fresh database, with the agents of
bench/scaleout_agents.py in ``podium worker`` subprocesses:

1. dispatch latency: one idle worker; runs of one no-op step submitted one at a
   time, spaced apart; from the client's clock just before ``submit`` to the
   step's ``step_started`` event (same host, same clock). With notifications,
   and with ``?notify=off`` (polling only; the worker's poll is a third of its
   lease, jittered 0.8-1.0: the bench gives it ``--lease 3s``, a 1 s poll)
2. I/O-bound scale-out: 3-step chains whose agents sleep 100 ms, ``--concurrency
   32``, 1, 2 and 4 workers; steps/s from the moment the last worker registered
   to the last run's end (the runs are all submitted before the workers start)
3. no-op throughput: the same with agents that return at once
4. takeover: two workers (lease 2 s), runs of 1 s steps; one is ``kill -9``-ed
   while it holds runs; for each run it held, the time from the kill to the next
   ``step_started`` (on the other worker). The max is reported
5. idle cost: one idle worker (default lease 15 s) for a window; statements it
   sends (the server's statement log for that database) and transactions
   (``pg_stat_database`` xact deltas) per second

Every throughput case checks that every run succeeded with exactly one success
per step; a run lost or a step succeeding twice is a Podium bug: the bench says
so and exits 1. Rates are medians over the repetitions with min-max; latencies
are the medians of each repetition's p50 and p99. Prints a table on stderr (each
figure next to its target and the relevant floor) and one JSON document on
stdout. Workers, agents and the server share the machine's cores; the table
says how much CPU each used. Speed is measured, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' harness starts the cluster

try:
    import psycopg
except ImportError:
    sys.exit("bench/scaleout.py needs psycopg (fix: pip install -e '.[postgres]')")

import yaml  # noqa: E402
from bench.pg_floor import (  # noqa: E402 - after the path above
    concurrent_commits,
    default_parent,
    fs_type,
    notify_round_trip,
    pct,
    queue,
    sync_commits,
)
from tests.pg import PgCluster, PgUnavailable  # noqa: E402

from podium.agents.registry import AgentRegistry  # noqa: E402
from podium.definition.loader import load_workflow  # noqa: E402
from podium.runtime import Runtime, RuntimeConfig  # noqa: E402

AGENTS = ROOT / "bench" / "scaleout_agents.yaml"
STEPS = 3
TAKEOVER_LEASE_S = 2.0
POLL_LEASE_S = 3.0  # a worker polls every lease/3 (at most 5 s), jittered 0.8-1.0

TARGETS = {
    "dispatch_notify": "p50 <= 25 ms, p99 <= 150 ms",
    "dispatch_poll": "<= poll + 25 ms",
    "io_1": ">= 250 steps/s",
    "io_2": ">= 1.8x of 1 worker",
    "io_4": ">= 3.2x of 1 worker",
    "noop_1": ">= 400 steps/s",
    "noop_2": ">= 1 worker",
    "noop_4": ">= 1 worker",
    "takeover": f"max <= lease + 1 s = {TAKEOVER_LEASE_S + 1:g} s",
    "idle": "<= 1 statement/s",
}


class PodiumBug(RuntimeError):
    """What the database holds after a case contradicts Podium's guarantees."""


# --- small tools ----------------------------------------------------------------------


def sql(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as c:
        cur = c.execute(query, args)
        return cur.fetchall() if cur.description is not None else []


def wait_for(cond: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(interval)
    return True


def cpu_busy_s() -> float:
    """CPU seconds spent by the whole machine (not idle, not iowait) so far."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """utime + stime of one live process, in seconds (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            parts = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def chain(name: str, capability: str, steps: int, ms: int | None = None) -> dict[str, Any]:
    inp = {"ms": ms} if ms is not None else {}
    return {"name": name, "mode": "sequential",
            "steps": [{"id": f"s{i:02d}", "agent": capability, "input": inp}
                      for i in range(steps)],
            "output": f"${{{{ steps.s{steps - 1:02d}.output }}}}"}


class Bench:
    """The cluster, a work folder, and the worker processes of the case at hand."""

    def __init__(self, cluster: PgCluster, work: Path) -> None:
        self.cluster = cluster
        self.work = work
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}

    def fresh_db(self, hint: str) -> str:
        return self.cluster.url(self.cluster.create_database(hint))

    def workflow(self, doc: dict[str, Any]) -> Any:
        path = self.work / f"{doc['name']}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return load_workflow(path)

    def worker(self, url: str, name: str, *, concurrency: int = 32,
               lease: float = 15.0) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PODIUM_DB", "PODIUM_AGENTS", "PODIUM_DEBUG")}
        env["PYTHONUNBUFFERED"] = "1"
        log = self.work / f"worker-{len(self.procs)}-{name}.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "podium", "worker", "--db", url, "--agents", str(AGENTS),
                 "--concurrency", str(concurrency), "--lease", f"{lease:g}s", "--name", name],
                cwd=self.work, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        self.procs.append(proc)
        self.logs[proc.pid] = log
        return proc

    def stderr_of(self, proc: subprocess.Popen[bytes]) -> str:
        return self.logs[proc.pid].read_text(errors="replace")[-3000:]

    def stop(self, *procs: subprocess.Popen[bytes]) -> None:
        """SIGTERM (hand back, exit 0), then SIGKILL whatever is still there after 30 s."""
        t = time.monotonic()
        alive = [p for p in procs if p.poll() is None]
        for p in alive:
            p.send_signal(signal.SIGTERM)
        for p in alive:
            try:
                code = p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                raise PodiumBug(f"worker pid {p.pid} did not stop within 30 s of SIGTERM:"
                                f"\n{self.stderr_of(p)}") from None
            if code != 0:
                raise PodiumBug(f"worker pid {p.pid} exited {code} on SIGTERM:"
                                f"\n{self.stderr_of(p)}")
        if os.environ.get("SCALEOUT_DEBUG"):
            print(f"  stopped {len(alive)} in {time.monotonic() - t:.2f} s", file=sys.stderr)

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    @contextmanager
    def workers(self, url: str, n: int, **kw: Any) -> Iterator[list[subprocess.Popen[bytes]]]:
        procs = [self.worker(url, f"w{i}", **kw) for i in range(n)]
        try:
            yield procs
            self.stop(*procs)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()


def registered(url: str, names: list[str]) -> bool:
    try:
        rows = sql(url, "SELECT id FROM workers WHERE id = ANY(%s)", names)
    except psycopg.errors.UndefinedTable:
        return False
    return len(rows) == len(names)


async def submit_many(url: str, workflow: Any, n: int, parallel: int = 16) -> list[str]:
    async with Runtime(RuntimeConfig(db=url, registry=AgentRegistry(), alerts=False)) as rt:
        sem = asyncio.Semaphore(parallel)

        async def one(i: int) -> str:
            async with sem:
                return (await rt.engine.submit(workflow, {"i": i})).run_id

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def check_runs(url: str, runs: list[str], steps: int) -> None:
    """Every run succeeded, every step has exactly one committed success."""
    statuses = Counter(s for (s,) in sql(url, "SELECT status FROM runs WHERE run_id = ANY(%s)",
                                         runs))
    if statuses["succeeded"] != len(runs):
        raise PodiumBug(f"runs not all succeeded: {dict(statuses)} of {len(runs)}")
    rows = sql(url, "SELECT run_id, data::json->>'step_id', count(*) FROM events"
                    " WHERE type = 'step_succeeded' AND run_id = ANY(%s) GROUP BY 1, 2", runs)
    twice = [(r, s, n) for r, s, n in rows if n != 1]
    if twice or len(rows) != len(runs) * steps:
        raise PodiumBug(f"{len(rows)} step successes for {len(runs)} runs of {steps} steps;"
                        f" steps that succeeded more than once: {twice[:5]}")


# --- 1. dispatch latency ------------------------------------------------------------------


async def _dispatch(url: str, submit_url: str, workflow: Any, samples: int,
                    gap: tuple[float, float], give_up_s: float) -> list[float]:
    import random

    lat: list[float] = []
    async with Runtime(RuntimeConfig(db=submit_url, registry=AgentRegistry(),
                                     alerts=False)) as rt, \
            await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        for i in range(samples):
            await asyncio.sleep(random.uniform(*gap))
            t0 = time.time()
            run_id = (await rt.engine.submit(workflow, {"i": i})).run_id
            end = time.monotonic() + give_up_s
            while True:
                cur = await c.execute("SELECT ts FROM events WHERE run_id = %s AND type ="
                                      " 'step_started' ORDER BY seq LIMIT 1", (run_id,))
                row = await cur.fetchone()
                if row is not None:
                    lat.append(row[0] - t0)
                    break
                if time.monotonic() > end:
                    raise PodiumBug(f"run {run_id} did not start within {give_up_s:g} s")
                await asyncio.sleep(0.002)
    return lat


def dispatch(b: Bench, samples: int, notify: bool) -> dict[str, Any]:
    url = b.fresh_db("dispatch")
    wf = b.workflow(chain("dispatch", "noop", 1))
    asyncio.run(submit_many(url, wf, 1))  # the schema, before the worker
    worker_url = url if notify else url + "?notify=off"
    lease = 15.0 if notify else POLL_LEASE_S
    with b.workers(worker_url, 1, concurrency=8, lease=lease) as (w,):
        if not wait_for(lambda: registered(url, ["w0"]), 60):
            raise PodiumBug(f"the worker did not register:\n{b.stderr_of(w)}")
        time.sleep(0.5)  # the first run done, the worker idle
        gap = (0.03, 0.08) if notify else (0.0, 0.2)
        lat = asyncio.run(_dispatch(url, worker_url, wf, samples, gap, give_up_s=30))
    return {"lat": lat, "poll_s": min(5.0, lease / 3)}


# --- 2./3. throughput -----------------------------------------------------------------------


def throughput(b: Bench, workers: int, runs: int, capability: str,
               ms: int | None) -> dict[str, Any]:
    url = b.fresh_db(f"{capability}{workers}")
    wf = b.workflow(chain(f"tp_{capability}", capability, STEPS, ms))
    t = time.perf_counter()
    ids = asyncio.run(submit_many(url, wf, runs))
    submit_s = time.perf_counter() - t
    names = [f"w{i}" for i in range(workers)]
    busy0 = cpu_busy_s()
    with b.workers(url, workers, concurrency=32) as procs:
        t_reg = time.monotonic()
        if not wait_for(lambda: registered(url, names), 60):
            raise PodiumBug(f"workers did not register:\n{b.stderr_of(procs[0])}")
        if os.environ.get("SCALEOUT_DEBUG"):
            print(f"  registered in {time.monotonic() - t_reg:.2f} s, submit {submit_s:.2f} s",
                  file=sys.stderr)
        ((up,),) = sql(url, "SELECT max(started) FROM workers")

        def done() -> bool:
            if any(p.poll() is not None for p in procs):
                dead = next(p for p in procs if p.poll() is not None)
                raise PodiumBug(f"worker pid {dead.pid} exited {dead.returncode} mid-case:"
                                f"\n{b.stderr_of(dead)}")
            ((n,),) = sql(url, "SELECT count(*) FROM runs WHERE status IN"
                               " ('succeeded', 'failed', 'cancelled')")
            return int(n) >= runs

        if not wait_for(done, 600, 0.1):
            raise PodiumBug(f"{runs} runs not finished within 600 s")
        worker_cpu = sum(proc_cpu_s(p.pid) for p in procs)
        busy = cpu_busy_s() - busy0
    check_runs(url, ids, STEPS)
    ((end, steps, total),) = sql(
        url, "SELECT max(ts) FILTER (WHERE type = 'run_finished'),"
             " count(*) FILTER (WHERE type = 'step_succeeded' AND ts > %s),"
             " count(*) FILTER (WHERE type = 'step_succeeded') FROM events", up)
    window = max(end - up, 1e-6)
    return {"rate": steps / window, "window_s": window, "steps_in_window": steps,
            "steps_total": total, "submit_per_s": runs / submit_s,
            "worker_cpu_s": worker_cpu, "machine_busy_cpu_s": busy}


# --- 4. takeover ------------------------------------------------------------------------------


def takeover(b: Bench, runs: int) -> dict[str, Any]:
    url = b.fresh_db("takeover")
    wf = b.workflow(chain("takeover", "nap", STEPS, 1000))
    asyncio.run(submit_many(url, wf, 0))  # the schema
    # The victim alone first, so that it surely holds runs; then the survivor.
    victim = b.worker(url, "victim", concurrency=32, lease=TAKEOVER_LEASE_S)
    try:
        if not wait_for(lambda: registered(url, ["victim"]), 60):
            raise PodiumBug(f"the victim did not register:\n{b.stderr_of(victim)}")
        ids = asyncio.run(submit_many(url, wf, runs))

        def held() -> list[str]:
            return [r for (r,) in sql(url, "SELECT run_id FROM runs WHERE owner = 'victim'"
                                           " AND status IN ('pending', 'running')")]

        if not wait_for(lambda: len(held()) >= 1, 30):
            raise PodiumBug(f"the victim took no runs:\n{b.stderr_of(victim)}")
        survivor = b.worker(url, "survivor", concurrency=64, lease=TAKEOVER_LEASE_S)
        if not wait_for(lambda: registered(url, ["survivor"]), 60):
            raise PodiumBug(f"the survivor did not register:\n{b.stderr_of(survivor)}")
        time.sleep(0.5)  # mid-step
        mine = held()
        killed_at = time.time()
        victim.kill()
        victim.wait()
        if not wait_for(lambda: sql(url, "SELECT count(*) FROM runs WHERE status ="
                                         " 'succeeded'")[0][0] == runs, 120, 0.05):
            raise PodiumBug("runs not finished within 120 s of the kill:"
                            f"\n{b.stderr_of(survivor)}")
        b.stop(survivor)
    finally:
        b.cleanup()
    check_runs(url, ids, STEPS)
    gaps: list[float] = []
    for r in mine:
        ((first,),) = sql(url, "SELECT min(ts) FROM events WHERE run_id = %s AND type ="
                               " 'step_started' AND ts > %s", r, killed_at)
        if first is None:
            raise PodiumBug(f"run {r} held by the killed worker never started a step again")
        gaps.append(first - killed_at)
    return {"rate": max(gaps), "gaps": gaps, "held": len(mine)}


# --- 5. idle cost -------------------------------------------------------------------------------


def idle(b: Bench, window: float) -> dict[str, Any]:
    name = b.cluster.create_database("idle")
    url = b.cluster.url(name)
    asyncio.run(submit_many(url, b.workflow(chain("idle", "noop", 1)), 0))  # the schema
    admin = b.cluster.url()
    sql(admin, f'ALTER DATABASE "{name}" SET log_statement = \'all\'')

    def xacts() -> int:
        # From another database, so that asking is not counted.
        ((n,),) = sql(admin, "SELECT xact_commit + xact_rollback FROM pg_stat_database"
                             " WHERE datname = %s", name)
        return int(n)

    def logged() -> list[str]:
        text = b.cluster.log.read_text(errors="replace")
        return [line.split("LOG:  ", 1)[1] for line in text.splitlines()
                if f" {name} " in line and ("LOG:  statement:" in line
                                           or "LOG:  execute" in line)]

    def statements() -> int:
        return len(logged())

    with b.workers(url, 1, concurrency=16) as (w,):
        if not wait_for(lambda: registered(url, ["w0"]), 60):
            raise PodiumBug(f"the worker did not register:\n{b.stderr_of(w)}")
        time.sleep(min(2.0, window))  # past start-up
        cpu0, s0, x0, t0 = proc_cpu_s(w.pid), statements(), xacts(), time.monotonic()
        time.sleep(window)
        time.sleep(1.1)  # PostgreSQL 15 flushes a backend's stats at most once a second
        cpu1, s1, x1 = proc_cpu_s(w.pid), statements(), xacts()
        elapsed = time.monotonic() - t0
    # What it sent, by kind: the first 60 characters of each statement.
    kinds = Counter(" ".join(x.split())[:60] for x in logged()[s0:s1])
    return {"rate": (s1 - s0) / elapsed, "xacts_per_s": (x1 - x0) / elapsed,
            "statements": dict(kinds.most_common(8)),
            "worker_cpu_pct": 100 * (cpu1 - cpu0) / elapsed, "window_s": elapsed}


# --- running and reporting -------------------------------------------------------------------


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if all("lat" in r for r in runs):
        out["p50_ms"] = round(statistics.median(pct(r["lat"], 0.5) for r in runs) * 1e3, 2)
        out["p99_ms"] = round(statistics.median(pct(r["lat"], 0.99) for r in runs) * 1e3, 2)
        out["max_ms"] = round(max(max(r["lat"]) for r in runs) * 1e3, 2)
        out["samples"] = sum(len(r["lat"]) for r in runs)
    if all("rate" in r for r in runs):
        rates = [r["rate"] for r in runs]
        out.update(median=round(statistics.median(rates), 3), min=round(min(rates), 3),
                   max=round(max(rates), 3))
    for key in ("poll_s", "held"):
        if key in runs[0]:
            out[key] = runs[0][key]
    for key in ("xacts_per_s", "worker_cpu_pct", "submit_per_s", "worker_cpu_s",
                "machine_busy_cpu_s", "window_s"):
        if key in runs[0]:
            out[key] = round(statistics.median(r[key] for r in runs), 3)
    if "statements" in runs[0]:
        out["statements_first_rep"] = runs[0]["statements"]
    if "gaps" in runs[0]:
        out["gaps_s"] = [round(g, 3) for r in runs for g in r["gaps"]]
    return out


def floors(url: str, window: float, quick: bool) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    plan: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("1 conn sync, sc=on", lambda: sync_commits(url, window, "on")),
        ("4 conns sync, sc=on", lambda: concurrent_commits(url, window, 4, "on")),
        ("queue k=1, 4 claimers", lambda: queue(url, window, 4, 1, 5_000)),
        ("LISTEN/NOTIFY round trip",
         lambda: notify_round_trip(url, window, 200 if quick else 1000)),
    ]
    for name, measure in plan:
        r = measure()
        out[name] = {"rate": round(r["rate"], 1)}
        if r.get("lat"):
            out[name]["p50_ms"] = round(pct(r["lat"], 0.5) * 1e3, 3)
            out[name]["p99_ms"] = round(pct(r["lat"], 0.99) * 1e3, 3)
    return out


def verdict(key: str, v: dict[str, Any], cases: dict[str, dict[str, Any]]) -> str:
    """met / MISSED against the target of ``key`` (informative, never asserted)."""
    def ok(cond: bool) -> str:
        return "met" if cond else "MISSED"

    if key == "dispatch_notify":
        return ok(v["p50_ms"] <= 25 and v["p99_ms"] <= 150)
    if key == "dispatch_poll":
        return ok(v["p99_ms"] <= v["poll_s"] * 1e3 + 25)
    if key == "io_1":
        return ok(v["median"] >= 250)
    if key == "noop_1":
        return ok(v["median"] >= 400)
    if key in ("io_2", "io_4", "noop_2", "noop_4") and f"{key[:-1]}1" in cases:
        base = cases[f"{key[:-1]}1"]["median"]
        need = {"io_2": 1.8, "io_4": 3.2}.get(key, 1.0)
        v["ratio"] = round(v["median"] / base, 2) if base else float("nan")
        return ok(v["median"] >= need * base)
    if key == "takeover":
        return ok(v["median"] <= TAKEOVER_LEASE_S + 1)
    if key == "idle":
        return ok(v["median"] <= 1.0)
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(description="Podium workers on PostgreSQL, scaled out")
    parser.add_argument("--quick", action="store_true", help="one repetition, small sizes")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--runs", type=int, default=None, help="runs per throughput case")
    parser.add_argument("--dir", type=Path, default=None,
                        help="parent folder of the cluster (a real disk)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write JSON here")
    args = parser.parse_args()
    q = args.quick
    reps = 1 if q else args.reps
    runs = args.runs or (40 if q else 2000)
    samples = 10 if q else 50
    poll_samples = 2 if q else 15
    takeover_runs = 6 if q else 24
    idle_window = 1.5 if q else 10.0
    parent = (args.dir or default_parent()).resolve()

    try:
        cluster = PgCluster.start(parent=parent)
    except PgUnavailable as exc:
        print(f"bench/scaleout.py: {exc}", file=sys.stderr)
        return 2
    # log_line_prefix with the database's name: the idle case counts its statements.
    sql(cluster.url(), "ALTER SYSTEM SET log_line_prefix = '%%m [%%p] %%d '")
    sql(cluster.url(), "SELECT pg_reload_conf()")
    work = Path(tempfile.mkdtemp(prefix="podium-scaleout-", dir=parent))
    b = Bench(cluster, work)
    cases: dict[str, dict[str, Any]] = {}
    bugs: list[str] = []
    t_start = time.monotonic()
    try:
        floor_url = b.fresh_db("floor")
        (server,) = sql(floor_url, "SELECT version()")[0]
        floor = floors(floor_url, 0.25 if q else 1.0, q)
        plan: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
            ("dispatch_notify", "dispatch, notify on", lambda: dispatch(b, samples, True)),
            ("dispatch_poll", "dispatch, notify=off", lambda: dispatch(b, poll_samples, False)),
        ]
        def tp(n: int, cap: str, ms: int | None) -> Callable[[], dict[str, Any]]:
            return lambda: throughput(b, n, runs, cap, ms)

        kinds: tuple[tuple[str, str, int | None], ...] = (("io", "nap", 100),
                                                          ("noop", "noop", None))
        for kind, cap, ms in kinds:
            for n in (1, 2, 4):
                plan.append((f"{kind}_{n}", f"{kind}: {n} worker{'s' if n > 1 else ''}",
                             tp(n, cap, ms)))
        plan += [("takeover", "takeover after kill -9", lambda: takeover(b, takeover_runs)),
                 ("idle", "idle worker", lambda: idle(b, idle_window))]
        labels = {key: label for key, label, _ in plan}
        for key, label, measure in plan:
            print(f"bench/scaleout.py: {label} ...", file=sys.stderr, flush=True)
            t_case = time.monotonic()
            try:
                cases[key] = summarize([measure() for _ in range(reps)])
                cases[key]["case_s"] = round(time.monotonic() - t_case, 1)
            except PodiumBug as exc:
                bugs.append(f"{label}: {exc}")
                print(f"bench/scaleout.py: PODIUM BUG in {label}: {exc}", file=sys.stderr)
                b.cleanup()
    finally:
        b.cleanup()
        cluster.stop()
        for leftover in work.iterdir():
            leftover.unlink()
        work.rmdir()

    for key, v in cases.items():
        v["target"] = TARGETS[key]
        v["verdict"] = verdict(key, v, cases)
    out = {
        "quick": q, "reps": reps, "runs": runs, "steps_per_run": STEPS,
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "server": server, "psycopg": psycopg.__version__, "folder": str(parent),
        "filesystem": fs_type(parent), "elapsed_s": round(time.monotonic() - t_start, 1),
        "floors": floor, "cases": cases, "bugs": bugs,
    }
    report(out, labels)
    doc = json.dumps(out, indent=2)
    print(doc)
    if args.json_path:
        Path(args.json_path).write_text(doc + "\n")
    return 1 if bugs else 0


def report(out: dict[str, Any], labels: dict[str, str]) -> None:
    fl = out["floors"]
    notify = fl.get("LISTEN/NOTIFY round trip", {})
    commit1 = fl.get("1 conn sync, sc=on", {})
    commit4 = fl.get("4 conns sync, sc=on", {})
    queue4 = fl.get("queue k=1, 4 claimers", {})
    floor_of = {
        "dispatch_notify": f"NOTIFY p50 {notify.get('p50_ms', 0):.2f} / p99"
                           f" {notify.get('p99_ms', 0):.2f} ms; commit p50"
                           f" {commit1.get('p50_ms', 0):.1f} ms",
        "io_1": f"1 conn {commit1.get('rate', 0):,.0f} commits/s",
        "noop_1": f"1 conn {commit1.get('rate', 0):,.0f} commits/s",
        "io_4": f"4 conns {commit4.get('rate', 0):,.0f} commits/s,"
                f" queue {queue4.get('rate', 0):,.0f} jobs/s",
        "noop_4": f"4 conns {commit4.get('rate', 0):,.0f} commits/s,"
                  f" queue {queue4.get('rate', 0):,.0f} jobs/s",
    }
    width = max(len(x) for x in labels.values())
    print(f"{'case':<{width}}  {'median (min-max)':>30}  {'target':<28} {'':6}  floor / notes",
          file=sys.stderr)
    for key, v in out["cases"].items():
        if key.startswith("dispatch"):
            fig = f"p50 {v['p50_ms']:.1f} / p99 {v['p99_ms']:.1f} ms"
            extra = f"max {v['max_ms']:.0f} ms, n={v['samples']}, poll {v['poll_s']:.2f} s"
        elif key == "takeover":
            fig = f"max {v['median']:.2f} s ({v['min']:.2f}-{v['max']:.2f})"
            extra = f"{v['held']} runs held at the kill (first rep)"
        elif key == "idle":
            fig = f"{v['median']:.2f} ({v['min']:.2f}-{v['max']:.2f}) stmt/s"
            extra = f"{v['xacts_per_s']:.2f} xact/s, worker CPU {v['worker_cpu_pct']:.2f}%"
        else:
            fig = f"{v['median']:,.0f} ({v['min']:,.0f}-{v['max']:,.0f}) steps/s"
            extra = (f"{'x' + str(v['ratio']) + ' of 1 worker, ' if 'ratio' in v else ''}"
                     f"CPU: workers {v['worker_cpu_s']:.0f} s of {v['machine_busy_cpu_s']:.0f}"
                     f" s busy in {v['window_s']:.1f} s")
        note = "; ".join(x for x in (floor_of.get(key, ""), extra) if x)
        print(f"{labels[key]:<{width}}  {fig:>30}  {v['target']:<28} {v['verdict']:6}  {note}",
              file=sys.stderr)
    for bug in out["bugs"]:
        print(f"PODIUM BUG: {bug}", file=sys.stderr)
    print(f"{out['server'].split(' on ')[0]}, psycopg {out['psycopg']}, {out['cpus']} CPUs,"
          f" {out['filesystem']} at {out['folder']}; {out['reps']} reps of {out['runs']} runs"
          f" x {out['steps_per_run']} steps; {out['elapsed_s']} s", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
