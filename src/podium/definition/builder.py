"""Workflows written in Python: a builder that produces the very same ``Workflow`` model.

The builder writes plain data (exactly what a YAML file would hold) and hands
it to ``workflow_from_dict``. A Python workflow is therefore validated by the
same code as a file, reports the same problems (all at once), is stored as
the same snapshot, and exports to the YAML it stands for; there is no second
model to keep in step with ``models.py``. Keyword arguments the builder does
not know are passed to the step (or workflow) untouched, so a field added to
``Step`` later works here without a change.

Names: ``podium.Workflow`` is already the validated model, so the builder is
``Flow`` and the decorator ``define``; a reader never has to guess which
``Workflow`` a line means.

References. ``handle.output["rows"]`` (or ``.rows``, or any depth of either)
and ``flow.input["x"]`` are ``Ref`` objects that become template strings
(``${{ steps.collect.output.rows }}``) when the step is recorded; in an
f-string or a ``+`` with text they become that text. A dag step depends on
every step its data names (templates written by hand included), plus those in
``after=``.

Typing. ``handle.output`` is typed as what the agent returns, so an IDE
completes its keys (a ``TypedDict``) or attributes (a pydantic model or a
dataclass) and a type checker flags a misspelt one; the type comes from the
agent function's return annotation (``agent=fn``, an ``@podium.agent``
function whose task parameter is not annotated ``Any``), or from
``returns=SomeType`` when the agent is named by its capability. That type is
a convenient fiction: at definition time the value is a ``Ref`` to data of a future run,
so use it only to build inputs (a ``Ref`` has no truth value and cannot be
iterated). Not completed: ``flow.input`` (typed ``Any``), and anything below
a key whose declared type is ``Any``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Generic, Literal, TypeVar, cast, overload

from podium.definition.loader import workflow_from_dict
from podium.definition.models import Mode, Workflow
from podium.definition.templates import TemplateError, parse_path, template_errors
from podium.errors import DefinitionError, Problem

__all__ = ["Flow", "Origin", "Ref", "StepHandle", "define", "export_text"]

T = TypeVar("T")
Item = TypeVar("Item")  # an item of the list a map step runs over

# Keys a template can write after a dot; others are written as ['key'].
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_UNSET: Any = object()
# Fields of a step that hold no data to read. (A compensation's references count:
# validation wants what it reads upstream too, except the step's own output.)
_NOT_DATA = frozenset(("id", "agent", "description", "depends_on"))


@dataclasses.dataclass(frozen=True, slots=True)
class Origin:
    """Where in the user's code something was declared, for problem messages."""

    file: str
    line: int

    @property
    def shown(self) -> str:
        """The file as a user reads it: relative to the current folder when inside it."""
        try:
            rel = os.path.relpath(self.file)
        except ValueError:  # another drive (Windows)
            return self.file
        return self.file if rel.startswith("..") else rel


def _caller() -> Origin:
    """The first frame outside this module: the line of the user's ``step(...)`` call.

    Frame info, not ``inspect.stack()`` (which reads every source file of the
    stack): one declaration costs a few attribute reads.
    """
    frame = sys._getframe(1)
    here = __file__
    while frame.f_back is not None and frame.f_code.co_filename == here:
        frame = frame.f_back
    return Origin(frame.f_code.co_filename, frame.f_lineno)


class _NotData(TypeError):
    """A value that cannot be part of a definition (a handle, a set, an object)."""


