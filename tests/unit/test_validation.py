"""Loading and validating workflow files: every problem reported, all at once,
each with the file, line, step, field, the offending value and a fix."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pydantic
import pytest

from podium.definition import (
    Compensation,
    Defaults,
    RetryPolicy,
    Step,
    Workflow,
    check_input,
    load_workflow,
    workflow_from_dict,
)
from podium.errors import DefinitionError, InputError, Problem


def write(tmp_path: Path, text: str, name: str = "flow.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def line_of(path: Path, needle: str) -> int:
    """1-based line of the only line of ``path`` containing ``needle``."""
    found = [n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line]
    assert len(found) == 1, f"{needle!r} is on lines {found}"
    return found[0]


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(DefinitionError) as info:
        load_workflow(path)
    return info.value.problems


def only(path: Path) -> Problem:
    problems = problems_of(path)
    assert len(problems) == 1, [p.render() for p in problems]
    return problems[0]


def check(
    problem: Problem,
    path: Path,
    *,
    line: int | None,
    step: str | None,
    field: str | None,
    quotes: str,
) -> None:
    """The common contract of a reported problem."""
    assert problem.file == str(path)
    assert problem.line == line
    assert problem.step == step
    assert problem.field == field
    assert quotes in problem.message, problem.message
    assert problem.hint, f"no hint for {problem.message!r}"


# --- syntax ----------------------------------------------------------------


def test_yaml_syntax_error_reports_its_line(tmp_path: Path) -> None:
    """A YAML syntax error is one problem with the file, the line and the bad text."""
    path = write(
        tmp_path,
        """
        name: w
        steps:
          - id: a
            agent: x
            input: {rows: [1, 2}
        """,
    )
    problem = only(path)
    check(problem, path, line=line_of(path, "[1, 2}"), step=None, field=None,
          quotes="[1, 2}")
    assert problem.message.startswith("invalid YAML")


def test_yaml_tab_indentation_is_a_syntax_error_with_line(tmp_path: Path) -> None:
    """A tab used for indentation is reported on its line, the tab shown."""
    path = write(tmp_path, "name: w\nsteps:\n\t- id: a\n")
    check(only(path), path, line=3, step=None, field=None, quotes="\\t- id: a")


def test_valid_json_workflow_loads(tmp_path: Path) -> None:
    """A .json file is read as JSON and gives the same model as YAML would."""
    data = {
        "name": "w", "mode": "sequential", "steps": [{"id": "a", "agent": "x", "timeout": "5s"}],
    }
    path = tmp_path / "flow.json"
    path.write_text(json.dumps(data, indent=2))
    workflow = load_workflow(path)
    assert workflow.mode == "sequential"
    assert workflow.steps[0].timeout == 5.0
    assert workflow.model_dump() == workflow_from_dict(data).model_dump()


def test_json_syntax_error_reports_its_line(tmp_path: Path) -> None:
    """Invalid JSON is one problem with the line of the error and the bad text."""
    path = tmp_path / "flow.json"
    path.write_text('{\n  "name": "w",\n  "steps": [\n    {"id": "a" "agent": "x"}\n  ]\n}\n')
    problem = only(path)
    check(problem, path, line=4, step=None, field=None, quotes='{"id": "a" "agent": "x"}')
    assert problem.message.startswith("invalid JSON")


def test_json_semantic_errors_are_reported_like_yaml_ones(tmp_path: Path) -> None:
    """A well-formed JSON file with a bad dependency gets the same problem as YAML."""
    path = tmp_path / "flow.json"
    path.write_text(json.dumps(
        {"name": "w", "steps": [{"id": "a", "agent": "x", "depends_on": ["zz"]}]}
    ))
    problem = only(path)
    assert problem.file == str(path)
    assert (problem.step, problem.field) == ("a", "depends_on")
    assert "'zz'" in problem.message


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_document_that_is_not_a_mapping_is_one_problem(tmp_path: Path, text: str) -> None:
    """An empty file, a list or a scalar is one problem saying how to start."""
    path = write(tmp_path, text)
    problem = only(path)
    assert problem.file == str(path)
    assert "mapping" in problem.message
    assert problem.hint


def test_missing_file_is_a_definition_error(tmp_path: Path) -> None:
    """A path that does not exist is a DefinitionError naming it, not an OSError."""
    path = tmp_path / "nope.yaml"
    problem = only(path)
    assert problem.file == str(path)
    assert "not found" in problem.message


# --- unknown keys ----------------------------------------------------------


def test_unknown_top_level_key_suggests_the_right_one(tmp_path: Path) -> None:
    """A typo at the top level is named, on its line, with a 'did you mean'."""
    path = write(
        tmp_path,
        """
        name: w
        descripton: monthly numbers
        steps:
          - {id: a, agent: x}
        """,
    )
    problem = only(path)
    check(problem, path, line=2, step=None, field="descripton", quotes="'descripton'")
    assert problem.hint == "did you mean 'description'?"


def test_unknown_step_key_suggests_depends_on(tmp_path: Path) -> None:
    """``depend_on`` in a step is reported with the step and 'did you mean depends_on'."""
    path = write(
        tmp_path,
        """
        name: w
        steps:
          - id: a
            agent: x
          - id: b
            agent: x
            depend_on: [a]
        """,
    )
    problem = only(path)
    check(problem, path, line=line_of(path, "depend_on"), step="b", field="depend_on",
          quotes="'depend_on'")
    assert problem.hint == "did you mean 'depends_on'?"


def test_unknown_retry_key_suggests_the_policy_field(tmp_path: Path) -> None:
    """A typo inside a step's retry is checked against RetryPolicy's fields."""
    path = write(
        tmp_path,
        """
        name: w
        steps:
          - id: a
            agent: x
            retry:
              max_attempt: 5
        """,
    )
    problem = only(path)
    check(problem, path, line=line_of(path, "max_attempt"), step="a",
          field="retry.max_attempt", quotes="'max_attempt'")
    assert problem.hint == "did you mean 'max_attempts'?"


def test_unknown_key_in_defaults_retry_and_compensate(tmp_path: Path) -> None:
    """Typos in defaults.retry and in compensate get suggestions from their models."""
    path = write(
        tmp_path,
        """
        name: w
        defaults:
          retry: {jiter: full}
        steps:
          - id: a
            agent: x
            compensate: {agent: undo, inputs: 1}
        """,
    )
    first, second = problems_of(path)
    check(first, path, line=3, step=None, field="defaults.retry.jiter", quotes="'jiter'")
    assert first.hint == "did you mean 'jitter'?"
    check(second, path, line=line_of(path, "compensate"), step="a",
          field="compensate.inputs", quotes="'inputs'")
    assert second.hint == "did you mean 'input'?"


def test_unknown_key_without_a_close_match_lists_known_keys(tmp_path: Path) -> None:
    """With nothing close to suggest, the hint lists the keys that do exist."""
    path = write(tmp_path, "name: w\nzzzz: 1\nsteps: [{id: a, agent: x}]\n")
    problem = only(path)
    check(problem, path, line=2, step=None, field="zzzz", quotes="'zzzz'")
    assert "known keys:" in (problem.hint or "")
    assert "steps" in (problem.hint or "")


def test_capitalised_unknown_key_is_reported_not_crashing(tmp_path: Path) -> None:
    """``Name:`` (a key that looks like a type name) is an unknown key like any other."""
    path = write(tmp_path, "name: w\nName: w\nsteps: [{id: a, agent: x, Retry: 2}]\n")
    top, step = problems_of(path)
    check(top, path, line=2, step=None, field="Name", quotes="'Name'")
    assert top.hint == "did you mean 'name'?"
    check(step, path, line=3, step="a", field="Retry", quotes="'Retry'")
    assert step.hint == "did you mean 'retry'?"


# --- ids and dependencies ---------------------------------------------------


def test_duplicate_step_id_points_at_the_second_one(tmp_path: Path) -> None:
    """Two steps with one id: the second is reported, quoting the id."""
    path = write(
        tmp_path,
        """
        name: w
        steps:
          - id: fetch
            agent: x
          - id: fetch
            agent: y
        """,
    )
    lines = [n for n, t in enumerate(path.read_text().splitlines(), 1) if "id: fetch" in t]
    check(only(path), path, line=lines[1], step="fetch", field="id", quotes="'fetch'")


def test_unknown_dependency_suggests_a_close_step(tmp_path: Path) -> None:
    """An unknown depends_on target is quoted, on its line, with a close match."""
    path = write(
        tmp_path,
        """
        name: w
        steps:
          - id: collect
            agent: x
          - id: process
            agent: x
            depends_on: [colect]
        """,
    )
    problem = only(path)
    check(problem, path, line=line_of(path, "colect]"), step="process", field="depends_on",
          quotes="'colect'")
    assert problem.hint == "did you mean 'collect'?"


def test_unknown_dependency_never_suggests_the_step_itself(tmp_path: Path) -> None:
    """A step can't depend on itself, so it is not offered as the fix."""
    path = write(
        tmp_path,
        """
        name: w
        steps:
          - {id: abc, agent: x}
          - {id: xyz, agent: x, depends_on: [xy]}
        """,
    )
    problem = only(path)
    assert "'xy'" in problem.message
    assert problem.hint == "steps are: abc, xyz"


def test_self_dependency_is_reported(tmp_path: Path) -> None:
    """A step listing itself in depends_on is named, and is not also called a cycle."""
    path = write(
        tmp_path,
        """
        name: w
        steps:
          - id: loop
            agent: x
            depends_on: [loop]
        """,
    )
    problem = only(path)
    check(problem, path, line=line_of(path, "depends_on"), step="loop", field="depends_on",
          quotes="'loop'")
    assert "itself" in problem.message


def test_cycle_is_named_in_order(tmp_path: Path) -> None:
    """A cycle is one problem spelling the loop along depends_on, start to start."""
    path = write(
        tmp_path,
        """
        name: w
        steps:
          - id: a
            agent: x
            depends_on: [b]
          - id: b
            agent: x
            depends_on: [c]
          - id: c
            agent: x
            depends_on: [a]
          - id: free
            agent: x
        """,
    )
    problem = only(path)
    check(problem, path, line=line_of(path, "depends_on: [b]"), step="a", field="depends_on",
          quotes="a -> b -> c -> a")


def test_cycle_through_a_chain_is_found(tmp_path: Path) -> None:
    """A cycle that is reached only after a long acyclic prefix is still found."""
    steps: list[dict[str, Any]] = [{"id": "s0", "agent": "x"}]
    steps += [{"id": f"s{i}", "agent": "x", "depends_on": [f"s{i - 1}"]} for i in range(1, 50)]
    steps[10]["depends_on"] = ["s9", "s40"]
    with pytest.raises(DefinitionError) as info:
        workflow_from_dict({"name": "w", "steps": steps})
    (problem,) = info.value.problems
    cycle = " -> ".join(["s10", "s40", *(f"s{i}" for i in range(39, 9, -1))])
    assert problem.message == f"dependency cycle: {cycle}"


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_depends_on_outside_dag_mode_is_reported(tmp_path: Path, mode: str) -> None:
    """depends_on means nothing in sequential or parallel mode, so it is an error."""
    path = write(
        tmp_path,
        f"""
        name: w
        mode: {mode}
        steps:
          - id: a
            agent: x
          - id: b
            agent: x
            depends_on: [a]
        """,
    )
    problem = only(path)
    check(problem, path, line=line_of(path, "depends_on"), step="b", field="depends_on",
          quotes=mode)
    assert "mode: dag" in (problem.hint or "")


# --- field values ----------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "yaml_text", "step", "field"),
    [
        ("step", "steps:\n  - {id: a, agent: x, timeout: 5 minutes}\n", "a", "timeout"),
        ("run", "timeout: 5 minutes\nsteps: [{id: a, agent: x}]\n", None, "timeout"),
        ("defaults", "defaults: {timeout: 5 minutes}\nsteps: [{id: a, agent: x}]\n", None,
         "defaults.timeout"),
        ("retry", "steps:\n  - {id: a, agent: x, retry: {initial_delay: 5 minutes}}\n", "a",
         "retry.initial_delay"),
    ],
)
def test_bad_duration_is_quoted_with_a_fix(
    tmp_path: Path, where: str, yaml_text: str, step: str | None, field: str
) -> None:
    """``5 minutes`` is not a duration wherever it appears; the problem quotes it
    and the hint shows the accepted forms."""
    path = write(tmp_path, "name: w\n" + yaml_text)
    problem = only(path)
    check(problem, path, line=line_of(path, "5 minutes"), step=step, field=field,
          quotes="'5 minutes'")
    assert "250ms" in (problem.hint or "")


