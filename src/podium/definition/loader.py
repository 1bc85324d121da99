"""Load workflow files (YAML or JSON) into models, reporting every problem at once.

Each problem names the file, the line where we can tell it, the step and the
field, quotes the offending value and says what to change.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from podium.definition.documents import line_of, parse_document, read_text
from podium.definition.models import (
    MAX_DEPTH,
    Compensation,
    Defaults,
    RetryPolicy,
    Step,
    Workflow,
)
from podium.errors import DefinitionError, InputError, Problem

__all__ = [
    "Resolve",
    "apply_input_defaults",
    "check_input",
    "load_workflow",
    "parse_document",
    "workflow_from_dict",
]

_PATTERN_HINTS = {
    "agent": "write a capability (data-collection) or an agent id (@collector-1)",
    "id": "use letters, digits, '-' and '_'",
    "name": "use lowercase letters, digits, '-' and '_'",
}
_DURATION_HINT = "write seconds (30) or a number with a unit: 250ms, 1.5s, 5m, 2h, 1d"
_SCHEMA_HINT = "see `podium schema` for what this field accepts"


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """Which model describes the mapping found at ``loc`` (for key suggestions)."""
    model: type[BaseModel] | None = Workflow
    i = 0
    while i < len(loc) and model is not None:
        key = loc[i]
        if model is Workflow and key == "steps":
            model, i = Step, i + 2
        elif model is Workflow and key == "defaults":
            model, i = Defaults, i + 1
        elif key == "retry":
            model = RetryPolicy
            i += 2 if i + 1 < len(loc) and isinstance(loc[i + 1], int) else 1
        elif model is Step and key == "compensate":
            model, i = Compensation, i + 1
        else:
            return None
    return model


def _branch_tag(part: str | int, value: Any) -> str | None:
    """Name the union branch ``part`` tags (``model``, ``list``, ``scalar``), if it is one.

    A key the user wrote is never a tag, even a capitalised one (``Name:``):
    it is in the data, and reporting it as an unknown key needs it in the loc.
    """
    if not isinstance(part, str) or (isinstance(value, Mapping) and part in value):
        return None
    if part.startswith("list["):
        return "list"
    if part in ("int", "str"):
        return "scalar"
    if "[" in part or any(c.isupper() for c in part):
        # ``RetryPolicy`` or ``function-after[_consistent(), RetryPolicy]``
        return "model"
    return None


def _clean_loc(loc: tuple[str | int, ...], data: Any) -> tuple[str | int, ...] | None:
    """Drop pydantic's union branch tags; None if the branch doesn't fit the data.

    ``retry: {max_attempts: 0}`` fails both as a policy and as a list of
    policies; only the branch that matches the shape the user wrote is news.
    A value that fits neither shape (``retry: 5``) is reported by the model branch.
    """
    out: list[str | int] = []
    value = data
    for part in loc:
        tag = _branch_tag(part, value)
        if tag is not None:
            if tag == "list" and not isinstance(value, list):
                return None
            if tag == "model" and isinstance(value, list):
                return None
            continue
        out.append(part)
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            value = None
    return tuple(out)


def _step_name(data: Any, loc: tuple[str | int, ...]) -> str | None:
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        steps = data.get("steps") if isinstance(data, Mapping) else None
        if isinstance(steps, list) and loc[1] < len(steps):
            step = steps[loc[1]]
            if isinstance(step, Mapping) and isinstance(step.get("id"), str):
                return str(step["id"])
            return f"#{loc[1] + 1}"
    return None


def _field_text(loc: tuple[str | int, ...]) -> str:
    rest = loc[2:] if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int) else loc
    text = ""
    for part in rest:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _pydantic_problems(exc: ValidationError, data: Any, source: str | None) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[tuple[tuple[str | int, ...], str]] = set()
    for err in exc.errors():
        loc = _clean_loc(tuple(err["loc"]), data)
        if loc is None:
            continue
        kind = err["type"]
        value = err.get("input")
        hint: str | None = None
        if kind == "extra_forbidden":
            name = loc[-1]
            model = _model_at(loc[:-1])
            known = list(model.model_fields) if model else []
            close = difflib.get_close_matches(str(name), known, n=1)
            message = f"unknown key '{name}'"
            hint = f"did you mean '{close[0]}'?" if close else (
                f"known keys: {', '.join(known)}" if known else "remove it"
            )
        elif kind == "missing":
            message = f"missing required key '{loc[-1]}'"
            hint = f"add '{loc[-1]}'"
        elif kind == "string_pattern_mismatch":
            message = f"{value!r} is not allowed here"
            hint = _PATTERN_HINTS.get(str(loc[-1]), "see `podium schema` for the format")
        else:
            message = err["msg"].removeprefix("Value error, ")
            quotable = value is not None and not isinstance(value, Mapping | list)
            if quotable and repr(value) not in message:
                message += f" (got {value!r})"
            # Every problem says what to change, not only what is wrong.
            hint = _DURATION_HINT if "duration" in message else _SCHEMA_HINT
        key = (loc, message)
        if key in seen:
            continue
        seen.add(key)
        problems.append(
            Problem(
                message, file=source, step=_step_name(data, loc), field=_field_text(loc) or None,
                hint=hint, loc=loc,
            )
        )
    return problems


def workflow_from_dict(
    data: Any,
    *,
    source: str | None = None,
    lines: Mapping[tuple[str | int, ...], int] | None = None,
) -> Workflow:
    """Validate plain data into a ``Workflow``; raise ``DefinitionError`` with all problems."""
    from podium.definition.validate import semantic_problems

    if not isinstance(data, Mapping):
        raise DefinitionError(
            [Problem("a workflow must be a mapping with name and steps", file=source,
                     hint="start the file with 'name: my-workflow' and a 'steps:' list")]
        )
    problems: list[Problem] = []
    workflow: Workflow | None = None
    try:
        workflow = Workflow.model_validate(data)
    except ValidationError as exc:
        problems += _pydantic_problems(exc, data, source)
        problems += semantic_problems(data)
    except DefinitionError as exc:
        problems += exc.problems
    if problems or workflow is None:
        lines = lines or {}
        resolved = [
            Problem(p.message, file=source, line=line_of(lines, p.loc), step=p.step,
                    field=p.field, hint=p.hint, loc=p.loc)
            for p in problems
        ]
        resolved.sort(key=lambda p: (p.line or 0))
        raise DefinitionError(resolved)
    return workflow


# Finds a registered workflow by name and version (None: the newest); the CLI makes one
# from the database it uses. This layer does no I/O of its own beyond the files.
Resolve = Callable[[str, str | None], dict[str, Any] | None]


def load_workflow(path: str | Path, *, resolve: Resolve | None = None,
                  registry: str = "no registry to look in",
                  _calling: tuple[str, ...] = ()) -> Workflow:
    """Read a workflow file; ``DefinitionError`` lists every problem in it.

    A step's ``workflow: NAME`` (``version: V``) that the file does not define under
    ``workflows:`` is read from ``NAME.yaml`` (``.yml``, ``.json``) beside it (when its
    version is V, if V is given), checked on its own (its problems name its own file),
    else asked of ``resolve`` (the registered version V, or the newest; ``registry``
    says in problems what that found: "not registered in the database X"). Either way it
    is kept in this definition, so a run, and every resume of it, uses the sub-workflows
    it started with.
    """
    source = str(path)
    data, lines = parse_document(read_text(path, what="workflow file"), source)
    missing: dict[tuple[str | int, ...], Problem] = {}
    if isinstance(data, dict):
        missing = _embed_calls(data, Path(path).parent, source, lines, _calling,
                               resolve, registry)
    try:
        return workflow_from_dict(data, source=source, lines=lines)
    except DefinitionError as exc:
        if not missing:
            raise
        # The model only knows the name is unknown; the loader knows where it looked.
        raise DefinitionError([
            missing.get(p.loc, p) if p.loc is not None and p.message.startswith(
                "unknown sub-workflow") else p for p in exc.problems]) from None


def _embed_calls(data: dict[str, Any], folder: Path, source: str,
                 lines: Mapping[tuple[str | int, ...], int], calling: tuple[str, ...],
                 resolve: Resolve | None, registry: str,
                 ) -> dict[tuple[str | int, ...], Problem]:
    """Embed the sub-workflows the steps call; what was found nowhere, by its loc."""
    missing: dict[tuple[str | int, ...], Problem] = {}
    steps = data.get("steps")
    if not isinstance(steps, list):
        return missing
    defined = data.get("workflows")
    if defined is not None and not isinstance(defined, dict):
        return missing  # the model's own check says what is wrong with it
    defined = defined or {}
    me = str(data.get("name", ""))
    for i, step in enumerate(steps):
        name = step.get("workflow") if isinstance(step, dict) else None
        if not isinstance(name, str) or name in defined:
            continue
        raw_version = step.get("version")
        version = None if raw_version is None or isinstance(raw_version, dict | list) else (
            str(raw_version))
        loc: tuple[str | int, ...] = ("steps", i, "workflow")
        problem = None
        if name in (*calling, me):
            chain = " -> ".join((*calling, me, name))
            problem = f"a workflow calls itself: {chain}"
        elif len(calling) + 1 >= MAX_DEPTH:
            problem = f"sub-workflows nested more than {MAX_DEPTH} deep"
        if problem is not None:
            raise DefinitionError([Problem(
                problem, file=source, line=line_of(lines, loc),
                step=str(step.get("id")), field="workflow",
                hint="sub-workflows must not call the workflows that call them")])
        found = next((folder / f"{name}{ext}" for ext in (".yaml", ".yml", ".json")
                      if (folder / f"{name}{ext}").is_file()), None)
        beside: str | None = None
        if found is not None:
            child = load_workflow(found, resolve=resolve, registry=registry,
                                  _calling=(*calling, me))
            if child.name != name:
                raise DefinitionError([Problem(
                    f"{found.name} defines workflow '{child.name}', not '{name}'",
                    file=str(found), hint=f"name it '{name}', or call '{child.name}'")])
            if version is None or str(child.version) == version:
                defined[name] = child.to_dict()
                data["workflows"] = defined
                continue
            beside = f"{found} is version {child.version}"
        registered = resolve(name, version) if resolve is not None else None
        if registered is not None:
            defined[name] = registered
            data["workflows"] = defined
            continue
        missing[loc] = _not_found(name, version, step, loc, folder, beside, resolve,
                                  registry, source, lines)
    return missing


def _not_found(name: str, version: str | None, step: dict[str, Any],
               loc: tuple[str | int, ...], folder: Path, beside: str | None,
               resolve: Resolve | None, registry: str, source: str,
               lines: Mapping[tuple[str | int, ...], int]) -> Problem:
    """Where a sub-workflow was looked for, and how to make it found."""
    files = beside or f"no {name}.yaml (.yml, .json) in {folder}"
    there = registry
    if version is not None and resolve is not None:
        newest = resolve(name, None)
        if newest is not None:
            there += f" (its newest registered version there is {newest.get('version', 1)})"
    what = (f"unknown sub-workflow '{name}'" if version is None
            else f"unknown sub-workflow '{name}' version {version}")
    return Problem(
        f"{what}: not under workflows:, {files}, {there}", file=source,
        line=line_of(lines, loc), step=str(step.get("id")), field="workflow",
        hint=f"register it (podium workflow register {name}.yaml"
             + (f", a file with version: {version}" if version is not None else "")
             + f"), put {name}.yaml beside this file, or define it under workflows:",
        loc=loc)


def apply_input_defaults(workflow: Workflow, value: Any) -> Any:
    """Fill top-level keys the caller left out from ``input_schema`` ``default`` values.

    JSON Schema validators only check; a workflow author who writes a default
    means "use this when not given", so a run sees it in ``${{ input.x }}``.
    """
    schema = workflow.input_schema
    if not schema or not isinstance(value, dict):
        return value
    props = schema.get("properties")
    if not isinstance(props, Mapping):
        return value
    missing = {k: p["default"] for k, p in props.items()
               if k not in value and isinstance(p, Mapping) and "default" in p}
    return {**value, **missing} if missing else value


M = TypeVar("M", bound=BaseModel)


def find_settings_file(
    explicit: str | Path | None, env_var: str, filename: str, *, cwd: Path | None = None
) -> Path | None:
    """The flag's file, else ``$env_var``'s, else ``filename`` in the folder, else none."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    candidate = (cwd or Path.cwd()) / filename
    return candidate if candidate.is_file() else None


