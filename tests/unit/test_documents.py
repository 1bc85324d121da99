"""The limits every file and ``-i`` value is loaded under, at their edges.

The hostile corpus (tests/acceptance/test_hostile_inputs.py) shows that the
attacks are refused through the real CLI; these show where each limit sits
exactly, and that what legitimate files do (anchors, merge keys, big but
flat data, local ``$ref``) still loads as before.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from podium.definition import check_input, workflow_from_dict
from podium.definition.documents import (
    DEFAULT_MAX_FILE_BYTES,
    MAX_ALIAS_NODES,
    MAX_DEPTH,
    NotJSON,
    RefusedValue,
    max_file_bytes,
    parse_document,
    parse_json_value,
    read_text,
)
from podium.definition.input_schema import make_validator, schema_problems
from podium.definition.loader import load_workflow
from podium.errors import ConfigError, DefinitionError, InputError


def refused(text: str, source: str = "f.yaml") -> str:
    """The one problem loading ``text`` gives, rendered."""
    with pytest.raises(DefinitionError) as info:
        parse_document(text, source)
    assert len(info.value.problems) == 1
    return info.value.problems[0].render()


# --- depth -------------------------------------------------------------------------------


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize("source", ["f.yaml", "f.json"])
def test_64_levels_load_and_65_are_refused(source: str) -> None:
    data, _ = parse_document(nested(MAX_DEPTH), source)
    assert isinstance(data, list)
    assert "nested deeper than 64 levels" in refused(nested(MAX_DEPTH + 1), source)


def test_depth_counts_from_the_document_root_in_yaml_block_style() -> None:
    """Block mappings nest like flow lists: 64 levels in all, whatever the spelling."""
    text = "".join(f"{'  ' * i}k{i}:\n" for i in range(MAX_DEPTH)) + "  " * MAX_DEPTH + "x: 1\n"
    assert "nested deeper than 64 levels" in refused(text)
    data, _ = parse_document(
        "".join(f"{'  ' * i}k{i}:\n" for i in range(MAX_DEPTH - 1)) + "  " * 63 + "x: 1\n",
        "f.yaml")
    assert isinstance(data, dict)


def test_cli_values_have_the_same_depth_limit() -> None:
    assert parse_json_value(nested(MAX_DEPTH)) == json.loads(nested(MAX_DEPTH))
    with pytest.raises(RefusedValue, match="nested deeper"):
        parse_json_value(nested(MAX_DEPTH + 1))
    with pytest.raises(RefusedValue, match="nested deeper"):
        parse_json_value("[" * 5000)  # not even JSON: the parser's recursion ends it first


# --- aliases -----------------------------------------------------------------------------


def aliased(times: int, size: int = 999) -> str:
    """A list of ``size`` scalars (``size + 1`` nodes) anchored once and aliased ``times``."""
    items = ", ".join(["x"] * size)
    return f"base: &b [{items}]\ncopies:\n" + "".join("  - *b\n" for _ in range(times))


def test_aliases_may_stand_for_100000_nodes_and_no_more() -> None:
    """Each alias counts the nodes it stands for: 100 copies of 1,000 nodes is the limit."""
    assert MAX_ALIAS_NODES == 100 * 1000
    data, _ = parse_document(aliased(100), "f.yaml")
    assert len(data["copies"]) == 100
    assert "aliases expand to more than 100,000 nodes" in refused(aliased(101))


def test_anchors_and_merge_keys_still_work_with_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(textwrap.dedent("""\
        name: shared
        x-retry: &retry {max_attempts: 3, initial_delay: 10ms}
        x-step: &step {agent: echo, retry: *retry}
        steps:
          - {<<: *step, id: a}
          - <<: *step
            id: b
            agent: other
            timeout: 5 parsecs
        """), encoding="utf-8")

    with pytest.raises(DefinitionError) as info:
        load_workflow(path)
    messages = {p.render() for p in info.value.problems}

    # The merge worked (b's own agent wins without being a duplicate); the bad
    # duration and the unknown x- keys are reported on their own lines.
    assert any(":9: step 'b': timeout:" in m for m in messages), messages
    assert any(":2: x-retry: unknown key 'x-retry'" in m for m in messages), messages
    assert not any("duplicate" in m for m in messages), messages


def test_a_recursive_alias_is_refused_where_it_is_anchored() -> None:
    assert "f.yaml:2: recursive alias" in refused("a: 1\nb: &b {c: [*b]}\n")


# --- duplicate keys ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "first"),
    [
        ("{agent: echo, agent: other}", 1, 1),
        ("a: 1\nb:\n  c: 2\n  'c': 3\n", 4, 3),  # quoting does not make another key
        ("<<: {a: 1}\n<<: {b: 2}\n", 2, 1),
    ],
)
def test_duplicate_yaml_keys_name_both_lines(text: str, line: int, first: int) -> None:
    assert f"f.yaml:{line}: duplicate key" in (msg := refused(text))
    assert f"(also on line {first})" in msg


@pytest.mark.parametrize("key", ["1", "on", "null", "2024-01-01", "1.5"])
def test_keys_that_are_not_strings_are_refused(key: str) -> None:
    """JSON keys are strings; YAML reads `1:` as a number and `on:` as a boolean."""
    assert f"f.yaml:2: the key '{key}' is not a string (fix: quote it: '{key}')" in refused(
        f"a: 1\n{key}: x\n")
    data, _ = parse_document(f"'{key}': x\n", "f.yaml")
    assert data == {key: "x"}


def test_duplicate_json_keys_name_both_lines_in_nested_objects() -> None:
    text = '{"steps": [\n  {"id": "a", "agent": "x"},\n  {"id": "b",\n   "id": "c"}\n]}'
    assert "f.json:4: duplicate key 'id' (also on line 3)" in refused(text, "f.json")


# --- numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [2**64 - 1, -(2**63), 10**19, 0, 1.5e308])
@pytest.mark.parametrize("source", ["f.yaml", "f.json"])
def test_numbers_within_64_bits_and_finite_load(value: int | float, source: str) -> None:
    data, _ = parse_document(f'{{"n": {value!r}}}', source)
    assert data == {"n": value}
    assert parse_json_value(repr(value)) == value


@pytest.mark.parametrize("text", [str(2**64), str(-(2**63) - 1), "9" * 4000, "9" * 5000])
@pytest.mark.parametrize("source", ["f.yaml", "f.json"])
def test_integers_beyond_64_bits_are_refused(text: str, source: str) -> None:
    assert "does not fit in 64 bits" in refused(f'{{"n": {text}}}', source)
    with pytest.raises(RefusedValue, match="64 bits"):
        parse_json_value(text)


def test_an_overflowing_float_is_refused_but_a_written_inf_is_left_to_the_field() -> None:
    assert "too large for a float" in refused("n: 1.0e+999\n")
    assert "too large for a float" in refused('{"n": 1e999}', "f.json")
    data, _ = parse_document("n: .inf\n", "f.yaml")
    assert data == {"n": float("inf")}


def test_nan_and_infinity_are_not_json() -> None:
    """``-i x=NaN`` stays the string 'NaN'; a JSON file with it is invalid JSON."""
    with pytest.raises(NotJSON):
        parse_json_value("NaN")
    assert "invalid JSON" in refused('{"n": Infinity}', "f.json")


# --- text --------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["f.yaml", "f.json"])
def test_escaped_lone_surrogates_are_refused_and_pairs_kept(source: str) -> None:
    # libyaml refuses the escape itself; JSON makes the string, which is then refused.
    assert ("lone surrogate" if source == "f.json" else "invalid Unicode") in refused(
        '{"a": ["\\ud800"]}', source)
    pair = "\\ud83d\\ude00" if source == "f.json" else "\\U0001F600"  # YAML has no pairs
    data, _ = parse_document(f'{{"a": "{pair}"}}', source)
    assert data == {"a": "\U0001f600"}
    with pytest.raises(RefusedValue, match="lone surrogate"):
        parse_json_value('{"\\udfff": 1}')


@pytest.mark.parametrize(
    "text", ["!!set {a, b}", "!!omap [{a: 1}]", "!!pairs [{a: 1}]", "x: !!binary aGk="])
def test_non_json_tags_are_refused(text: str) -> None:
    assert "values are not allowed" in refused(text)


def test_timestamps_still_load() -> None:
    data, _ = parse_document("when: 2024-05-01\n", "f.yaml")
    assert str(data["when"]) == "2024-05-01"


# --- files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "size"),
    [(None, DEFAULT_MAX_FILE_BYTES), ("1000", 1000), (" 2KiB ", 2048), ("1mib", 1 << 20),
     ("3GiB", 3 << 30)],
)
def test_the_file_size_limit_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, setting: str | None, size: int
) -> None:
    if setting is None:
        monkeypatch.delenv("PODIUM_MAX_FILE_BYTES", raising=False)
    else:
        monkeypatch.setenv("PODIUM_MAX_FILE_BYTES", setting)
    assert max_file_bytes() == size


@pytest.mark.parametrize("setting", ["0", "-5", "64MB", "lots", "1.5MiB"])
def test_a_bad_size_limit_is_a_config_error(monkeypatch: pytest.MonkeyPatch, setting: str) -> None:
    monkeypatch.setenv("PODIUM_MAX_FILE_BYTES", setting)
    with pytest.raises(ConfigError, match="PODIUM_MAX_FILE_BYTES"):
        max_file_bytes()


def test_a_file_at_the_limit_is_read_and_one_byte_more_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PODIUM_MAX_FILE_BYTES", "100")
    path = tmp_path / "in.yaml"
    path.write_text("a: " + "x" * 97, encoding="utf-8")
    assert len(read_text(path)) == 100
    path.write_text("a: " + "x" * 98, encoding="utf-8")
    with pytest.raises(DefinitionError, match="larger than 100 bytes"):
        read_text(path)


# --- input_schema ------------------------------------------------------------------------


def problems(schema: dict[str, Any]) -> list[str]:
    return [p.message for p in schema_problems(schema)]


def test_local_refs_and_anchors_are_accepted() -> None:
    schema = {"$defs": {"n": {"$anchor": "num", "type": "integer"}},
              "properties": {"a": {"$ref": "#/$defs/n"}, "b": {"$ref": "#num"},
                             "c": {"$ref": "#"}}}
    assert problems(schema) == []


@pytest.mark.parametrize(
    "ref", ["https://example.com/s.json", "other.json#/x", "file:///etc/passwd", "//evil/x"])
@pytest.mark.parametrize("keyword", ["$ref", "$dynamicRef"])
def test_refs_outside_the_schema_are_refused(ref: str, keyword: str) -> None:
    (message,) = problems({"properties": {"x": {keyword: ref}}})
    assert ref in message
    assert "never fetches" in message


def test_a_local_ref_to_nothing_is_refused() -> None:
    assert problems({"$ref": "#/$defs/missing"}) == [
        "$ref '#/$defs/missing' names nothing in the schema"]


def test_patterns_are_found_wherever_jsonschema_would_use_them() -> None:
    """Also in a property named like a keyword, and behind a local $ref."""
    schema = {"properties": {"const": {"pattern": "(a)\\1"}},
              "$defs": {"k": {"patternProperties": {"(?=x)": {}}}},
              "allOf": [{"$ref": "#/$defs/k"}], "const": {"pattern": "(b)\\1"}}
    found = problems(schema)
    assert len(found) == 2, found  # `const`'s value is data, not a schema
    assert all("cannot be matched in linear time by RE2" in m for m in found)


def test_unevaluated_properties_with_pattern_properties_is_refused() -> None:
    (message,) = problems({"patternProperties": {"^a": {}}, "unevaluatedProperties": False})
    assert "unevaluatedProperties and patternProperties" in message


@pytest.mark.parametrize(
    ("schema", "instance"),
    [
        ({"patternProperties": {"^a": {"type": "integer"}}, "additionalProperties": False},
         {"ab": "x", "b": 1, "c": 2}),
        ({"properties": {"id": {"pattern": "^[a-z]+$"}}}, {"id": "ABC"}),
        ({"properties": {"a": {}}, "additionalProperties": {"type": "string"}},
         {"a": 1, "b": 2}),
        ({"properties": {"a": {}}, "additionalProperties": False}, {"a": 1, "b": 2, "c": 3}),
    ],
)
def test_the_re2_validator_reports_what_jsonschema_reports(
    schema: dict[str, Any], instance: Any
) -> None:
    """Same errors, same messages, as jsonschema's own validator on ordinary input."""

    def errors(validator: Any) -> list[tuple[list[Any], str]]:
        return sorted((list(e.absolute_path), e.message) for e in validator.iter_errors(instance))

    ours = errors(make_validator(schema))
    assert ours
    assert ours == errors(jsonschema.Draft202012Validator(schema))


