"""Checks that need the whole workflow: ids, edges, cycles, templates, schema.

They run on plain data (not only on validated models) so that a file with a
wrong type in one step still gets its cycle or unknown dependency reported in
the same pass: every problem at once, not one per try.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from podium.definition.templates import template_errors
from podium.errors import Problem

_WHOLE = re.compile(r"\$\{\{[^{}]*\}\}")

__all__ = ["semantic_problems"]


def _suggest(name: str, options: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f"did you mean '{close[0]}'?" if close else None


def _find_cycle(ids: list[str], deps: Mapping[str, list[str]]) -> list[str] | None:
    """Return one cycle as a path that ends where it starts, if any."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for start in ids:
        if state.get(start):
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        path: list[str] = []
        while stack:
            node, i = stack.pop()
            if i == 0:
                state[node] = 1
                path.append(node)
            children = deps.get(node, [])
            if i < len(children):
                stack.append((node, i + 1))
                child = children[i]
                if state.get(child) == 1:
                    return [*path[path.index(child) :], child]
                if not state.get(child) and child in deps:
                    stack.append((child, 0))
            else:
                state[node] = 2
                path.pop()
    return None


class _Upstream:
    """Answers "is A upstream of B" on demand.

    Precomputing every step's ancestor set is quadratic in memory for a long
    chain; templates name few steps, so a cached upward walk per question is
    cheaper, and a direct dependency answers at once.
    """

    def __init__(self, deps: Mapping[str, list[str]]) -> None:
        self._deps = deps
        self._cache: dict[str, set[str]] = {}

    def __call__(self, step: str, candidate: str) -> bool:
        direct = self._deps.get(step, [])
        if candidate in direct:
            return True
        seen = self._cache.get(step)
        if seen is None:
            seen = set()
            todo = list(direct)
            while todo:
                node = todo.pop()
                if node in seen:
                    continue
                seen.add(node)
                todo.extend(self._deps.get(node, []))
            self._cache[step] = seen
        return candidate in seen


def _check_templates(
    value: Any,
    *,
    allowed: Callable[[str], bool] | None,
    known: set[str],
    step: str | None,
    field: str,
    loc: tuple[str | int, ...],
    why: str,
    items: bool = False,
) -> list[Problem]:
    refs, errors = template_errors(value)
    problems = [
        Problem(str(e), step=step, field=field, hint=e.hint, loc=loc) for e in errors
    ]
    for ref in refs:
        if ref.root in ("item", "item_index") and not items:
            problems.append(Problem(
                f"'${{{{ {ref.text} }}}}' is only known in the input of a for_each step",
                step=step, field=field,
                hint="add for_each: ${{ steps.ID.output.LIST }} to the step, or read"
                     " input or steps.ID.output", loc=loc))
        if ref.step is None:
            continue
        if ref.step not in known:
            problems.append(
                Problem(
                    f"'${{{{ {ref.text} }}}}' names unknown step '{ref.step}'",
                    step=step,
                    field=field,
                    hint=_suggest(ref.step, known) or "name a step of this workflow",
                    loc=loc,
                )
            )
        elif allowed is not None and not allowed(ref.step):
            problems.append(
                Problem(
                    f"'${{{{ {ref.text} }}}}' reads step '{ref.step}', which is not upstream",
                    step=step,
                    field=field,
                    hint=why.format(ref=ref.step),
                    loc=loc,
                )
            )
    return problems


def _merged_retry_problems(raw: Mapping[str, Any], steps: list[Any]) -> list[Problem]:
    """A step's retry that is valid alone but not merged with ``defaults.retry``.

    ``compile_plan`` merges the two key by key; a conflict (the step's
    ``initial_delay`` above the default ``max_delay``) must fail validation,
    not the first run. Policies invalid on their own are reported elsewhere.
    """
    from pydantic import ValidationError

    from podium.definition.policy import RetryPolicy

    defaults = raw.get("defaults")
    default = defaults.get("retry") if isinstance(defaults, Mapping) else None
    if not isinstance(default, Mapping):
        return []
    try:
        RetryPolicy.model_validate(default)
    except ValidationError:
        return []
    problems: list[Problem] = []
    for i, s in enumerate(steps):
        own = s.get("retry") if isinstance(s, Mapping) else None
        if not isinstance(own, Mapping):
            continue
        try:
            RetryPolicy.model_validate(own)
        except ValidationError:
            continue
        try:
            RetryPolicy.model_validate({**default, **own})
        except ValidationError as exc:
            sid = s.get("id")
            problems += [
                Problem(
                    "retry merged with defaults.retry is invalid: "
                    + e["msg"].removeprefix("Value error, "),
                    step=sid if isinstance(sid, str) else f"#{i + 1}",
                    field="retry",
                    hint="set the conflicting keys on the step, or change defaults.retry",
                    loc=("steps", i, "retry"),
                )
                for e in exc.errors()
            ]
    return problems


