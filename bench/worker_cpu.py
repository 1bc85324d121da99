"""CPU seconds a ``podium worker`` spends per step on PostgreSQL, one source tree against another.

    python bench/worker_cpu.py                           # this tree, 3 reps
    python bench/worker_cpu.py --tree old=/tmp/base/src --tree new=src --reps 4
    python bench/worker_cpu.py --agent noop --runs 2000  # no-op steps instead of naps
    python bench/worker_cpu.py --statements              # and what it sends per step
    python bench/worker_cpu.py --profile out.txt         # py-spy (pip install py-spy)

On a shared machine wall-clock throughput moves with whatever else runs, but the
CPU a process spends per step barely does: this is the figure that bounds how
many workers one machine holds (bench/scaleout.py's I/O case). Each repetition
runs every tree once, alternating, each in a fresh database of one throwaway
cluster (tests/pg.py): the runs (3-step chains of bench/scaleout_agents.py) are
submitted first, then one worker starts; from its registration (its start-up
excluded) to the last run's end, the worker's utime+stime and the server's
(the postmaster's children: its backends and background writers) are read from
/proc. Prints one line per run and the medians (min-max) per tree. The
profile (first tree, first repetition) samples only while the worker holds the
GIL: its time blocked inside libpq is not CPU and would drown the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.scaleout import (  # noqa: E402 - after the path above
    AGENTS,
    STEPS,
    Bench,
    chain,
    check_runs,
    proc_cpu_s,
    registered,
    sql,
    submit_many,
    wait_for,
)
from tests.pg import PgCluster  # noqa: E402


def proc_sys_s(pid: int) -> float:
    """stime alone: the kernel's share (sockets, wake-ups) of a process's CPU."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            parts = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return int(parts[12]) / os.sysconf("SC_CLK_TCK")


