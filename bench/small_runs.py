"""Latency of a small run, first run of a fresh process, and start-up.

Each repetition of a case is a new Python process that imports Podium, builds
one engine and runs one workflow once: no warm-up, as a script or a test that
runs one workflow pays it. Inside the process, the time of the imports and the
time from just before the engine is built to the run's end (``total``) are
measured apart; closing the engine is reported on its own (``close``).

- diamond: a -> (b, c) -> d -> e, where b fails twice (a retryable error) and
  its retry policy waits 10 ms, then 20 ms: ``overhead`` is total - 30 ms
- sleep N: N parallel steps that each ``await asyncio.sleep(0.1)``
- start-up: whole-process ``podium run`` of a 1-step workflow, and
  ``podium status RUN`` of that run

Durable cases use a fresh SQLite file in a temporary folder with the default
settings; ``memory`` cases use the in-memory store. Prints a table on stderr
and one JSON document on stdout (medians with min and max over the
repetitions). Speed is measured here, never asserted.

    python bench/small_runs.py            # 7 fresh processes per case
    python bench/small_runs.py --quick    # CI smoke: 1 process per case
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CASES = ("diamond", "sleep-100", "sleep-1000")
WAITS_S = 0.030  # the diamond's retry waits: 10 ms + 20 ms


def child(case: str, kind: str, folder: Path) -> dict[str, float]:
    """One case in this (fresh) process: the imports are timed as well."""
    t_import = time.perf_counter()
    import asyncio

    from podium import AgentRegistry, Engine, EngineConfig, PythonAgent, Step, Unavailable, Workflow
    from podium.store import MemoryStore, Store
    from podium.store.sqlite import SQLiteStore
    from podium.tuning import tune_gc
    imported = time.perf_counter() - t_import
    tune_gc()  # as podium run and podium serve do

    failures = {"b": 2}

    async def flaky(task: Any) -> Any:
        if failures.get(task.step_id, 0) > 0:
            failures[task.step_id] -= 1
            raise Unavailable("try again")
        return {"ok": True}

    async def nap(task: Any) -> Any:
        await asyncio.sleep(0.1)
        return None

    def workflow() -> Workflow:
        if case == "diamond":
            retry = {"max_attempts": 3, "delays": ["10ms", "20ms"]}
            return Workflow(name="diamond", steps=[
                Step(id="a", agent="work"),
                Step(id="b", agent="work", depends_on=["a"], retry=retry),
                Step(id="c", agent="work", depends_on=["a"]),
                Step(id="d", agent="work", depends_on=["b", "c"]),
                Step(id="e", agent="work", depends_on=["d"]),
            ])
        width = int(case.split("-")[1])
        return Workflow(name=case, steps=[Step(id=f"s{i}", agent="nap") for i in range(width)])

    async def main() -> dict[str, float]:
        wf = workflow()  # the definition is the caller's: built before the clock starts
        t0 = time.perf_counter()
        store: Store = MemoryStore() if kind == "memory" else SQLiteStore(folder / "run.db")
        registry = AgentRegistry([PythonAgent(flaky, id="work", capabilities=["work"]),
                                  PythonAgent(nap, id="nap", capabilities=["nap"])])
        engine = Engine(EngineConfig(registry=registry, store=store))
        async with engine:
            run = await engine.run(wf, {})
            total = time.perf_counter() - t0
            t1 = time.perf_counter()
        close = time.perf_counter() - t1
        assert run.status == "succeeded", (run.status, run.error)
        if case == "diamond":
            assert run.steps["b"].attempts == 3, run.steps["b"]
        return {"total": total, "close": close}

    return {"import": imported, **asyncio.run(main())}


def fresh_process(case: str, kind: str, folder: Path) -> dict[str, float]:
    """Runs ``child`` in a new interpreter (same environment) and reads its timings."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", case, "--store", kind, "--folder", str(folder)],
        check=True, capture_output=True, text=True, env=cli_env())
    result: dict[str, float] = json.loads(out.stdout)
    return result


