"""Podium's benchmark suite: W1–W4, scale, latency and start-up.

    python bench/suite.py                 # everything, 5 repetitions, a few minutes
    python bench/suite.py --quick         # CI smoke: small sizes, 1 repetition
    python bench/suite.py --only w1,w2    # some cases
    python bench/suite.py --json out.json # also write the JSON document there

Workloads (durable on a local SQLite file, default settings, unless named
``strict``; import and start-up excluded except in the start-up case):

- W1 chain: 100 sequential no-op steps, each passing a small dict on
- W2 fan-out: 1 start step, 200 parallel no-op steps, 1 join collecting all 200
- W3 I/O: N parallel steps that each ``await asyncio.sleep(0.1)``, then a join
- W4 many runs: 200 separate runs of 3 sequential no-op steps, one after another
- scale: fan-out/fan-in at 1k, 10k, 100k steps and chains at 100, 1k, 10k steps,
  each run in a process of its own (steps/s, µs per step, that process's peak RSS),
  and 10,000 concurrent small runs in one engine
- latency: "dependency committed → dependent started", p50 and p99
- start-up: whole-process ``podium run`` of a 1-step workflow

Prints a table on stderr and one JSON document on stdout. Speed is measured
here, never asserted: CI runs ``--quick`` only to prove the suite works.

The process runs with ``podium.tuning.tune_gc()``, the garbage-collector
settings the CLI and ``podium serve`` use (``--default-gc`` measures without).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from podium import AgentRegistry, Engine, EngineConfig, PythonAgent, Step, Workflow
from podium.events import Event, StepStarted, StepSucceeded
from podium.store import MemoryStore, Store
from podium.store.base import Batch
from podium.store.sqlite import SQLiteStore
from podium.tuning import tune_gc


async def noop(task: Any) -> Any:
    return {"n": 1}


async def passthrough(task: Any) -> Any:
    return task.input


async def nap(task: Any) -> Any:
    await asyncio.sleep(0.1)
    return None


def registry() -> AgentRegistry:
    return AgentRegistry([
        PythonAgent(noop, id="noop", capabilities=["noop"]),
        PythonAgent(passthrough, id="pass", capabilities=["pass"]),
        PythonAgent(nap, id="nap", capabilities=["nap"]),
    ])


def chain(n: int, agent: str = "pass") -> Workflow:
    return Workflow(name=f"chain-{n}", mode="sequential",
                    steps=[Step(id=f"s{i}", agent=agent,
                                input={"i": i, "prev": "${{ steps.s%d.output.n }}" % (i - 1)}  # noqa: UP031
                                if i else {"i": 0})
                           for i in range(n)]) if agent == "pass-dict" else Workflow(
        name=f"chain-{n}", mode="sequential", steps=[Step(id=f"s{i}", agent=agent)
                                                      for i in range(n)])


def fan(width: int, agent: str = "noop") -> Workflow:
    branches = [Step(id=f"b{i}", agent=agent, depends_on=["start"]) for i in range(width)]
    return Workflow(name=f"fan-{width}", steps=[
        Step(id="start", agent="noop"), *branches,
        Step(id="join", agent="noop", depends_on=[b.id for b in branches])])


def mapped(n: int, agent: str = "noop") -> Workflow:
    """fan(n)'s shape as one for_each step over a list of n items (the run's input)."""
    return Workflow(name=f"map-{n}", steps=[
        Step(id="start", agent="noop"),
        Step(id="each", agent=agent, depends_on=["start"], for_each="${{ input.items }}",
             input={"i": "${{ item }}"}),
        Step(id="join", agent="noop", depends_on=["each"])])


def gated(width: int) -> Workflow:
    """fan(width) with a condition (true) on every branch: the cost of a when."""
    branches = [Step(id=f"b{i}", agent="noop", depends_on=["start"], when="input.x == 1")
                for i in range(width)]
    return Workflow(name=f"gated-{width}", steps=[
        Step(id="start", agent="noop"), *branches,
        Step(id="join", agent="noop", depends_on=[b.id for b in branches])])


def make_store(kind: str, folder: Path) -> Store:
    if kind == "memory":
        return MemoryStore()
    return SQLiteStore(folder / f"bench-{time.monotonic_ns()}.db",
                       durability="strict" if kind == "strict" else "normal")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def timed_run(workflow: Workflow, kind: str, folder: Path, *, warm: bool = True,
                    value: Any = None) -> float:
    engine = Engine(EngineConfig(registry=registry(), store=make_store(kind, folder)))
    async with engine:
        if warm:
            await engine.run(chain(3, "noop"), {})
        engine.plan(workflow)  # plan compilation is not part of a step's cost
        gc.collect()
        t0 = time.perf_counter()
        run = await engine.run(workflow, {"x": 1} if value is None else value)
        elapsed = time.perf_counter() - t0
    assert run.status == "succeeded", (run.status, run.error)
    return elapsed


async def many_runs(n: int, kind: str, folder: Path) -> float:
    wf = chain(3, "noop")
    engine = Engine(EngineConfig(registry=registry(), store=make_store(kind, folder)))
    async with engine:
        await engine.run(wf, {})
        t0 = time.perf_counter()
        for _ in range(n):
            run = await engine.run(wf, {})
            assert run.status == "succeeded"
        return n / (time.perf_counter() - t0)


async def concurrent_runs(n: int, kind: str, folder: Path) -> float:
    wf = chain(3, "noop")
    engine = Engine(EngineConfig(registry=registry(), store=make_store(kind, folder)))
    async with engine:
        await engine.run(wf, {})
        t0 = time.perf_counter()
        handles = [await engine.start(wf, {"i": i}) for i in range(n)]
        runs = [await h.result() for h in handles]
        elapsed = time.perf_counter() - t0
    assert all(r.status == "succeeded" for r in runs)
    return n / elapsed


class _CommitClock(SQLiteStore):
    """Records when each step's success was committed (bench only)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.committed: dict[tuple[str, str], float] = {}

    def write_batch_now(self, batch: Batch) -> frozenset[str]:
        lost = super().write_batch_now(batch)  # returns once the transaction committed
        now = time.perf_counter()
        for e in batch.source:
            if isinstance(e, StepSucceeded):
                self.committed[(e.run_id, e.step_id)] = now
        return lost


