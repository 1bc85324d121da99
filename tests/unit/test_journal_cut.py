"""A batch that cannot be cut (a row that will not encode) takes nothing with it: its
events stay pending and the step rows they touched are not forgotten, so the commit
after the cause is gone writes them all, each once."""

from __future__ import annotations

import asyncio

import pytest

from podium.engine.journal import Journal
from podium.events import RunStarted, StepStarted, StepSucceeded
from podium.state import RunRecord, StepRecord
from podium.store.memory import MemoryStore


async def test_a_cut_that_fails_leaves_every_event_and_step_row_pending() -> None:
    store = MemoryStore()
    await store.open()
    journal = Journal(store, owner="me")
    run = RunRecord(run_id="r", workflow="w", version=1, definition={"name": "w"},
                    input=None, owner="me")
    run.steps["a"] = StepRecord(step_id="a")
    journal.track(run, new=True)
    journal.append(RunStarted(run_id="r", ts=1.0, workflow="w", version=1))
    await journal.commit_through(journal.position)

    run.steps["a"].status, run.steps["a"].attempts = "succeeded", 1
    journal.append(StepStarted(run_id="r", ts=2.0, step_id="a", attempt=1, agent_id="x"))
    journal.append(StepSucceeded(run_id="r", ts=3.0, step_id="a", attempt=1, agent_id="x",
                                 output=1, duration_s=0.1, output_json="1"))
    run.output = {1, 2}  # a run-level event makes the run's row go too: it cannot encode
    run.status = "succeeded"
    from podium.events import RunFinished

    journal.append(RunFinished(run_id="r", ts=4.0, workflow="w", status="succeeded"))
    position = journal.position
    with pytest.raises(TypeError):
        await asyncio.wait_for(journal.commit_through(position), 2)
    assert await store.last_seq("r") == 1  # nothing of the failed batch landed

    run.output = [1, 2]  # the cause is gone: the next commit takes everything
    await asyncio.wait_for(journal.commit_through(position), 2)
    assert [e.type for e in await store.get_events("r")] == [
        "run_started", "step_started", "step_succeeded", "run_finished"]
    stored = await store.get_run("r")
    assert stored.steps["a"].status == "succeeded"
    assert stored.steps["a"].output == 1
    assert (stored.status, stored.output) == ("succeeded", [1, 2])
