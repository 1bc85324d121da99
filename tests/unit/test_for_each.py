"""``for_each``: a step once per item of a list, results in order, tolerated failures.

Through the real engine with in-process agents on the memory store; the crash side
(a kill in the middle of 1,000 items runs no succeeded item again) is in
tests/integration/test_for_each_durable.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from podium.definition import workflow_from_dict
from podium.definition.plan import compile_plan, mermaid
from podium.errors import DefinitionError
from tests.conftest import run_workflow


def _split(task: Any) -> Any:
    return {"documents": [f"doc-{i}" for i in range(task.input["n"])]}


def _summarise(task: Any) -> Any:
    return {"summary": task.input["text"].upper(), "at": task.input["at"]}


def _wf(**step: Any) -> dict[str, Any]:
    base = {"id": "summarise", "agent": "summarise", "depends_on": ["split"],
            "for_each": "${{ steps.split.output.documents }}",
            "input": {"text": "${{ item }}", "at": "${{ item_index }}"}}
    return {"name": "map", "steps": [
        {"id": "split", "agent": "split", "input": {"n": "${{ input.n }}"}},
        {**base, **step},
        {"id": "count", "agent": "count", "depends_on": ["summarise"],
         "input": {"all": "${{ steps.summarise.output }}"}},
    ], "output": "${{ steps.count.output }}"}


def _count(task: Any) -> Any:
    return {"n": len(task.input["all"]), "first": task.input["all"][0] if task.input["all"]
            else None}


async def test_each_item_runs_once_and_the_results_come_in_input_order() -> None:
    async def summarise(task: Any) -> Any:
        # The later items finish first: the output is still in input order.
        await asyncio.sleep(0.001 * (10 - task.input["at"]))
        return _summarise(task)

    run = await run_workflow(_wf(), {"n": 10}, split=_split, summarise=summarise, count=_count)
    assert run.status == "succeeded", run.error
    out = run.steps["summarise"].output
    assert out == [{"summary": f"DOC-{i}", "at": i} for i in range(10)]
    assert run.output == {"n": 10, "first": {"summary": "DOC-0", "at": 0}}
    # Each item is a step of its own in the record (its attempts, agent, output).
    assert [run.steps[f"summarise[{i}]"].status for i in range(10)] == ["succeeded"] * 10
    assert run.steps["summarise[3]"].output == {"summary": "DOC-3", "at": 3}


async def test_an_empty_list_gives_an_empty_output() -> None:
    run = await run_workflow(_wf(), {"n": 0}, split=_split, summarise=_summarise,
                             count=_count)
    assert run.status == "succeeded", run.error
    assert run.steps["summarise"].output == []
    assert run.output == {"n": 0, "first": None}


async def test_something_that_is_not_a_list_fails_the_step_with_a_typed_error() -> None:
    def split(task: Any) -> Any:
        return {"documents": {"not": "a list"}}

    run = await run_workflow(_wf(), {"n": 1}, split=split, summarise=_summarise, count=_count)
    assert run.status == "failed"
    err = run.steps["summarise"].error
    assert err is not None
    assert err.type == "invalid_input"
    assert "for_each gave dict, not a list" in err.message


def _failing(bad: set[int]) -> Any:
    def summarise(task: Any) -> Any:
        if task.input["at"] in bad:
            raise RuntimeError(f"cannot read item {task.input['at']}")
        return _summarise(task)
    return summarise


async def test_tolerated_failures_leave_nulls_and_beyond_them_the_step_fails() -> None:
    retry = {"max_attempts": 1}
    run = await run_workflow(_wf(tolerate={"count": 2}, retry=retry), {"n": 10},
                             split=_split, summarise=_failing({3, 7}), count=_count)
    assert run.status == "succeeded", run.error
    out = run.steps["summarise"].output
    assert (out[3], out[7]) == (None, None)
    assert out[4] == {"summary": "DOC-4", "at": 4}
    assert run.steps["summarise[3]"].status == "failed"

    run = await run_workflow(_wf(tolerate={"percent": 20}, retry=retry), {"n": 10},
                             split=_split, summarise=_failing({1, 2, 5}), count=_count)
    assert run.status == "failed"
    err = run.steps["summarise"].error
    assert err is not None
    assert err.type == "items_failed"
    assert "3 of 10 items failed (tolerate allows 2): items 1, 2, 5" in err.message
    assert "cannot read item 1" in err.message
    assert run.steps["count"].status == "skipped"


async def test_without_tolerate_one_failure_stops_new_items() -> None:
    calls: list[int] = []

    def summarise(task: Any) -> Any:
        calls.append(task.input["at"])
        if task.input["at"] == 0:
            raise RuntimeError("bad first item")
        return _summarise(task)

    run = await run_workflow(_wf(max_concurrency=1, retry={"max_attempts": 1}), {"n": 50},
                             split=_split, summarise=summarise, count=_count)
    assert run.status == "failed"
    assert calls == [0]
    assert "1 of 50 items failed (none may)" in (run.steps["summarise"].error or _no()).message


def _no() -> Any:
    raise AssertionError("no error")


async def test_each_item_is_retried_by_the_steps_policy() -> None:
    seen: dict[int, int] = {}

    def summarise(task: Any) -> Any:
        seen[task.input["at"]] = task.attempt
        if task.input["at"] == 2 and task.attempt == 1:
            raise RuntimeError("flaky")
        return _summarise(task)

    run = await run_workflow(_wf(retry={"max_attempts": 3, "initial_delay": 0.001}),
                             {"n": 4}, split=_split, summarise=summarise, count=_count)
    assert run.status == "succeeded", run.error
    assert seen == {0: 1, 1: 1, 2: 2, 3: 1}
    assert run.steps["summarise[2]"].attempts == 2


async def test_max_concurrency_bounds_the_items_in_flight() -> None:
    now = peak = 0

    async def summarise(task: Any) -> Any:
        nonlocal now, peak
        now += 1
        peak = max(peak, now)
        await asyncio.sleep(0.002)
        now -= 1
        return _summarise(task)

    run = await run_workflow(_wf(max_concurrency=3), {"n": 20}, split=_split,
                             summarise=summarise, count=_count)
    assert run.status == "succeeded", run.error
    assert peak == 3


async def test_a_map_whose_condition_is_false_is_skipped_whole() -> None:
    calls: list[Any] = []

    def summarise(task: Any) -> Any:
        calls.append(task.input)
        return _summarise(task)

    run = await run_workflow(_wf(when="input.n > 5", trigger="all_success"), {"n": 2},
                             split=_split, summarise=summarise, count=_count)
    assert run.status == "succeeded", run.error
    assert calls == []
    assert run.steps["summarise"].status == "skipped"
    assert "summarise[0]" not in run.steps


async def test_items_over_input_and_the_idempotency_key_is_per_item() -> None:
    keys: list[str] = []

    def echo(task: Any) -> Any:
        keys.append(task.idempotency_key)
        return task.input

    wf = {"name": "direct", "steps": [{"id": "e", "agent": "echo",
                                       "for_each": "${{ input.xs }}",
                                       "input": {"x": "${{ item.v }}"}}]}
    run = await run_workflow(wf, {"xs": [{"v": 1}, {"v": 2}]}, echo=echo)
    assert run.output == {"e": [{"x": 1}, {"x": 2}]}
    assert sorted(k.split("/", 1)[1] for k in keys) == ["e[0]", "e[1]"]


@pytest.mark.parametrize(("step", "message"), [
    ({"for_each": "steps.split.output.documents"}, "for_each must be one ${{ path }}"),
    ({"for_each": "${{ steps.count.output }}"}, "which is not upstream"),
    ({"for_each": None, "input": {"t": "${{ item }}"}}, "only known in the input of a for_each"),
    ({"for_each": None, "max_concurrency": 3}, "max_concurrency is only for a for_each step"),
    ({"tolerate": {"count": 1, "percent": 5}}, "tolerate takes one of count or percent"),
])
def test_validation_names_the_field(step: dict[str, Any], message: str) -> None:
    wf = _wf(**step)
    if step.get("for_each", "") is None:
        del wf["steps"][1]["for_each"]
    with pytest.raises(DefinitionError) as info:
        workflow_from_dict(wf)
    assert any(message in p.message for p in info.value.problems), \
        [p.message for p in info.value.problems]


def test_the_graph_shows_the_map() -> None:
    text = mermaid(compile_plan(workflow_from_dict(_wf())))
    assert "for each ${{ steps.split.output.documents }}" in text
