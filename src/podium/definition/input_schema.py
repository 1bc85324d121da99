"""A workflow's ``input_schema``: refused at validation if it reaches out, matched in linear time.

jsonschema matches ``pattern`` and ``patternProperties`` (also when it sorts
out ``additionalProperties``) with Python's ``re``, which backtracks:
``^(a+)+$`` against forty ``a`` and a ``!`` would run for days, on input
anyone can send. Here those keywords are matched by RE2 (``google-re2``),
whose time is linear in the input; a pattern RE2 cannot run (backreferences,
lookaround) is refused when the workflow is validated. ``unevaluatedProperties``
would still match ``patternProperties`` with ``re`` inside jsonschema, so a
schema may not use the two together.

``uniqueItems`` compares hashable stand-ins of the items instead of every pair:
jsonschema's own check is quadratic for lists of objects (30,000 of them, a
300 KB input, took over a minute).

``$ref`` and ``$dynamicRef`` must point inside the schema (``#...``):
jsonschema would otherwise fetch the URL or read the file at each run, for
whoever wrote the workflow. The validator's registry retrieves nothing either,
whatever slipped by.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from podium.errors import Problem

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

__all__ = ["make_validator", "schema_problems"]

# Keywords whose value is a schema, a list of schemas, or a mapping of names to schemas:
# the places jsonschema descends into (anything else, like ``const``, is data).
_ONE = ("additionalProperties", "unevaluatedProperties", "items", "contains", "propertyNames",
        "if", "then", "else", "not", "unevaluatedItems", "additionalItems", "contentSchema")
_LIST = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_REF_KEYWORDS = ("$ref", "$dynamicRef")
_MISSING = object()
_RE2_HINT = ("RE2 has no backreferences (\\1) or lookaround ((?=...), (?!...), (?<=...));"
             " rewrite the pattern without them")

Path = tuple[str | int, ...]


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> Any:
    """RE2's compiled pattern; raises ``re2.error`` (quietly: RE2 logs to stderr by default)."""
    import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

    options = re2.Options()
    options.log_errors = False
    return re2.compile(pattern, options)


def _re2_error(pattern: str) -> str | None:
    import re2

    try:
        _compiled(pattern)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        return reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
    return None


def _search(pattern: str, text: str) -> bool:
    return _compiled(pattern).search(text) is not None


def _subschemas(root: Any) -> Iterator[tuple[Mapping[str, Any], Path]]:
    """Every schema object in ``root`` with its path, following local ``$ref`` targets too."""
    stack: list[tuple[Any, Path]] = [(root, ())]
    seen: set[int] = set()
    while stack:
        schema, path = stack.pop()
        if not isinstance(schema, Mapping) or id(schema) in seen:
            continue
        seen.add(id(schema))
        yield schema, path
        for kw in _ONE:
            if kw in schema:
                stack.append((schema[kw], (*path, kw)))
        for kw in _LIST:
            if isinstance(schema.get(kw), list):
                stack.extend((sub, (*path, kw, i)) for i, sub in enumerate(schema[kw]))
        for kw in _MAP:
            if isinstance(schema.get(kw), Mapping):
                stack.extend((sub, (*path, kw, name)) for name, sub in schema[kw].items())
        for kw in _REF_KEYWORDS:
            ref = schema.get(kw)
            if isinstance(ref, str) and ref.startswith("#"):
                target = _resolve(root, ref)
                if target is not _MISSING:
                    stack.append((target, (*path, kw)))