async def latency(n: int, folder: Path) -> dict[str, float]:
    store = _CommitClock(folder / "latency.db")
    engine = Engine(EngineConfig(registry=registry(), store=store))
    started: dict[tuple[str, str], float] = {}

    def on(e: Event) -> None:
        if isinstance(e, StepStarted) and e.attempt == 1:
            started[(e.run_id, e.step_id)] = time.perf_counter()

    engine.bus.subscribe(on)
    wf = chain(n, "noop")
    async with engine:
        run = await engine.run(wf, {})
    gaps = sorted(
        (started[(run.run_id, f"s{i}")] - store.committed[(run.run_id, f"s{i - 1}")]) * 1e6
        for i in range(1, n))
    return {"p50_us": round(statistics.median(gaps), 1),
            "p99_us": round(gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))], 1),
            "samples": len(gaps)}


def startup(folder: Path, reps: int) -> list[float]:
    wf = folder / "one.yaml"
    wf.write_text("name: one\nsteps:\n  - {id: a, agent: noop}\n")
    (folder / "podium.yaml").write_text(
        "agents:\n  - {id: n, capabilities: [noop], python: 'bench_agents:noop'}\n")
    (folder / "bench_agents.py").write_text("async def noop(task):\n    return 1\n")
    cmd = [sys.executable, "-m", "podium", "run", str(wf), "--json", "--db",
           f"sqlite:///{folder}/startup.db"]
    # Python caches compiled modules beside their sources, as pip does at install;
    # an environment with PYTHONDONTWRITEBYTECODE (this project's image sets it)
    # would otherwise recompile podium's ~50 modules at every start of an editable
    # install. One unmeasured run lets the cache be written, as any first run does.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(cmd, cwd=folder, check=True, capture_output=True, env=env)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=folder, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - t0)
    return times


