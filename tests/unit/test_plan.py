"""``compile_plan``: every mode becomes one DAG plan with settled inputs and retries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from podium.definition import Plan, RetryPolicy, compile_plan, load_workflow, workflow_from_dict
from podium.definition.templates import Scope
from podium.errors import DefinitionError

RUN_INPUT = {"source": "s3://bucket"}


def plan_of(mode: str, steps: list[dict[str, Any]], **extra: Any) -> Plan:
    return compile_plan(workflow_from_dict({"name": "w", "mode": mode, "steps": steps, **extra}))


def scope(outputs: dict[str, Any]) -> Scope:
    return Scope(input=RUN_INPUT, outputs=outputs, run_id="r", workflow_name="w",
                 workflow_version=1)


def ids(plan: Plan, indexes: Any) -> list[str]:
    return [plan.nodes[i].id for i in indexes]


OUTPUTS = {"a": {"rows": [1]}, "b": "B", "c": [3], "d": None}


# --- sequential ------------------------------------------------------------


def test_sequential_is_a_chain() -> None:
    """Each sequential step depends on the one before it, and only on it."""
    plan = plan_of("sequential", [{"id": s, "agent": "x"} for s in "abc"])
    assert [ids(plan, n.deps) for n in plan.nodes] == [[], ["a"], ["b"]]
    assert [ids(plan, n.dependents) for n in plan.nodes] == [["b"], ["c"], []]
    assert ids(plan, plan.roots) == ["a"]
    assert len(plan) == 3
    assert plan.by_id["b"] is plan.nodes[1]


def test_sequential_default_input_is_previous_output() -> None:
    """The first step gets the run input; each later step the previous step's output."""
    plan = plan_of("sequential", [{"id": s, "agent": "x"} for s in "abc"])
    sc = scope(OUTPUTS)
    assert [n.input.resolve(sc) for n in plan.nodes if n.input] == [RUN_INPUT, {"rows": [1]}, "B"]


def test_sequential_default_output_is_last_step_output() -> None:
    """Without an output template, a sequential run's output is its last step's."""
    plan = plan_of("sequential", [{"id": s, "agent": "x"} for s in "abc"])
    assert plan.output.resolve(scope(OUTPUTS)) == [3]


def test_explicit_input_replaces_default_even_when_null() -> None:
    """An input written in the file wins, including an explicit null."""
    plan = plan_of("sequential", [
        {"id": "a", "agent": "x"},
        {"id": "b", "agent": "x", "input": {"first": "${{ steps.a.output.rows }}"}},
        {"id": "c", "agent": "x", "input": None},
    ])
    sc = scope(OUTPUTS)
    assert plan.nodes[1].input is not None
    assert plan.nodes[1].input.resolve(sc) == {"first": [1]}
    assert plan.nodes[2].input is not None
    assert plan.nodes[2].input.resolve(sc) is None


# --- parallel --------------------------------------------------------------


def test_parallel_has_no_edges_and_collects_every_output() -> None:
    """Parallel steps are all roots with the run input; the output maps every step."""
    plan = plan_of("parallel", [{"id": s, "agent": "x"} for s in "abc"])
    assert all(n.deps == () and n.dependents == () for n in plan.nodes)
    assert ids(plan, plan.roots) == ["a", "b", "c"]
    sc = scope(OUTPUTS)
    assert all(n.input is not None and n.input.resolve(sc) == RUN_INPUT for n in plan.nodes)
    assert plan.output.resolve(sc) == {"a": {"rows": [1]}, "b": "B", "c": [3]}


# --- dag -------------------------------------------------------------------


DIAMOND: list[dict[str, Any]] = [
    {"id": "a", "agent": "x"},
    {"id": "b", "agent": "x", "depends_on": ["a"]},
    {"id": "c", "agent": "x", "depends_on": ["a"]},
    {"id": "d", "agent": "x", "depends_on": ["b", "c"]},
    {"id": "e", "agent": "x"},
]


def test_dag_edges_follow_depends_on() -> None:
    """DAG edges are the declared depends_on, both directions recorded."""
    plan = plan_of("dag", DIAMOND)
    assert {n.id: ids(plan, n.deps) for n in plan.nodes} == {
        "a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": [],
    }
    assert {n.id: ids(plan, n.dependents) for n in plan.nodes} == {
        "a": ["b", "c"], "b": ["d"], "c": ["d"], "d": [], "e": [],
    }
    assert ids(plan, plan.roots) == ["a", "e"]


