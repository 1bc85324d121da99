"""Sub-workflows: a step that runs another workflow as a child run.

Through the real engine with in-process agents (memory and SQLite stores); the
crash side (kill the process while the child runs, resume: one child, resumed)
is in tests/integration/test_sub_workflows_durable.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from podium import Engine, EngineConfig
from podium.definition import workflow_from_dict
from podium.definition.loader import load_workflow
from podium.errors import DefinitionError
from podium.store.memory import MemoryStore
from tests.conftest import registry_of

CALLS: list[str] = []


def _agents() -> dict[str, Any]:
    def double(task: Any) -> Any:
        CALLS.append(f"double {task.input}")
        return {"n": task.input["n"] * 2}

    def add(task: Any) -> Any:
        CALLS.append(f"add {task.input}")
        return {"n": task.input["n"] + 1}

    def boom(task: Any) -> Any:
        CALLS.append("boom")
        raise RuntimeError("the child broke")

    def undo(task: Any) -> Any:
        CALLS.append(f"undo {task.step_id}")
        return {"undone": True}

    async def slow(task: Any) -> Any:
        CALLS.append("slow")
        await asyncio.sleep(30)
        return {}

    return {"double": double, "add": add, "boom": boom, "undo": undo, "slow": slow}


CHILD = {"name": "child", "input_schema": {"type": "object", "required": ["n"]},
         "mode": "sequential",
         "steps": [{"id": "d", "agent": "double", "input": {"n": "${{ input.n }}"},
                    "compensate": {"agent": "undo"}},
                   {"id": "a", "agent": "add"}]}


def parent(**step: Any) -> dict[str, Any]:
    return {"name": "parent", "workflows": {"child": CHILD}, "steps": [
        {"id": "first", "agent": "add", "input": {"n": "${{ input.n }}"},
         "compensate": {"agent": "undo"}},
        {"id": "call", "workflow": "child", "depends_on": ["first"],
         "input": {"n": "${{ steps.first.output.n }}"}, **step},
    ], "output": "${{ steps.call.output }}"}


@pytest.fixture(autouse=True)
def _clear() -> None:
    CALLS.clear()


def _engine(store: Any = None) -> Engine:
    return Engine(EngineConfig(registry=registry_of(**_agents()), store=store or MemoryStore()))


async def test_a_child_run_gives_its_output_and_is_listed_with_its_parent() -> None:
    async with _engine() as engine:
        run = await engine.run(workflow_from_dict(parent()), {"n": 1})
        assert run.status == "succeeded", run.error
        assert run.output == {"n": 5}  # (1 + 1) * 2 + 1
        child = await engine.store.get_run(f"{run.run_id}.call")
        assert (child.workflow, child.status, child.input) == ("child", "succeeded", {"n": 2})
        assert list(child.steps) == ["d", "a"]
        listed = {r.run_id for r in await engine.store.list_runs()}
        assert listed == {run.run_id, f"{run.run_id}.call"}
    assert CALLS == ["add {'n': 1}", "double {'n': 2}", "add {'n': 4}"]


async def test_a_map_of_sub_workflows_makes_one_child_per_item() -> None:
    wf = {"name": "fan", "workflows": {"child": CHILD}, "steps": [
        {"id": "each", "workflow": "child", "for_each": "${{ input.ns }}",
         "input": {"n": "${{ item }}"}}]}
    async with _engine() as engine:
        run = await engine.run(workflow_from_dict(wf), {"ns": [1, 2, 3]})
        assert run.status == "succeeded", run.error
        assert run.output == {"each": [{"n": 3}, {"n": 5}, {"n": 7}]}
        for i in range(3):
            child = await engine.store.get_run(f"{run.run_id}.each[{i}]")
            assert child.status == "succeeded"


async def test_a_failed_child_fails_its_step_with_its_error() -> None:
    failing = {**CHILD, "steps": [{"id": "d", "agent": "boom", "retry": {"max_attempts": 1}}]}
    wf = parent()
    wf["workflows"] = {"child": failing}
    async with _engine() as engine:
        run = await engine.run(workflow_from_dict(wf), {"n": 1})
        assert run.status == "failed"
        err = run.steps["call"].error
        assert err is not None
        assert err.type == "agent_error"
        assert f"workflow 'child' (run {run.run_id}.call) failed" in err.message
        assert "the child broke" in err.message


async def test_cancelling_the_parent_cancels_the_child() -> None:
    slow_child = {"name": "child", "steps": [{"id": "s", "agent": "slow"}]}
    wf = parent()
    wf["workflows"] = {"child": slow_child}
    async with _engine() as engine:
        handle = await engine.start(workflow_from_dict(wf), {"n": 1})
        for _ in range(200):
            if "slow" in CALLS:
                break
            await asyncio.sleep(0.01)
        assert "slow" in CALLS
        handle.cancel("stop it")
        run = await handle.result()
        assert run.status == "cancelled"
        for _ in range(200):
            child = await engine.store.get_run(f"{run.run_id}.call")
            if child.status != "running":
                break
            await asyncio.sleep(0.01)
        assert child.status == "cancelled"
        assert child.error is not None
        assert f"its parent run {run.run_id} stopped" in child.error.message


async def test_a_rollback_undoes_the_child_first_then_what_came_before() -> None:
    wf = parent()
    wf["on_failure"] = "compensate"
    wf["steps"].append({"id": "last", "agent": "boom", "depends_on": ["call"],
                        "retry": {"max_attempts": 1}})
    async with _engine() as engine:
        run = await engine.run(workflow_from_dict(wf), {"n": 1})
        assert run.status == "rolled_back", run.error
        child = await engine.store.get_run(f"{run.run_id}.call")
        assert child.status == "rolled_back"
        assert run.steps["call"].status == "compensated"
    undos = [c for c in CALLS if c.startswith("undo")]
    assert undos == ["undo d", "undo first"]  # the child's step, then the parent's


def test_an_unknown_sub_workflow_and_agent_call_keys_are_refused() -> None:
    wf = parent(retry={"max_attempts": 2})
    del wf["workflows"]
    with pytest.raises(DefinitionError) as info:
        workflow_from_dict(wf)
    messages = [p.message for p in info.value.problems]
    assert "unknown sub-workflow 'child'" in messages
    assert any("retry is for an agent's call" in m for m in messages)
    with pytest.raises(DefinitionError, match="not both"):
        workflow_from_dict(parent(agent="add"))


def _write(folder: Path, name: str, doc: dict[str, Any]) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_the_loader_reads_a_sub_workflow_beside_the_file_and_keeps_it(tmp_path: Path) -> None:
    _write(tmp_path, "child", CHILD)
    doc = parent()
    del doc["workflows"]
    wf = load_workflow(_write(tmp_path, "parent", doc))
    assert wf.workflows["child"].steps[0].agent == "double"
    # The run's stored definition carries it: a resume needs no file.
    assert workflow_from_dict(wf.to_dict()).workflows["child"] == wf.workflows["child"]


def test_a_workflow_that_calls_itself_is_refused_with_the_chain(tmp_path: Path) -> None:
    _write(tmp_path, "a", {"name": "a", "steps": [{"id": "x", "workflow": "b"}]})
    _write(tmp_path, "b", {"name": "b", "steps": [{"id": "y", "workflow": "a"}]})
    with pytest.raises(DefinitionError) as info:
        load_workflow(tmp_path / "a.yaml")
    (problem,) = info.value.problems
    assert problem.message == "a workflow calls itself: a -> b -> a"
    assert (problem.step, problem.field, problem.line) == ("y", "workflow", 4)
    assert problem.file == str(tmp_path / "b.yaml")
    inline = {"name": "a", "workflows": {"b": {"name": "b", "steps": [
        {"id": "y", "workflow": "a"}], "workflows": {"a": {"name": "a", "steps": [
            {"id": "z", "agent": "add"}]}}}}, "steps": [{"id": "x", "workflow": "b"}]}
    with pytest.raises(DefinitionError, match=r"a workflow calls itself: a -> b -> a"):
        workflow_from_dict(inline)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_prefix_of_the_parents_id_is_the_parent_not_ambiguous(
        kind: str, tmp_path: Path) -> None:
    from podium.store.sqlite import SQLiteStore

    store = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "p.db")
    async with _engine(store) as engine:
        run = await engine.run(workflow_from_dict(parent()), {"n": 1})
        assert (await engine.store.get_run(run.run_id[:8])).run_id == run.run_id
        child = await engine.store.get_run(f"{run.run_id}.ca")  # a prefix into the child
        assert child.run_id == f"{run.run_id}.call"
        assert child.parent == run.run_id
