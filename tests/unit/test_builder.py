"""Workflows written in Python (``podium.Flow``, ``@podium.define``) are the same models as files.

Each test says what it proves: references become the templates a file would
hold, a dag step depends on what it reads, fields the builder does not know
reach the model untouched, problems name the step, the field and the Python
line that declared it, and what is exported loads back as the same model.
"""

from __future__ import annotations

import json
from typing import Any, TypedDict

import pytest
import yaml

import podium
from podium import DefinitionError, Flow, Workflow, agent, define, load_workflow
from podium.definition import Ref, export_text, workflow_from_dict
from tests.conftest import run_workflow

HERE = __file__


def line_of(marker: str) -> int:
    """The line of this file that carries ``# <marker>`` (problems must point at it)."""
    with open(HERE, encoding="utf-8") as fh:
        for n, text in enumerate(fh, 1):
            if text.rstrip().endswith(f"# {marker}"):
                return n
    raise AssertionError(marker)


def problems_of(exc: pytest.ExceptionInfo[DefinitionError]) -> list[tuple[Any, ...]]:
    return [(p.step, p.field, p.line) for p in exc.value.problems]


# --- references --------------------------------------------------------------


def test_references_are_the_templates_a_file_would_hold() -> None:
    wf = Flow("refs")
    c = wf.step("collect", "data-collection")
    out: Any = c.output
    assert str(out) == "${{ steps.collect.output }}"
    assert str(out["rows"]) == "${{ steps.collect.output.rows }}"
    assert str(out.rows) == "${{ steps.collect.output.rows }}"
    assert str(out.rows[0]["unit-price"]) == "${{ steps.collect.output.rows[0].unit-price }}"
    assert str(out["a b"]) == "${{ steps.collect.output['a b'] }}"
    assert str(out["0"]) == "${{ steps.collect.output['0'] }}"
    assert str(wf.input.region) == "${{ input.region }}"
    assert str(wf.input["x"][2]) == "${{ input.x[2] }}"
    assert str(wf.run_id) == "${{ run.id }}"


def test_references_in_text_become_interpolated_templates() -> None:
    wf = Flow("text")
    c = wf.step("c", "x")
    out: Any = c.output
    assert f"n={out.n}!" == "n=${{ steps.c.output.n }}!"
    assert "rows: " + out.rows == "rows: ${{ steps.c.output.rows }}"
    assert out.a + "/" + wf.input.b == "${{ steps.c.output.a }}/${{ input.b }}"


def test_a_reference_cannot_be_used_as_a_value_while_defining() -> None:
    """``if ref:`` or ``for x in ref:`` would silently decide at definition time; they raise."""
    ref: Any = Flow("v").step("c", "x").output
    with pytest.raises(TypeError, match="future run"):
        bool(ref.ok)
    with pytest.raises(TypeError, match="cannot be iterated"):
        list(ref.rows)
    with pytest.raises(ValueError, match="quotes"):
        ref["it's"]
    with pytest.raises(ValueError, match="from the start"):
        ref[-1]
    with pytest.raises(AttributeError):
        ref._private  # noqa: B018 - private names stay attributes (copy, pickle probe them)
    assert isinstance(ref.rows, Ref)


def test_references_anywhere_in_the_input_are_written_as_templates() -> None:
    wf = Flow("nested")
    c = wf.step("c", "x")
    d = wf.step("d", "y", input={"a": [c.output["k"], {"b": (1, c.output)}], "n": None})
    step = wf.build().step(d.id)
    assert step.input == {"a": ["${{ steps.c.output.k }}",
                                {"b": [1, "${{ steps.c.output }}"]}], "n": None}


# --- depends_on --------------------------------------------------------------


