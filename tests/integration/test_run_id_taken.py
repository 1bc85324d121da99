"""Two engines on one SQLite file (sharing its store, as in one process) start a run
of the same id (a key retried against another server, a schedule fired twice): the
one whose row lands second is told so (``RunExists``), calls no agent for it and
writes nothing of it, and the other run that shared its commit is started as if
nothing happened."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from podium import Engine, EngineConfig, RunExists
from podium.definition import workflow_from_dict
from podium.store.factory import open_store
from tests.conftest import registry_of

WF = workflow_from_dict({"name": "w", "steps": [{"id": "a", "agent": "work"}]})


async def test_the_second_start_of_one_run_id_is_refused_alone(tmp_path: Path) -> None:
    calls: list[str] = []
    release = asyncio.Event()

    async def work(task: object) -> str:
        calls.append(getattr(task, "run_id", "?"))
        await release.wait()
        return "done"

    store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
    first = Engine(EngineConfig(store=store, registry=registry_of(work=work)))
    second = Engine(EngineConfig(store=store, registry=registry_of(work=work)))
    async with first, second:
        mine = await first.start(WF, {"n": 1}, run_id="dup")
        # One commit on the second engine holds both starts (two runs in flight there).
        results = await asyncio.gather(second.start(WF, {"n": 2}, run_id="dup"),
                                       second.start(WF, {"n": 3}, run_id="other"),
                                       return_exceptions=True)
        assert isinstance(results[0], RunExists), results
        assert "dup" in results[0].message
        other = results[1]
        assert not isinstance(other, BaseException), other
        await asyncio.sleep(0.05)  # time enough for an agent call that must not happen
        release.set()
        assert (await mine.result()).status == "succeeded"
        assert (await other.result()).status == "succeeded"
        dup = await first.store.get_run("dup")
        assert dup.input == {"n": 1}  # the first start's, untouched
        assert dup.steps["a"].attempts == 1
    assert sorted(calls) == ["dup", "other"]  # nothing ran twice, nothing was lost


async def test_a_submit_of_a_taken_id_is_refused(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
    first = Engine(EngineConfig(store=store, registry=registry_of(work=str)))
    second = Engine(EngineConfig(store=store, registry=registry_of(work=str)))
    async with first, second:
        await first.submit(WF, {"n": 1}, run_id="s1")
        with pytest.raises(RunExists):
            await second.submit(WF, {"n": 2}, run_id="s1")
        assert (await second.store.get_run("s1")).input == {"n": 1}
