"""PostgreSQL floors on the machine at hand: the best a store can do, before any Podium code.

    python bench/pg_floor.py               # 5 repetitions of 2 s windows, ~3 minutes
    python bench/pg_floor.py --quick       # CI smoke: 1 repetition of short windows, ~15 s
    python bench/pg_floor.py --json out.json   # also write the JSON document there
    python bench/pg_floor.py --dir /data   # where the cluster and the SQLite files live

Reproduces the floors table of the scale-out research notes. The bench starts its
own cluster with the tests' harness (tests/pg.py: initdb, pg_ctl, 127.0.0.1, fsync
on) in a folder on a real disk (the system temp folder unless it is a tmpfs, then
bench/results/), and measures, each case in a fresh table and a fixed time window:

- fdatasync: one 8 kB write + fdatasync in a loop, in the same folder (what
  pg_test_fsync calls "one 8kB write", the WAL's own sync method on Linux)
- one connection, single-row INSERT + COMMIT: psycopg sync and async,
  ``synchronous_commit`` on and off; p50/p99 of one commit's round trip
- one connection, 50 rows per commit (``executemany``, pipelined by psycopg)
- 4 and 16 connections at once (one thread and connection each): PostgreSQL's
  group commit of the WAL
- SQLite in WAL mode on the same disk, ``synchronous`` FULL and NORMAL
- a SKIP LOCKED queue: claimers each ``UPDATE … WHERE id IN (SELECT … FOR UPDATE
  SKIP LOCKED LIMIT k) RETURNING id``, commit, then mark those jobs done in one
  statement, commit: 2 commits per k jobs. 1, 4 and 16 claimers with k=1, and 4
  claimers with k=10. Every claim is counted (client and server side): a job
  claimed twice is a duplicate, and any duplicate makes the bench exit 1
- LISTEN/NOTIFY: ``pg_notify`` on one connection until the listening one has it

Rates are medians over the repetitions with min–max; latencies are the medians of
each repetition's p50 and p99. Prints a table on stderr (with the research notes'
figures from a 2-vCPU VM beside each floor) and one JSON document on stdout. The
client runs on the same cores as the server, as a worker would on a small box.
Speed is measured, never asserted: CI runs ``--quick`` to prove the bench works.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' harness starts the cluster

try:
    import psycopg
except ImportError:
    sys.exit("bench/pg_floor.py needs psycopg (fix: pip install -e '.[postgres]')")

from tests.pg import PgCluster, PgUnavailable  # noqa: E402 - after the path above

PAYLOAD = "x" * 120  # about one event row of a step
SESSION = "-c statement_timeout=30000"  # nothing in a bench may hang for ever

# The research notes' figures (2 vCPU VM, ext4 on virtio, PostgreSQL 15.18, psycopg 3.3.9).
NOTES = {
    "fdatasync 8kB": "152/s (6.6 ms)",
    "1 conn sync, sc=on": "114/s (p50 8.1 ms, p99 25 ms)",
    "1 conn sync, sc=off": "600-950/s (p50 0.25-0.35 ms)",
    "1 conn async, sc=on": "89/s",
    "1 conn async, sc=off": "245-480/s",
    "1 conn sync, 50 rows per commit": "67/s = 3,340 rows/s",
    "4 conns sync, sc=on": "470/s",
    "16 conns sync, sc=on": "1,200/s",
    "4 conns sync, sc=off": "2,950/s",
    "SQLite WAL, synchronous=FULL": "138/s",
    "SQLite WAL, synchronous=NORMAL": "9,000/s",
    "queue k=1, 1 claimer": "64 jobs/s",
    "queue k=1, 4 claimers": "186 jobs/s",
    "queue k=1, 16 claimers": "264 jobs/s",
    "queue k=10, 4 claimers": "1,238 jobs/s",
    "LISTEN/NOTIFY round trip": "p50 0.21 ms, p99 10 ms",
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def conn(url: str, sc: str = "on", *, autocommit: bool = False) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=autocommit, connect_timeout=10,
                           options=f"{SESSION} -c synchronous_commit={sc}")


def fresh_table(url: str) -> None:
    with conn(url, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS floor_t")
        c.execute("CREATE TABLE floor_t (id bigserial PRIMARY KEY, payload text NOT NULL)")


INSERT = "INSERT INTO floor_t (payload) VALUES (%s)"


# --- commit rates -------------------------------------------------------------------


def fdatasync_rate(folder: Path, window: float) -> dict[str, Any]:
    path = folder / "fsync.test"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = b"\0" * 8192
        os.pwrite(fd, block, 0)
        os.fsync(fd)
        lat: list[float] = []
        end = time.perf_counter() + window
        while (t := time.perf_counter()) < end:
            os.pwrite(fd, block, 0)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        path.unlink()
    return {"rate": len(lat) / sum(lat), "lat": lat}


def sync_commits(url: str, window: float, sc: str, rows: int = 1) -> dict[str, Any]:
    fresh_table(url)
    batch = [(PAYLOAD,)] * rows
    with conn(url, sc) as c:
        for _ in range(10):  # warm: prepared statements, first pages of the table
            c.execute(INSERT, (PAYLOAD,))
            c.commit()
        lat: list[float] = []
        t0 = time.perf_counter()
        end = t0 + window
        while (t := time.perf_counter()) < end:
            if rows == 1:
                c.execute(INSERT, (PAYLOAD,))
            else:
                with c.cursor() as cur:
                    cur.executemany(INSERT, batch)
            c.commit()
            lat.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - t0
    return {"rate": len(lat) / elapsed, "rows_per_s": len(lat) * rows / elapsed, "lat": lat}


async def _async_commits(url: str, window: float, sc: str) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(
            url, connect_timeout=10, options=f"{SESSION} -c synchronous_commit={sc}") as c:
        for _ in range(10):
            await c.execute(INSERT, (PAYLOAD,))
            await c.commit()
        lat: list[float] = []
        t0 = time.perf_counter()
        end = t0 + window
        while (t := time.perf_counter()) < end:
            await c.execute(INSERT, (PAYLOAD,))
            await c.commit()
            lat.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - t0
    return {"rate": len(lat) / elapsed, "lat": lat}


def async_commits(url: str, window: float, sc: str) -> dict[str, Any]:
    fresh_table(url)
    return asyncio.run(_async_commits(url, window, sc))


def in_threads(n: int, work: Callable[[int, threading.Barrier], Any]) -> list[Any]:
    """Run ``work(i, barrier)`` in ``n`` threads; re-raise the first error."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = work(i, barrier)
        except BaseException as exc:  # noqa: BLE001 - carried to the main thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,), name=f"floor-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def concurrent_commits(url: str, window: float, n: int, sc: str) -> dict[str, Any]:
    fresh_table(url)

    def work(_: int, barrier: threading.Barrier) -> tuple[int, float]:
        with conn(url, sc) as c:
            c.execute(INSERT, (PAYLOAD,))
            c.commit()
            barrier.wait()
            done, t0 = 0, time.perf_counter()
            end = t0 + window
            while time.perf_counter() < end:
                c.execute(INSERT, (PAYLOAD,))
                c.commit()
                done += 1
            return done, time.perf_counter() - t0

    out = in_threads(n, work)
    return {"rate": sum(d for d, _ in out) / max(e for _, e in out)}