def test_duplicate_dependency_is_one_edge() -> None:
    """Listing a dependency twice makes one edge, not a step waiting twice."""
    plan = plan_of("dag", [{"id": "a", "agent": "x"},
                           {"id": "b", "agent": "x", "depends_on": ["a", "a"]}])
    assert plan.nodes[1].deps == (0,)
    assert plan.nodes[0].dependents == (1,)


def test_dag_default_inputs() -> None:
    """A step without deps gets the run input; with deps, a mapping dep id → output."""
    plan = plan_of("dag", DIAMOND)
    sc = scope(OUTPUTS)
    inputs = {n.id: n.input.resolve(sc) for n in plan.nodes if n.input}
    assert inputs == {
        "a": RUN_INPUT,
        "b": {"a": {"rows": [1]}},
        "c": {"a": {"rows": [1]}},
        "d": {"b": "B", "c": [3]},
        "e": RUN_INPUT,
    }


def test_dag_default_output_maps_sink_steps() -> None:
    """Without an output template, a DAG's output maps each sink step to its output."""
    plan = plan_of("dag", DIAMOND)
    assert plan.output.resolve(scope({**OUTPUTS, "e": "E"})) == {"d": None, "e": "E"}


def test_explicit_output_template_wins() -> None:
    """An output template in the file replaces the default output."""
    plan = plan_of("dag", DIAMOND, output={"rows": "${{ steps.a.output.rows }}"})
    assert plan.output.resolve(scope(OUTPUTS)) == {"rows": [1]}


# --- retry and timeouts ----------------------------------------------------


def test_step_retry_dict_merges_with_defaults_key_by_key() -> None:
    """A step's retry mapping overrides only the keys it sets; the rest come from
    defaults.retry (not from RetryPolicy's own defaults)."""
    plan = plan_of(
        "dag",
        [
            {"id": "a", "agent": "x", "retry": {"max_attempts": 7, "jitter": "none"}},
            {"id": "b", "agent": "x"},
        ],
        defaults={"retry": {"max_attempts": 2, "initial_delay": "250ms", "max_delay": "10s",
                            "retry_on": ["timeout"]}},
    )
    (merged,) = plan.by_id["a"].retry
    assert merged == RetryPolicy(max_attempts=7, initial_delay=0.25, max_delay=10,
                                 jitter="none", retry_on=["timeout"])
    (inherited,) = plan.by_id["b"].retry
    assert inherited == RetryPolicy(max_attempts=2, initial_delay=0.25, max_delay=10,
                                    retry_on=["timeout"])


def test_step_retry_list_replaces_defaults() -> None:
    """A list of policies on a step replaces defaults.retry entirely (no merging)."""
    plan = plan_of(
        "dag",
        [{"id": "a", "agent": "x", "retry": [{"retry_on": ["rate_limited"], "max_attempts": 9},
                                             {"max_attempts": 2}]}],
        defaults={"retry": {"initial_delay": "5s", "max_delay": "60s", "retry_on": ["timeout"]}},
    )
    assert plan.nodes[0].retry == (
        RetryPolicy(retry_on=["rate_limited"], max_attempts=9),
        RetryPolicy(max_attempts=2),
    )


def test_step_retry_dict_replaces_a_defaults_list() -> None:
    """Merging is only between two mappings: a step mapping replaces a defaults list."""
    plan = plan_of(
        "dag",
        [{"id": "a", "agent": "x", "retry": {"max_attempts": 4}}, {"id": "b", "agent": "x"}],
        defaults={"retry": [{"retry_on": ["timeout"]}, {"retry_on": ["unavailable"]}]},
    )
    assert plan.by_id["a"].retry == (RetryPolicy(max_attempts=4),)
    assert [p.retry_on for p in plan.by_id["b"].retry] == [["timeout"], ["unavailable"]]


def test_no_retry_anywhere_means_no_policy() -> None:
    """Without any retry policy a step has none (it is attempted once)."""
    plan = plan_of("dag", [{"id": "a", "agent": "x"}])
    assert plan.nodes[0].retry == ()


