"""The engine's durability rule over any store, with the store made slow or cut off.

A dependent starts only once its inputs' successes are committed, whatever the
store's latency: with every commit taking a few milliseconds (``DelayedStore``),
batches are in flight while steps keep finishing, and each agent checks, as it
starts, that every one of its step's inputs is committed already. A commit whose
answer is lost (``CutOffStore``: landed then reported lost, or lost for real) is
read back from the store before anything is written again: afterwards every run
succeeded, its event log has no gap and no event twice, and every step has
exactly one committed success.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path
from typing import Any

from podium import Engine, EngineConfig
from podium.agents.base import Task
from podium.definition import workflow_from_dict
from tests.conftest import registry_of
from tests.contract.conftest import CutOffStore, DelayedStore, make_store


def _random_dag(rng: random.Random, n: int, name: str) -> tuple[dict[str, Any], dict[str, list]]:
    steps: list[dict[str, Any]] = []
    for i in range(n):
        deps = sorted(rng.sample([s["id"] for s in steps], k=min(len(steps), rng.randint(0, 3))))
        steps.append({"id": f"s{i:02d}", "agent": "work", "depends_on": deps,
                      "input": {"ms": rng.choice([0, 0, 1, 2, 3])}})
    return {"name": name, "steps": steps}, {s["id"]: s["depends_on"] for s in steps}


async def test_no_dependent_starts_before_its_inputs_are_durable(backend: str,
                                                                 tmp_path: Path) -> None:
    rng = random.Random(11)
    store = DelayedStore(make_store(backend, tmp_path), rng)
    shapes = [_random_dag(rng, 30, f"dag-{k}") for k in range(4)]
    deps_of = {wf["name"]: deps for wf, deps in shapes}
    early: list[tuple[str, str, str]] = []
    calls = 0

    async def work(task: Task) -> Any:
        nonlocal calls
        calls += 1
        wf = task.run_id and run_workflow[task.run_id]
        for dep in deps_of[wf][task.step_id]:
            if (task.run_id, dep, "step_succeeded") not in store.committed:
                early.append((task.run_id, task.step_id, dep))
        await asyncio.sleep(task.input["ms"] / 1000)
        return {"step": task.step_id}

    run_workflow: dict[str, str] = {}
    async with Engine(EngineConfig(registry=registry_of(work=work), store=store)) as engine:
        handles = []
        for wf, _deps in shapes * 2:  # two runs of each, all at once
            h = await engine.start(workflow_from_dict(wf), {})
            run_workflow[h.run_id] = wf["name"]
            handles.append(h)
        runs = [await h.result() for h in handles]
        assert [r.status for r in runs] == ["succeeded"] * len(runs)
        assert early == [], f"dependents started before their inputs were committed: {early}"
        assert calls == 30 * len(runs)
        # The commits really were many, and slow (how many depends on how group commit
        # coalesced them on the machine at hand: 19 to 40 have been seen).
        assert store.batches >= 10
        for run in runs:
            stored = await store.get_run(run.run_id)
            assert {s.status for s in stored.steps.values()} == {"succeeded"}


async def test_a_cut_off_commit_is_read_back_and_never_written_twice(backend: str,
                                                                    tmp_path: Path) -> None:
    rng = random.Random(5)
    store = CutOffStore(make_store(backend, tmp_path), rng)

    async def work(task: Task) -> Any:
        await asyncio.sleep(rng.choice([0, 0.001]))
        return {"step": task.step_id}

    async with Engine(EngineConfig(registry=registry_of(work=work), store=store)) as engine:
        handles = [await engine.start(workflow_from_dict(_random_dag(rng, 25, f"cut-{k}")[0]),
                                      {}) for k in range(6)]
        runs = [await h.result() for h in handles]
        assert store.cut >= 3, "no commit was cut off after landing: nothing was tested"
        assert store.dropped >= 3, "no commit was lost before landing: nothing was tested"
        for run in runs:
            assert run.status == "succeeded", run.error
            events = await store.get_events(run.run_id)
            assert await store.last_seq(run.run_id) == len(events)  # no gap, none twice
            successes = Counter(e.step_id for e in events  # type: ignore[attr-defined]
                                if e.type == "step_succeeded")
            assert successes == Counter({f"s{i:02d}": 1 for i in range(25)})
            stored = await store.get_run(run.run_id)
            assert stored.status == "succeeded"
            assert {s.status for s in stored.steps.values()} == {"succeeded"}