def sqlite_commits(folder: Path, window: float, synchronous: str) -> dict[str, Any]:
    path = folder / f"floor-{synchronous.lower()}.db"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {synchronous}")
        db.execute("CREATE TABLE floor_t (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
        lat: list[float] = []
        t0 = time.perf_counter()
        end = t0 + window
        while (t := time.perf_counter()) < end:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO floor_t (payload) VALUES (?)", (PAYLOAD,))
            db.execute("COMMIT")
            lat.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - t0
    finally:
        db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return {"rate": len(lat) / elapsed, "lat": lat}


# --- the queue ----------------------------------------------------------------------

CLAIM = """
UPDATE jobs SET status = 'running', owner = %(me)s, claims = claims + 1
WHERE id IN (SELECT id FROM jobs WHERE status = 'pending' ORDER BY id
             LIMIT %(k)s FOR UPDATE SKIP LOCKED)
RETURNING id
"""
COMPLETE = "UPDATE jobs SET status = 'done' WHERE id = ANY(%(ids)s) AND owner = %(me)s"


def queue(url: str, window: float, claimers: int, k: int, jobs: int) -> dict[str, Any]:
    with conn(url, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS jobs")
        c.execute("CREATE TABLE jobs (id bigserial PRIMARY KEY, status text NOT NULL DEFAULT"
                  " 'pending', owner int, claims int NOT NULL DEFAULT 0, payload text NOT NULL)")
        c.execute("CREATE INDEX jobs_pending ON jobs (id) WHERE status = 'pending'")
        c.execute("INSERT INTO jobs (payload) SELECT %s FROM generate_series(1, %s)",
                  (PAYLOAD, jobs))
        c.execute("VACUUM ANALYZE jobs")

    def work(me: int, barrier: threading.Barrier) -> tuple[list[int], float, bool]:
        claimed: list[int] = []
        with conn(url) as c:
            barrier.wait()
            t0 = time.perf_counter()
            end, drained = t0 + window, False
            while time.perf_counter() < end:
                ids = [r[0] for r in c.execute(CLAIM, {"me": me, "k": k}).fetchall()]
                c.commit()
                if not ids:
                    drained = True
                    break
                c.execute(COMPLETE, {"ids": ids, "me": me})
                c.commit()
                claimed += ids
            return claimed, time.perf_counter() - t0, drained

    out = in_threads(claimers, work)
    counts = Counter(i for ids, _, _ in out for i in ids)
    with conn(url, autocommit=True) as c:
        row = c.execute("SELECT count(*) FILTER (WHERE claims > 1),"
                        " count(*) FILTER (WHERE status = 'done') FROM jobs").fetchone()
    assert row is not None
    server_dups, done = row
    client_dups = sum(n - 1 for n in counts.values() if n > 1)
    return {"rate": done / max(e for _, e, _ in out), "duplicates": client_dups + server_dups,
            "done": done, "drained": any(d for _, _, d in out)}


# --- LISTEN/NOTIFY --------------------------------------------------------------------


def notify_round_trip(url: str, window: float, samples: int) -> dict[str, Any]:
    lat: list[float] = []
    lost = 0
    with conn(url, autocommit=True) as listener, conn(url, autocommit=True) as sender:
        listener.execute("LISTEN floor")
        end = time.perf_counter() + window
        for i in range(samples):
            if time.perf_counter() >= end:
                break
            t = time.perf_counter()
            sender.execute("SELECT pg_notify('floor', %s)", (str(i),))
            got = [n.payload for n in listener.notifies(timeout=2.0, stop_after=1)]
            if got != [str(i)]:
                lost += 1
                continue
            lat.append(time.perf_counter() - t)
    return {"rate": len(lat) / sum(lat) if lat else 0.0, "lat": lat, "lost": lost}


# --- running and reporting ----------------------------------------------------------------


def fs_type(path: Path) -> str:
    best, kind = "", "?"
    with open("/proc/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            parts = line.split()
            point = parts[1]
            if str(path).startswith(point.rstrip("/") + "/") and len(point) > len(best):
                best, kind = point, parts[2]
    return kind


def default_parent() -> Path:
    tmp = Path(tempfile.gettempdir())
    if fs_type(tmp) not in ("tmpfs", "ramfs"):
        return tmp
    folder = ROOT / "bench" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [r["rate"] for r in runs]
    out: dict[str, Any] = {"median": round(statistics.median(rates), 1),
                           "min": round(min(rates), 1), "max": round(max(rates), 1)}
    if all("lat" in r and r["lat"] for r in runs):
        out["p50_ms"] = round(statistics.median(pct(r["lat"], 0.5) for r in runs) * 1e3, 3)
        out["p99_ms"] = round(statistics.median(pct(r["lat"], 0.99) for r in runs) * 1e3, 3)
    for key in ("rows_per_s",):
        if key in runs[0]:
            out[key] = round(statistics.median(r[key] for r in runs))
    for key in ("duplicates", "lost"):
        if key in runs[0]:
            out[key] = sum(r[key] for r in runs)
    if "drained" in runs[0]:
        out["drained"] = any(r["drained"] for r in runs)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description="PostgreSQL floors on this machine")
    parser.add_argument("--quick", action="store_true", help="one repetition, short windows")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--window", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--dir", type=Path, default=None,
                        help="parent folder of the cluster and the SQLite files (a real disk)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write JSON here")
    args = parser.parse_args()
    reps = 1 if args.quick else args.reps
    window = 0.4 if args.quick else args.window
    # More jobs than 4 claimers of 10 can drain in a window on a fast disk (~25k/s);
    # a drained queue still gives a rate (jobs done until it drained), flagged.
    jobs = max(5_000, int(window * 25_000))
    parent = (args.dir or default_parent()).resolve()

    try:
        cluster = PgCluster.start(parent=parent)
    except PgUnavailable as exc:
        print(f"bench/pg_floor.py: {exc}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="podium-floor-", dir=parent))
    cases: dict[str, dict[str, Any]] = {}
    try:
        url = cluster.url(cluster.create_database("floor"))
        with conn(url) as c:
            server = c.execute("SELECT version()").fetchone()
        plan: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("fdatasync 8kB", lambda: fdatasync_rate(work, window)),
            ("1 conn sync, sc=on", lambda: sync_commits(url, window, "on")),
            ("1 conn sync, sc=off", lambda: sync_commits(url, window, "off")),
            ("1 conn async, sc=on", lambda: async_commits(url, window, "on")),
            ("1 conn async, sc=off", lambda: async_commits(url, window, "off")),
            ("1 conn sync, 50 rows per commit", lambda: sync_commits(url, window, "on", 50)),
            ("4 conns sync, sc=on", lambda: concurrent_commits(url, window, 4, "on")),
            ("16 conns sync, sc=on", lambda: concurrent_commits(url, window, 16, "on")),
            ("4 conns sync, sc=off", lambda: concurrent_commits(url, window, 4, "off")),
            ("SQLite WAL, synchronous=FULL", lambda: sqlite_commits(work, window, "FULL")),
            ("SQLite WAL, synchronous=NORMAL", lambda: sqlite_commits(work, window, "NORMAL")),
            ("queue k=1, 1 claimer", lambda: queue(url, window, 1, 1, jobs)),
            ("queue k=1, 4 claimers", lambda: queue(url, window, 4, 1, jobs)),
            ("queue k=1, 16 claimers", lambda: queue(url, window, 16, 1, jobs)),
            ("queue k=10, 4 claimers", lambda: queue(url, window, 4, 10, jobs)),
            ("LISTEN/NOTIFY round trip",
             lambda: notify_round_trip(url, window, 200 if args.quick else 2000)),
        ]
        for name, measure in plan:
            cases[name] = summarize([measure() for _ in range(reps)])
    finally:
        cluster.stop()
        for leftover in work.iterdir():
            leftover.unlink()
        work.rmdir()

    out = {
        "quick": args.quick, "reps": reps, "window_s": window, "cpus": os.cpu_count(),
        "python": platform.python_version(), "server": server[0] if server else "?",
        "psycopg": psycopg.__version__, "libpq": psycopg.pq.version(),
        "pipeline_mode": psycopg.Pipeline.is_supported(),
        "folder": str(parent), "filesystem": fs_type(parent),
        "cluster_startup_s": round(cluster.startup_s, 3), "cases": cases,
    }
    unit = {"queue": "jobs/s", "LISTEN": "round trips/s", "fdatasync": "syncs/s"}
    width = max(len(n) for n in cases)
    print(f"{'floor':<{width}}  {'median (min-max)':>34}  {'p50 / p99 ms':>17}  notes (2 vCPU VM)",
          file=sys.stderr)
    for name, v in cases.items():
        u = next((u for prefix, u in unit.items() if name.startswith(prefix)), "commits/s")
        rate = f"{v['median']:,.0f} ({v['min']:,.0f}-{v['max']:,.0f}) {u}"
        lat = f"{v['p50_ms']:.2f} / {v['p99_ms']:.2f}" if "p50_ms" in v else ""
        extra = "".join([f", {v['rows_per_s']:,} rows/s" if "rows_per_s" in v
                         and "50 rows" in name else "",
                         f", duplicates {v['duplicates']}" if "duplicates" in v else "",
                         ", drained" if v.get("drained") else "",
                         f", lost {v['lost']}" if v.get("lost") else ""])
        print(f"{name:<{width}}  {rate:>34}  {lat:>17}  {NOTES.get(name, '')}{extra}",
              file=sys.stderr)
    print(f"{out['server'].split(' on ')[0]}, psycopg {out['psycopg']} (libpq"
          f" {out['libpq']}, pipeline {out['pipeline_mode']}), {out['filesystem']} at"
          f" {parent}, cluster up in {out['cluster_startup_s']} s", file=sys.stderr)
    doc = json.dumps(out, indent=2)
    print(doc)
    if args.json_path:
        Path(args.json_path).write_text(doc + "\n")
    dups = sum(v.get("duplicates", 0) for v in cases.values())
    if dups:
        print(f"bench/pg_floor.py: {dups} jobs were claimed twice", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