def test_merge_conflict_outside_validation_is_a_definition_error() -> None:
    """compile_plan never returns an invalid merged policy; it names the step."""
    from podium.definition.plan import effective_retry

    with pytest.raises(DefinitionError) as info:
        effective_retry(RetryPolicy(initial_delay=5), RetryPolicy(max_delay=1), "a")
    (problem,) = info.value.problems
    assert (problem.step, problem.field) == ("a", "retry")
    assert problem.message.startswith("retry merged with defaults.retry is invalid: max_delay")


def test_defaults_timeout_is_inherited_and_overridable() -> None:
    """A step without timeout gets defaults.timeout; its own timeout wins."""
    plan = plan_of(
        "dag",
        [{"id": "a", "agent": "x"}, {"id": "b", "agent": "x", "timeout": "250ms",
                                     "deadline": "1m", "optional": True}],
        defaults={"timeout": "60s"},
    )
    assert plan.by_id["a"].timeout_s == 60.0
    assert plan.by_id["b"].timeout_s == 0.25
    assert plan.by_id["b"].deadline_s == 60.0
    assert plan.by_id["b"].optional
    assert not plan.by_id["a"].optional


def test_no_timeout_anywhere_is_none() -> None:
    """No defaults.timeout and no step timeout leaves the attempt unbounded (None)."""
    plan = plan_of("dag", [{"id": "a", "agent": "x"}])
    assert plan.nodes[0].timeout_s is None


def test_compensation_defaults_to_the_steps_own_output() -> None:
    """A compensate without input receives the output of the step it undoes, and
    keeps its own retry policy."""
    plan = plan_of("dag", [
        {"id": "a", "agent": "x", "compensate": {"agent": "undo", "retry": {"max_attempts": 4}}},
        {"id": "b", "agent": "x", "compensate": {"agent": "undo", "input": {"k": 1}}},
    ])
    sc = scope(OUTPUTS)
    a, b = plan.nodes
    assert a.compensate_input is not None
    assert a.compensate_input.resolve(sc) == {"rows": [1]}
    assert a.compensate_retry == (RetryPolicy(max_attempts=4),)
    assert b.compensate_input is not None
    assert b.compensate_input.resolve(sc) == {"k": 1}
    assert b.compensate_retry == ()


def test_numeric_step_ids_compile() -> None:
    """Default inputs reference steps by id; ids like "1" and "2" must compile."""
    plan = plan_of("sequential", [{"id": "1", "agent": "x"}, {"id": "2", "agent": "x"}])
    assert plan.nodes[1].input is not None
    assert plan.nodes[1].input.resolve(scope({"1": "one"})) == "one"
    assert plan.output.resolve(scope({"2": "two"})) == "two"


# --- scale -----------------------------------------------------------------

N = 10_000


def test_ten_thousand_step_dag_chain_validates_and_compiles() -> None:
    """A 10,000-long depends_on chain validates and compiles: no recursion limit
    and nothing quadratic (the test timeout would catch that)."""
    steps: list[dict[str, Any]] = [{"id": "s0", "agent": "x"}]
    steps += [{"id": f"s{i}", "agent": "x", "depends_on": [f"s{i - 1}"],
               "input": f"${{{{ steps.s{i - 1}.output }}}}"} for i in range(1, N)]
    plan = plan_of("dag", steps)
    assert len(plan) == N
    assert ids(plan, plan.roots) == ["s0"]
    assert plan.nodes[-1].deps == (N - 2,)
    assert plan.output.resolve(scope({f"s{N - 1}": "end"})) == {f"s{N - 1}": "end"}


def test_ten_thousand_step_sequential_chain_compiles() -> None:
    """A 10,000-step sequential workflow is a 10,000-long chain."""
    plan = plan_of("sequential", [{"id": f"s{i}", "agent": "x"} for i in range(N)])
    assert len(plan) == N
    assert all(n.deps == ((n.index - 1,) if n.index else ()) for n in plan.nodes)


