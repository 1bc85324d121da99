"""Per-step overhead of the engine with no-op Python agents.

Workloads: a 1,000-step fan-out/fan-in DAG (1 root, 998 branches, 1 join) and
a 100-step chain, each in memory and durable on SQLite (default durability,
and strict). Prints one JSON document: medians, min and max of several
repetitions, and steps per second. Import and start-up are excluded; each
repetition uses a fresh engine and database.

    python bench/overhead.py            # 5 repetitions
    python bench/overhead.py --quick    # CI smoke: 1 repetition, small sizes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from podium import AgentRegistry, Engine, EngineConfig, PythonAgent, Step, Workflow
from podium.store import MemoryStore, Store
from podium.store.sqlite import SQLiteStore


async def noop(task: Any) -> Any:
    return None


def fan_out(n: int) -> Workflow:
    branches = [Step(id=f"b{i}", agent="noop", depends_on=["root"]) for i in range(n - 2)]
    return Workflow(
        name="fanout",
        steps=[Step(id="root", agent="noop"), *branches,
               Step(id="join", agent="noop", depends_on=[s.id for s in branches])],
    )


def chain(n: int) -> Workflow:
    return Workflow(name="chain", mode="sequential",
                    steps=[Step(id=f"s{i}", agent="noop") for i in range(n)])


def make_store(kind: str, folder: Path, rep: int) -> Store:
    if kind == "memory":
        return MemoryStore()
    durability = "strict" if kind == "sqlite-strict" else "normal"
    return SQLiteStore(folder / f"{kind}-{rep}.db", durability=durability)


async def one(workflow: Workflow, kind: str, folder: Path, rep: int) -> float:
    registry = AgentRegistry([PythonAgent(noop, id="noop", capabilities=["noop"])])
    engine = Engine(EngineConfig(registry=registry, store=make_store(kind, folder, rep)))
    async with engine:
        await engine.run(workflow, {"warm": True})  # first run pays plan compile, table pages
        t0 = time.perf_counter()
        run = await engine.run(workflow, {"x": 1})
        elapsed = time.perf_counter() - t0
    assert run.status == "succeeded", run.error
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small repetition (CI smoke)")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    reps = 1 if args.quick else args.reps
    sizes = {"fanout": 100 if args.quick else 1000, "chain": 20 if args.quick else 100}
    results: dict[str, Any] = {"reps": reps, "python": sys.version.split()[0], "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, build in (("fanout", fan_out), ("chain", chain)):
            n = sizes[name]
            wf = build(n)
            for kind in ("memory", "sqlite", "sqlite-strict"):
                times = [asyncio.run(one(wf, kind, folder, r)) for r in range(reps)]
                med = statistics.median(times)
                results["cases"][f"{name}-{n}/{kind}"] = {
                    "steps": n,
                    "median_s": round(med, 5),
                    "min_s": round(min(times), 5),
                    "max_s": round(max(times), 5),
                    "steps_per_s": round(n / med),
                }
    for name in ("fanout", "chain"):
        n = sizes[name]
        mem = results["cases"][f"{name}-{n}/memory"]["median_s"]
        dur = results["cases"][f"{name}-{n}/sqlite"]["median_s"]
        results[f"{name}_durable_over_memory"] = round(dur / mem, 2)
    json.dump(results, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