def test_negative_and_nan_durations_are_reported(tmp_path: Path) -> None:
    """A negative timeout and a YAML ``.nan`` are both quoted problems."""
    path = write(tmp_path, "name: w\ntimeout: -5\nsla: .nan\nsteps: [{id: a, agent: x}]\n")
    neg, nan = problems_of(path)
    check(neg, path, line=2, step=None, field="timeout", quotes="-5")
    check(nan, path, line=3, step=None, field="sla", quotes="nan")


def test_bad_agent_reference_is_quoted(tmp_path: Path) -> None:
    """An agent that is neither a capability nor @agent-id is quoted, with the forms."""
    path = write(
        tmp_path,
        """
        name: w
        steps:
          - id: collect
            agent: "data collection!"
        """,
    )
    problem = only(path)
    check(problem, path, line=line_of(path, "data collection!"), step="collect", field="agent",
          quotes="'data collection!'")
    assert "@" in (problem.hint or "")


def test_bad_step_id_and_workflow_name_are_quoted(tmp_path: Path) -> None:
    """Ids and names with spaces or capitals are quoted with the allowed characters."""
    path = write(tmp_path, "name: My Flow\nsteps:\n  - {id: bad id, agent: x}\n")
    name, step_id = problems_of(path)
    check(name, path, line=1, step=None, field="name", quotes="'My Flow'")
    check(step_id, path, line=3, step="bad id", field="id", quotes="'bad id'")


