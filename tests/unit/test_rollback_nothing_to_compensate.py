"""``Engine.rollback`` of a run with nothing to undo refuses, and writes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from podium import Engine, EngineConfig, MemoryStore, workflow_from_dict
from podium.errors import ConfigError, NothingToCompensate
from tests.conftest import registry_of


def _ok(task: Any) -> str:
    return f"did {task.step_id}"


def _undo(task: Any) -> str:
    return "undone"


async def _finished_run(steps: list[dict[str, Any]]) -> tuple[Engine, str]:
    engine = Engine(EngineConfig(registry=registry_of(ok=_ok, undo=_undo), store=MemoryStore()))
    await engine.open()
    run = await engine.run(workflow_from_dict({"name": "w", "steps": steps}))
    assert run.status == "succeeded"
    return engine, run.run_id


async def test_rollback_without_any_compensate_raises_and_leaves_the_run_untouched() -> None:
    engine, run_id = await _finished_run([{"id": "a", "agent": "ok"}])
    try:
        before = await engine.store.get_run(run_id)
        events_before = len(await engine.store.get_events(run_id))

        with pytest.raises(NothingToCompensate, match="nothing to compensate") as info:
            await engine.rollback(run_id)

        assert isinstance(info.value, ConfigError)
        assert info.value.run_id == run_id
        after = await engine.store.get_run(run_id)
        assert (after.status, after.phase, after.owner) == ("succeeded", "execute", before.owner)
        assert len(await engine.store.get_events(run_id)) == events_before
    finally:
        await engine.aclose()


async def test_a_compensate_on_a_step_that_never_succeeded_is_nothing_to_undo() -> None:
    """Only succeeded steps are undone: a compensate elsewhere does not count."""

    def boom(task: Any) -> None:
        raise ValueError("no")

    async with Engine(EngineConfig(registry=registry_of(ok=_ok, undo=_undo, boom=boom),
                                   store=MemoryStore())) as engine:
        run = await engine.run(workflow_from_dict({"name": "w", "steps": [
            {"id": "a", "agent": "ok"},
            {"id": "b", "agent": "boom", "depends_on": ["a"], "compensate": {"agent": "undo"}},
        ]}))
        assert run.status == "failed"
        with pytest.raises(NothingToCompensate):
            await engine.rollback(run.run_id)
        assert (await engine.store.get_run(run.run_id)).status == "failed"


async def test_rollback_with_a_compensate_still_undoes_it() -> None:
    engine, run_id = await _finished_run(
        [{"id": "a", "agent": "ok", "compensate": {"agent": "undo"}}, {"id": "b", "agent": "ok"}]
    )
    try:
        done = await (await engine.rollback(run_id)).result()
        assert done.status == "rolled_back"
        assert done.steps["a"].status == "compensated"
        assert done.steps["b"].status == "succeeded"
    finally:
        await engine.aclose()
