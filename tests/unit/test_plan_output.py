"""A DAG's default output (no ``output:``): each last step's output by id.

``compile_plan`` builds it without parsing a template per last step; it must read
what the template ``{id: "${{ steps.<id>.output }}"}`` read, refs included.
"""

from __future__ import annotations

from podium import Step, Workflow
from podium.definition.plan import compile_plan
from podium.definition.templates import Scope, compile_template


def _scope(outputs: dict[str, object]) -> Scope:
    return Scope({"x": 1}, outputs, "r1", "w", 1)


def test_the_default_output_reads_as_the_template_of_the_last_steps() -> None:
    wf = Workflow(name="w", steps=[
        Step(id="a", agent="x"),
        Step(id="b-1", agent="x", depends_on=["a"]),
        Step(id="2c", agent="x", depends_on=["a"]),
        Step(id="d_d", agent="x"),
    ])
    plan = compile_plan(wf)
    template = compile_template({i: "${{ steps.%s.output }}" % i  # noqa: UP031
                                 for i in ("b-1", "2c", "d_d")})
    assert plan.output.refs == template.refs
    assert plan.output.constant == template.constant
    for outputs in ({"a": 1, "b-1": {"k": [1]}, "2c": None, "d_d": "x"},
                    {"a": 1, "b-1": 2},  # a last step that never ran (skipped, failed)
                    {}):
        assert plan.output.resolve(_scope(outputs)) == template.resolve(_scope(outputs))
    assert list(plan.output.resolve(_scope({}))) == ["b-1", "2c", "d_d"]


def test_a_fan_out_of_independent_steps_outputs_every_step() -> None:
    wf = Workflow(name="w", steps=[Step(id=f"s{i}", agent="x") for i in range(50)])
    plan = compile_plan(wf)
    assert [n.deps for n in plan.nodes] == [()] * 50
    outputs = {f"s{i}": i for i in range(50)}
    assert plan.output.resolve(_scope(outputs)) == outputs
