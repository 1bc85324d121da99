"""A fan-out wider than the engine starts in one loop turn (``run._BURST``): every branch
still runs at the same time as every other, and every result is committed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from podium import Engine, EngineConfig
from podium.definition import workflow_from_dict
from podium.engine import run as run_module
from podium.store.sqlite import SQLiteStore
from tests.conftest import registry_of


async def test_a_fan_out_wider_than_a_burst_has_every_branch_in_flight_at_once(
        tmp_path: Path) -> None:
    """Each branch waits at a barrier that opens only once all of them are there: had
    any branch waited for another to finish before starting, the 30 s bound fails it."""
    width = 2 * run_module._BURST + 5
    barrier = asyncio.Barrier(width)

    async def work(task: Any) -> Any:
        if task.step_id.startswith("b"):
            async with asyncio.timeout(30):
                await barrier.wait()
        return {"step": task.step_id}

    wf = workflow_from_dict({"name": "wide", "steps": [
        {"id": "start", "agent": "work"},
        *({"id": f"b{i}", "agent": "work", "depends_on": ["start"]} for i in range(width)),
        {"id": "join", "agent": "work", "depends_on": [f"b{i}" for i in range(width)],
         "input": {"n": "${{ steps.b7.output.step }}"}},
    ]})
    path = tmp_path / "podium.db"
    async with Engine(EngineConfig(registry=registry_of(work=work),
                                   store=SQLiteStore(path))) as engine:
        run = await engine.run(wf, {})
    assert run.status == "succeeded", run.error
    reader = SQLiteStore(path)  # what is on disk, read by a store of its own
    await reader.open()
    try:
        stored = await reader.get_run(run.run_id)
    finally:
        await reader.close()
    assert stored.status == "succeeded"
    assert all(stored.steps[f"b{i}"].output == {"step": f"b{i}"} for i in range(width))
    assert stored.output == {"join": {"step": "join"}}
