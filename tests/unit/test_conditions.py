"""``when:`` (a CEL condition) and trigger rules: routing, joins, skips and their causes.

Runs go through the real engine with in-process agents on the memory store; the
durable side (a resume never takes the other branch) is in
tests/integration/test_conditions_durable.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from podium.definition import workflow_from_dict
from podium.definition.conditions import Condition, ConditionError
from podium.definition.plan import compile_plan, mermaid
from podium.errors import DefinitionError
from tests.conftest import run_workflow

CALLS: list[str] = []


def _agents() -> dict[str, Any]:
    def classify(task: Any) -> Any:
        CALLS.append("classify")
        return {"kind": task.input["kind"]}

    def invoice(task: Any) -> Any:
        CALLS.append("invoice")
        return {"sent_to": "invoices", "doc": task.input}

    def contract(task: Any) -> Any:
        CALLS.append("contract")
        return {"sent_to": "contracts"}

    def join(task: Any) -> Any:
        CALLS.append("join")
        return task.input

    def boom(task: Any) -> Any:
        CALLS.append("boom")
        raise RuntimeError("boom")

    return {"classify": classify, "invoice": invoice, "contract": contract, "join": join,
            "boom": boom}


ROUTER: dict[str, Any] = {
    "name": "router",
    "steps": [
        {"id": "classify", "agent": "classify"},
        {"id": "invoice", "agent": "invoice", "depends_on": ["classify"],
         "when": 'steps.classify.output.kind == "invoice" && input.amount > 1000'},
        {"id": "contract", "agent": "contract", "depends_on": ["classify"],
         "when": 'steps.classify.output.kind == "contract"'},
        {"id": "join", "agent": "join", "depends_on": {"any_of": ["invoice", "contract"]},
         "input": {"invoice": "${{ steps.invoice.output }}",
                   "contract": "${{ steps.contract.output }}"}},
        {"id": "after", "agent": "join", "depends_on": ["contract"]},
    ],
    "output": "${{ steps.join.output }}",
}


@pytest.fixture(autouse=True)
def _clear() -> None:
    CALLS.clear()


async def test_a_router_takes_one_branch_and_the_join_runs_after_it() -> None:
    run = await run_workflow(ROUTER, {"kind": "invoice", "amount": 1500}, **_agents())
    assert run.status == "succeeded"
    assert CALLS == ["classify", "invoice", "join"]
    steps = run.steps
    assert steps["contract"].status == "skipped"
    # Recorded, visible, with its condition: the reason is the step's "error".
    assert steps["contract"].error is not None
    assert steps["contract"].error.type == "condition_false"
    assert 'steps.classify.output.kind == "contract"' in steps["contract"].error.message
    # A dependent of a skipped step is skipped too, by default, and says why.
    assert steps["after"].status == "skipped"
    assert steps["after"].error is not None
    assert steps["after"].error.type == "upstream_skipped"
    assert "'contract' was skipped" in steps["after"].error.message
    assert run.output == {"invoice": {"sent_to": "invoices", "doc": {"classify": {
        "kind": "invoice"}}}, "contract": None}


async def test_the_other_branch_and_both_false() -> None:
    run = await run_workflow(ROUTER, {"kind": "contract", "amount": 5}, **_agents())
    assert run.status == "succeeded"
    assert CALLS == ["classify", "contract", "join", "join"]
    assert run.steps["invoice"].status == "skipped"
    CALLS.clear()
    run = await run_workflow(ROUTER, {"kind": "invoice", "amount": 5}, **_agents())
    # Neither branch: the any_of join has nothing to join and is skipped; the run
    # still succeeds (nothing failed), with what its output can read.
    assert run.status == "succeeded", run.error
    assert CALLS == ["classify"]
    assert {k: s.status for k, s in run.steps.items()} == {
        "classify": "succeeded", "invoice": "skipped", "contract": "skipped",
        "join": "skipped", "after": "skipped"}
    assert "none of its inputs succeeded" in (run.steps["join"].error or _no()).message
    assert run.output is None


def _no() -> Any:
    raise AssertionError("no error recorded")


async def test_all_done_runs_after_a_failure_when_the_run_continues() -> None:
    wf = {"name": "cleanup", "on_failure": "continue", "steps": [
        {"id": "a", "agent": "boom"},
        {"id": "b", "agent": "join", "depends_on": ["a"]},
        {"id": "cleanup", "agent": "join", "depends_on": ["a"], "trigger": "all_done",
         "input": {"a": "${{ steps.a.output }}"}},
    ]}
    run = await run_workflow(wf, {}, **_agents())
    assert run.status == "failed"
    assert run.steps["b"].status == "skipped"
    assert run.steps["b"].error is None  # not decided: a resume runs a again, then b
    assert run.steps["cleanup"].status == "succeeded"
    assert run.steps["cleanup"].output == {"a": None}


async def test_a_step_made_ready_by_a_skipped_first_step_runs_once() -> None:
    """The run's first step is skipped at its start; its all_done dependent becomes
    ready then and there, and is not made ready a second time as a step to start."""
    wf = {"name": "once", "steps": [
        {"id": "a", "agent": "join", "when": "input.x == 2"},
        {"id": "b", "agent": "join", "depends_on": ["a"], "trigger": "all_done"},
    ]}
    run = await run_workflow(wf, {"x": 1}, **_agents())
    assert run.status == "succeeded"
    assert run.steps["a"].status == "skipped"
    assert run.steps["b"].attempts == 1
    assert CALLS == ["join"]


async def test_a_condition_that_is_not_a_boolean_fails_its_step_with_a_typed_error() -> None:
    wf = {"name": "bad", "steps": [
        {"id": "classify", "agent": "classify"},
        {"id": "x", "agent": "join", "depends_on": ["classify"],
         "when": "steps.classify.output.kind"},
    ]}
    run = await run_workflow(wf, {"kind": "invoice"}, **_agents())
    assert run.status == "failed"
    err = run.steps["x"].error
    assert err is not None
    assert err.type == "condition_error"
    assert "gave 'invoice', not a boolean" in err.message
    assert CALLS == ["classify"]
    # A key that is not there is a typed error too (has() guards it).
    wf["steps"][1]["when"] = "steps.classify.output.missing == 1"
    run = await run_workflow(wf, {"kind": "invoice"}, **_agents())
    assert run.steps["x"].error is not None
    assert "has(" in run.steps["x"].error.message
    wf["steps"][1]["when"] = "has(steps.classify.output.missing) && 1 == 1"
    run = await run_workflow(wf, {"kind": "invoice"}, **_agents())
    assert run.steps["x"].status == "skipped"


async def test_a_skip_down_a_long_chain_is_not_recursive() -> None:
    steps = [{"id": "s0", "agent": "join", "when": "input.go"}] + [
        {"id": f"s{i}", "agent": "join"} for i in range(1, 3000)]
    run = await run_workflow({"name": "long", "mode": "sequential", "steps": steps},
                             {"go": False}, **_agents())
    assert run.status == "succeeded"
    assert all(s.status == "skipped" for s in run.steps.values())


@pytest.mark.parametrize(("when", "message"), [
    ("steps.classify.output.kind ==", "when: Failed to parse"),
    ("nope.kind == 1", "unknown name 'nope'"),
    ("steps.clasify.output.kind == 'x'", "when: unknown step 'clasify'"),
    ("steps.later.output == 1", "when: reads step 'later', which has not run by then"),
    ("", "the expression is empty"),
])
def test_validation_names_the_step_and_field(when: str, message: str) -> None:
    wf = {"name": "v", "steps": [
        {"id": "classify", "agent": "classify"},
        {"id": "x", "agent": "join", "depends_on": ["classify"], "when": when},
        {"id": "later", "agent": "join", "depends_on": ["x"]},
    ]}
    with pytest.raises(DefinitionError) as info:
        workflow_from_dict(wf)
    problems = info.value.problems
    assert any(message in p.message and p.step == "x" and p.field == "when"
               for p in problems), [p.message for p in problems]


def test_any_of_is_one_success_and_conflicts_are_refused() -> None:
    wf = workflow_from_dict(ROUTER)
    join = wf.step("join")
    assert (join.depends_on, join.trigger) == (["invoice", "contract"], "one_success")
    # The stored definition is the plain form, which loads back the same.
    assert workflow_from_dict(wf.to_dict()) == wf
    bad = {**ROUTER, "steps": [*ROUTER["steps"][:3], {
        "id": "join", "agent": "join", "depends_on": {"any_of": ["invoice"]},
        "trigger": "all_done"}]}
    with pytest.raises(DefinitionError, match="means trigger: one_success"):
        workflow_from_dict(bad)
    with pytest.raises(DefinitionError, match="unknown step 'nope' in depends_on"):
        workflow_from_dict({**ROUTER, "steps": [*ROUTER["steps"][:3], {
            "id": "join", "agent": "join", "depends_on": {"any_of": ["nope"]}}]})


def test_graph_shows_conditions_and_joins() -> None:
    text = mermaid(compile_plan(workflow_from_dict(ROUTER)))
    assert "when steps.classify.output.kind == #quot;contract#quot;" in text
    assert "-. any of .->" in text


def test_a_condition_hands_over_only_the_steps_it_reads() -> None:
    cond = Condition("${{ steps.a.output.x > 1 && steps['b-2'].output == null }}")
    assert cond.steps == ("a", "b-2")
    assert not cond.dynamic
    assert cond.evaluate({}, {"a": {"x": 2}, "b-2": None, "c": object()}) is True
    dyn = Condition("steps[input.which].output == 1")
    assert dyn.dynamic
    assert dyn.evaluate({"which": "c"}, {"c": 1}) is True
    with pytest.raises(ConditionError, match="not a boolean"):
        Condition("1 + 1").evaluate({}, {})


def test_cel_macros_bind_their_own_names() -> None:
    cond = Condition('steps.x.output.items.exists(i, i.kind == "x") && input.ns.all(n, n > 0)')
    assert cond.evaluate({"ns": [1, 2]}, {"x": {"items": [{"kind": "y"}, {"kind": "x"}]}})
    assert not cond.evaluate({"ns": [1, 0]}, {"x": {"items": [{"kind": "x"}]}})
    with pytest.raises(ConditionError, match="unknown name 'i'"):
        Condition("i > 1")
