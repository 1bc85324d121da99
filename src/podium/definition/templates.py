"""``${{ path }}`` templates: data lookup only, never evaluation.

A template names a path into data the run already has: ``input.*``,
``steps.<id>.output.*``, ``run.id``, ``workflow.name`` or ``workflow.version``.
Anything else is rejected when the workflow is validated, so nothing a user
writes is ever executed. Templates are compiled once per workflow: resolving
a step's input at run time walks a prebuilt tree and does no parsing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = [
    "Compiled",
    "Ref",
    "Scope",
    "TemplateError",
    "TemplateLookupError",
    "compile_template",
]

_EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
_SEGMENT = re.compile(r"""\.?([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\[['"]([^'"]+)['"]\]|\.(\d+)""")
# A step id may start with a digit (``steps.2.output``), which the generic
# segments would read as a list index; the step position is parsed on its own.
_STEP = re.compile(r"steps\.([A-Za-z0-9][A-Za-z0-9_-]*)")
_STEP_OUTPUT = re.compile(r"steps\.([A-Za-z0-9][A-Za-z0-9_-]*)\.output")
_SUPPORTED = ("input.<key>..., steps.<id>.output..., run.id, workflow.name, workflow.version,"
              " and in a for_each step item... and item_index")


class TemplateError(ValueError):
    """A template that is not a data path; names the expression and a fix."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class TemplateLookupError(LookupError):
    """A path that names data the run does not have (a missing key, say)."""


@dataclass(frozen=True, slots=True)
class Ref:
    """One parsed path: its root, the step it names (if any) and the keys after."""

    root: str  # input | steps | run | workflow | item | item_index
    step: str | None
    path: tuple[str | int, ...]
    text: str


@dataclass(slots=True)
class Scope:
    """What templates can see while a run executes."""

    input: Any
    outputs: Mapping[str, Any]
    run_id: str
    workflow_name: str
    workflow_version: int | str
    # In one item of a for_each step: the item, and its position in the list.
    item: Any = None
    item_index: int | None = None


@lru_cache(maxsize=1024)
def parse_path(expr: str) -> Ref:
    # Cached (a Ref is immutable): a large plan says the same few paths over and over,
    # as the default input ``${{ input }}`` of every root step of a 1,000-way fan-out.
    text = expr.strip()
    whole = _STEP_OUTPUT.fullmatch(text)
    if whole:  # every dependent's default input and the default output: one match
        return Ref("steps", whole.group(1), (), text)
    segments: list[str | int] = []
    pos = 0
    step = _STEP.match(text)
    if step:
        segments += ["steps", step.group(1)]
        pos = step.end()
    while pos < len(text):
        m = _SEGMENT.match(text, pos)
        if not m or (pos == 0 and text.startswith(".")):
            raise TemplateError(
                f"'${{{{ {text} }}}}' is not a data path",
                f"templates only look data up: {_SUPPORTED}",
            )
        if m.group(1) is not None:
            segments.append(m.group(1))
        elif m.group(2) is not None:
            segments.append(int(m.group(2)))
        elif m.group(3) is not None:
            segments.append(m.group(3))
        else:
            segments.append(int(m.group(4)))
        pos = m.end()
    if not segments:
        raise TemplateError("empty template '${{ }}'", f"write a path: {_SUPPORTED}")
    root = segments[0]
    if root == "input":
        return Ref("input", None, tuple(segments[1:]), text)
    if root == "steps":
        if len(segments) < 3 or not isinstance(segments[1], str) or segments[2] != "output":
            raise TemplateError(
                f"'${{{{ {text} }}}}' must read a step's output",
                "write steps.<step-id>.output or steps.<step-id>.output.<key>",
            )
        return Ref("steps", segments[1], tuple(segments[3:]), text)
    if root == "run" and segments[1:] == ["id"]:
        return Ref("run", None, ("id",), text)
    if root == "item":
        return Ref("item", None, tuple(segments[1:]), text)
    if root == "item_index" and len(segments) == 1:
        return Ref("item_index", None, (), text)
    if root == "workflow" and len(segments) == 2 and segments[1] in ("name", "version"):
        return Ref("workflow", None, (segments[1],), text)
    raise TemplateError(
        f"'${{{{ {text} }}}}' is not a known path", f"templates can read {_SUPPORTED}"
    )


def _lookup(value: Any, path: tuple[str | int, ...], ref: Ref) -> Any:
    for key in path:
        if value is None:
            # An optional upstream that failed reads as null all the way down.
            return None
        try:
            if isinstance(value, Mapping):
                value = value[key] if isinstance(key, str) else value[str(key)]
            elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
                value = value[int(key)]
            else:
                raise TemplateLookupError(
                    f"'${{{{ {ref.text} }}}}': cannot read {key!r} of a {type(value).__name__}"
                )
        except (KeyError, IndexError, ValueError):
            raise TemplateLookupError(
                f"'${{{{ {ref.text} }}}}': no {key!r} in the data"
            ) from None
    return value


def _resolve_ref(ref: Ref, scope: Scope) -> Any:
    if ref.root == "input":
        return _lookup(scope.input, ref.path, ref)
    if ref.root == "steps":
        assert ref.step is not None
        return _lookup(scope.outputs.get(ref.step), ref.path, ref)
    if ref.root == "run":
        return scope.run_id
    if ref.root == "item":
        return _lookup(scope.item, ref.path, ref)
    if ref.root == "item_index":
        return scope.item_index
    return scope.workflow_name if ref.path == ("name",) else scope.workflow_version


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class Compiled:
    """A value with its templates parsed; ``resolve`` is a walk, not a parse."""

    __slots__ = ("_fn", "_refs", "constant")

    def __init__(self, fn: Any, refs: tuple[Ref, ...] | Callable[[], tuple[Ref, ...]],
                 constant: bool) -> None:
        self._fn = fn
        self._refs = refs
        self.constant = constant

    @property
    def refs(self) -> tuple[Ref, ...]:
        """Every path it reads. A plan's generated inputs make theirs when asked: no run
        reads them, and a 100,000-way join's were a Ref and its text per dependency."""
        refs = self._refs
        return refs if isinstance(refs, tuple) else refs()

    def resolve(self, scope: Scope) -> Any:
        return self._fn(scope)


def _build(value: Any, refs: list[Ref], errors: list[TemplateError]) -> Any:
    """Return a function of the scope, or the constant value itself wrapped."""
    if isinstance(value, str):
        if "${{" not in value:
            return lambda _s, v=value: v
        whole = _EXPR.fullmatch(value.strip())
        try:
            if whole and value.strip().count("${{") == 1:
                ref = parse_path(whole.group(1))
                refs.append(ref)
                return lambda s, r=ref: _resolve_ref(r, s)
            parts: list[str | Ref] = []
            last = 0
            for m in _EXPR.finditer(value):
                parts.append(value[last : m.start()])
                ref = parse_path(m.group(1))
                refs.append(ref)
                parts.append(ref)
                last = m.end()
            parts.append(value[last:])
            if "${{" in "".join(p for p in parts if isinstance(p, str)):
                raise TemplateError(
                    f"unclosed template in {value!r}", "close every '${{' with '}}'"
                )
        except TemplateError as exc:
            errors.append(exc)
            return lambda _s: None
        return lambda s, ps=tuple(parts): "".join(
            p if isinstance(p, str) else _as_text(_resolve_ref(p, s)) for p in ps
        )
    if isinstance(value, Mapping):
        pairs = _whole_refs(value)
        if pairs is not None:
            refs.extend(r for _, r in pairs)
            return lambda s, ps=pairs: {k: _resolve_ref(r, s) for k, r in ps}
        items = [(k, _build(v, refs, errors)) for k, v in value.items()]
        return lambda s, it=items: {k: f(s) for k, f in it}
    if isinstance(value, list | tuple):
        fns = [_build(v, refs, errors) for v in value]
        return lambda s, fs=fns: [f(s) for f in fs]
    return lambda _s, v=value: v


def _whole_refs(value: Mapping[Any, Any]) -> tuple[tuple[Any, Ref], ...] | None:
    """A mapping whose every value is one whole ``${{ path }}``, as (key, ref) pairs.

    A fan-in's default input is one such entry per dependency: a function per entry
    took ~180 bytes each (18 MB for the join of a 100,000-step fan-out), where one
    function over the pairs resolves them the same way.
    """
    if len(value) < 2:
        return None
    pairs: list[tuple[Any, Ref]] = []
    for k, v in value.items():
        if not isinstance(v, str) or "${{" not in v:
            return None
        stripped = v.strip()
        whole = _EXPR.fullmatch(stripped)
        if whole is None or stripped.count("${{") != 1:
            return None
        try:
            pairs.append((k, parse_path(whole.group(1))))
        except TemplateError:
            return None  # _build reports it
    return tuple(pairs)


def compile_template(value: Any) -> Compiled:
    """Compile ``value`` (any JSON value); raise the first ``TemplateError``.

    Use ``template_errors`` to collect every error instead.
    """
    refs: list[Ref] = []
    errors: list[TemplateError] = []
    fn = _build(value, refs, errors)
    if errors:
        raise errors[0]
    if not refs:
        return Compiled(lambda _s, v=value: v, (), True)
    return Compiled(fn, tuple(refs), False)


def template_errors(value: Any) -> tuple[list[Ref], list[TemplateError]]:
    refs: list[Ref] = []
    errors: list[TemplateError] = []
    _build(value, refs, errors)
    return refs, errors