def server_cpu_s(cluster: PgCluster) -> float:
    """utime + stime of the postmaster and every live child of it (exited ones are lost)."""
    pm = int((cluster.data / "postmaster.pid").read_text().split()[0])
    total = proc_cpu_s(pm)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                parts = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(parts[1]) == pm:
            total += (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    return total


def statements(cluster: PgCluster, db: str) -> Counter[str]:
    """The statements the server logged for ``db`` so far, by their first 50 characters."""
    out: Counter[str] = Counter()
    for line in cluster.log.read_text(errors="replace").splitlines():
        if f" {db} " in line and ("LOG:  statement:" in line or "LOG:  execute" in line):
            text = line.split("LOG:  ", 1)[1]
            out[" ".join(text.split(": ", 1)[-1].split())[:50]] += 1
    return out


def one(b: Bench, tree: Path, runs: int, agent: str, ms: int | None,
        concurrency: int, profile: Path | None = None, count: bool = False) -> dict[str, Any]:
    db = b.cluster.create_database(agent)
    url = b.cluster.url(db)
    wf = b.workflow(chain(f"cpu_{agent}", agent, STEPS, ms))
    ids = asyncio.run(submit_many(url, wf, runs))
    if count:  # (logging costs the server CPU: not with the CPU figures that matter)
        sql(b.cluster.url(), f'ALTER DATABASE "{db}" SET log_statement = \'all\'')
    env = {k: v for k, v in os.environ.items()
           if k not in ("PODIUM_DB", "PODIUM_AGENTS", "PODIUM_DEBUG")}
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(tree))
    log = b.work / f"worker-{tree.parent.name}.log"
    with log.open("wb") as err:
        w = subprocess.Popen(
            [sys.executable, "-m", "podium", "worker", "--db", url, "--agents", str(AGENTS),
             "--concurrency", str(concurrency), "--name", "w0"],
            cwd=b.work, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    b.procs.append(w)
    b.logs[w.pid] = log
    try:
        if not wait_for(lambda: registered(url, ["w0"]), 60, 0.002):
            raise RuntimeError(f"no registration:\n{log.read_text()[-2000:]}")
        spy = None if profile is None else subprocess.Popen(
            ["perf", "record", "-e", "cpu-clock", "-F", "999", "-g", "-p", str(w.pid),
             "-o", str(profile)] if profile.suffix == ".perf" else
            ["py-spy", "record", "--pid", str(w.pid), "--rate", "250", "--format", "raw",
             "--output", str(profile), "--gil"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu0, pg0, t0 = proc_cpu_s(w.pid), server_cpu_s(b.cluster), time.monotonic()
        sys0 = proc_sys_s(w.pid)
        said0 = statements(b.cluster, db) if count else Counter()

        def done() -> bool:
            ((n,),) = sql(url, "SELECT count(*) FROM runs WHERE status = 'succeeded'")
            return int(n) >= runs

        if not wait_for(done, 600, 0.05):
            raise RuntimeError(f"runs not done:\n{log.read_text()[-2000:]}")
        cpu1, pg1, t1 = proc_cpu_s(w.pid), server_cpu_s(b.cluster), time.monotonic()
        sys1 = proc_sys_s(w.pid)
        said = statements(b.cluster, db) - said0 if count else Counter()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        b.stop(w)
    finally:
        b.cleanup()
    check_runs(url, ids, STEPS)
    steps = runs * STEPS
    return {"worker_ms": 1e3 * (cpu1 - cpu0) / steps, "kernel_ms": 1e3 * (sys1 - sys0) / steps,
            "server_ms": 1e3 * (pg1 - pg0) / steps, "rate": steps / (t1 - t0),
            "statements": said, "steps": steps}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", action="append", default=[],
                   help="NAME=PATH of a src folder (repeatable; default: this tree)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--agent", choices=("nap", "noop"), default="nap")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--statements", action="store_true",
                   help="count the statements each worker sends per step (server log)")
    p.add_argument("--profile", type=Path, default=None,
                   help="py-spy (raw, collapsed stacks), or perf if it ends .perf, of the first"
                   " tree's first rep here")
    args = p.parse_args()
    trees = [(n, Path(x).resolve()) for n, _, x in (t.partition("=") for t in args.tree)] or [
        ("this", ROOT / "src")]
    ms = 100 if args.agent == "nap" else None
    cluster = PgCluster.start()
    sql(cluster.url(), "ALTER SYSTEM SET log_line_prefix = '%%m [%%p] %%d '")
    sql(cluster.url(), "SELECT pg_reload_conf()")
    work = Path(tempfile.mkdtemp(prefix="podium-cpu-"))
    b = Bench(cluster, work)
    got: dict[str, list[dict[str, Any]]] = {n: [] for n, _ in trees}
    try:
        for rep in range(args.reps):
            order = trees if rep % 2 == 0 else trees[::-1]
            for name, tree in order:
                prof = args.profile if rep == 0 and name == trees[0][0] else None
                r = one(b, tree, args.runs, args.agent, ms, args.concurrency, prof,
                        args.statements)
                got[name].append(r)
                print(f"rep {rep} {name:>6}: worker {r['worker_ms']:.3f} ms/step (kernel"
                      f" {r['kernel_ms']:.3f}), server"
                      f" {r['server_ms']:.3f} ms/step, {r['rate']:.0f} steps/s,"
                      f" load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
                said = r["statements"]
                if said:
                    print(f"  {sum(said.values()) / r['steps']:.2f} statements per step:",
                          file=sys.stderr)
                    for text, n in said.most_common(12):
                        print(f"  {n / r['steps']:6.3f}  {text}", file=sys.stderr)
    finally:
        b.cleanup()
        cluster.stop()
    for name, rs in got.items():
        if not rs:
            continue
        parts = []
        for key, unit in (("worker_ms", "ms/step"), ("kernel_ms", "ms/step"),
                          ("server_ms", "ms/step"),
                          ("rate", "steps/s")):
            xs = [r[key] for r in rs]
            parts.append(f"{key.removesuffix('_ms')} {statistics.median(xs):.3f}"
                         f" ({min(xs):.3f}-{max(xs):.3f}) {unit}")
        print(f"{name}: " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