def test_missing_required_keys_are_named(tmp_path: Path) -> None:
    """A workflow without steps and a step without agent say what to add."""
    path = write(tmp_path, "name: w\n")
    problem = only(path)
    assert (problem.field, problem.hint) == ("steps", "add 'steps'")
    path = write(tmp_path, "name: w\nsteps:\n  - id: a\n")
    problem = only(path)
    check(problem, path, line=3, step="a", field="agent", quotes="'agent'")


def test_invalid_retry_value_reported_once(tmp_path: Path) -> None:
    """``retry: {max_attempts: 0}`` fits the policy shape, so only that branch of
    the policy-or-list union is reported, quoting the 0."""
    path = write(
        tmp_path,
        """
        name: w
        steps:
          - id: a
            agent: x
            retry: {max_attempts: 0}
        """,
    )
    problem = only(path)
    check(problem, path, line=line_of(path, "max_attempts"), step="a",
          field="retry.max_attempts", quotes="0")


def test_invalid_entry_in_retry_list_reported_once(tmp_path: Path) -> None:
    """In a list of policies only the bad entry is reported, not 'should be a dict'."""
    path = write(
        tmp_path,
        """
        name: w
        steps:
          - id: a
            agent: x
            retry:
              - {retry_on: [timeout]}
              - {max_attempts: 0}
        """,
    )
    problem = only(path)
    check(problem, path, line=line_of(path, "max_attempts: 0"), step="a",
          field="retry[1].max_attempts", quotes="0")