def one_case(spec: str, folder: Path) -> dict[str, float]:
    """Run one scale case (``fan:N`` or ``chain:N``) here and report its time and peak RSS.

    Meant for a process of its own: ru_maxrss is the peak of the whole process, so
    measured in the suite's process it would be the biggest case run so far.
    """
    shape, size = spec.split(":")
    n = int(size)
    workflow = fan(n - 2) if shape == "fan" else chain(n, "noop")
    elapsed = asyncio.run(timed_run(workflow, "sqlite", folder))
    return {"seconds": elapsed, "peak_rss_mb": peak_rss_mb()}


def case_in_process(spec: str, default_gc: bool) -> dict[str, float]:
    """``one_case`` in a fresh interpreter, so its peak RSS is its own."""
    cmd = [sys.executable, __file__, "--case", spec, *(["--default-gc"] if default_gc else [])]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, float] = json.loads(done.stdout)
    return result


def scale_case(spec: str, reps: int, default_gc: bool) -> dict[str, float]:
    runs = [case_in_process(spec, default_gc) for _ in range(reps)]
    t = [r["seconds"] for r in runs]
    n = int(spec.split(":")[1])
    return {**stats(t), "steps_per_s": round(n / statistics.median(t)),
            "us_per_step": round(statistics.median(t) / n * 1e6, 1),
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs))}


def stats(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 5), "min": round(min(values), 5),
            "max": round(max(values), 5)}


def repeat(reps: int, make: Callable[[], Coroutine[Any, Any, float]]) -> list[float]:
    return [asyncio.run(make()) for _ in range(reps)]