def test_a_dag_step_depends_on_what_it_reads_and_on_after() -> None:
    wf = Flow("deps")
    a = wf.step("a", "x", input={"src": wf.input.src})
    b = wf.step("b", "x", input={"rows": a.output.rows})
    c = wf.step("c", "x", after=[b])
    d = wf.step("d", "x", input=f"{b.output.n} and {a.output.m}", after=["c"])
    e = wf.step("e", "x", input="${{ steps.a.output }}")  # a template written by hand counts
    model = wf.build()
    assert model.step(a.id).depends_on == []
    assert model.step(b.id).depends_on == ["a"]
    assert model.step(c.id).depends_on == ["b"]
    assert model.step(d.id).depends_on == ["c", "b", "a"]
    assert model.step(e.id).depends_on == ["a"]


def test_a_compensation_depends_on_what_it_reads_except_its_own_step() -> None:
    wf = Flow("undo")
    p = wf.step("p", "x")
    wf.step("p2", "x", compensate={"agent": "x", "input": {"undo": p.output.batch}})
    q = wf.step("q", "x", compensate={"agent": "x", "input": {"undo": "${{ steps.q.output }}"}})
    model = wf.build()
    assert model.step("p2").depends_on == ["p"]
    assert model.step(q.id).depends_on == []
    assert model.step(q.id).compensate is not None


def test_sequential_steps_get_no_inferred_dependencies() -> None:
    wf = Flow("seq", mode="sequential")
    a = wf.step("a", "x")
    wf.step("b", "x", input=a.output)
    assert wf.to_dict()["steps"][1] == {"id": "b", "agent": "x",
                                        "input": "${{ steps.a.output }}"}
    assert wf.build().mode == "sequential"


def test_after_in_a_sequential_flow_is_reported_on_the_steps_line() -> None:
    wf = Flow("seq", mode="sequential")
    a = wf.step("a", "x")
    wf.step("b", "x", after=[a])  # after-in-sequential
    with pytest.raises(DefinitionError, match="only used in mode dag") as exc:
        wf.build()
    assert problems_of(exc) == [("b", "depends_on", line_of("after-in-sequential"))]


# --- fields ------------------------------------------------------------------


def test_step_and_workflow_fields_pass_through_unchanged() -> None:
    """Any Step or Workflow field works without the builder naming it (new ones too)."""
    wf = Flow("fields", version="2024.1", timeout="30m", sla="10m", max_parallel=4,
              on_failure="compensate", defaults={"timeout": "5s"}, queue="reports",
              input_schema={"type": "object"})
    wf.step("a", "@collector-1", description="first", retry={"max_attempts": 3},
            timeout="1.5s", deadline="1m", acquire_timeout=0, strategy="round_robin",
            optional=True, compensate={"agent": "undo", "input": {"x": 1}})
    model = wf.build()
    assert (model.version, model.timeout, model.sla, model.max_parallel, model.on_failure,
            model.queue) == ("2024.1", 1800, 600, 4, "compensate", "reports")
    step = model.step("a")
    assert step.agent == "@collector-1"
    assert isinstance(step.retry, podium.RetryPolicy)
    assert step.retry.max_attempts == 3
    assert (step.timeout, step.deadline, step.acquire_timeout, step.strategy, step.optional) == (
        1.5, 60, 0, "round_robin", True)


def test_input_left_out_stays_unset_as_in_a_file() -> None:
    """No ``input`` means the mode's default input, not ``input: null``."""
    wf = Flow("defaults")
    wf.step("a", "x")
    wf.step("b", "x", input=None)
    steps = wf.build().to_dict()["steps"]
    assert "input" not in steps[0]
    assert steps[1]["input"] is None