class Ref:
    """A path into data a run will have: ``${{ steps.<id>.output... }}`` or ``${{ input... }}``.

    Indexing (``ref["rows"]``, ``ref[0]``) and attribute access (``ref.rows``)
    go one level deeper. ``str(ref)``, ``f"{ref}"`` and ``"text " + ref``
    give the template text. It is never evaluated here: it only names data.
    """

    __slots__ = ("_path",)

    def __init__(self, path: str) -> None:
        self._path = path

    @property
    def path(self) -> str:
        """The path without the braces: ``steps.collect.output.rows``."""
        return self._path

    def __getitem__(self, key: str | int) -> Ref:
        if isinstance(key, bool) or not isinstance(key, str | int):
            raise TypeError(f"{self!s}[{key!r}]: a key is a string or a list index")
        if isinstance(key, int):
            if key < 0:
                raise ValueError(f"{self!s}[{key}]: templates count from the start (0, 1, ...)")
            return Ref(f"{self._path}[{key}]")
        if _NAME.match(key):
            return Ref(f"{self._path}.{key}")
        if not key or "'" in key or '"' in key:
            raise ValueError(f"{self!s}[{key!r}]: a template cannot name an empty key or"
                             " one with quotes (fix: rename the key in the agent's output)")
        return Ref(f"{self._path}['{key}']")

    def __getattr__(self, name: str) -> Ref:
        # Private and special names stay attributes (copy, pickle and IDEs probe them).
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __str__(self) -> str:
        return "${{ " + self._path + " }}"

    def __format__(self, spec: str) -> str:
        if spec:
            raise ValueError(f"{self!s}: a reference has no value to format yet"
                             " (fix: format it in the agent)")
        return str(self)

    def __repr__(self) -> str:
        return f"Ref({str(self)!r})"

    def __add__(self, other: object) -> str:
        if isinstance(other, str | Ref):
            return str(self) + str(other)
        return NotImplemented

    def __radd__(self, other: object) -> str:
        if isinstance(other, str):
            return other + str(self)
        return NotImplemented

    def __bool__(self) -> bool:
        raise TypeError(f"{self!s} is data of a future run, not a value: it cannot decide"
                        " anything while the workflow is defined (fix: decide in the agent,"
                        " or in the step's when= condition)")

    def __iter__(self) -> Any:
        raise TypeError(f"{self!s} is data of a future run: it cannot be iterated while the"
                        " workflow is defined (fix: pass the whole list to one step)")


# What a map step's input may be besides a function of the item (for the type
# checker: with ``object`` in the union a lambda's parameter would not be typed).
_Data = Mapping[str, Any] | list[Any] | tuple[Any, ...] | str | int | float | bool | Ref | None


class StepHandle(Generic[T]):
    """What ``Flow.step`` returns: the step's id, and its output to read from."""

    __slots__ = ("id", "origin")

    def __init__(self, step_id: str, origin: Origin) -> None:
        self.id = step_id
        self.origin = origin

    @property
    def output(self) -> T:
        """The step's output, typed as its agent returns it (see the module docstring)."""
        return cast(T, Ref(f"steps.{self.id}.output"))

    @property
    def ref(self) -> Ref:
        """The step's output as the ``Ref`` it is (``output`` without the typing fiction)."""
        return Ref(f"steps.{self.id}.output")

    def __repr__(self) -> str:
        return f"StepHandle({self.id!r})"