def test_ten_thousand_wide_fan_out_and_join_compile() -> None:
    """One root feeding 10,000 steps that all join into one: validates, compiles,
    and the join's default input maps all 10,000 outputs."""
    steps: list[dict[str, Any]] = [{"id": "root", "agent": "x"}]
    steps += [{"id": f"w{i}", "agent": "x", "depends_on": ["root"]} for i in range(N)]
    steps.append({"id": "join", "agent": "x", "depends_on": [f"w{i}" for i in range(N)]})
    plan = plan_of("dag", steps)
    assert len(plan.by_id["root"].dependents) == N
    join = plan.by_id["join"]
    assert len(join.deps) == N
    assert join.input is not None
    resolved = join.input.resolve(scope({f"w{i}": i for i in range(N)}))
    assert len(resolved) == N
    assert resolved["w9999"] == 9999


def test_ten_thousand_parallel_steps_compile() -> None:
    """10,000 parallel steps are 10,000 roots and one collecting output."""
    plan = plan_of("parallel", [{"id": f"p{i}", "agent": "x"} for i in range(N)])
    assert len(plan.roots) == N


def test_ten_thousand_step_yaml_file_loads_and_compiles(tmp_path: Path) -> None:
    """The same chain as a YAML file goes through the loader (line map and all)."""
    lines = ["name: big", "steps:", "  - {id: s0, agent: x}"]
    lines += [f"  - {{id: s{i}, agent: x, depends_on: [s{i - 1}]}}" for i in range(1, N)]
    path = tmp_path / "big.yaml"
    path.write_text("\n".join(lines) + "\n")
    plan = compile_plan(load_workflow(path))
    assert len(plan) == N
    assert plan.nodes[-1].deps == (N - 2,)


def test_steps_with_the_same_input_share_one_template_and_each_resolves_its_own() -> None:
    """A fan-out's branches (the same implicit input) share one template; a step whose
    input differs keeps its own, and every step still reads what it says."""
    plan = plan_of("dag", [
        {"id": "a", "agent": "x"},
        {"id": "b1", "agent": "x", "depends_on": ["a"]},
        {"id": "b2", "agent": "x", "depends_on": ["a"]},
        {"id": "b3", "agent": "x", "depends_on": ["a"],
         "input": {"a": "${{ steps.a.output.rows }}"}},
        {"id": "b4", "agent": "x", "depends_on": ["a"], "input": {"k": [1, 2]}},
        {"id": "b5", "agent": "x", "depends_on": ["a"], "input": {"k": [1, 2]}},
    ])
    node = plan.by_id
    assert node["b1"].input is node["b2"].input
    assert node["b3"].input is not node["b1"].input
    assert node["b4"].input is node["b5"].input
    outputs = {"a": {"rows": [1]}}
    b1, b3, a = node["b1"].input, node["b3"].input, node["a"].input
    assert b1 is not None
    assert b3 is not None
    assert a is not None
    assert b1.resolve(scope(outputs)) == {"a": {"rows": [1]}}
    assert b3.resolve(scope(outputs)) == {"a": [1]}
    assert a.resolve(scope(outputs)) == RUN_INPUT


def test_default_dag_inputs_are_shared_by_equal_dependencies_and_list_their_refs() -> None:
    """Steps with the same dependencies share one default input (a fan-out's branches,
    several joins of the same branches), built without parsing a template per
    dependency; it still reads null for an output not there and lists every path."""
    plan = plan_of("dag", [
        {"id": "a", "agent": "x"}, {"id": "b", "agent": "x"},
        {"id": "j1", "agent": "x", "depends_on": ["a", "b"]},
        {"id": "j2", "agent": "x", "depends_on": ["a", "b", "a"]},
        {"id": "j3", "agent": "x", "depends_on": ["b", "a"]},
    ])
    j1, j2, j3 = (plan.by_id[s].input for s in ("j1", "j2", "j3"))
    assert j1 is not None
    assert j3 is not None
    assert j1 is j2
    assert j3 is not j1  # another order: another mapping
    assert j1.resolve(scope({"a": 1})) == {"a": 1, "b": None}
    assert list(j3.resolve(scope({"a": 1, "b": 2}))) == ["b", "a"]
    assert [r.text for r in j1.refs] == ["steps.a.output", "steps.b.output"]
    assert [(r.root, r.step, r.path) for r in j3.refs] == [("steps", "b", ()), ("steps", "a", ())]
