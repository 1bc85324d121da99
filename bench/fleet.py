"""Throughput of one engine over a fleet of real HTTP agents.

Four ``podium agent serve`` processes on 127.0.0.1 each serve a function that
takes 20 ms, with ``max_concurrency`` 16 (in the agents' registry entries and
on the servers). One workflow of 1,000 parallel steps runs over them, in
memory. The ideal makespan is ``steps × latency / total concurrency``
(1,000 × 20 ms / 64 = 0.3125 s): what a scheduler with no overhead of its own
would take. Prints one JSON document: makespan and throughput (medians, min,
max over the repetitions), the ideal and the ratio of the median makespan to
it, the engine's CPU time per step, how many calls each agent served, and
the number of attempts (1,000 per run when nothing failed). For scale, the
same workflow also runs over four in-process agents with the same latency
and capacity (``in_process_baseline``): the difference is the cost of HTTP.

Each repetition uses a fresh engine and registry (new HTTP connection pools);
a warm-up run on that engine is not measured, so connection set-up and plan
compilation stay out of the numbers. Agent start-up is excluded too.

    python bench/fleet.py              # 5 repetitions of 1,000 steps
    python bench/fleet.py --quick      # smoke: 1 repetition of 200 steps

This file is also the agent the servers run (``fleet:work``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


async def work(task: Any) -> dict[str, Any]:
    """The agent: wait ``input.ms`` milliseconds (a remote call's latency), answer."""
    await asyncio.sleep(task.input["ms"] / 1000)
    return {"pid": os.getpid()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_agents(n: int, capacity: int, folder: Path) -> list[tuple[subprocess.Popen[bytes], str]]:
    procs = []
    for i in range(n):
        port = free_port()
        log = (folder / f"agent-{i}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "podium", "agent", "serve", "fleet:work",
             "--capability", "work", "--port", str(port), "--max-concurrency", str(capacity),
             "--log-level", "warning"],
            cwd=HERE, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        procs.append((proc, f"http://127.0.0.1:{port}"))
    import httpx

    deadline = time.monotonic() + 60
    for proc, url in procs:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"agent at {url} exited with {proc.returncode}")
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"agent at {url} did not come up") from None
                time.sleep(0.05)
    return procs


def stop_agents(procs: list[tuple[subprocess.Popen[bytes], str]]) -> None:
    for proc, _ in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
    for proc, _ in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def one(urls: list[str], capacity: int, steps: int, latency_ms: int,
              *, in_process: bool = False) -> dict[str, Any]:
    from podium import AgentRegistry, Engine, EngineConfig, MemoryStore, PythonAgent, Step, Workflow
    from podium.agents.base import Agent
    from podium.agents.http import HttpAgent
    from podium.events import Event, StepStarted

    agents: list[Agent] = [
        PythonAgent(work, id=f"agent-{i}", capabilities=["work"], max_concurrency=capacity)
        if in_process else
        HttpAgent(url, id=f"agent-{i}", capabilities=["work"], max_concurrency=capacity)
        for i, url in enumerate(urls)]
    registry = AgentRegistry(agents)
    wf = Workflow(name="fleet-bench", mode="parallel",
                  steps=[Step(id=f"s{i:04d}", agent="work", input={"ms": latency_ms})
                         for i in range(steps)])
    attempts = 0

    def count(event: Event) -> None:
        nonlocal attempts
        if isinstance(event, StepStarted):
            attempts += 1

    try:
        async with Engine(EngineConfig(registry=registry, store=MemoryStore())) as engine:
            warm = await engine.run(wf, {})  # connections, plan: not measured
            assert warm.status == "succeeded", warm.error
            engine.bus.subscribe(count)
            cpu0, t0 = time.process_time(), time.perf_counter()
            run = await engine.run(wf, {})
            makespan, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await registry.aclose()
    assert run.status == "succeeded", run.error
    per_agent = Counter(s.agent_id for s in run.steps.values())
    return {"makespan_s": makespan, "cpu_s": cpu, "attempts": attempts,
            "per_agent": dict(sorted(per_agent.items()))}


def summary(values: list[float], digits: int = 4) -> dict[str, float]:
    return {"median": round(statistics.median(values), digits),
            "min": round(min(values), digits), "max": round(max(values), digits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repetition of 200 steps")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--capacity", type=int, default=16, help="max_concurrency of each agent")
    parser.add_argument("--latency-ms", type=int, default=20)
    args = parser.parse_args()
    reps = 1 if args.quick else args.reps
    steps = args.steps or (200 if args.quick else 1000)
    total = args.agents * args.capacity
    ideal = steps * args.latency_ms / 1000 / total
    load_1m = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        procs = start_agents(args.agents, args.capacity, Path(tmp))
        try:
            urls = [url for _, url in procs]
            results = [asyncio.run(one(urls, args.capacity, steps, args.latency_ms))
                       for _ in range(reps)]
        finally:
            stop_agents(procs)
    baseline = [asyncio.run(one(urls, args.capacity, steps, args.latency_ms, in_process=True))
                for _ in range(reps)]
    base_makespan = statistics.median(r["makespan_s"] for r in baseline)
    makespans = [r["makespan_s"] for r in results]
    median = statistics.median(makespans)
    agents = sorted({a for r in results for a in r["per_agent"]})
    print(json.dumps({
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_avg_1m_at_start": round(load_1m, 2),
        "reps": reps,
        "steps": steps,
        "agents": args.agents,
        "latency_ms": args.latency_ms,
        "max_concurrency_each": args.capacity,
        "total_concurrency": total,
        "ideal_makespan_s": round(ideal, 4),
        "makespan_s": summary(makespans),
        "throughput_steps_per_s": summary([steps / m for m in makespans], 1),
        "ideal_throughput_steps_per_s": round(steps / ideal, 1),
        "makespan_over_ideal": round(median / ideal, 2),
        "engine_cpu_ms_per_step": summary([r["cpu_s"] * 1000 / steps for r in results], 3),
        "attempts_per_run": [r["attempts"] for r in results],
        "in_process_baseline": {
            "makespan_s": round(base_makespan, 4),
            "throughput_steps_per_s": round(steps / base_makespan, 1),
            "makespan_over_ideal": round(base_makespan / ideal, 2),
            "engine_cpu_ms_per_step": round(
                statistics.median(r["cpu_s"] for r in baseline) * 1000 / steps, 3),
        },
        "per_agent_median": {a: statistics.median(r["per_agent"].get(a, 0) for r in results)
                             for a in agents},
        "per_agent_each_rep": [r["per_agent"] for r in results],
    }, indent=2))


if __name__ == "__main__":
    main()