def test_bad_error_type_name_in_retry_on(tmp_path: Path) -> None:
    """retry_on names must be lowercase error types; the bad one is quoted."""
    path = write(
        tmp_path, "name: w\nsteps:\n  - {id: a, agent: x, retry: {retry_on: [Time Out]}}\n"
    )
    problem = only(path)
    check(problem, path, line=3, step="a", field="retry.retry_on", quotes="'Time Out'")


def test_step_retry_conflicting_with_defaults_is_a_validation_error(tmp_path: Path) -> None:
    """A step's initial_delay above the default max_delay is valid alone but not once
    merged key by key with defaults.retry: validation must say so, not the first run."""
    path = write(
        tmp_path,
        """
        name: w
        defaults:
          retry: {max_delay: 1s}
        steps:
          - id: a
            agent: x
            retry: {initial_delay: 5s}
        """,
    )
    check(only(path), path, line=line_of(path, "initial_delay"), step="a", field="retry",
          quotes="max_delay (1.0s) is below initial_delay (5.0s)")


def test_invalid_input_schema_is_reported(tmp_path: Path) -> None:
    """An input_schema that is not a valid JSON Schema is quoted with a pointer to docs."""
    path = write(
        tmp_path,
        """
        name: w
        input_schema:
          type: objekt
        steps:
          - {id: a, agent: x}
        """,
    )
    check(only(path), path, line=3, step=None, field="input_schema", quotes="'objekt'")


