"""The workflow file as models: what a workflow *is*, with no I/O and no engine.

Models are frozen once validated (a run keeps the exact definition it started
with), reject unknown keys (a typo must not pass silently), and are the same
objects whether they come from YAML, JSON or Python.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from podium.definition.alerts import AlertRule
from podium.definition.durations import Duration, PositiveDuration
from podium.definition.policy import (
    AGENT_REF_PATTERN,
    BUILTIN_ERROR_TYPES,
    STEP_ID_PATTERN,
    Model,
    RetryPolicy,
    empty_list,
)

__all__ = [
    "BUILTIN_ERROR_TYPES",
    "Compensation",
    "Defaults",
    "Recovery",
    "RetryPolicy",
    "Step",
    "Tolerate",
    "Workflow",
]

Mode = Literal["sequential", "parallel", "dag"]
OnFailure = Literal["fail_fast", "continue", "compensate"]
Strategy = Literal["least_loaded", "round_robin", "latency"]
Trigger = Literal["all_success", "one_success", "all_done"]
WORKFLOW_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
MAX_DEPTH = 8  # sub-workflows within sub-workflows

class Compensation(Model):
    """What undoes a step: another agent call run during rollback."""

    agent: str = Field(pattern=AGENT_REF_PATTERN)
    input: Any = None
    retry: RetryPolicy | list[RetryPolicy] | None = None
    timeout: PositiveDuration | None = None


class Tolerate(Model):
    """How many items of a for_each step may fail (after their retries) without failing
    the step: a count, or a percentage of the items."""

    count: int | None = Field(None, ge=0, description="Items that may fail")
    percent: float | None = Field(None, ge=0, le=100, description="Share of the items, 0-100")

    @model_validator(mode="after")
    def _one(self) -> Tolerate:
        if (self.count is None) == (self.percent is None):
            raise ValueError("tolerate takes one of count or percent")
        return self

    def allows(self, items: int) -> int:
        """How many failed items of ``items`` leave the step succeeded."""
        if self.count is not None:
            return self.count
        assert self.percent is not None
        return int(items * self.percent / 100 + 1e-9)


MAX_ITEMS = 100_000  # items of one for_each step (each is a step's row and events)


class ContinueWith(Model):
    """On a wait's timeout: go on, with this as the step's output."""

    continue_with: Any = None


class WaitFor(Model):
    """Wait for a signal (``podium signal RUN NAME --data JSON``); its data is the
    step's output. Past ``timeout``: ``fail`` (the default), or go on with a value."""

    signal: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length=128)
    timeout: PositiveDuration | None = None
    on_timeout: Literal["fail"] | ContinueWith = "fail"


class Approval(Model):
    """Wait for a person: ``podium approve RUN STEP [-i k=v]`` (output ``{approved: true,
    by, data}``) or ``--reject --reason`` (the step fails, ``rejected``)."""

    prompt: str | None = Field(None, max_length=4096, description="What to approve")
    timeout: PositiveDuration | None = None
    on_timeout: Literal["fail"] | ContinueWith = "fail"


class Step(Model):
    id: str = Field(pattern=STEP_ID_PATTERN, max_length=128)
    agent: str | None = Field(
        None,
        pattern=AGENT_REF_PATTERN,
        description="A capability, or an agent id written as @agent-id",
    )
    workflow: str | None = Field(
        None, pattern=WORKFLOW_NAME_PATTERN, max_length=128,
        description="A sub-workflow by name, run as a child run (instead of an agent): one"
                    " defined under workflows:, NAME.yaml beside this file, or one registered"
                    " in the database (podium workflow register)")
    version: int | str | None = Field(
        None, description="With workflow: the version of the sub-workflow to run (its"
                          " version:); without it, the one beside this file, else the newest"
                          " registered")
    description: str | None = None
    input: Any = Field(None, description="Any JSON value; ${{ path }} templates are resolved")
    depends_on: list[str] = Field(default_factory=empty_list)
    retry: RetryPolicy | list[RetryPolicy] | None = None
    timeout: PositiveDuration | None = Field(None, description="One attempt (start to close)")
    deadline: PositiveDuration | None = Field(None, description="All attempts together")
    acquire_timeout: Duration | None = Field(
        None, description="How long to wait for a free agent (schedule to start)")
    strategy: Strategy | None = Field(None, description="How to pick among agents")
    optional: bool = Field(False, description="A failure does not fail the run")
    compensate: Compensation | None = None
    when: str | None = Field(
        None, max_length=4096,
        description="A CEL expression over input and steps.ID.output: false skips the step")
    wait_for: WaitFor | None = Field(None, description="Wait for a signal (no agent)")
    approval: Approval | None = Field(None, description="Wait for a person's approval")
    sleep: PositiveDuration | None = Field(None, description="A durable timer (no agent)")
    wait_until: str | None = Field(
        None, max_length=1024,
        description="A durable timer to a time: epoch seconds or RFC 3339, or ${{ path }}")
    for_each: str | None = Field(
        None, max_length=1024,
        description="${{ path }} to a list: the step runs once per item (${{ item }},"
                    " ${{ item_index }}), its output the results in order")
    max_concurrency: int | None = Field(
        None, ge=1, le=10_000, description="Items of a for_each step in flight at once")
    tolerate: Tolerate | None = Field(
        None, description="Failed items a for_each step survives: {count: N} or {percent: P}")
    trigger: Trigger = Field(
        "all_success",
        description="When it runs after its dependencies: all_success (a skipped or failed"
                    " one skips it), one_success (any_of), all_done (whatever they did)")

    @model_validator(mode="before")
    @classmethod
    def _any_of(cls, data: Any) -> Any:
        """``depends_on: {any_of: [a, b]}`` is ``depends_on: [a, b]`` with
        ``trigger: one_success``: a join after branches of which one ran."""
        if not isinstance(data, dict) or not isinstance(data.get("depends_on"), dict):
            return data
        spec = data["depends_on"]
        if set(spec) != {"any_of"} or not isinstance(spec["any_of"], list):
            raise ValueError("depends_on is a list of step ids, or {any_of: [ids]}")
        if data.get("trigger", "one_success") != "one_success":
            raise ValueError(f"depends_on: {{any_of: ...}} means trigger: one_success, not"
                             f" {data['trigger']!r}")
        return {**data, "depends_on": spec["any_of"], "trigger": "one_success"}


