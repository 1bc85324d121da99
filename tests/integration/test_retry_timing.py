"""A retry runs once its granted delay has passed, never before, on real time.

The engine's waits end through ``SystemClock.sleep`` (the loop's timer): checked
here on a real SQLite file and the wall clock, as a run reads back from the file,
for the diamond of bench/small_runs.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from podium import AgentRegistry, Engine, EngineConfig, PythonAgent, Step, Unavailable, Workflow
from podium.events import StepRetryScheduled, StepStarted
from podium.store.sqlite import SQLiteStore


def test_each_retry_starts_at_or_after_its_due_time(tmp_path: Path) -> None:
    failures = {"b": 3, "c": 1}

    async def flaky(task: Any) -> Any:
        if failures.get(task.step_id, 0) > 0:
            failures[task.step_id] -= 1
            raise Unavailable("try again")
        return {"ok": True}

    retry = {"max_attempts": 4, "delays": ["10ms", "1ms", "3ms"]}
    wf = Workflow(name="diamond", steps=[
        Step(id="a", agent="work"),
        Step(id="b", agent="work", depends_on=["a"], retry=retry),
        Step(id="c", agent="work", depends_on=["a"], retry=retry),
        Step(id="d", agent="work", depends_on=["b", "c"]),
    ])

    async def main() -> list[Any]:
        registry = AgentRegistry([PythonAgent(flaky, id="work", capabilities=["work"])])
        async with Engine(EngineConfig(registry=registry,
                                       store=SQLiteStore(tmp_path / "run.db"))) as engine:
            run = await engine.run(wf, {})
        assert run.status == "succeeded", run.error
        reread = SQLiteStore(tmp_path / "run.db")
        await reread.open()
        try:
            return list(await reread.get_events(run.run_id))
        finally:
            await reread.close()

    events = asyncio.run(main())
    due = {(e.step_id, e.attempt): (i, e) for i, e in enumerate(events)
           if isinstance(e, StepRetryScheduled)}
    starts = {(e.step_id, e.attempt): (i, e) for i, e in enumerate(events)
              if isinstance(e, StepStarted)}
    assert sorted(due) == [("b", 2), ("b", 3), ("b", 4), ("c", 2)]
    for key, (granted_at, granted) in due.items():
        started_at, started = starts[key]
        assert started_at > granted_at
        assert started.ts >= granted.at, (key, started.ts - granted.at)
