"""Compile every mode into one DAG plan.

``sequential`` is a chain, ``parallel`` is independent steps, ``dag`` is the
declared edges: the scheduler sees only nodes with dependencies and
dependents, so modes are shapes of the plan, not code paths. Default inputs,
effective retry policies and templates are settled here once, so the engine
does no per-step parsing or merging.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from podium.definition.conditions import Condition, ConditionError, compile_condition
from podium.definition.models import Compensation, RetryPolicy, Step, Tolerate, Workflow
from podium.definition.templates import Compiled, Ref, Scope, compile_template
from podium.errors import DefinitionError, Problem

__all__ = ["Plan", "PlanNode", "WaitSpec", "approval_signal", "compile_plan", "effective_retry"]


@dataclass(frozen=True, slots=True)
class WaitSpec:
    """What a step that waits waits for: a signal (an approval is ``approve:STEP``),
    with its timeout; or a durable timer (``sleep`` seconds, or ``until`` a time)."""

    kind: str  # approval | signal | sleep | until
    signal: str | None = None
    timeout_s: float | None = None
    on_timeout: Any = "fail"  # "fail", or ContinueWith
    sleep_s: float | None = None
    until: Compiled | None = None


def approval_signal(step_id: str) -> str:
    return f"approve:{step_id}"


def _wait_of(s: Step) -> WaitSpec | None:
    if s.approval is not None:
        return WaitSpec("approval", approval_signal(s.id), s.approval.timeout,
                        s.approval.on_timeout)
    if s.wait_for is not None:
        return WaitSpec("signal", s.wait_for.signal, s.wait_for.timeout, s.wait_for.on_timeout)
    if s.sleep is not None:
        return WaitSpec("sleep", sleep_s=s.sleep)
    if s.wait_until is not None:
        return WaitSpec("until", until=compile_template(s.wait_until))
    return None


@dataclass(slots=True)
class PlanNode:
    index: int
    id: str
    step: Step
    agent: str
    deps: tuple[int, ...]
    dependents: tuple[int, ...] = ()
    input: Compiled | None = None
    retry: tuple[RetryPolicy, ...] = ()
    timeout_s: float | None = None
    deadline_s: float | None = None
    optional: bool = False
    strategy: str | None = None
    compensate: Compensation | None = None
    compensate_input: Compiled | None = None
    compensate_retry: tuple[RetryPolicy, ...] = ()
    when: Condition | None = None
    trigger: str = "all_success"
    for_each: Compiled | None = None  # the list a map step runs once per item of
    sub: Plan | None = None  # the plan of the sub-workflow it runs (``workflow:``)
    wait: WaitSpec | None = None  # what it waits for (approval, wait_for, sleep, wait_until)
    item_concurrency: int | None = None
    tolerate: Tolerate | None = None
    # Set from the above once: a step that is no single agent call (it waits, maps
    # or runs a sub-workflow), and one that decides itself when ready (a ``when:``,
    # a trigger rule). The engine asks both per step; most steps are neither.
    special: bool = field(init=False, default=False)
    gated: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.special = self.wait is not None or self.for_each is not None or self.sub is not None
        self.gated = self.when is not None or self.trigger != "all_success"


@dataclass(slots=True)
class Plan:
    workflow: Workflow
    nodes: list[PlanNode]
    by_id: dict[str, PlanNode]
    roots: list[int]
    output: Compiled
    # Every distinct agent ref the steps and their compensations name: what must be
    # registered before a run starts, checked once per ref rather than per step.
    agent_refs: frozenset[str] = frozenset()
    # Per node, by index: ``gated``, and how many dependencies it has (what a new run
    # starts from). Made once per plan, not per run.
    gated: tuple[bool, ...] = field(init=False, default=())
    dep_counts: tuple[int, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        self.gated = tuple(n.gated for n in self.nodes)
        self.dep_counts = tuple(len(n.deps) for n in self.nodes)

    @property
    def needs(self) -> tuple[str, ...]:
        """``agent_refs`` in order: what a worker must provide to execute a run."""
        return tuple(sorted(self.agent_refs))

    def __len__(self) -> int:
        return len(self.nodes)


def _as_tuple(retry: RetryPolicy | list[RetryPolicy] | None) -> tuple[RetryPolicy, ...]:
    if retry is None:
        return ()
    return tuple(retry) if isinstance(retry, list) else (retry,)


def effective_retry(
    step_retry: RetryPolicy | list[RetryPolicy] | None,
    default: RetryPolicy | list[RetryPolicy] | None,
    where: str,
) -> tuple[RetryPolicy, ...]:
    """A step's policy overrides the defaults key by key; a list replaces them."""
    if step_retry is None:
        return _as_tuple(default)
    if isinstance(step_retry, RetryPolicy) and isinstance(default, RetryPolicy):
        merged = default.model_dump(include=default.model_fields_set)
        merged.update(step_retry.model_dump(include=step_retry.model_fields_set))
        try:
            return (RetryPolicy.model_validate(merged),)
        except ValidationError as exc:
            raise DefinitionError(
                [Problem("retry merged with defaults.retry is invalid: "
                         + e["msg"].removeprefix("Value error, "),
                         step=where, field="retry", hint="set the conflicting keys on the step")
                 for e in exc.errors()]
            ) from None
    return _as_tuple(step_retry)