def main() -> None:
    parser = argparse.ArgumentParser(description="Podium benchmark suite")
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--only", default="",
                        help="comma list: w1,w2,w3,w4,scale,patterns,latency,startup")
    parser.add_argument("--json", dest="json_path", default=None, help="also write JSON here")
    parser.add_argument("--default-gc", action="store_true",
                        help="keep CPython's collector settings instead of the CLI's")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # fan:N or chain:N, one run
    args = parser.parse_args()
    if not args.default_gc:
        tune_gc()
    if args.case:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(one_case(args.case, Path(tmp))))
        return
    quick = args.quick
    reps = 1 if quick else args.reps
    only = set(filter(None, args.only.split(",")))

    def want(name: str) -> bool:
        return not only or name in only

    out: dict[str, Any] = {"python": sys.version.split()[0], "reps": reps, "quick": quick,
                           "cpus": os.cpu_count(), "gc": "default" if args.default_gc else "tuned",
                           "cases": {}}
    cases = out["cases"]
    table: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for kind in ("sqlite", "strict"):
            if want("w1"):
                n = 20 if quick else 100
                t = repeat(reps, lambda n=n, kind=kind: timed_run(chain(n), kind, folder))
                cases[f"W1 chain {n} ({kind})"] = {
                    **stats(t), "steps_per_s": round(n / statistics.median(t))}
            if want("w2"):
                w = 20 if quick else 200
                t = repeat(reps, lambda w=w, kind=kind: timed_run(fan(w), kind, folder))
                cases[f"W2 fan-out {w} ({kind})"] = {
                    **stats(t), "steps_per_s": round((w + 2) / statistics.median(t))}
            if want("w3"):
                for w in ((10,) if quick else (100, 1000)):
                    t = repeat(reps, lambda w=w, kind=kind: timed_run(fan(w, "nap"), kind, folder))
                    cases[f"W3 I/O {w} x 100ms ({kind})"] = {**stats(t), "ideal_s": 0.1}
            if want("w4"):
                n = 20 if quick else 200
                r = repeat(reps, lambda n=n, kind=kind: many_runs(n, kind, folder))
                cases[f"W4 {n} runs x 3 steps ({kind})"] = {
                    "runs_per_s": {"median": round(statistics.median(r)), "min": round(min(r)),
                                   "max": round(max(r))}}
        if want("scale"):
            # Each run in a process of its own: its time is not skewed by the heap the
            # cases before it left, and its peak RSS is its own.
            sizes = (1000,) if quick else (1000, 10_000, 100_000)
            for size in sizes:
                cases[f"scale fan-out {size}"] = scale_case(
                    f"fan:{size}", 1 if size >= 100_000 else reps, args.default_gc)
            for size in ((100, 1000) if quick else (100, 1000, 10_000)):
                cases[f"scale chain {size}"] = scale_case(
                    f"chain:{size}", 1 if size >= 10_000 else reps, args.default_gc)
            n = 100 if quick else 10_000
            r = repeat(1, lambda n=n: concurrent_runs(n, "sqlite", folder))
            # The suite's own process: the peak over every case it has run so far.
            cases[f"scale {n} concurrent runs x 3 steps"] = {
                "runs_per_s": round(r[0]), "suite_peak_rss_mb": round(peak_rss_mb())}
        if want("patterns"):
            # A for_each of n items against the same shape written out as n steps, and
            # a fan-out whose every branch has a (true) `when`: per-item and per-when cost.
            for n in ((1000,) if quick else (1000, 10_000)):
                items = {"x": 1, "items": list(range(n))}
                fan_t, map_t = [], []
                for _ in range(1 if n >= 10_000 else reps):  # alternated: same minutes
                    fan_t += repeat(1, lambda n=n: timed_run(fan(n), "sqlite", folder))
                    map_t += repeat(1, lambda n=n, v=items: timed_run(mapped(n), "sqlite",
                                                                     folder, value=v))
                f_us = statistics.median(fan_t) / (n + 2) * 1e6
                m_us = statistics.median(map_t) / (n + 2) * 1e6
                cases[f"patterns fan-out {n} steps vs for_each {n} items"] = {
                    "fan_us_per_step": round(f_us, 1), "map_us_per_item": round(m_us, 1),
                    "ratio": round(m_us / f_us, 2)}
            w = 200 if quick else 1000
            plain_t, when_t = [], []
            for _ in range(reps):
                plain_t += repeat(1, lambda w=w: timed_run(fan(w), "sqlite", folder))
                when_t += repeat(1, lambda w=w: timed_run(gated(w), "sqlite", folder))
            p_us = statistics.median(plain_t) / (w + 2) * 1e6
            g_us = statistics.median(when_t) / (w + 2) * 1e6
            cases[f"patterns when on {w} branches"] = {
                "plain_us_per_step": round(p_us, 1), "when_us_per_step": round(g_us, 1),
                "when_cost_us": round(g_us - p_us, 1)}
        if want("latency"):
            lat = [asyncio.run(latency(50 if quick else 500, folder)) for _ in range(reps)]
            cases["latency committed -> dependent started"] = {
                "p50_us": statistics.median(x["p50_us"] for x in lat),
                "p99_us": statistics.median(x["p99_us"] for x in lat)}
        if want("startup"):
            t = startup(folder, reps)
            cases["start-up podium run (1 step, whole process)"] = stats(t)
    for name, v in cases.items():
        table.append((name, json.dumps(v)))
    width = max((len(n) for n, _ in table), default=10)
    for name, v in table:
        print(f"{name:<{width}}  {v}", file=sys.stderr)
    doc = json.dumps(out, indent=2)
    print(doc)
    if args.json_path:
        Path(args.json_path).write_text(doc + "\n")


if __name__ == "__main__":
    main()