# --- templates -------------------------------------------------------------


def test_template_naming_unknown_step(tmp_path: Path) -> None:
    """A template reading a step that does not exist is quoted with a suggestion."""
    path = write(
        tmp_path,
        """
        name: w
        steps:
          - id: collect
            agent: x
          - id: report
            agent: x
            depends_on: [collect]
            input: {rows: "${{ steps.colect.output.rows }}"}
        """,
    )
    problem = only(path)
    check(problem, path, line=line_of(path, "steps.colect"), step="report", field="input",
          quotes="steps.colect.output.rows")
    assert problem.hint == "did you mean 'collect'?"


def test_output_template_naming_unknown_step(tmp_path: Path) -> None:
    """The workflow's output is checked too (any step may be read there)."""
    path = write(
        tmp_path,
        """
        name: w
        steps:
          - {id: a, agent: x}
        output: "${{ steps.b.output }}"
        """,
    )
    check(only(path), path, line=4, step=None, field="output", quotes="'b'")


def test_dag_template_reading_a_sibling_branch(tmp_path: Path) -> None:
    """In a DAG, a step may read only its ancestors: a sibling branch is not upstream."""
    path = write(
        tmp_path,
        """
        name: w
        steps:
          - {id: root, agent: x}
          - {id: left, agent: x, depends_on: [root]}
          - id: right
            agent: x
            depends_on: [root]
            input: {root: "${{ steps.root.output }}", left: "${{ steps.left.output.v }}"}
          - id: join
            agent: x
            depends_on: [left, right]
            input: "${{ steps.root.output }}"
        """,
    )
    problem = only(path)
    check(problem, path, line=line_of(path, "steps.left"), step="right", field="input",
          quotes="steps.left.output.v")
    assert "depends_on" in (problem.hint or "")


def test_sequential_template_reading_a_later_step(tmp_path: Path) -> None:
    """In sequential mode a step sees every earlier step but no later one."""
    path = write(
        tmp_path,
        """
        name: w
        mode: sequential
        steps:
          - {id: one, agent: x}
          - {id: two, agent: x, input: "${{ steps.three.output }}"}
          - {id: three, agent: x, input: ["${{ steps.one.output }}", "${{ steps.two.output }}"]}
        """,
    )
    problem = only(path)
    check(problem, path, line=line_of(path, "id: two"), step="two", field="input",
          quotes="steps.three.output")