class _Templates:
    """One compiled template per distinct input of a plan.

    A fan-out's branches all have the same input (``{start: ${{ steps.start.output
    }}}`` when they say none): compiled once per step, its closures and refs took
    ~1.8 KB a step, 180 MB of a 100,000-step plan. A compiled template is a pure
    function of the scope, so steps with the same input can share one.
    """

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[str, Compiled] = {}

    def __call__(self, raw: Any) -> Compiled:
        try:
            # As text: the bytes orjson returns keep its whole output buffer (~4 KB
            # each), and a chain's steps each have an input of their own to keep.
            key = orjson.dumps(raw).decode()
        except TypeError:  # not JSON (keys that are not strings...): compiled apart
            return compile_template(raw)
        found = self._seen.get(key)
        if found is None:
            found = self._seen[key] = compile_template(raw)
        return found


def compile_plan(workflow: Workflow, _subs: dict[int, Plan] | None = None) -> Plan:
    subs = {} if _subs is None else _subs  # one plan per sub-workflow, however often called
    template = _Templates()
    steps = workflow.steps
    # One int object per position, for the index and every edge naming it (past 256
    # each int is an object of its own: 2.7 MB twice over at 100,000 steps).
    positions = list(range(len(steps)))
    index = {s.id: i for i, s in zip(positions, steps, strict=True)}
    nodes: list[PlanNode] = []
    # Equal edge tuples are one object: a fan-out's 100,000 branches each had their
    # own (start,) and [join] (~14 MB of a 100,000-step plan).
    edges: dict[tuple[int, ...], tuple[int, ...]] = {}
    # A DAG step's default input, {dep_id: output}, one per distinct set of dependencies
    # (the edge tuples above are shared, so equal sets are one key). Not compiled from
    # its template: a 100,000-way join kept a parsed path, its text and a (key, path)
    # pair per dependency, ~23 MB of a 100,000-step plan, and a 3 MB JSON text to find
    # equal templates by.
    dep_inputs: dict[tuple[int, ...], Compiled] = {}

    def dep_input(deps: tuple[int, ...]) -> Compiled:
        found = dep_inputs.get(deps)
        if found is None:
            found = dep_inputs[deps] = _outputs_of(tuple(steps[d].id for d in deps))
        return found

    mode = workflow.mode
    defaults = workflow.defaults
    for i, s in zip(positions, steps, strict=True):
        if mode == "sequential":
            deps: tuple[int, ...] = (i - 1,) if i else ()
        elif mode == "parallel":
            deps = ()
        elif s.depends_on:
            deps = tuple(dict.fromkeys(index[d] for d in s.depends_on))
            deps = edges.setdefault(deps, deps)
        else:
            deps = ()
        if s.input is not None or "input" in s.model_fields_set:
            step_input = template(s.input)
        elif mode == "sequential" and i:
            step_input = template("${{ steps.%s.output }}" % steps[i - 1].id)  # noqa: UP031 - braces
        elif deps:
            step_input = dep_input(deps)
        else:
            step_input = template("${{ input }}")
        comp = s.compensate
        node = PlanNode(
            index=i,
            id=s.id,
            step=s,
            agent=s.agent or "",
            deps=deps,
            input=step_input,
            retry=effective_retry(s.retry, defaults.retry, s.id),
            timeout_s=s.timeout if s.timeout is not None else defaults.timeout,
            deadline_s=s.deadline,
            optional=s.optional,
            strategy=s.strategy or workflow.strategy,
            compensate=comp,
            when=_condition(s),
            trigger=s.trigger,
            for_each=None if s.for_each is None else template(s.for_each),
            item_concurrency=s.max_concurrency,
            tolerate=s.tolerate,
            sub=None if s.workflow is None else _sub_plan(workflow.workflows[s.workflow], subs),
            wait=_wait_of(s),
        )
        if comp is not None:
            node.compensate_input = template(
                comp.input if comp.input is not None else "${{ steps.%s.output }}" % s.id  # noqa: UP031
            )
            node.compensate_retry = _as_tuple(comp.retry)
        nodes.append(node)
    dependents: list[list[int]] = [[] for _ in nodes]
    for node in nodes:
        for d in node.deps:
            dependents[d].append(node.index)
    for node, after in zip(nodes, dependents, strict=True):
        if after:
            out = tuple(after)
            node.dependents = edges.setdefault(out, out)
    if workflow.output is not None:
        output = compile_template(workflow.output)
    elif mode == "sequential":
        output = compile_template("${{ steps.%s.output }}" % nodes[-1].id)  # noqa: UP031
    else:
        output = _leaf_outputs([n.id for n in nodes if not n.dependents])
    return Plan(
        workflow=workflow,
        nodes=nodes,
        by_id={n.id: n for n in nodes},
        roots=[n.index for n in nodes if not n.deps],
        output=output,
        agent_refs=frozenset(n.agent for n in nodes if n.sub is None and n.wait is None)
        | {n.compensate.agent for n in nodes if n.compensate is not None}
        # A sub-workflow runs in the process that runs its caller: its agents too.
        | {ref for n in nodes if n.sub is not None for ref in n.sub.agent_refs},
    )


