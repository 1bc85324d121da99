"""``${{ path }}`` templates: pure data lookup, never evaluation."""

from __future__ import annotations

from typing import Any

import pytest

from podium.definition.templates import (
    Scope,
    TemplateError,
    TemplateLookupError,
    compile_template,
    parse_path,
)


def scope(**outputs: Any) -> Scope:
    return Scope(
        input={
            "source": "s3://bucket",
            "rows": [{"n": 1}, {"n": 2}],
            "tags": ["a", "b"],
            "count": 3,
            "flag": False,
            "nothing": None,
            "with space": "yes",
            "0": "zero-key",
        },
        outputs=outputs,
        run_id="run-123",
        workflow_name="quarterly-report",
        workflow_version=3,
    )


def resolve(value: Any, sc: Scope | None = None) -> Any:
    return compile_template(value).resolve(sc or scope())


# --- whole values keep their JSON type -------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${{ input.tags }}", ["a", "b"]),
        ("${{ input.rows }}", [{"n": 1}, {"n": 2}]),
        ("${{ input.count }}", 3),
        ("${{ input.flag }}", False),
        ("${{ input.nothing }}", None),
        ("${{input.source}}", "s3://bucket"),
        ("  ${{ input.count }}  ", 3),
    ],
)
def test_whole_value_template_keeps_the_json_type(template: str, expected: Any) -> None:
    """A string that is exactly one template becomes the value itself: a list stays
    a list, a number a number, false stays false (not the text "false")."""
    result = resolve(template)
    assert result == expected
    assert type(result) is type(expected)


def test_bare_input_is_the_whole_run_input() -> None:
    """``${{ input }}`` with no key is the whole input object."""
    sc = scope()
    assert resolve("${{ input }}", sc) == sc.input


# --- interpolation ---------------------------------------------------------


def test_template_inside_longer_string_is_interpolated_as_text() -> None:
    """Inside a longer string, strings are inserted as is and other values as JSON."""
    text = "from ${{ input.source }}: ${{ input.count }} rows, tags=${{ input.tags }}"
    assert resolve(text) == 'from s3://bucket: 3 rows, tags=["a", "b"]'


def test_two_adjacent_templates_are_interpolated_not_taken_as_one() -> None:
    """``${{ a }}${{ b }}`` is two templates joined as text, not one odd path."""
    assert resolve("${{ input.count }}${{ input.source }}") == "3s3://bucket"


def test_null_interpolates_as_json_null() -> None:
    """A null inside a string reads ``null`` (its JSON text), never ``None``."""
    assert resolve("value=${{ input.nothing }}") == "value=null"


def test_strings_without_templates_are_constant() -> None:
    """A value without ``${{`` is returned unchanged and marked constant."""
    compiled = compile_template({"a": ["x", 1, None], "b": "plain } {{ text"})
    assert compiled.constant
    assert compiled.refs == ()
    assert compiled.resolve(scope()) == {"a": ["x", 1, None], "b": "plain } {{ text"}


# --- nested structures -----------------------------------------------------


def test_templates_are_resolved_in_nested_dicts_and_lists() -> None:
    """Templates anywhere in nested dicts and lists are resolved; other values and
    the keys themselves are kept."""
    value = {
        "source": "${{ input.source }}",
        "batch": {"rows": "${{ input.rows }}", "label": "n=${{ input.count }}"},
        "list": ["${{ input.tags[1] }}", 7, {"deep": ["${{ run.id }}"]}],
        "${{ input.count }}": "keys are not templates",
    }
    assert resolve(value) == {
        "source": "s3://bucket",
        "batch": {"rows": [{"n": 1}, {"n": 2}], "label": "n=3"},
        "list": ["b", 7, {"deep": ["run-123"]}],
        "${{ input.count }}": "keys are not templates",
    }


def test_compiled_template_lists_every_ref() -> None:
    """The compiled value records every path it reads (the validator relies on it)."""
    compiled = compile_template(
        {"a": "${{ steps.x.output }}", "b": ["${{ input.k }} ${{ run.id }}"]}
    )
    assert not compiled.constant
    assert sorted(r.text for r in compiled.refs) == ["input.k", "run.id", "steps.x.output"]
    assert {r.step for r in compiled.refs} == {"x", None}


def test_resolve_walks_fresh_scopes() -> None:
    """One compiled template resolves against each run's own scope."""
    compiled = compile_template({"v": "${{ steps.a.output.v }}"})
    assert compiled.resolve(scope(a={"v": 1})) == {"v": 1}
    assert compiled.resolve(scope(a={"v": 2})) == {"v": 2}