def test_parallel_template_reading_any_step(tmp_path: Path) -> None:
    """Parallel steps run together: reading any other step is an error (output may)."""
    path = write(
        tmp_path,
        """
        name: w
        mode: parallel
        steps:
          - {id: one, agent: x}
          - {id: two, agent: x, input: "${{ steps.one.output }}"}
        output: ["${{ steps.one.output }}", "${{ steps.two.output }}"]
        """,
    )
    problem = only(path)
    check(problem, path, line=line_of(path, "id: two"), step="two", field="input",
          quotes="steps.one.output")
    assert "mode: dag" in (problem.hint or "")


def test_compensation_may_read_its_own_step_but_not_downstream(tmp_path: Path) -> None:
    """A compensation undoes its own step, so it may read that step's output; a
    step downstream is still not upstream."""
    path = write(
        tmp_path,
        """
        name: w
        steps:
          - id: book
            agent: x
            compensate: {agent: cancel, input: "${{ steps.book.output.id }}"}
          - id: pay
            agent: x
            depends_on: [book]
            compensate: {agent: refund, input: "${{ steps.later.output }}"}
          - {id: later, agent: x, depends_on: [pay]}
        """,
    )
    problem = only(path)
    check(problem, path, line=line_of(path, "refund"), step="pay", field="compensate.input",
          quotes="steps.later.output")


@pytest.mark.parametrize(
    "expr",
    ["1+1", "__import__('os')", "steps.a", "env.HOME", "input.x()", ""],
)
def test_template_that_is_not_a_path_fails_validation(tmp_path: Path, expr: str) -> None:
    """Expressions in a file are validation errors, never evaluated at run time."""
    text = f'name: w\nsteps:\n  - id: a\n    agent: x\n    input: "${{{{ {expr} }}}}"\n'
    path = write(tmp_path, text)
    check(only(path), path, line=5, step="a", field="input", quotes="${{")


# --- all at once -------------------------------------------------------------


def test_several_errors_are_all_reported_at_once(tmp_path: Path) -> None:
    """Four different mistakes in one file are four problems in one error, in file
    order, each on its own line; the rendered text lists them all."""
    path = write(
        tmp_path,
        """
        name: w
        steps:
          - id: a
            agent: x
            timeout: 5 minutes
          - id: b
            agent: x
            depend_on: [a]
          - id: c
            agent: x
            depends_on: [zz]
          - id: a
            agent: x
        """,
    )
    problems = problems_of(path)
    second_a = [n for n, t in enumerate(path.read_text().splitlines(), 1) if "id: a" in t][1]
    assert [(p.line, p.step, p.field) for p in problems] == [
        (line_of(path, "5 minutes"), "a", "timeout"),
        (line_of(path, "depend_on"), "b", "depend_on"),
        (line_of(path, "[zz]"), "c", "depends_on"),
        (second_a, "a", "id"),
    ]
    assert all(p.hint for p in problems)
    with pytest.raises(DefinitionError) as info:
        load_workflow(path)
    text = str(info.value)
    for p in problems:
        assert f"{path}:{p.line}:" in text


def test_semantic_errors_are_reported_alongside_field_errors(tmp_path: Path) -> None:
    """A type error in one step does not hide a cycle and a bad template elsewhere."""
    path = write(
        tmp_path,
        """
        name: w
        steps:
          - {id: a, agent: x, depends_on: [b], optional: maybe}
          - {id: b, agent: x, depends_on: [a]}
          - {id: c, agent: x, input: "${{ steps.nope.output }}"}
        """,
    )
    messages = [p.message for p in problems_of(path)]
    assert len(messages) == 3
    assert any("'maybe'" in m for m in messages)
    assert any("a -> b -> a" in m for m in messages)
    assert any("'nope'" in m for m in messages)


# --- run input ---------------------------------------------------------------


