"""DBOS on the same kind of PostgreSQL: the no-op 3-step chain of bench/scaleout.py, as a yardstick.

    python3 -m venv /tmp/dbosvenv && /tmp/dbosvenv/bin/pip install dbos pytest pyyaml
    /tmp/dbosvenv/bin/python bench/scaleout_dbos.py            # 5 reps of 2,000 workflows
    /tmp/dbosvenv/bin/python bench/scaleout_dbos.py --quick    # 1 rep of 100

DBOS is never a dependency of Podium: this runs in a venv of its own and uses
only DBOS's public API (``DBOS``, ``DBOS.workflow``, ``DBOS.step``,
``DBOS.register_queue``, ``Queue.enqueue``). Like bench/scaleout.py it starts a
throwaway cluster with the tests' harness (tests/pg.py) and, per repetition in a
fresh database:

1. an enqueuer process (listening to no queue) enqueues N workflows of three
   no-op steps on queue ``bench`` (worker concurrency 32, as ``podium worker
   --concurrency 32``), then exits;
2. one executor process launches DBOS and dequeues them; steps/s from its launch
   to the last workflow's ``updated_at`` (DBOS's workflow_status table), as
   Podium's figure runs from the last worker's registration to the last run's end.

The queue's polling interval (``--poll``, DBOS's default 1 s) bounds how fast a
queue is drained: it is printed with the figure. Every workflow must end
SUCCESS with three step outputs, else the bench exits 1. Table on stderr, JSON
on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUEUE = "bench"
STEPS = 3


def _dbos(url: str, name: str) -> Any:
    from dbos import DBOS

    sa_url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    DBOS(config={"name": name, "system_database_url": sa_url, "log_level": "WARNING"})

    @DBOS.step()
    def noop(i: int, s: int) -> dict[str, Any]:
        return {"ok": True}

    @DBOS.workflow()
    def chain(i: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for s in range(STEPS):
            out = noop(i, s)
        return out

    return DBOS, chain


def enqueuer(url: str, n: int, poll: float, concurrency: int) -> None:
    dbos, chain = _dbos(url, "scaleout")
    dbos.listen_queues([])  # enqueue only: nothing runs here
    dbos.launch()
    q = dbos.register_queue(QUEUE, worker_concurrency=concurrency, polling_interval_sec=poll)
    for i in range(n):
        q.enqueue(chain, i)
    dbos.destroy()


def executor(url: str, n: int, poll: float, concurrency: int) -> None:
    import psycopg

    dbos, _ = _dbos(url, "scaleout")
    dbos.launch()
    dbos.register_queue(QUEUE, worker_concurrency=concurrency, polling_interval_sec=poll)
    launched = time.time()
    print(json.dumps({"launched": launched}), flush=True)
    with psycopg.connect(url, autocommit=True) as c:
        while True:
            row = c.execute("SELECT count(*) FILTER (WHERE status IN ('SUCCESS', 'ERROR')),"
                            " count(*) FROM dbos.workflow_status").fetchone()
            assert row is not None
            if row[0] >= n:
                break
            time.sleep(0.05)
    dbos.destroy()


def one_rep(cluster: Any, n: int, poll: float, concurrency: int) -> dict[str, Any]:
    import psycopg

    url = cluster.url(cluster.create_database("dbos"))
    me = [sys.executable, __file__, "--url", url, "--runs", str(n), "--poll", str(poll),
          "--concurrency", str(concurrency)]
    t = time.perf_counter()
    subprocess.run([*me, "--role", "enqueue"], check=True, timeout=600)
    enqueue_s = time.perf_counter() - t
    out = subprocess.run([*me, "--role", "execute"], check=True, timeout=900,
                         capture_output=True, text=True)
    launched = json.loads(out.stdout.strip().splitlines()[-1])["launched"]
    with psycopg.connect(url, autocommit=True) as c:
        rows = c.execute("SELECT status, count(*), max(updated_at) FROM dbos.workflow_status"
                         " GROUP BY status").fetchall()
        ((steps,),) = c.execute("SELECT count(*) FROM dbos.operation_outputs").fetchall()
    statuses = {s: k for s, k, _ in rows}
    if statuses != {"SUCCESS": n} or steps < n * STEPS:
        raise RuntimeError(f"workflows {statuses}, {steps} step outputs for {n} x {STEPS}")
    end = max(m for _, _, m in rows) / 1000
    window = end - launched
    return {"rate": n * STEPS / window, "window_s": window, "enqueue_per_s": n / enqueue_s}


def main() -> int:
    parser = argparse.ArgumentParser(description="DBOS queue, no-op 3-step chains")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--poll", type=float, default=1.0, help="queue polling interval, s")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--role", choices=["enqueue", "execute"], default=None)
    parser.add_argument("--url", default=None)
    parser.add_argument("--podium", type=float, default=None,
                        help="Podium's 1-worker no-op steps/s, for the ratio")
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args()
    n = args.runs or (100 if args.quick else 2000)
    if args.role == "enqueue":
        enqueuer(args.url, n, args.poll, args.concurrency)
        return 0
    if args.role == "execute":
        executor(args.url, n, args.poll, args.concurrency)
        return 0

    import dbos
    from bench.pg_floor import default_parent
    from tests.pg import PgCluster

    reps = 1 if args.quick else args.reps
    cluster = PgCluster.start(parent=default_parent())
    try:
        runs = [one_rep(cluster, n, args.poll, args.concurrency) for _ in range(reps)]
    finally:
        cluster.stop()
    rates = [r["rate"] for r in runs]
    out: dict[str, Any] = {
        "dbos": getattr(dbos, "__version__", None) or _version(), "runs": n, "reps": reps,
        "poll_s": args.poll, "worker_concurrency": args.concurrency,
        "median": round(statistics.median(rates), 1), "min": round(min(rates), 1),
        "max": round(max(rates), 1),
        "enqueue_per_s": round(statistics.median(r["enqueue_per_s"] for r in runs), 1),
        "window_s": [round(r["window_s"], 2) for r in runs], "cpus": os.cpu_count()}
    if args.podium:
        out["podium_1_worker"] = args.podium
        out["podium_over_dbos"] = round(args.podium / out["median"], 2)
    print(f"DBOS {out['dbos']} queue (poll {args.poll:g} s, worker concurrency"
          f" {args.concurrency}), {n} x {STEPS} no-op steps, 1 executor:"
          f" {out['median']:,.0f} ({out['min']:,.0f}-{out['max']:,.0f}) steps/s;"
          f" enqueue {out['enqueue_per_s']:,.0f} workflows/s"
          + (f"; Podium 1 worker {args.podium:,.0f} steps/s = x{out['podium_over_dbos']}"
             if args.podium else ""), file=sys.stderr)
    doc = json.dumps(out, indent=2)
    print(doc)
    if args.json_path:
        Path(args.json_path).write_text(doc + "\n")
    return 0


def _version() -> str:
    from importlib.metadata import version

    return version("dbos")


if __name__ == "__main__":
    sys.exit(main())
