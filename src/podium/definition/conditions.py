"""A step's ``when:``: a CEL expression over the data a template can read.

CEL (the Common Expression Language of Kubernetes admission rules, Hatchet and
Envoy) is small on purpose: no loops, no side effects, no way to reach the
interpreter, always terminating, so a workflow file can route without ``eval``.
The binding is ``common-expression-language`` (the Rust ``cel-interpreter``):
about 10 µs an evaluation.

An expression sees ``input`` (the run's input) and ``steps.ID.output`` (an
upstream step's output; ``null`` for one that was skipped or failed as
optional), as ``${{ }}`` templates do. Only the steps it names are handed to it,
so its cost does not grow with the size of the run. It must give a boolean:
anything else is a typed error of the step, never a guess at truthiness.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["Condition", "ConditionError", "compile_condition", "condition_problems"]

# What an expression may name at its top level.
NAMES = ("input", "steps")
# steps.ID or steps["ID"] (or 'ID'): the steps an expression reads. An id made at run
# time (steps[input.which]) cannot be seen here: then every step is handed over.
_STEP_REF = re.compile(
    r"""\bsteps\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*(["'])([^"'\]]+)\2\s*\])""")
_DYNAMIC = re.compile(r"\bsteps\s*\[\s*[^\"'\s]")
# CEL's macros bind a name of their own: list.exists(x, x > 1), map(x, ...), ...
_MACRO = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_WRAPPED = re.compile(r"^\s*\$\{\{(.*)\}\}\s*$", re.DOTALL)
MAX_CHARS = 4096


class ConditionError(Exception):
    """An expression that cannot be compiled, or did not give a boolean."""


def _source(text: str) -> str:
    """``${{ expr }}`` is accepted too, as templates are written."""
    m = _WRAPPED.match(text)
    return (m.group(1) if m else text).strip()


class Condition:
    """A compiled ``when:``, with the steps it reads."""

    __slots__ = ("_program", "dynamic", "source", "steps")

    def __init__(self, text: str) -> None:
        self.source = _source(text)
        if not self.source:
            raise ConditionError("the expression is empty")
        if len(self.source) > MAX_CHARS:
            raise ConditionError(f"the expression is over {MAX_CHARS:,} characters")
        # Imported here: the package loads its command line (prompt_toolkit, ~0.19 s) with
        # it, which every podium command would pay at start-up for a feature few use.
        import cel

        try:
            self._program = cel.compile(self.source)
        except ValueError as exc:
            raise ConditionError(_first_lines(str(exc))) from None
        bound = {m.group(1) for m in _MACRO.finditer(self.source)}  # exists(i, ...)
        unknown = sorted(set(self._program.variables()) - set(NAMES) - bound)
        if unknown:
            raise ConditionError(f"unknown name{'s' if len(unknown) > 1 else ''}"
                                 f" {', '.join(repr(u) for u in unknown)} (an expression"
                                 " reads input and steps.ID.output)")
        self.steps = tuple(dict.fromkeys(m.group(1) or m.group(3)
                                         for m in _STEP_REF.finditer(self.source)))
        self.dynamic = bool(_DYNAMIC.search(self.source))

    def evaluate(self, run_input: Any, outputs: Mapping[str, Any]) -> bool:
        """The expression's value over a run's data; ``ConditionError`` if not a boolean
        (or if it fails: a type mismatch, a missing key)."""
        wanted = outputs.keys() if self.dynamic else self.steps
        steps = {sid: {"output": outputs.get(sid)} for sid in wanted}
        try:
            value = self._program.execute({"input": run_input, "steps": steps})
        except (TypeError, ValueError, KeyError, RuntimeError) as exc:
            raise ConditionError(_failure(exc)) from None
        if not isinstance(value, bool):
            raise ConditionError(f"gave {_show(value)}, not a boolean (fix: compare it,"
                                 " e.g. `... == \"x\"`, or use has(...))")
        return value


def compile_condition(text: str | None) -> Condition | None:
    return None if text is None else Condition(text)


def condition_problems(text: Any) -> tuple[str | None, Condition | None]:
    """(what is wrong, or None; the compiled condition, if it compiles)."""
    if not isinstance(text, str):
        return "when must be a string: a CEL expression", None
    try:
        return None, Condition(text)
    except ConditionError as exc:
        return str(exc), None


def _first_lines(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return " ".join(lines[:1]) + ("\n" + "\n".join(lines[1:3]) if len(lines) > 1 else "")


def _failure(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"no key {exc.args[0]!r} in what it reads (fix: guard it with has(...))"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