def test_check_input_lists_every_violation() -> None:
    """check_input raises one InputError naming every way the input misfits."""
    workflow = workflow_from_dict({
        "name": "w",
        "input_schema": {
            "type": "object",
            "required": ["source", "quarter"],
            "properties": {
                "quarter": {"type": "integer", "minimum": 1, "maximum": 4},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
        },
        "steps": [{"id": "a", "agent": "x"}],
    })
    with pytest.raises(InputError) as info:
        check_input(workflow, {"tags": ["ok", 5]})
    text = str(info.value)
    assert "'source' is a required property" in text
    assert "'quarter' is a required property" in text
    assert "input.tags[1]: 5 is not of type 'string'" in text
    assert "fix:" in text
    with pytest.raises(InputError, match=r"input\.quarter: 9 is greater than the maximum of 4"):
        check_input(workflow, {"source": "s", "quarter": 9})
    check_input(workflow, {"source": "s", "quarter": 2, "tags": ["a"]})


def test_each_workflow_is_checked_against_its_own_schema() -> None:
    """Validators are kept per workflow between runs: one workflow's never judges another's
    input, even when the first is gone and the second takes its place in memory."""
    for n in range(50):
        wf = workflow_from_dict({"name": f"w{n}", "steps": [{"id": "a", "agent": "x"}],
                                 "input_schema": {"type": "object", "required": [f"k{n}"]}})
        check_input(wf, {f"k{n}": 1})
        check_input(wf, {f"k{n}": 2})  # the kept validator
        with pytest.raises(InputError, match=f"'k{n}' is a required property"):
            check_input(wf, {f"k{n + 1}": 1})
        del wf


def test_check_input_without_schema_accepts_anything() -> None:
    """No input_schema means any input is accepted."""
    workflow = workflow_from_dict({"name": "w", "steps": [{"id": "a", "agent": "x"}]})
    check_input(workflow, None)
    check_input(workflow, [1, "two"])


# --- models ------------------------------------------------------------------


def test_python_workflow_equals_the_loaded_yaml(tmp_path: Path) -> None:
    """A workflow built in Python is the same model as the equivalent YAML file."""
    path = write(
        tmp_path,
        """
        name: report
        version: 2
        mode: dag
        timeout: 30m
        defaults:
          timeout: 60s
          retry: {max_attempts: 3, initial_delay: 250ms, jitter: equal, retry_on: [timeout]}
        input_schema: {type: object, required: [source]}
        steps:
          - id: collect
            agent: data-collection
            input: {source: "${{ input.source }}"}
          - id: process
            agent: "@processor-1"
            depends_on: [collect]
            retry: [{max_attempts: 5, delays: [1s, 5s]}]
            compensate: {agent: data-processing, input: {undo: "${{ steps.process.output }}"}}
            optional: true
        output: "${{ steps.process.output }}"
        """,
    )
    built = Workflow(
        name="report",
        version=2,
        mode="dag",
        timeout=1800,
        defaults=Defaults(
            timeout=60,
            retry=RetryPolicy(max_attempts=3, initial_delay=0.25, jitter="equal",
                              retry_on=["timeout"]),
        ),
        input_schema={"type": "object", "required": ["source"]},
        steps=[
            Step(id="collect", agent="data-collection", input={"source": "${{ input.source }}"}),
            Step(
                id="process",
                agent="@processor-1",
                depends_on=["collect"],
                retry=[RetryPolicy(max_attempts=5, delays=["1s", "5s"])],
                compensate=Compensation(
                    agent="data-processing", input={"undo": "${{ steps.process.output }}"}
                ),
                optional=True,
            ),
        ],
        output="${{ steps.process.output }}",
    )
    loaded = load_workflow(path)
    assert built.model_dump() == loaded.model_dump()
    assert built.to_dict() == loaded.to_dict()
    assert built == loaded


def test_python_workflow_is_validated_like_a_file() -> None:
    """Building a bad workflow in Python raises the same DefinitionError problems."""
    with pytest.raises(DefinitionError) as info:
        Workflow(name="w", steps=[Step(id="a", agent="x", depends_on=["a"])])
    assert [p.message for p in info.value.problems] == ["step 'a' depends on itself"]


def test_models_are_frozen() -> None:
    """A validated definition cannot be changed in place (a run keeps what it started)."""
    workflow = workflow_from_dict({"name": "w", "steps": [{"id": "a", "agent": "x"}]})
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        workflow.name = "other"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        workflow.steps[0].agent = "y"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        RetryPolicy().max_attempts = 9  # type: ignore[misc]


def test_to_dict_round_trips() -> None:
    """The stored snapshot (to_dict) validates back into an equal workflow."""
    workflow = workflow_from_dict({
        "name": "w", "timeout": "5m",
        "steps": [{"id": "a", "agent": "x", "retry": {"initial_delay": "250ms"}}],
    })
    snapshot = workflow.to_dict()
    assert snapshot["timeout"] == 300.0
    assert workflow_from_dict(json.loads(json.dumps(snapshot))) == workflow


def test_steps_setting_the_same_keys_share_one_fields_set_and_stay_what_they_were() -> None:
    """A validated workflow's steps that set the same keys share one set of them (one per
    step was 22 MB of a 100,000-step workflow); each still reports its own keys, a copy
    with more keys gets a set of its own, and dumps without unset keys are unchanged."""
    steps = [Step(id="a", agent="x")] + [
        Step(id=f"b{i}", agent="x", depends_on=["a"]) for i in range(3)]
    wf = Workflow(name="w", steps=[*steps, Step(id="c", agent="x", depends_on=["b0"],
                                                 optional=True)])
    a, b0, b1, b2, c = wf.steps
    assert b0.model_fields_set is b1.model_fields_set is b2.model_fields_set
    assert b0.model_fields_set == {"id", "agent", "depends_on"}
    assert a.model_fields_set == {"id", "agent"}
    assert c.model_fields_set == {"id", "agent", "depends_on", "optional"}
    more = b1.model_copy(update={"optional": True})
    assert more.model_fields_set == {"id", "agent", "depends_on", "optional"}
    assert b0.model_fields_set == {"id", "agent", "depends_on"}
    assert wf.to_dict()["steps"][1:3] == [{"id": "b0", "agent": "x", "depends_on": ["a"]},
                                          {"id": "b1", "agent": "x", "depends_on": ["a"]}]
    assert workflow_from_dict(wf.to_dict()) == wf


def test_a_big_workflows_steps_are_compact_and_read_as_they_were_given() -> None:
    """Past a few hundred steps each step's field values move to a dict that shares its
    keys with the others' (a third of the size): every field reads the same, dumps and
    equality are unchanged, and copies and the workflow's own dict round-trip."""
    import sys

    def build() -> Workflow:
        return Workflow(name="w", steps=[Step(id="a", agent="x", timeout=5),
                                         *(Step(id=f"b{i}", agent="x", depends_on=["a"],
                                                input={"i": i}) for i in range(500))])

    wf, twin = build(), build()
    b7 = wf.steps[8]
    assert (b7.id, b7.agent, b7.depends_on, b7.input, b7.timeout) == ("b7", "x", ["a"],
                                                                      {"i": 7}, None)
    assert wf.steps[0].timeout == 5
    assert b7.model_dump(exclude_unset=True) == {"id": "b7", "agent": "x",
                                                 "depends_on": ["a"], "input": {"i": 7}}
    assert wf == twin
    assert b7 != wf.steps[9]
    assert b7.model_copy(update={"agent": "y"}).agent == "y"
    assert b7.agent == "x"
    assert workflow_from_dict(wf.to_dict()) == wf
    with pytest.raises(pydantic.ValidationError):
        b7.agent = "y"  # type: ignore[misc]  # frozen, as before
    if sys.implementation.name == "cpython":
        plain = Step(id="b7", agent="x", depends_on=["a"], input={"i": 7})
        assert sys.getsizeof(b7.__dict__) < sys.getsizeof(plain.__dict__) / 2