def cli_env() -> dict[str, str]:
    # Python caches compiled modules beside their sources, as pip does at install;
    # with PYTHONDONTWRITEBYTECODE (this project's image sets it) an editable
    # install would recompile every module at each start (see bench/suite.py).
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def startup(folder: Path, reps: int) -> dict[str, list[float]]:
    """Whole-process ``podium run`` of a 1-step workflow and ``podium status`` of its run,
    alternated."""
    wf = folder / "one.yaml"
    wf.write_text("name: one\nsteps:\n  - {id: a, agent: noop}\n")
    (folder / "podium.yaml").write_text(
        "agents:\n  - {id: n, capabilities: [noop], python: 'bench_agents:noop'}\n")
    (folder / "bench_agents.py").write_text("async def noop(task):\n    return 1\n")
    db = ["--db", f"sqlite:///{folder}/startup.db"]
    env = cli_env()
    run_cmd = [sys.executable, "-m", "podium", "run", str(wf), "--json", *db]
    # One unmeasured run writes the bytecode caches, as any first run does, and
    # leaves a run for status to show.
    first = subprocess.run(run_cmd, cwd=folder, check=True, capture_output=True, env=env, text=True)
    run_id = json.loads(first.stdout)["run_id"]
    status_cmd = [sys.executable, "-m", "podium", "status", run_id, *db]
    subprocess.run(status_cmd, cwd=folder, check=True, capture_output=True, env=env)
    times: dict[str, list[float]] = {"run": [], "status": []}
    for _ in range(reps):
        for name, cmd in (("run", run_cmd), ("status", status_cmd)):
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=folder, check=True, capture_output=True, env=env)
            times[name].append(time.perf_counter() - t0)
    return times


def stats(values: list[float], scale: float = 1000.0, digits: int = 1) -> dict[str, float]:
    return {"median": round(statistics.median(values) * scale, digits),
            "min": round(min(values) * scale, digits), "max": round(max(values) * scale, digits)}


def main() -> None:
    parser = argparse.ArgumentParser(description="Latency of a small run and start-up")
    parser.add_argument("--quick", action="store_true", help="one process per case (CI smoke)")
    parser.add_argument("--reps", type=int, default=7, help="fresh processes per case")
    parser.add_argument("--only", default="",
                        help="comma list: diamond,sleep-100,sleep-1000,startup")
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite",
                        help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        json.dump(child(args.child, args.store, Path(args.folder)), sys.stdout)
        return
    reps = 1 if args.quick else args.reps
    only = set(filter(None, args.only.split(",")))
    out: dict[str, Any] = {"python": sys.version.split()[0], "reps": reps, "cpus": os.cpu_count(),
                           "unit": "ms", "cases": {}}
    cases: dict[str, Any] = out["cases"]
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            if only and case not in only:
                continue
            for kind in ("sqlite", "memory"):
                samples: list[dict[str, float]] = []
                for rep in range(reps):
                    folder = Path(tmp) / f"{case}-{kind}-{rep}"  # a fresh database each time
                    folder.mkdir()
                    samples.append(fresh_process(case, kind, folder))
                totals = [s["total"] for s in samples]
                entry: dict[str, Any] = {"total": stats(totals)}
                if case == "diamond":
                    entry["overhead"] = stats([t - WAITS_S for t in totals])
                entry["import"] = stats([s["import"] for s in samples])
                entry["close"] = stats([s["close"] for s in samples])
                cases[f"{case} ({kind})"] = entry
        if not only or "startup" in only:
            folder = Path(tmp) / "startup"
            folder.mkdir()
            times = startup(folder, reps)
            cases["podium run, 1 step (whole process)"] = stats(times["run"])
            cases["podium status RUN (whole process)"] = stats(times["status"])
    width = max((len(n) for n in cases), default=10)
    print(f"ms: median [min-max] of {reps} processes", file=sys.stderr)
    for name, v in cases.items():
        parts = v.items() if "median" not in v else (("total", v),)
        cells = "  ".join(f"{k} {s['median']} [{s['min']}-{s['max']}]" for k, s in parts)
        print(f"{name:<{width}}  {cells}", file=sys.stderr)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