def _data(value: Any) -> Any:
    """Plain JSON data with every ``Ref`` written as its template text."""
    if isinstance(value, Ref):
        return str(value)
    if isinstance(value, StepHandle):
        raise _NotData(f"step handle '{value.id}' is not data (fix: write {value.id}.output,"
                       f" or {value.id}.output['key'])")
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _NotData(f"key {k!r} is not text (fix: JSON keys are strings)")
            out[k] = _data(v)
        return out
    if isinstance(value, list | tuple):
        return [_data(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise _NotData(f"a {type(value).__name__} is not JSON data (fix: use dicts, lists, text,"
                   " numbers, booleans, None, or references)")


_CEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TEMPLATE = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)


def _cel(text: str) -> str:
    """A ``when`` with each ``${{ path }}`` written as CEL reads it (``steps["a-b"].output``).

    So ``when=c.output.ok`` and ``when=f"{c.output.n} > 3"`` are expressions; a
    path CEL cannot read (``item``, ``run.id``) is left for validation to report.
    """

    def spell(m: re.Match[str]) -> str:
        try:
            ref = parse_path(m.group(1))
        except TemplateError:
            return m.group(0)
        if ref.root == "steps" and ref.step is not None:
            head = (f"steps.{ref.step}" if _CEL_NAME.match(ref.step)
                    else f"steps[{json.dumps(ref.step)}]") + ".output"
        elif ref.root == "input":
            head = "input"
        else:
            return m.group(0)
        for key in ref.path:
            head += (f".{key}" if isinstance(key, str) and _CEL_NAME.match(key)
                     else f"[{json.dumps(key)}]")
        return head

    return _TEMPLATE.sub(spell, text)


def _condition_steps(value: Any) -> list[str]:
    """The steps a ``when`` reads (none if it does not compile: validation says why)."""
    if not isinstance(value, str):
        return []
    from podium.definition.conditions import ConditionError, compile_condition

    try:
        cond = compile_condition(value)
    except ConditionError:
        return []
    return list(cond.steps) if cond is not None else []


def _agent_text(agent: Any) -> str:
    """A step's ``agent`` field from a string or an ``@podium.agent`` function.

    The function's capability, not its ``@id``: a step names work to do, and
    any agent providing it (this function, or a scaled-out HTTP twin) may do
    it, as in a file. Read by duck typing: ``definition`` imports no agents.
    """
    if isinstance(agent, str):
        return agent
    registered = getattr(agent, "__podium_agent__", None)
    name = getattr(agent, "__qualname__", type(agent).__name__)
    if registered is None:
        raise _NotData(
            f"function '{name}' is not registered as an agent (fix: decorate it with"
            " @podium.agent('capability'), or name its capability: agent='capability'"
            " (returns=<the type it returns> keeps the typing)")
    caps = sorted(getattr(registered, "capabilities", ()))
    if len(caps) != 1:
        raise _NotData(
            f"agent function '{name}' provides {len(caps)} capabilities ({', '.join(caps)}):"
            " which one this step needs is not clear (fix: agent='<capability>')")
    return str(caps[0])


@dataclasses.dataclass(slots=True)
class _Declared:
    id: str
    data: dict[str, Any]
    after: list[str]
    origin: Origin


class Flow:
    """A workflow being written in Python; ``build()`` validates it into a ``Workflow``.

    ``Flow("report", mode="dag", timeout="30m")``: any ``Workflow`` field is a
    keyword argument. Steps are added with ``step``; ``output`` may be set at
    any time before ``build``.
    """

    def __init__(
        self,
        name: str,
        *,
        mode: Mode = "dag",
        version: int | str = 1,
        description: str | None = None,
        output: Any = _UNSET,
        **fields: Any,
    ) -> None:
        self._origin = _caller()
        self._head: dict[str, Any] = {"name": name, "version": version}
        if description is not None:
            self._head["description"] = description
        self._head["mode"] = mode
        if "steps" in fields:
            raise DefinitionError([self._problem(
                "steps are added one by one (fix: handle = flow.step('id', 'capability', ...))",
                "steps", self._origin)])
        subs = fields.get("workflows")
        if isinstance(subs, Mapping):  # Flow or Workflow objects: kept as their data
            fields["workflows"] = {k: (v.build() if isinstance(v, Flow) else v).to_dict()
                                   if isinstance(v, Flow | Workflow) else v
                                   for k, v in subs.items()}
        self._head.update(fields)
        self._steps: list[_Declared] = []
        self._output: Any = _UNSET
        self._built: Workflow | None = None
        if output is not _UNSET:
            self.output = output

    @property
    def name(self) -> str:
        return str(self._head["name"])

    @property
    def origin(self) -> Origin:
        """Where the flow was declared (its problems without a step point there)."""
        return self._origin

    @property
    def input(self) -> Any:
        """The run's input: ``flow.input["source"]`` is ``${{ input.source }}``."""
        return Ref("input")

    def output_of(self, step_id: str) -> Any:
        """A step's output by id, for a step without a handle yet (its own ``compensate``)."""
        return Ref(f"steps.{step_id}.output")

    @property
    def run_id(self) -> Ref:
        return Ref("run.id")

    @property
    def output(self) -> Any:
        """The run's output (by default what the mode gives: see the README)."""
        return None if self._output is _UNSET else self._output

    @output.setter
    def output(self, value: Any) -> None:
        try:
            self._output = _data(value)
        except _NotData as exc:
            raise DefinitionError([self._problem(str(exc), "output", self._origin)]) from None
        self._built = None

    # Typed overloads: the handle's output type is what the agent function returns
    # (async functions first, so that it is what they return, not the coroutine), or
    # the type given as ``returns=``. ``returns`` takes a type, not a function: with
    # a function whose task parameter is ``Any``, type checkers cannot choose
    # between "async" and "sync" and give up with ``Any``.
    @overload
    def step(
        self, id: str, agent: str | Callable[..., Any] | None = ..., *, input: Any = ...,
        after: Iterable[StepHandle[Any] | str] = ..., returns: type[T], **fields: Any,
    ) -> StepHandle[T]: ...

    @overload
    def step(
        self, id: str, agent: Callable[..., Awaitable[T]], *, input: Any = ...,
        after: Iterable[StepHandle[Any] | str] = ..., returns: None = ..., **fields: Any,
    ) -> StepHandle[T]: ...

    @overload
    def step(
        self, id: str, agent: Callable[..., T], *, input: Any = ...,
        after: Iterable[StepHandle[Any] | str] = ..., returns: None = ..., **fields: Any,
    ) -> StepHandle[T]: ...

    @overload
    def step(
        self, id: str, agent: str | None = ..., *, input: Any = ...,
        after: Iterable[StepHandle[Any] | str] = ..., returns: None = ..., **fields: Any,
    ) -> StepHandle[Any]: ...

    def step(
        self,
        id: str,
        agent: str | Callable[..., Any] | None = None,
        *,
        input: Any = _UNSET,
        after: Iterable[StepHandle[Any] | str] = (),
        returns: type[Any] | None = None,
        **fields: Any,
    ) -> StepHandle[Any]:
        """Add a step; ``fields`` are any other ``Step`` fields (``retry``, ``when``...).

        ``returns`` only types the handle's output; it is not part of the definition.
        ``workflow=`` may be a ``Flow`` or a ``Workflow``: it is called by name and
        its definition kept under this workflow's ``workflows:``, as a file would.
        ``when=`` is a CEL expression; a reference in it (``when=c.output.ok``, or
        ``f"{c.output.n} > 3"``) stands for its path (``steps.c.output.n > 3``).
        """
        return self._add(id, agent, input, after, fields, _caller())

    # The same overloads as ``step``, with the output a list (one result per item).
    @overload
    def map(
        self, id: str, agent: str | Callable[..., Any] | None = ..., *, over: Iterable[Item],
        input: Callable[[Item], object] | _Data = ...,
        after: Iterable[StepHandle[Any] | str] = ...,
        returns: type[T], **fields: Any,
    ) -> StepHandle[list[T]]: ...

    @overload
    def map(
        self, id: str, agent: Callable[..., Awaitable[T]], *, over: Iterable[Item],
        input: Callable[[Item], object] | _Data = ...,
        after: Iterable[StepHandle[Any] | str] = ...,
        returns: None = ..., **fields: Any,
    ) -> StepHandle[list[T]]: ...

    @overload
    def map(
        self, id: str, agent: Callable[..., T], *, over: Iterable[Item],
        input: Callable[[Item], object] | _Data = ...,
        after: Iterable[StepHandle[Any] | str] = ...,
        returns: None = ..., **fields: Any,
    ) -> StepHandle[list[T]]: ...

    @overload
    def map(
        self, id: str, agent: str | None = ..., *, over: Iterable[Item],
        input: Callable[[Item], object] | _Data = ...,
        after: Iterable[StepHandle[Any] | str] = ...,
        returns: None = ..., **fields: Any,
    ) -> StepHandle[list[Any]]: ...

    def map(
        self,
        id: str,
        agent: str | Callable[..., Any] | None = None,
        *,
        over: Iterable[Any],
        input: Any = _UNSET,
        after: Iterable[StepHandle[Any] | str] = (),
        returns: type[Any] | None = None,
        **fields: Any,
    ) -> StepHandle[list[Any]]:
        """Add a step run once per item of ``over`` (``for_each``); its output is the list
        of results, in order.

        ``over`` is a reference to a list (``split.output["documents"]``). ``input``
        may be a function of the item, called once here with a reference to it:
        ``input=lambda doc: {"text": doc["body"]}`` gives ``${{ item.body }}``, typed
        as an element of ``over``. ``flow.item_index`` is the item's position.
        """
        origin = _caller()
        if not isinstance(over, Ref | str):
            raise DefinitionError([self._problem(
                f"over= must be a reference to a list, not a {type(over).__name__}"
                " (fix: over=step.output['items'], or over=flow.input['items'])",
                "for_each", origin, id)])
        if callable(input):
            input = input(Ref("item"))
        return self._add(id, agent, input, after, {"for_each": str(over), **fields}, origin)

    @property
    def item(self) -> Any:
        """In a ``map`` step's data: the item (``${{ item }}``)."""
        return Ref("item")

    @property
    def item_index(self) -> Ref:
        """In a ``map`` step's data: the item's position (``${{ item_index }}``)."""
        return Ref("item_index")

    def _add(self, id: str, agent: Any, input: Any, after: Any, fields: dict[str, Any],
             origin: Origin) -> StepHandle[Any]:
        problems: list[Problem] = []
        data: dict[str, Any] = {"id": id}
        if agent is not None:
            try:
                data["agent"] = _agent_text(agent)
            except _NotData as exc:
                problems.append(self._problem(str(exc), "agent", origin, id))
        if input is not _UNSET:
            fields = {"input": input, **fields}
        for key, value in fields.items():
            try:
                if key == "workflow" and isinstance(value, Flow | Workflow):
                    data[key] = self._call(value)
                elif key == "when" and isinstance(value, str | Ref):
                    data[key] = _cel(str(value))
                else:
                    data[key] = _data(value)
            except _NotData as exc:
                problems.append(self._problem(str(exc), key, origin, id))
        ids: list[str] = []
        for a in [after] if isinstance(after, str | StepHandle) else after:
            if isinstance(a, StepHandle):
                ids.append(a.id)
            elif isinstance(a, str):
                ids.append(a)
            else:
                problems.append(self._problem(
                    f"{a!r} is not a step (fix: after=[handle] or after=['step-id'])",
                    "after", origin, id))
        if problems:
            raise DefinitionError(problems)
        self._steps.append(_Declared(id, data, ids, origin))
        self._built = None
        return StepHandle(id, origin)

    def _call(self, sub: Flow | Workflow) -> str:
        """A sub-workflow given as an object: kept under ``workflows:``, called by name."""
        model = sub.build() if isinstance(sub, Flow) else sub
        own = self._head.setdefault("workflows", {})
        if not isinstance(own, dict):
            raise _NotData("workflows= is not a mapping of name to definition")
        doc = model.to_dict()
        if own.get(model.name, doc) != doc:
            raise _NotData(f"another workflow named '{model.name}' is already under workflows:"
                           " (fix: give one of them another name)")
        own[model.name] = doc
        return model.name

    def to_dict(self) -> dict[str, Any]:
        """The definition as plain data, exactly what a workflow file would hold.

        Not validated (``build`` does that). In mode dag, ``depends_on`` holds the
        steps given in ``after=`` and then those the step's data refers to.
        """
        known = {s.id for s in self._steps}
        dag = self._head.get("mode", "dag") == "dag"
        steps = []
        for s in self._steps:
            step = dict(s.data)
            given = step.pop("depends_on", [])
            if isinstance(given, dict):  # {any_of: [...]}: the user chose the edges
                steps.append({**step, "depends_on": given})
                continue
            deps = [d for d in _as_list(given) if d is not None]
            deps += [d for d in s.after if d not in deps]
            if dag:
                for key, value in s.data.items():
                    if key in _NOT_DATA:
                        continue
                    named = _condition_steps(value) if key == "when" else [
                        ref.step for ref in template_errors(value)[0]]
                    for ref_step in named:
                        if ref_step in known and ref_step != s.id and ref_step not in deps:
                            deps.append(ref_step)
            if deps:
                # After agent and before input, where a file usually has it.
                ordered = {k: v for k, v in step.items() if k in ("id", "agent", "description")}
                ordered["depends_on"] = deps
                ordered.update((k, v) for k, v in step.items() if k not in ordered)
                step = ordered
            steps.append(step)
        doc: dict[str, Any] = {**self._head, "steps": steps}
        if self._output is not _UNSET:
            doc["output"] = self._output
        return doc

    def build(self) -> Workflow:
        """Validate into a ``Workflow``; ``DefinitionError`` lists every problem.

        Each problem points at the Python line that declared its step (the
        flow's line for workflow-wide ones). The model is kept until the flow
        changes, so an engine that caches plans per model compiles it once.
        """
        if self._built is None:
            try:
                self._built = workflow_from_dict(self.to_dict(), source=self._origin.shown)
            except DefinitionError as exc:
                raise DefinitionError(self.locate(exc.problems)) from None
        return self._built

    def locate(self, problems: Iterable[Problem]) -> list[Problem]:
        """Give problems found in this flow's data the file and line of their declaration.

        Also for problems found later (a capability no agent provides), which
        name the step but know no line.
        """
        index = {s.id: s for s in self._steps}
        out: list[Problem] = []
        for p in problems:
            origin = self._origin
            loc = p.loc
            if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int) and (
                loc[1] < len(self._steps)
            ):
                origin = self._steps[loc[1]].origin
            elif p.step is not None and p.step in index:
                origin = index[p.step].origin
            out.append(dataclasses.replace(p, file=origin.shown, line=origin.line))
        out.sort(key=lambda p: (p.file or "", p.line or 0))
        return out

    def to_yaml(self) -> str:
        """The YAML file this flow stands for (validated first)."""
        return export_text(self.build(), "yaml")

    def _problem(self, message: str, field: str, origin: Origin,
                 step: str | None = None) -> Problem:
        return Problem(message, file=origin.shown, line=origin.line, step=step, field=field)

    def __repr__(self) -> str:
        return f"Flow({self.name!r}, {len(self._steps)} steps)"


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    return [value]


def define(
    name: str,
    *,
    mode: Mode = "dag",
    version: int | str = 1,
    description: str | None = None,
    **fields: Any,
) -> Callable[[Callable[[Flow], object]], Workflow]:
    """Decorate a function that adds steps to a ``Flow``; the name is bound to the model.

    The result is a validated ``Workflow``, so ``Engine.run(report, input)``
    takes it as it is. What the function returns, when not None, is the run's
    output. Problems raise ``DefinitionError`` when the module is imported:
    a broken workflow is found at once, not when it first runs.
    """

    def wrap(fn: Callable[[Flow], object]) -> Workflow:
        flow = Flow(name, mode=mode, version=version, description=description, **fields)
        result = fn(flow)
        if result is not None:
            flow.output = result
        return flow.build()

    return wrap


def export_text(workflow: Workflow, fmt: Literal["yaml", "json"] = "yaml") -> str:
    """The file a workflow stands for: only the fields it sets, in the model's order.

    Durations come out as seconds (``30.0``): the model keeps no unit, and
    loading the text back gives the same model.
    """
    doc = workflow.to_dict()
    if fmt == "json":
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    import yaml  # only an export needs it

    return str(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100))