def _dep_list(step: Mapping[str, Any]) -> list[Any]:
    """A step's dependencies, written as a list or as ``{any_of: [...]}``."""
    d = step.get("depends_on") or []
    if isinstance(d, Mapping):
        d = d.get("any_of") or []
    return d if isinstance(d, list) else []


def _check_condition(text: Any, *, allowed: Callable[[str], bool], known: set[str],
                     step: str, loc: tuple[str | int, ...], why: str) -> list[Problem]:
    """A ``when:`` that does not compile, names what does not exist, or reads a step
    that has not run by then: found here, not at run time."""
    from podium.definition.conditions import condition_problems

    wrong, cond = condition_problems(text)
    if cond is None:
        return [Problem(f"when: {wrong}", step=step, field="when",
                        hint="a CEL expression, e.g. steps.classify.output.kind == 'invoice'",
                        loc=loc)]
    out = []
    for ref in cond.steps:
        if ref not in known:
            out.append(Problem(f"when: unknown step '{ref}'", step=step, field="when",
                               hint=_suggest(ref, sorted(known)) or
                               f"steps are: {', '.join(sorted(known))}", loc=loc))
        elif not allowed(ref):
            out.append(Problem(f"when: reads step '{ref}', which has not run by then",
                               step=step, field="when", hint=why.format(ref=ref), loc=loc))
    return out


def _check_map(s: Mapping[str, Any], *, allowed: Callable[[str], bool], known: set[str],
               step: str, index: int, why: str) -> list[Problem]:
    """``for_each`` is one ``${{ path }}`` to data that exists before the step runs;
    ``max_concurrency`` and ``tolerate`` mean something only with it."""
    loc: tuple[str | int, ...] = ("steps", index, "for_each")
    spec = s.get("for_each")
    if spec is None:
        return [Problem(f"{key} is only for a for_each step", step=step, field=key,
                        hint=f"add for_each: ${{{{ steps.ID.output.LIST }}}}, or remove {key}",
                        loc=("steps", index, key))
                for key in ("max_concurrency", "tolerate") if s.get(key) is not None]
    if not isinstance(spec, str) or not _WHOLE.fullmatch(spec.strip()):
        return [Problem("for_each must be one ${{ path }} to a list", step=step,
                        field="for_each", hint="e.g. for_each: ${{ steps.split.output.documents"
                        " }}, or ${{ input.items }}", loc=loc)]
    return _check_templates(spec, allowed=allowed, known=known, step=step, field="for_each",
                            loc=loc, why=why)


# A step that runs a sub-workflow has no agent call of its own to shape: the child's
# steps have their own retries, timeouts and compensations.
_AGENT_ONLY = ("retry", "timeout", "deadline", "acquire_timeout", "strategy", "compensate")


_WAITS = ("approval", "wait_for", "sleep", "wait_until")
_KINDS = ("agent", "workflow", *_WAITS)