def test_the_built_model_equals_the_same_workflow_written_as_yaml(tmp_path: Any) -> None:
    text = """
name: quarterly-report
version: 3
mode: dag
on_failure: compensate
defaults:
  timeout: 60s
  retry: {max_attempts: 3, initial_delay: 1s, backoff: 2.0, max_delay: 30s, jitter: full}
steps:
  - id: collect
    agent: data-collection
    input: {source: "${{ input.source }}"}
  - id: process
    agent: data-processing
    depends_on: [collect]
    input: {rows: "${{ steps.collect.output.rows }}"}
    compensate: {agent: data-processing, input: {undo: "${{ steps.process.output.batch }}"}}
  - id: report
    agent: report-generation
    depends_on: [process]
output: "${{ steps.report.output }}"
"""
    path = tmp_path / "report.yaml"
    path.write_text(text)
    wf = Flow("quarterly-report", version=3, on_failure="compensate",
              defaults={"timeout": "60s",
                        "retry": {"max_attempts": 3, "initial_delay": "1s", "backoff": 2.0,
                                  "max_delay": "30s", "jitter": "full"}})
    collect = wf.step("collect", "data-collection", input={"source": wf.input.source})
    # A step's compensation reads the step's own output: no handle yet, so output_of.
    process = wf.step("process", "data-processing", input={"rows": collect.output["rows"]},
                      compensate={"agent": "data-processing",
                                  "input": {"undo": wf.output_of("process").batch}})
    report = wf.step("report", "report-generation", after=[process])
    wf.output = report.output
    assert wf.build() == load_workflow(path)
    assert wf.build().to_dict() == load_workflow(path).to_dict()


# --- problems ----------------------------------------------------------------


def test_every_problem_names_the_step_the_field_and_the_declaring_line() -> None:
    wf = Flow("problems")
    wf.step("a", "data-collection", retyr={"max_attempts": 2})  # line-a
    wf.step("b", "bad agent!", timeout="soon")  # line-b
    wf.step("a", "x", input="${{ steps.nope.output }}")  # line-a2
    with pytest.raises(DefinitionError) as exc:
        wf.build()
    got = sorted(problems_of(exc))
    assert got == sorted([
        ("a", "retyr", line_of("line-a")),
        ("b", "agent", line_of("line-b")),
        ("b", "timeout", line_of("line-b")),
        ("a", "id", line_of("line-a2")),
        ("a", "input", line_of("line-a2")),
    ])
    assert all((p.file or "").endswith("test_builder.py") for p in exc.value.problems)
    text = str(exc.value)
    assert f"test_builder.py:{line_of('line-a')}: step 'a': retyr: unknown key 'retyr'" in text
    assert "did you mean 'retry'?" in text


def test_workflow_wide_problems_point_at_the_flow() -> None:
    wf = Flow("Not Valid", mode="dag", max_parallel=0)  # flow-line
    wf.step("a", "x")
    with pytest.raises(DefinitionError) as exc:
        wf.build()
    assert sorted(problems_of(exc)) == [(None, "max_parallel", line_of("flow-line")),
                                        (None, "name", line_of("flow-line"))]


def test_steps_are_not_a_flow_keyword() -> None:
    with pytest.raises(DefinitionError, match="added one by one"):
        Flow("s", steps=[{"id": "a", "agent": "x"}])


def test_a_dependency_cycle_is_reported() -> None:
    wf = Flow("cycle")
    wf.step("a", "x", input="${{ steps.b.output }}")
    wf.step("b", "x", input="${{ steps.a.output }}")
    with pytest.raises(DefinitionError, match="cycle"):
        wf.build()


def test_what_is_not_data_is_refused_where_it_is_written() -> None:
    wf = Flow("not-data")
    a = wf.step("a", "x")
    with pytest.raises(DefinitionError, match=r"write a\.output") as exc:
        wf.step("b", "x", input={"rows": a})  # handle-as-data
    assert problems_of(exc) == [("b", "input", line_of("handle-as-data"))]
    with pytest.raises(DefinitionError, match="set is not JSON data"):
        wf.step("c", "x", input={1, 2})
    with pytest.raises(DefinitionError, match="is not a step"):
        wf.step("d", "x", after=[3])  # type: ignore[list-item]
    with pytest.raises(DefinitionError, match="not text"):
        wf.output = {1: "x"}