def test_a_mapping_of_whole_paths_resolves_as_one_entry_at_a_time_would() -> None:
    """A fan-in's input (every value one whole ``${{ path }}``) is compiled as one
    function over its pairs: each value keeps its JSON type, a failed optional
    input reads as null, a bad path is still an error, and the refs are all listed."""
    value = {"a": "${{ steps.a.output }}", "b": " ${{ steps.b.output.v }} ",
             "n": "${{ input.count }}", "gone": "${{ steps.gone.output.x }}", "r": "${{ run.id }}"}
    compiled = compile_template(value)
    assert sorted(r.text for r in compiled.refs) == [
        "input.count", "run.id", "steps.a.output", "steps.b.output.v", "steps.gone.output.x"]
    assert compiled.resolve(scope(a=[1, "x"], b={"v": False}, gone=None)) == {
        "a": [1, "x"], "b": False, "n": 3, "gone": None, "r": "run-123"}
    with pytest.raises(TemplateLookupError, match=r"steps\.b\.output\.v"):
        compiled.resolve(scope(a=1, b={}, gone=None))
    mixed = {**value, "text": "at ${{ run.id }}"}  # not all whole paths: entry by entry
    assert compile_template(mixed).resolve(scope(a=1, b={"v": 2}))["text"] == "at run-123"
    with pytest.raises(TemplateError):
        compile_template({"a": "${{ steps.a.output }}", "b": "${{ nowhere }}"})


# --- paths -----------------------------------------------------------------


def test_step_output_paths() -> None:
    """``steps.<id>.output`` is the whole output; further keys walk into it."""
    sc = scope(collect={"rows": [10, 20], "meta": {"n": 2}}, **{"data-collection": "text"})
    assert resolve("${{ steps.collect.output }}", sc) == {"rows": [10, 20], "meta": {"n": 2}}
    assert resolve("${{ steps.collect.output.meta.n }}", sc) == 2
    assert resolve("${{ steps.data-collection.output }}", sc) == "text"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${{ steps.collect.output.rows[0] }}", 10),
        ("${{ steps.collect.output.rows.1 }}", 20),
        ("${{ input.rows[1].n }}", 2),
        ("${{ input.rows.0.n }}", 1),
        ('${{ input["with space"] }}', "yes"),
        ("${{ input['with space'] }}", "yes"),
        ("${{ input.0 }}", "zero-key"),
    ],
)
def test_list_indexes_and_quoted_keys(template: str, expected: Any) -> None:
    """``rows[0]`` and ``rows.0`` both index a list; ``.0`` on a mapping reads the
    key "0"; ``["key"]`` reads keys that are not identifiers."""
    sc = scope(collect={"rows": [10, 20]})
    assert resolve(template, sc) == expected


def test_step_ids_starting_with_a_digit_can_be_read() -> None:
    """A step id may start with a digit (``id: "1"``), so ``steps.1.output`` names
    step "1", not index 1 of a list."""
    sc = scope(**{"1": {"v": "one"}, "2nd": [5]})
    assert resolve("${{ steps.1.output.v }}", sc) == "one"
    assert resolve("${{ steps.2nd.output[0] }}", sc) == 5


def test_run_and_workflow_paths() -> None:
    """``run.id``, ``workflow.name`` and ``workflow.version`` read the run's metadata."""
    assert resolve("${{ run.id }}") == "run-123"
    assert resolve("${{ workflow.name }}") == "quarterly-report"
    assert resolve("${{ workflow.version }}") == 3
    assert resolve("${{ workflow.name }} v${{ workflow.version }}") == "quarterly-report v3"


# --- null and missing data ------------------------------------------------


def test_lookup_into_null_output_gives_none() -> None:
    """An optional upstream that failed has a null output; reading any path below
    it gives None instead of failing the dependent step."""
    sc = scope(enrich=None)
    assert resolve("${{ steps.enrich.output.a.b[3] }}", sc) is None
    assert resolve({"x": "${{ steps.enrich.output.rows }}"}, sc) == {"x": None}


def test_lookup_into_step_without_output_gives_none() -> None:
    """A step with no recorded output (skipped) reads as null too."""
    assert resolve("${{ steps.skipped.output.rows }}", scope()) is None