class _StepFields:
    """Nothing but attributes: its instances' dicts share one table of keys (PEP 412)."""


# Workflows of fewer steps keep pydantic's dicts: little to save, ~3 µs a step to do it.
_COMPACT_FROM = 256


def _compact_steps(steps: list[Step]) -> None:
    """Make a big workflow's steps small: ~1,250 bytes each as pydantic leaves them, 125
    MB for 100,000 steps, most of it two things each step has its own of.

    - Its dict of 23 field values: pydantic makes a plain dict per model (832 bytes).
      The dict of an ordinary object's attributes keeps only the values and shares its
      keys with every other object of its class (~256 bytes): each step gets one such,
      the same values in the same order. It is a dict like any other to everything
      that reads it, and frozen models are never written to.
    - Its set of the fields it was given (216 bytes): steps that set the same keys share
      one. pydantic never changes a frozen model's set, and copies it before changing a
      copy's (``model_copy``).
    """
    shared: dict[frozenset[str], set[str]] = {}
    for step in steps:
        own = step.model_fields_set
        one = shared.setdefault(frozenset(own), own)
        if one is not own:
            object.__setattr__(step, "__pydantic_fields_set__", one)
    if len(steps) < _COMPACT_FROM:
        return
    for step in steps:
        holder = _StepFields()
        for name, value in step.__dict__.items():
            setattr(holder, name, value)
        object.__setattr__(step, "__dict__", vars(holder))


class Defaults(Model):
    timeout: PositiveDuration | None = None
    retry: RetryPolicy | list[RetryPolicy] | None = None


class Recovery(Model):
    """How often a run is taken over after the process running it died.

    A step that kills its process every time (out of memory, a crash in a native
    library) would otherwise be run again without end by whoever takes the run
    over. Takeovers wait 1 s, 2 s, 4 s... apart; after ``max`` of them the run
    fails with ``worker_lost`` (``podium resume`` can still redrive it by hand).
    """

    max: int = Field(5, ge=0, le=1000, description="Takeovers before the run fails")


class Workflow(Model):
    """A named, versioned set of steps. Semantic checks live in ``validate``."""

    name: str = Field(pattern=WORKFLOW_NAME_PATTERN, max_length=128)
    version: int | str = 1
    description: str | None = None
    mode: Mode = "dag"
    timeout: PositiveDuration | None = Field(None, description="The whole run")
    sla: PositiveDuration | None = Field(None, description="Alert when a run takes longer")
    max_parallel: int | None = Field(None, ge=1, description="Steps of one run in flight")
    on_failure: OnFailure = "fail_fast"
    strategy: Strategy | None = Field(
        None, description="How to pick among agents: least_loaded (default), round_robin, latency")
    defaults: Defaults = Field(default_factory=Defaults)
    input_schema: dict[str, Any] | None = None
    steps: list[Step] = Field(min_length=1)
    output: Any = None
    alerts: list[AlertRule] = Field(
        default_factory=empty_list, description="Alert rules for its runs")
    recovery: Recovery = Field(default_factory=Recovery,
                               description="Takeovers after a crash before the run fails")
    queue: str = Field("default", pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=64,
                       description="The queue its submitted runs wait in (podium worker --queue)")
    max_runs: int | None = Field(
        None, ge=1, le=100_000,
        description="Runs of it executing at once across every worker (PostgreSQL's claims)")
    workflows: dict[str, Workflow] = Field(
        default_factory=dict,
        description="The sub-workflows its steps call, by name (the loader adds NAME.yaml files"
                    " found beside this one); kept in every run's definition")

    @model_validator(mode="after")
    def _semantics(self) -> Workflow:
        # Imported here: checks depend on the models, not the other way round.
        from podium.definition.validate import semantic_problems

        problems = semantic_problems(self.model_dump(mode="python", exclude_unset=True))
        if problems:
            from podium.errors import DefinitionError

            raise DefinitionError(problems)
        _compact_steps(self.steps)
        return self

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def to_dict(self) -> dict[str, Any]:
        """The definition as plain JSON data (what a run stores as its snapshot)."""
        return self.model_dump(mode="json", exclude_unset=True)