def _check_calls(raw: Mapping[str, Any], steps: list[Any], *,
                 allowed: Callable[[str, str], bool], known: set[str],
                 why: str) -> list[Problem]:
    """Sub-workflows named by steps exist, are not called with agent-call settings, and
    do not call back into a workflow that is calling them."""
    problems: list[Problem] = []
    defined = raw.get("workflows") if isinstance(raw.get("workflows"), Mapping) else {}
    assert isinstance(defined, Mapping)
    for i, s in enumerate(steps):
        if not isinstance(s, Mapping):
            continue
        sid = s.get("id")
        step = sid if isinstance(sid, str) else f"#{i + 1}"
        kinds = [k for k in _KINDS if s.get(k) is not None]
        if s.get("version") is not None and s.get("workflow") is None:
            problems.append(Problem(
                "version is only for a step that runs a sub-workflow", step=step,
                field="version", hint="add 'workflow: NAME' (the sub-workflow whose version"
                " this is), or remove version", loc=("steps", i, "version")))
        if not kinds:
            problems.append(Problem(
                "missing required key 'agent'", step=step, field="agent",
                hint="add 'agent' (a capability, or @agent-id), or 'workflow' (a"
                     " sub-workflow by name), or a wait: approval, wait_for, sleep,"
                     " wait_until", loc=("steps", i)))
            continue
        if len(kinds) > 1:
            problems.append(Problem(
                f"a step does one thing: {' and '.join(kinds)} are two", step=step,
                field=kinds[1], hint=f"keep one of {', '.join(kinds)}",
                loc=("steps", i, kinds[1])))
            continue
        if kinds[0] in _WAITS:
            for key in (*_AGENT_ONLY, "for_each"):
                if s.get(key) is not None:
                    problems.append(Problem(
                        f"{key} is not for a step that waits ({kinds[0]})", step=step,
                        field=key, hint=f"remove {key}", loc=("steps", i, key)))
            if isinstance(s.get("wait_until"), str) and "${{" in s["wait_until"]:
                problems += _check_templates(
                    s["wait_until"], allowed=functools.partial(allowed, step),
                    known=known, step=step, field="wait_until",
                    loc=("steps", i, "wait_until"), why=why)
            continue
        if not isinstance(s.get("workflow"), str):
            continue
        name = s["workflow"]
        if name not in defined:
            problems.append(Problem(
                f"unknown sub-workflow '{name}'", step=step, field="workflow",
                hint=f"put {name}.yaml beside this file, define it under workflows:, or"
                     f" register it (podium workflow register FILE)"
                     + (f" (defined: {', '.join(sorted(defined))})" if defined else ""),
                loc=("steps", i, "workflow")))
        elif s.get("version") is not None:
            child = defined[name]
            held = child.get("version", 1) if isinstance(child, Mapping) else None
            if held is not None and str(held) != str(s["version"]):
                problems.append(Problem(
                    f"step calls version {s['version']} of '{name}', but this definition"
                    f" holds its version {held}", step=step, field="version",
                    hint=f"one version of '{name}' per workflow: call version {held} (or no"
                         f" version:) from every step, or define the one wanted under"
                         " workflows:", loc=("steps", i, "version")))
        for key in _AGENT_ONLY:
            if s.get(key) is not None:
                problems.append(Problem(
                    f"{key} is for an agent's call; a step that runs workflow '{name}' has none",
                    step=step, field=key, hint=f"set {key} on the steps of '{name}'",
                    loc=("steps", i, key)))
    cycle = _call_cycle(raw, (str(raw.get("name", "")),))
    if cycle:
        problems.append(Problem(
            "a workflow calls itself: " + " -> ".join(cycle), field="workflow",
            hint="sub-workflows must not call the workflows that call them", loc=("steps",)))
    return problems


def _call_cycle(raw: Mapping[str, Any], stack: tuple[str, ...]) -> tuple[str, ...] | None:
    defined = raw.get("workflows") if isinstance(raw.get("workflows"), Mapping) else {}
    assert isinstance(defined, Mapping)
    steps = raw.get("steps") if isinstance(raw.get("steps"), list) else []
    assert isinstance(steps, list)
    for s in steps:
        name = s.get("workflow") if isinstance(s, Mapping) else None
        if not isinstance(name, str):
            continue
        if name in stack:
            return (*stack, name)
        child = defined.get(name)
        if isinstance(child, Mapping):
            # A child's own callees, else the ones its caller defines alongside it.
            own = child.get("workflows")
            merged = {**defined, **(own if isinstance(own, Mapping) else {})}
            found = _call_cycle({**child, "workflows": merged}, (*stack, name))
            if found:
                return found
    return None