@pytest.mark.parametrize(
    ("template", "named"),
    [
        ("${{ input.missing }}", "'missing'"),
        ("${{ input.rows[5] }}", "5"),
        ("${{ input.tags.x }}", "'x'"),
        ("${{ steps.a.output.nope }}", "'nope'"),
        ("${{ input.source.len }}", "'len'"),
        ("${{ input.count.real }}", "'real'"),
    ],
)
def test_missing_key_raises_lookup_error_naming_the_path(template: str, named: str) -> None:
    """A key or index the data does not have raises TemplateLookupError naming the
    template's path and the missing key (never KeyError/AttributeError)."""
    with pytest.raises(TemplateLookupError) as info:
        resolve(template, scope(a={"v": 1}))
    message = str(info.value)
    assert template.strip("${} ") in message
    assert named in message


def test_lookup_never_reads_attributes() -> None:
    """Paths read keys of mappings and indexes of lists only: an object's attributes
    and dunder names are not reachable, so nothing can be called or evaluated."""

    class Secret:
        password = "hunter2"  # noqa: S105 - the point is that it stays unreadable

    sc = scope(a=Secret())
    with pytest.raises(TemplateLookupError, match="cannot read 'password'"):
        resolve("${{ steps.a.output.password }}", sc)
    with pytest.raises(TemplateLookupError):
        resolve("${{ input.__class__ }}", sc)


# --- what is not a path ---------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "${{ 1+1 }}",
        "${{ __import__('os') }}",
        "${{ __import__('os').system('touch /tmp/pwned') }}",
        "${{ input.a + 1 }}",
        "${{ input.a() }}",
        "${{ input.a if True else 0 }}",
        "${{ 'text' }}",
        "${{ .input }}",
        "${{ input..a }}",
        "${{ input[-1] }}",
    ],
)
def test_expressions_are_rejected_not_evaluated(template: str) -> None:
    """Anything that is not a plain data path is a TemplateError quoting it, with a
    hint; nothing is evaluated."""
    with pytest.raises(TemplateError) as info:
        compile_template(template)
    assert template.replace("${{", "").replace("}}", "").strip() in str(info.value)
    assert info.value.hint


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("${{ steps.a }}", "must read a step's output"),
        ("${{ steps.a.outputs }}", "must read a step's output"),
        ("${{ steps }}", "must read a step's output"),
        ("${{ env.HOME }}", "not a known path"),
        ("${{ run }}", "not a known path"),
        ("${{ run.owner }}", "not a known path"),
        ("${{ workflow.name.x }}", "not a known path"),
        ("${{ workflow }}", "not a known path"),
        ("${{ os.environ }}", "not a known path"),
    ],
)
def test_unknown_roots_and_incomplete_paths_are_rejected(template: str, why: str) -> None:
    """Only input.*, steps.<id>.output.*, run.id and workflow.name/version exist."""
    with pytest.raises(TemplateError, match=why) as info:
        compile_template(template)
    assert info.value.hint


def test_empty_and_unclosed_templates_are_rejected() -> None:
    """``${{ }}`` and a ``${{`` never closed are errors, not literal text."""
    with pytest.raises(TemplateError, match="empty template"):
        compile_template("${{ }}")
    with pytest.raises(TemplateError, match="unclosed"):
        compile_template("total: ${{ input.count")
    with pytest.raises(TemplateError, match="unclosed"):
        compile_template("${{ input.count }} and ${{ input.rows")


def test_bad_template_deep_inside_a_value_is_found() -> None:
    """A non-path nested in a list inside a dict is still rejected at compile time."""
    with pytest.raises(TemplateError, match="1\\+1"):
        compile_template({"a": [{"b": "ok ${{ input.x }}"}, {"c": "${{ 1+1 }}"}]})


def test_parse_path_splits_segments() -> None:
    """The parsed reference carries root, step and the keys/indexes after it."""
    ref = parse_path(" steps.collect.output.rows[2].name ")
    assert (ref.root, ref.step, ref.path) == ("steps", "collect", ("rows", 2, "name"))
    ref = parse_path("input.a.0")
    assert (ref.root, ref.step, ref.path) == ("input", None, ("a", 0))



@pytest.mark.parametrize(("text", "step", "path"), [
    ("steps.a.output", "a", ()), (" steps.2.output ", "2", ()), ("steps.a-b_c.output", "a-b_c", ()),
    ("steps.a.output.x", "a", ("x",)), ("steps.a.output[0]", "a", (0,)),
])
def test_step_output_paths_whether_read_the_short_way_or_not(
        text: str, step: str, path: tuple[str | int, ...]) -> None:
    ref = parse_path(text)
    assert (ref.root, ref.step, ref.path, ref.text) == ("steps", step, path, text.strip())
    assert parse_path(text) is ref  # cached: a Ref is immutable


def test_a_path_that_only_starts_like_a_step_output_is_refused() -> None:
    with pytest.raises(TemplateError, match="must read a step's output"):
        parse_path("steps.a.outputs")