def _resolve(root: Any, ref: str) -> Any:
    """The target of a local ``#/json/pointer`` or ``#anchor`` in ``root``; _MISSING if none."""
    fragment = unquote(ref[1:])
    if not fragment:
        return root
    if not fragment.startswith("/"):
        for schema, _ in _subschemas_plain(root):
            if fragment in (schema.get("$anchor"), schema.get("$dynamicAnchor")):
                return schema
        return _MISSING
    node = root
    for raw in fragment[1:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _subschemas_plain(root: Any) -> Iterator[tuple[Mapping[str, Any], Path]]:
    """Schema objects reachable without following references (to find anchors)."""
    stack: list[Any] = [root]
    while stack:
        schema = stack.pop()
        if not isinstance(schema, Mapping):
            continue
        yield schema, ()
        stack.extend(schema[kw] for kw in _ONE if kw in schema)
        for kw in _LIST:
            if isinstance(schema.get(kw), list):
                stack.extend(schema[kw])
        for kw in _MAP:
            if isinstance(schema.get(kw), Mapping):
                stack.extend(schema[kw].values())


def schema_problems(schema: Mapping[str, Any]) -> list[Problem]:
    """What makes ``input_schema`` unusable or unsafe: invalid, remote refs, slow patterns."""
    import jsonschema

    def problem(message: str, path: Path, hint: str) -> Problem:
        return Problem(message, field="input_schema", hint=hint,
                       loc=("input_schema", *path))

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return [problem(f"not a valid JSON Schema: {exc.message}", tuple(exc.absolute_path),
                        "see https://json-schema.org/understanding-json-schema/")]
    problems: list[Problem] = []
    nested_ids = False
    uses = {"patternProperties": False, "unevaluatedProperties": False}
    for sub, path in _subschemas(schema):
        nested_ids = nested_ids or (bool(path) and "$id" in sub)
        for kw in uses:
            uses[kw] = uses[kw] or kw in sub
        for kw in _REF_KEYWORDS:
            ref = sub.get(kw)
            if not isinstance(ref, str):
                continue
            if not ref.startswith("#"):
                problems.append(problem(
                    f"{kw} {ref!r} points outside the schema, and Podium never fetches"
                    " schemas", (*path, kw),
                    "put the definition under $defs and refer to it as '#/$defs/NAME'"))
            elif not nested_ids and _resolve(schema, ref) is _MISSING:
                problems.append(problem(f"{kw} {ref!r} names nothing in the schema", (*path, kw),
                                        "point it at a definition, e.g. '#/$defs/NAME'"))
        patterns = [(sub["pattern"], (*path, "pattern"))] if isinstance(
            sub.get("pattern"), str) else []
        if isinstance(sub.get("patternProperties"), Mapping):
            patterns += [(p, (*path, "patternProperties", p)) for p in sub["patternProperties"]]
        for pattern, where in patterns:
            error = _re2_error(pattern)
            if error is not None:
                problems.append(problem(
                    f"pattern {pattern!r} cannot be matched in linear time by RE2 ({error})",
                    where, _RE2_HINT))
    if all(uses.values()):
        problems.append(problem(
            "unevaluatedProperties and patternProperties together are not supported (their"
            " patterns would be matched by a backtracking engine)", (),
            "use additionalProperties instead of unevaluatedProperties"))
    return problems


# --- the validator: jsonschema's keywords, with RE2 instead of ``re`` ---------------------


def _pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema import ValidationError

    if validator.is_type(instance, "string") and not _search(patrn, instance):
        yield ValidationError(f"{instance!r} does not match {patrn!r}")


def _pattern_properties(validator: Any, pp: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pp.items():
        for k, v in instance.items():
            if _search(pattern, k):
                yield from validator.descend(v, subschema, path=k, schema_path=pattern)


def _additional(instance: Any, schema: Any) -> set[str]:
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    return {k for k in instance
            if k not in properties and not any(_search(p, k) for p in patterns)}


def _additional_properties(validator: Any, ap: Any, instance: Any, schema: Any) -> Iterator[Any]:
    """jsonschema's own ``additionalProperties``, with the patterns matched by RE2."""
    from jsonschema import ValidationError

    if not validator.is_type(instance, "object"):
        return
    extras = _additional(instance, schema)
    if validator.is_type(ap, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], ap, path=extra)
    elif not ap and extras:
        if "patternProperties" in schema:
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(each) for each in sorted(extras))
            patterns = ", ".join(repr(each) for each in sorted(schema["patternProperties"]))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {patterns}")
        else:
            listed = ", ".join(repr(each) for each in sorted(extras, key=str))
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(
                f"Additional properties are not allowed ({listed} {verb} unexpected)")


def _canonical(value: Any) -> Hashable:
    """A hashable stand-in with JSON Schema's equality: 1 == 1.0, true != 1, keys unordered."""
    if value is True or value is False:
        return ("bool", value)
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, Mapping):
        return ("map", frozenset((k, _canonical(v)) for k, v in value.items()))
    if isinstance(value, Sequence):
        return ("seq", tuple(_canonical(v) for v in value))
    if isinstance(value, Hashable):
        return ("value", value)  # numbers (1 and 1.0 hash alike), null, dates
    return ("repr", repr(value))


def _unique_items(validator: Any, ui: Any, instance: Any, schema: Any) -> Iterator[Any]:
    """jsonschema's ``uniqueItems`` in linear time."""
    from jsonschema import ValidationError

    if (ui and validator.is_type(instance, "array")
            and len({_canonical(item) for item in instance}) != len(instance)):
        yield ValidationError(f"{instance!r} has non-unique elements")


@functools.cache
def _validator_class() -> Any:
    from jsonschema import Draft202012Validator, validators

    # extend() has no annotations in types-jsonschema.
    return validators.extend(Draft202012Validator, {  # type: ignore[no-untyped-call]
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
        "uniqueItems": _unique_items,
    })


def make_validator(schema: Mapping[str, Any]) -> Validator:
    """A validator of run inputs for ``schema``: RE2 patterns, and no reference retrieved."""
    import referencing

    validator: Validator = _validator_class()(schema, registry=referencing.Registry())
    return validator
