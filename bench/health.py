"""CPU share of health checks at 100 agents, and the cost of passive health per call.

100 agents (``HttpAgent`` or ``A2AAgent``, each with its own connection pool)
point at 4 agent processes (bench/fleet.py's); the registry's health monitor
checks them all every ``--interval`` seconds (10 s, the default of the agents
file) while nothing else runs. The engine process's CPU over ``--seconds``
(first round included) divided by that time is the share of one core that
health checking takes; divided by the number of checks, the CPU of one check.
Passive health (``HealthState.observe_call``, run on every call's release)
is timed on its own: its cost per call is inside the engine CPU per step of
bench/fleet.py.

    python bench/health.py                               # HTTP and A2A, 30 s each
    python bench/health.py --kinds http --compare /tmp/old/src
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


async def measure(kind: str, urls: list[str], n: int, interval_s: float, seconds: float
                  ) -> dict[str, Any]:
    from podium import AgentRegistry
    from podium.agents.base import Agent
    from podium.agents.health import HealthConfig
    from podium.agents.registry import RegistryConfig

    agents: list[Agent]
    if kind == "http":
        from podium.agents.http import HttpAgent

        agents = [HttpAgent(urls[i % len(urls)], id=f"agent-{i}", capabilities=["work"],
                            max_concurrency=16) for i in range(n)]
    else:
        from podium.agents.a2a import A2AAgent

        agents = [A2AAgent(urls[i % len(urls)], id=f"agent-{i}", capabilities=["work"],
                           max_concurrency=16) for i in range(n)]
    registry = AgentRegistry(agents, RegistryConfig(health=HealthConfig(interval_s=interval_s)))
    checks = 0
    for agent in agents:  # count the checks made
        inner = agent.health

        async def counted(inner: Any = inner) -> Any:
            nonlocal checks
            checks += 1
            return await inner()

        agent.health = counted  # type: ignore[method-assign]
    try:
        cpu0, t0 = time.process_time(), time.perf_counter()
        registry.start_monitor()
        await asyncio.sleep(seconds)
        await registry.stop_monitor()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        levels = [registry.health_of(a.id).level for a in agents]
    finally:
        await registry.aclose()
    return {"cpu_s": cpu, "wall_s": wall, "checks": checks,
            "healthy": sum(1 for lv in levels if lv == "healthy")}


def passive_us_per_call() -> float:
    from podium.agents.health import HealthConfig, HealthState

    state, config = HealthState(), HealthConfig()
    n = 200_000
    t0 = time.perf_counter()
    for i in range(n):
        state.observe_call(True, None, 0.02, i * 0.001, config)
    return (time.perf_counter() - t0) * 1e6 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kinds", default="http,a2a")
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--compare", metavar="DIR", help="also with DIR first on PYTHONPATH")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--urls", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        result = asyncio.run(measure(args.measure, args.urls.split(","), args.agents,
                                     args.interval, args.seconds))
        result["passive_us_per_call"] = passive_us_per_call()
        print(json.dumps(result))
        return
    from fleet import start_agents, stop_agents

    doc: dict[str, Any] = {"agents": args.agents, "interval_s": args.interval,
                           "seconds": args.seconds}
    variants = [("new", None)] + ([("old", args.compare)] if args.compare else [])
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds.split(","):
            procs = start_agents(kind, 4, 16, Path(tmp))
            try:
                urls = ",".join(u for _, u in procs)
                for name, src in variants:
                    env = {**os.environ, "PYTHONPATH": src} if src else None
                    out = subprocess.run(
                        [sys.executable, str(HERE / "health.py"), "--measure", kind, "--urls",
                         urls, "--agents", str(args.agents), "--interval", str(args.interval),
                         "--seconds", str(args.seconds)],
                        capture_output=True, text=True, check=True, env=env, cwd=HERE)
                    r = json.loads(out.stdout)
                    doc[f"{kind}:{name}"] = {
                        "cpu_share_of_one_core_pct": round(100 * r["cpu_s"] / r["wall_s"], 3),
                        "cpu_ms_per_check": round(r["cpu_s"] * 1000 / max(1, r["checks"]), 3),
                        "checks": r["checks"], "healthy_at_end": r["healthy"],
                        "passive_health_us_per_call": round(r["passive_us_per_call"], 2),
                    }
            finally:
                stop_agents(procs)
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