def load_model_file(path: Path, model: type[M], *, kind: str, option: str) -> M:
    """Read a YAML/JSON settings file (agents, alerts) into ``model``.

    Every problem is reported at once with the file, line and field, like a
    workflow file's; ``kind`` and ``option`` only shape the messages.
    """
    source = str(path)
    data, lines = parse_document(read_text(path, what=f"{kind} file", option=option), source)
    try:
        return model.model_validate(data or {})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = line_of(lines, loc)
            msg = err["msg"].removeprefix("Value error, ")
            hint = _DURATION_HINT if "duration" in msg else f"see the {kind} file in the README"
            if err["type"] == "extra_forbidden":
                msg, hint = f"unknown key '{loc[-1]}'", "remove it, or check its spelling"
            problems.append(Problem(msg, file=source, line=line,
                                    field=".".join(str(p) for p in loc) or None, hint=hint))
        raise DefinitionError(problems) from None


_VALIDATORS: dict[int, tuple[Any, Any]] = {}


def check_input(workflow: Workflow, value: Any) -> None:
    """Raise ``InputError`` listing every way ``value`` fails ``input_schema``."""
    schema = workflow.input_schema
    if schema is None:
        return
    hit = _VALIDATORS.get(id(schema))
    if hit is not None and hit[0] is schema:
        validator = hit[1]
    else:
        from podium.definition.input_schema import make_validator

        # Built once per workflow, not per run: a third of a small check's cost.
        validator = make_validator(schema)
        if len(_VALIDATORS) >= 64:
            _VALIDATORS.clear()
        _VALIDATORS[id(schema)] = (schema, validator)
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors:
            where = "input" + "".join(
                f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path
            )
            # A message quotes the value, which may be a megabyte of input: keep both
            # ends, where the value starts and what is wrong with it.
            message = e.message if len(e.message) <= 300 else (
                f"{e.message[:150]} … {e.message[-150:]}")
            lines.append(f"{where}: {message}")
        raise InputError(
            f"the input of workflow '{workflow.name}' does not fit its input_schema:\n  "
            + "\n  ".join(lines)
            + "\n(fix: pass the missing or corrected values with -i key=value or --input-file)"
        )