def test_a_plain_function_is_not_an_agent() -> None:
    def collect(task: Any) -> dict[str, Any]:
        return {}

    with pytest.raises(DefinitionError, match="not registered as an agent") as exc:
        Flow("fn").step("a", collect)  # plain-function
    assert problems_of(exc) == [("a", "agent", line_of("plain-function"))]


# --- agents given as functions ---------------------------------------------


class Collected(TypedDict):
    rows: list[int]
    source: str


@agent("builder-test-collect", id="builder-test-collector")
async def collect_rows(task: podium.Task) -> Collected:
    return {"rows": [1, 2, 3], "source": task.input["source"]}


@agent("builder-test-a", "builder-test-b", id="builder-test-two")
def two_caps(task: podium.Task) -> int:
    return 1


def test_an_agent_function_stands_for_its_capability() -> None:
    wf = Flow("fn-agent")
    c = wf.step("collect", collect_rows, input={"source": "s"})
    assert wf.build().step("collect").agent == "builder-test-collect"
    rows = c.output["rows"]  # typed list[int] for a type checker, a Ref here
    assert str(rows) == "${{ steps.collect.output.rows }}"
    with pytest.raises(DefinitionError, match="2 capabilities"):
        wf.step("two", two_caps)


async def test_a_built_flow_runs_in_the_engine_with_typed_outputs() -> None:
    wf = Flow("fn-run")
    c = wf.step("collect", collect_rows, input={"source": wf.input.source})
    s = wf.step("sum", "sum",
                input={"rows": c.output["rows"], "label": f"from {c.output['source']}"})
    wf.output = {"total": s.output, "n": c.output["rows"][2]}

    async def add(task: Any) -> Any:
        return f"{sum(task.input['rows'])} {task.input['label']}"

    run = await run_workflow(wf.build(), {"source": "csv"}, sum=add,
                             **{"builder-test-collect": collect_rows})
    assert run.status == "succeeded", run.error
    assert run.output == {"total": "6 from csv", "n": 3}


# --- define ------------------------------------------------------------------


@define("decorated", description="built when the module is imported")
def decorated(wf: Flow) -> Any:
    a = wf.step("a", "echo", input={"v": wf.input.v})
    b = wf.step("b", "echo", input={"v": a.output})
    return {"last": b.output}


async def test_define_binds_a_validated_model_the_engine_runs_as_it_is() -> None:
    assert isinstance(decorated, Workflow)
    assert decorated.output == {"last": "${{ steps.b.output }}"}
    assert decorated.step("b").depends_on == ["a"]

    async def echo(task: Any) -> Any:
        return task.input["v"]

    run = await run_workflow(decorated, {"v": 7}, echo=echo)
    assert run.status == "succeeded"
    assert run.output == {"last": 7}


def test_define_reports_problems_with_their_lines_when_it_runs() -> None:
    with pytest.raises(DefinitionError) as exc:

        @define("broken")
        def broken(wf: Flow) -> None:
            wf.step("a", "x", timeout=-1)  # define-line

    assert problems_of(exc) == [("a", "timeout", line_of("define-line"))]


# --- build and export ---------------------------------------------------------


def test_build_is_kept_until_the_flow_changes() -> None:
    wf = Flow("kept")
    a = wf.step("a", "x")
    first = wf.build()
    assert wf.build() is first
    wf.output = a.output
    second = wf.build()
    assert second is not first
    assert second.output == "${{ steps.a.output }}"


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_export_loads_back_as_the_same_model(fmt: str) -> None:
    wf = Flow("export-me", version=2, timeout="90s", description="ünïcode",
              defaults={"retry": {"max_attempts": 2, "initial_delay": "250ms"}})
    a = wf.step("a", "x", input={"q": f"'{wf.input.q}' #1", "list": [wf.input.n, 1.5, True]})
    b = wf.step("b", "y", input=a.output["k-1"], retry=[{"retry_on": ["timeout"]}])
    wf.output = {"b": b.output, "text": "a: ${{ steps.a.output }}"}
    model = wf.build()
    text = export_text(model, "json" if fmt == "json" else "yaml")
    data = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    again = workflow_from_dict(data)
    assert again == model
    assert again.to_dict() == model.to_dict()
    assert wf.to_yaml() == export_text(model)


