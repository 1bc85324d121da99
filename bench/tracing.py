"""What tracing costs per step: off (no subscriber, no header), and on with the SDK's
in-memory exporter (a span per attempt and per run, ended and exported as they end).

One process, in-process no-op agents, an in-memory store; rounds alternate off and
on so both see the same machine; medians with min–max of the per-step time.

    python bench/tracing.py            # fan(1000) and chain(200), 7 rounds
    python bench/tracing.py --quick    # 3 rounds, smaller runs
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from podium import Engine
from podium.agents.python import PythonAgent
from podium.agents.registry import AgentRegistry
from podium.definition.loader import workflow_from_dict
from podium.engine import EngineConfig
from podium.observe.tracing import Tracing, current_traceparent


async def noop(task: Any) -> int:
    return 1


def shapes(fan: int, chain: int) -> dict[str, Any]:
    return {
        f"fan({fan})": workflow_from_dict({"name": "fan", "mode": "parallel", "steps": [
            {"id": f"s{i}", "agent": "noop"} for i in range(fan)]}),
        f"chain({chain})": workflow_from_dict({"name": "chain", "mode": "sequential", "steps": [
            {"id": f"s{i}", "agent": "noop"} for i in range(chain)]}),
    }


async def per_step_us(wf: Any, steps: int, traced: bool) -> float:
    registry = AgentRegistry()
    registry.register(PythonAgent(noop, id="noop", capabilities=["noop"], max_concurrency=None))
    config = EngineConfig(registry=registry)
    if traced:  # wired as the runtime does (podium.runtime)
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        tracing = Tracing(provider.get_tracer("bench"))
        config.observers = (tracing,)
        config.traceparent = current_traceparent
        config.span_traceparent = tracing.traceparent_of
    async with Engine(config) as engine:
        await engine.run(wf, {})  # warm: plan, agents
        t0 = time.perf_counter()
        run = await engine.run(wf, {})
        took = time.perf_counter() - t0
    assert run.status == "succeeded", run.error
    return took / steps * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    rounds, fan, chain = (3, 200, 50) if a.quick else (7, 1000, 200)
    results: dict[tuple[str, bool], list[float]] = {}
    for _ in range(rounds):
        for name, wf in shapes(fan, chain).items():
            steps = len(wf.steps)
            for traced in (False, True):
                us = asyncio.run(per_step_us(wf, steps, traced))
                results.setdefault((name, traced), []).append(us)
    print(f"per step, median (min-max) of {rounds} rounds")
    for name in shapes(fan, chain):
        off, on = results[(name, False)], results[(name, True)]
        mo, mn = statistics.median(off), statistics.median(on)
        print(f"{name:<12} off {mo:7.1f} us ({min(off):.1f}-{max(off):.1f})   on {mn:7.1f} us"
              f" ({min(on):.1f}-{max(on):.1f})   +{mn - mo:.1f} us/step (x{mn / mo:.2f})")


if __name__ == "__main__":
    main()