def semantic_problems(raw: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    mode = raw.get("mode", "dag")
    steps = raw.get("steps")
    if not isinstance(steps, list):
        return problems
    ids: list[str] = []
    deps: dict[str, list[str]] = {}
    seen: set[str] = set()
    # Each step that is a mapping with a text id, with its own depends_on ids: read once
    # here for the passes below (a 100,000-step workflow asked each step again per pass).
    named: list[tuple[int, str, Mapping[str, Any], list[str]]] = []
    for i, s in enumerate(steps):
        if not (type(s) is dict or isinstance(s, Mapping)):
            continue
        sid = s.get("id")
        if not isinstance(sid, str):
            continue
        # Each step's own list: a duplicate id must not repeat the first step's problems.
        own = [x for x in _dep_list(s) if isinstance(x, str)]
        named.append((i, sid, s, own))
        if sid in seen:
            problems.append(
                Problem(
                    f"duplicate step id '{sid}'",
                    step=sid,
                    field="id",
                    hint="give every step its own id",
                    loc=("steps", i, "id"),
                )
            )
            continue
        seen.add(sid)
        ids.append(sid)
        deps[sid] = own

    for i, sid, s, own_deps in named:
        if mode != "dag" and s.get("depends_on"):
            problems.append(
                Problem(
                    f"depends_on is only used in mode dag (this workflow is {mode})",
                    step=sid,
                    field="depends_on",
                    hint="remove depends_on, or set mode: dag",
                    loc=("steps", i, "depends_on"),
                )
            )
            continue
        for j, target in enumerate(own_deps):
            if target == sid:
                problems.append(
                    Problem(
                        f"step '{sid}' depends on itself",
                        step=sid,
                        field="depends_on",
                        hint="remove it from its own depends_on",
                        loc=("steps", i, "depends_on", j),
                    )
                )
            elif target not in seen:
                problems.append(
                    Problem(
                        f"unknown step '{target}' in depends_on",
                        step=sid,
                        field="depends_on",
                        # Never suggest the step itself: it cannot depend on itself.
                        hint=_suggest(target, [x for x in ids if x != sid])
                        or f"steps are: {', '.join(ids)}",
                        loc=("steps", i, "depends_on", j),
                    )
                )

    order = {sid: n for n, sid in enumerate(ids)}
    if mode == "dag":
        graph = {k: [d for d in v if d in seen and d != k] for k, v in deps.items()}
        cycle = _find_cycle(ids, graph)
        if cycle:
            problems.append(
                Problem(
                    "dependency cycle: " + " -> ".join(cycle),
                    step=cycle[0],
                    field="depends_on",
                    hint="remove one of these edges",
                    loc=("steps", order[cycle[0]], "depends_on"),
                )
            )
        walk = _Upstream(graph)

        def upstream(sid: str, ref: str) -> bool:
            # Under a cycle every edge is suspect: don't pile template errors on it.
            return bool(cycle) or walk(sid, ref)

        why = "add '{ref}' to depends_on (directly or through a step that depends on it)"
    elif mode == "sequential":

        def upstream(sid: str, ref: str) -> bool:
            return order[ref] < order[sid]

        why = "a sequential step sees only the steps before it"
    else:

        def upstream(sid: str, ref: str) -> bool:
            return False

        why = "parallel steps run together; use mode: dag to pass '{ref}' on"

    known = set(seen)
    for i, sid, s, _own in named:
        if (s.get("input") is None and s.get("for_each") is None and s.get("when") is None
                and s.get("compensate") is None and s.get("max_concurrency") is None
                and s.get("tolerate") is None):
            continue  # nothing below to check: most steps of a big workflow

        def reads(ref: str, sid: str = sid) -> bool:
            return upstream(sid, ref)

        def undoes(ref: str, sid: str = sid) -> bool:
            return ref == sid or upstream(sid, ref)

        mapped = s.get("for_each") is not None
        problems += _check_templates(
            s.get("input"), allowed=reads, known=known, step=sid, field="input",
            loc=("steps", i, "input"), why=why, items=mapped,
        )
        problems += _check_map(s, allowed=reads, known=known, step=sid, index=i, why=why)
        if s.get("when") is not None:
            problems += _check_condition(s["when"], allowed=reads, known=known, step=sid,
                                         loc=("steps", i, "when"), why=why)
        comp = s.get("compensate")
        if isinstance(comp, Mapping):
            problems += _check_templates(
                comp.get("input"), allowed=undoes, known=known, step=sid,
                field="compensate.input", loc=("steps", i, "compensate", "input"), why=why,
                items=mapped,  # a map's items are undone one by one
            )
    problems += _merged_retry_problems(raw, steps)
    problems += _check_calls(raw, steps, allowed=upstream, known=known, why=why)
    problems += _check_templates(
        raw.get("output"), allowed=None, known=known, step=None, field="output",
        loc=("output",), why=why,
    )
    schema = raw.get("input_schema")
    if isinstance(schema, Mapping):
        from podium.definition.input_schema import schema_problems

        problems += schema_problems(schema)
    return problems
