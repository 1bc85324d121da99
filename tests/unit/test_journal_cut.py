"""A batch that cannot be cut (a run's row that will not encode) loses nothing of the
other runs and holds none of them up: the run that cannot be stored is stopped (as a run
lost to another process is) and its events dropped; every other run's events in that
batch are written by the same commit, each once. On an async store (PostgreSQL) the
failure reaches the waiters instead of hanging them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from podium.engine.journal import Journal
from podium.events import RunFinished, RunStarted, StepStarted, StepSucceeded
from podium.state import RunRecord, StepRecord
from podium.store.memory import MemoryStore


def _run(run_id: str) -> RunRecord:
    return RunRecord(run_id=run_id, workflow="w", version=1, definition={"name": "w"},
                     input=None, owner="me")


class AsyncOnly:
    """A MemoryStore seen only through its async methods (as PostgresStore is)."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner
        self.url = inner.url

    def __getattr__(self, name: str) -> Any:
        if name == "write_batch_now":
            raise AttributeError(name)
        return getattr(self.inner, name)


@pytest.mark.parametrize("sync", [True, False])
async def test_a_run_that_cannot_be_stored_is_stopped_and_the_others_go_on(
        sync: bool) -> None:
    store = MemoryStore()
    await store.open()
    journal = Journal(store if sync else AsyncOnly(store), owner="me")  # type: ignore[arg-type]
    stopped: list[str] = []
    journal.on_lost = stopped.append
    bad, good = _run("bad"), _run("good")
    good.steps["a"] = StepRecord(step_id="a")
    for r in (bad, good):
        journal.track(r, new=True)
        journal.append(RunStarted(run_id=r.run_id, ts=1.0, workflow="w", version=1))
    await journal.commit_through(journal.position)

    # One batch: the bad run's end (its output will not encode) between the good run's
    # step events.
    good.steps["a"].status, good.steps["a"].attempts = "succeeded", 1
    journal.append(StepStarted(run_id="good", ts=2.0, step_id="a", attempt=1, agent_id="x"))
    bad.output, bad.status = {1, 2}, "succeeded"
    journal.append(RunFinished(run_id="bad", ts=3.0, workflow="w", status="succeeded"))
    journal.append(StepSucceeded(run_id="good", ts=4.0, step_id="a", attempt=1,
                                 agent_id="x", output=1, duration_s=0.1, output_json="1"))
    await asyncio.wait_for(journal.commit_through(journal.position), 2)
    assert stopped == ["bad"]
    assert [e.type for e in await store.get_events("good")] == [
        "run_started", "step_started", "step_succeeded"]
    assert (await store.get_run("good")).steps["a"].output == 1  # its step row too
    assert [e.type for e in await store.get_events("bad")] == ["run_started"]

    # And later commits of the good run are not held up by anything.
    good.status = "succeeded"
    journal.append(RunFinished(run_id="good", ts=5.0, workflow="w", status="succeeded"))
    await asyncio.wait_for(journal.commit_through(journal.position), 2)
    assert (await store.get_run("good")).status == "succeeded"


@pytest.mark.parametrize("sync", [True, False])
async def test_a_lone_run_that_cannot_be_stored_fails_its_commit_rather_than_hang(
        sync: bool) -> None:
    store = MemoryStore()
    await store.open()
    journal = Journal(store if sync else AsyncOnly(store), owner="me")  # type: ignore[arg-type]
    run = _run("r")
    journal.track(run, new=True)
    journal.append(RunStarted(run_id="r", ts=1.0, workflow="w", version=1))
    await journal.commit_through(journal.position)
    run.output, run.status = {1, 2}, "succeeded"  # will not encode
    journal.append(RunFinished(run_id="r", ts=4.0, workflow="w", status="succeeded"))
    with pytest.raises(TypeError):  # a TimeoutError here would be the hang
        await asyncio.wait_for(journal.commit_through(journal.position), 2)
    assert [e.type for e in await store.get_events("r")] == ["run_started"]