# --- map, when, sub-workflows, any_of (fields added to Step by others) -------


async def test_map_runs_once_per_item_with_the_item_typed_from_over() -> None:
    wf = Flow("mapped")
    split = wf.step("split", "split", input=wf.input.text)
    lengths = wf.map("length", "length", over=split.output["words"], max_concurrency=2,
                     input=lambda word: {"word": word, "at": wf.item_index})
    wf.output = lengths.output
    step = wf.build().step("length")
    assert step.for_each == "${{ steps.split.output.words }}"
    assert step.input == {"word": "${{ item }}", "at": "${{ item_index }}"}
    assert step.depends_on == ["split"]

    async def split_words(task: Any) -> Any:
        return {"words": task.input.split()}

    async def length(task: Any) -> Any:
        return [task.input["at"], len(task.input["word"])]

    run = await run_workflow(wf.build(), {"text": "a bb ccc"}, split=split_words,
                             length=length)
    assert run.status == "succeeded", run.error
    assert run.output == [[0, 1], [1, 2], [2, 3]]


def test_map_over_must_be_a_reference() -> None:
    with pytest.raises(DefinitionError, match="over= must be a reference") as exc:
        Flow("m").map("m", "x", over=[1, 2])  # map-over
    assert problems_of(exc) == [("m", "for_each", line_of("map-over"))]


async def test_when_takes_references_as_cel_paths_and_depends_on_what_it_reads() -> None:
    wf = Flow("routed")
    kind = wf.step("classify-doc", "classify")
    invoice = wf.step("invoice", "handle", when=f"{kind.output.kind} == 'invoice'")
    other = wf.step("other", "handle", when=f"{kind.output['kind']} != 'invoice'")
    flag = wf.step("flagged", "handle", when=wf.input.flag)
    done = wf.step("done", "handle", depends_on={"any_of": [invoice.id, other.id]})
    model = wf.build()
    assert model.step(invoice.id).when == 'steps["classify-doc"].output.kind == \'invoice\''
    assert model.step(other.id).depends_on == ["classify-doc"]
    assert model.step(flag.id).when == "input.flag"
    assert model.step(done.id).depends_on == ["invoice", "other"]
    assert model.step(done.id).trigger == "one_success"

    async def classify(task: Any) -> Any:
        return {"kind": "invoice"}

    async def handle(task: Any) -> Any:
        return task.step_id

    run = await run_workflow(model, {"flag": False}, classify=classify, handle=handle)
    assert run.status == "succeeded", run.error
    assert {sid: s.status for sid, s in run.steps.items()} == {
        "classify-doc": "succeeded", "invoice": "succeeded", "other": "skipped",
        "flagged": "skipped", "done": "succeeded"}


def test_a_when_that_is_not_cel_is_reported_on_its_line() -> None:
    wf = Flow("bad-when")
    wf.step("a", "x", when="this is not ) cel")  # bad-when
    with pytest.raises(DefinitionError) as exc:
        wf.build()
    assert problems_of(exc) == [("a", "when", line_of("bad-when"))]


async def test_a_flow_called_as_a_sub_workflow_is_kept_under_workflows() -> None:
    child = Flow("child")
    child.output = child.step("double", "double", input=child.input.n).output
    wf = Flow("parent")
    call = wf.step("call", workflow=child, input={"n": wf.input.n})
    wf.output = call.output
    model = wf.build()
    assert model.step("call").workflow == "child"
    assert model.workflows["child"] == child.build()

    async def double(task: Any) -> Any:
        return task.input * 2

    run = await run_workflow(model, {"n": 21}, double=double)
    assert run.status == "succeeded", run.error
    assert run.output == 42