def _leaf_outputs(ids: list[str]) -> Compiled:
    """A DAG's default output, each last step's output by id: what the template
    ``{id: "${{ steps.<id>.output }}", ...}`` compiles to, built without parsing it.

    Parsing it cost 2.3 ms of a fresh process's 1,000-way fan-out, before any step
    ran. Step ids are what the template's step pattern reads (``STEP_ID_PATTERN``).
    """
    return _outputs_of(tuple(ids))


def _outputs_of(ids: tuple[str, ...]) -> Compiled:
    """``{id: output}`` for each of ``ids``: what ``{id: "${{ steps.<id>.output }}",
    ...}`` resolves to (an output not there reads as null, as the template's does)."""

    def outputs_of(scope: Scope) -> dict[str, Any]:
        outputs = scope.outputs
        return {i: outputs.get(i) for i in ids}

    def refs() -> tuple[Ref, ...]:
        return tuple(Ref("steps", i, (), f"steps.{i}.output") for i in ids)

    return Compiled(outputs_of, refs, False)


def _sub_plan(child: Workflow, subs: dict[int, Plan]) -> Plan:
    found = subs.get(id(child))
    if found is None:
        found = subs[id(child)] = compile_plan(child, subs)
    return found


def _condition(step: Step) -> Condition | None:
    try:
        return compile_condition(step.when)
    except ConditionError as exc:  # validation catches it first: a stored definition
        raise DefinitionError([Problem(f"when: {exc}", step=step.id, field="when")]) from None


def mermaid(plan: Plan) -> str:
    """A Mermaid flowchart of the plan as it executes (modes drawn by their shape)."""
    wf = plan.workflow
    lines = ["flowchart TD", f"    %% {wf.name} v{wf.version} ({wf.mode})", "    start((input))"]
    for n in plan.nodes:
        what = n.agent or (f"workflow {n.step.workflow}" if n.sub is not None else
                           _waits_for(n.wait))
        label = f"{n.id}<br/><small>{_text(what)}</small>"
        if n.step.for_each is not None:
            label += f"<br/><small>for each {_text(n.step.for_each)}</small>"
        if n.when is not None:
            label += f"<br/><small>when {_text(n.when.source)}</small>"
        shape = (f'{_mid(n)}[["{label}"]]' if n.sub is not None
                 else f'{_mid(n)}(["{label}"])' if n.optional else f'{_mid(n)}["{label}"]')
        lines.append(f"    {shape}")
    for n in plan.nodes:
        if not n.deps:
            lines.append(f"    start --> {_mid(n)}")
        arrow = {"one_success": "-. any of .->", "all_done": "-. done .->"}.get(n.trigger, "-->")
        for d in n.deps:
            lines.append(f"    {_mid(plan.nodes[d])} {arrow} {_mid(n)}")
    lines.append("    done((output))")
    for n in plan.nodes:
        if not n.dependents:
            lines.append(f"    {_mid(n)} --> done")
    return "\n".join(lines) + "\n"


def _waits_for(wait: WaitSpec | None) -> str:
    if wait is None:
        return ""
    if wait.kind in ("approval", "signal"):
        return f"waits for {wait.kind} {wait.signal}" if wait.kind == "signal" \
            else "waits for approval"
    return "sleeps" if wait.kind == "sleep" else "waits until"


def _text(text: str) -> str:
    """Text inside a quoted Mermaid label: its own quotes and brackets as entities."""
    for raw, entity in (("&", "#amp;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(raw, entity)
    return text


def _mid(node: PlanNode) -> str:
    """Mermaid node ids by position: step ids may differ only in '-' vs '_'."""
    return f"s{node.index}"