@pytest.mark.parametrize(
    "items",
    [[1, 1.0], [True, 1], [0, False], ["1", 1], [None, None], [[1, 2], [2, 1]],
     [{"a": 1, "b": [2]}, {"b": [2], "a": 1}], [{"a": True}, {"a": 1}], [[[1]], [[1.0]]]],
)
def test_unique_items_means_what_jsonschema_means(items: list[Any]) -> None:
    schema = {"uniqueItems": True}
    assert make_validator(schema).is_valid(items) == jsonschema.Draft202012Validator(
        schema).is_valid(items)


def test_unique_items_of_many_objects_is_checked_in_linear_time() -> None:
    """jsonschema's own check compares every pair: over a minute for 30,000 objects."""
    items = [{"n": i, "tags": ["x"]} for i in range(100_000)]
    validator = make_validator({"uniqueItems": True})
    assert validator.is_valid(items)
    assert not validator.is_valid([*items, {"tags": ["x"], "n": 7}])


def test_a_backtracking_pattern_is_matched_in_linear_time() -> None:
    """With Python's re this input would take days; the test's own timeout bounds it."""
    wf = workflow_from_dict({
        "name": "w", "steps": [{"id": "a", "agent": "x"}],
        "input_schema": {"properties": {"w": {"pattern": "^(a+)+$"}},
                         "patternProperties": {"^(a|aa)+$": {"type": "string"}}},
    })
    hostile = "a" * 5000 + "!"
    with pytest.raises(InputError, match="does not match"):
        check_input(wf, {"w": hostile, hostile: 1})
    check_input(wf, {"w": "aaaa", "aaaa": "ok"})
