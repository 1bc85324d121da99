"""The engine: starts runs, supervises them, and owns the event bus.

An ``Engine`` is cheap to make and holds no event loop until it runs
something. Runs are tasks on the caller's loop; a small supervisor task
(started only while runs are active) polls the store for cancel requests
from other processes and renews this owner's leases. A run the store says
this owner lost (another process took it over after this one's lease lapsed)
stops at once and writes nothing more; when the leases cannot be renewed for
two thirds of their length, the engine stops every run itself (self-fencing),
before anyone else may take them over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from podium.agents.registry import AgentRegistry
from podium.clock import Clock, SystemClock
from podium.definition.loader import apply_input_defaults, check_input, workflow_from_dict
from podium.definition.models import Workflow
from podium.definition.plan import Plan, compile_plan
from podium.engine.context import RunContext
from podium.engine.journal import Journal
from podium.engine.owners import new_owner_id, pid_gone
from podium.engine.retry import RetryState
from podium.engine.run import CANCELLED, FAILED, Calls, RunExecution, calls_of
from podium.engine.supervisor import supervise
from podium.errors import (
    ConfigError,
    DefinitionError,
    InputError,
    NothingToCompensate,
    PodiumError,
    Problem,
    RunExists,
    RunHeld,
    RunLost,
    RunNotFound,
)
from podium.events import (
    ErrorInfo,
    Event,
    EventBus,
    RunCancelRequested,
    RunSubmitted,
    RunTraced,
)
from podium.state import (
    LIVE_RUN_STATUSES,
    TERMINAL_RUN_STATUSES,
    CompensationStatus,
    RunRecord,
    RunStatus,
    StepStatus,
    decided_skip,
)
from podium.store.base import Store, WorkerStore
from podium.store.memory import MemoryStore

__all__ = ["Engine", "EngineConfig", "RunHandle", "check_agents", "compensable_steps", "new_run_id"]

log = logging.getLogger("podium.engine")

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(n: int, width: int) -> str:
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = _ALPHABET[r] + out
    return out.rjust(width, "0")


# A finished run that podium resume redrives (its steps that did not succeed run again).
_REDRIVEN = frozenset({RunStatus.FAILED, RunStatus.CANCELLED})
_RUN_AGAIN = frozenset({StepStatus.FAILED, StepStatus.CANCELLED, StepStatus.SKIPPED})


def new_run_id() -> str:
    """Short, sortable by creation time, and unique enough to type a prefix of.

    Milliseconds then ~31 random bits (one read of the OS random source, not six).
    """
    return _base36(int(time.time() * 1000), 8) + _base36(
        int.from_bytes(os.urandom(4)) % 36**6, 6)


def run_exists(run_id: str) -> RunExists:
    return RunExists(f"run {run_id} exists already: another process (or request) started a"
                     " run with this id first; nothing of this one was written (fix: a new"
                     " run id, or look at that run: podium status)", run_id=run_id)


class _Children:
    """A run's child runs (``workflow:`` steps), executed by the engine of their parent."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def run(self, child_id: str, workflow: Workflow, value: Any,
                  agents_source: dict[str, Any], redrive: bool) -> RunRecord:
        engine = self._engine
        handle = engine.handle_of(child_id)
        if handle is None:
            try:
                existing: RunRecord | None = await engine.store.get_run(child_id)
            except RunNotFound:
                existing = None
            if existing is None:
                # Its spans go under the parent step's attempt span: one trace for the
                # whole tree (a resume of the child finds this context in the store).
                parent_id, _, key = child_id.rpartition(".")
                handle = await engine.start(workflow, value, run_id=child_id,
                                            agents_source=agents_source,
                                            traceparent=engine.span_traceparent(parent_id, key))
            elif existing.status == RunStatus.SUCCEEDED or existing.status in _UNDONE or (
                    existing.status in _REDRIVEN and not redrive):
                return existing  # ended before this parent's crash: its end stands
            else:
                try:
                    handle = await engine.resume(child_id)
                except RunHeld:  # another process executes it: wait for its end
                    return await self._elsewhere(child_id)
        try:
            return await handle.result()
        except RunLost:  # another process took it over: it ends there
            return await self._elsewhere(child_id)

    async def _elsewhere(self, child_id: str) -> RunRecord:
        """Wait for a child another process executes; take it over if that one dies."""
        engine = self._engine
        store = engine.store
        while True:
            run = await store.get_run(child_id)
            if run.status not in LIVE_RUN_STATUSES:
                return run
            if engine.owner_is_dead(run, await store.now()):
                try:
                    return await (await engine.resume(child_id, stale_only=True)).result()
                except (RunHeld, RunLost):
                    pass  # taken by yet another process: wait for that one
            await engine.clock.sleep(0.5)

    def cancel(self, child_id: str, reason: str) -> None:
        engine = self._engine
        if engine.handle_of(child_id) is not None:
            engine.cancel_requested(child_id, reason)
            return
        task = asyncio.get_running_loop().create_task(engine.store.request_cancel(child_id))
        task.add_done_callback(_quiet)

    async def stop(self, child_id: str, reason: str) -> None:
        engine = self._engine
        if engine.handle_of(child_id) is not None:
            engine.cancel_requested(child_id, reason)
            return
        try:
            run = await engine.store.get_run(child_id)
        except RunNotFound:
            return  # never started
        if run.status in LIVE_RUN_STATUSES:
            # Ended here if nobody executes it (its own children with it), else asked.
            await engine.cancel(child_id, reason)

    async def rollback(self, child_id: str) -> RunRecord | None:
        engine = self._engine
        try:
            existing = await engine.store.get_run(child_id)
        except RunNotFound:
            return None  # never started
        if existing.status == RunStatus.ROLLED_BACK:
            return existing  # a rollback of the parent resumed after its crash
        try:
            handle = await engine.rollback(child_id)
        except NothingToCompensate:
            return None
        return await handle.result()


class _Waits:
    """Signals and suspension for the runs of an engine whose steps wait."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def signal(self, run_id: str, name: str) -> tuple[bool, Any]:
        found = await self._engine.store.get_signal(run_id, name)
        return (False, None) if found is None else (True, found.data)

    async def child_ended(self, parent_id: str) -> None:
        with contextlib.suppress(PodiumError):  # a parent that is no more waits for nothing
            await self._engine.store.wake_run(parent_id)

    async def suspended(self, run_id: str, wake_at: float | None,
                        signals: list[str]) -> None:
        engine = self._engine
        store = engine.store
        engine.journal.forget(run_id)  # nothing more of it is written here
        await store.release_run(run_id, engine.owner)
        await store.set_wake(run_id, wake_at)
        # A signal sent while the run was still going (the sender saw it running, so
        # did not wake it): woken here, after `waiting` is stored, so one of the two
        # always sees the other.
        for name in signals:
            if await store.get_signal(run_id, name) is not None:
                await store.wake_run(run_id)
                return
        # A child run it waits for that ended meanwhile (its end saw this run running).
        with contextlib.suppress(RunNotFound):
            run = await store.get_run(run_id)
            children = [f"{run_id}.{sid}" for sid, rec in run.steps.items()
                        if rec.status == StepStatus.WAITING]
            for child_id in children:
                try:
                    child = await store.get_run(child_id)
                except RunNotFound:
                    continue
                if child.status in TERMINAL_RUN_STATUSES:
                    await store.wake_run(run_id)
                    return


def _quiet(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("could not ask a child run to cancel: %s", task.exception())


_UNDONE = frozenset({RunStatus.ROLLED_BACK, RunStatus.ROLLBACK_FAILED})


def compensable_steps(run: RunRecord) -> list[str]:
    """The steps a rollback of ``run`` would undo: succeeded ones with a ``compensate``,
    and those that ran a sub-workflow (its run is rolled back)."""
    workflow = workflow_from_dict(run.definition, source=f"run {run.run_id} (stored definition)")
    out = []
    for step in workflow.steps:
        if step.compensate is None and step.workflow is None:
            continue
        if step.for_each is not None:  # its succeeded items, whatever became of the step
            prefix = step.id + "["
            if any(k.startswith(prefix) and r.status == StepStatus.SUCCEEDED
                   for k, r in run.steps.items()):
                out.append(step.id)
        elif (rec := run.steps.get(step.id)) is not None and rec.status == StepStatus.SUCCEEDED:
            out.append(step.id)
    return out


@dataclass
class EngineConfig:
    """Everything an engine is made of; defaults give an in-memory engine."""

    store: Store | None = None
    registry: AgentRegistry | None = None
    clock: Clock = field(default_factory=SystemClock)
    rng: random.Random = field(default_factory=random.Random)
    owner: str = field(default_factory=new_owner_id)
    lease_s: float = 15.0
    # Leases run on the store's clock (wall time, or the database's), not on the
    # engine's (a FakeClock's jumps are not time a lease lives through): the engine
    # counts how long it went without renewing them on this one.
    lease_clock: Callable[[], float] = time.monotonic
    poll_interval_s: float = 0.5
    # Subscribed to the bus before the registry announces the fleet: metrics, alerts,
    # progress views hear of every agent and every run from the start.
    observers: tuple[Callable[[Event], None], ...] = ()
    # When traced: the trace context current where a run is started (a library caller's
    # span), for runs started without one of their own.
    traceparent: Callable[[], str | None] | None = None
    # When traced: the W3C context of a span open in this process, a run's (step None)
    # or a step attempt's. A child run's spans go under its step's attempt; a run with
    # no context of its own records its first span's (``RunTraced``), which whoever
    # continues it later (resume, takeover, wake) reads back from the store.
    span_traceparent: Callable[[str, str | None, int], str | None] | None = None


class RunHandle:
    """A run in flight: await ``result()``, or ``cancel()`` it."""

    def __init__(self, execution: RunExecution, task: asyncio.Task[RunRecord]) -> None:
        self._execution = execution
        self._task = task
        self._lost: str | None = None
        self.taken = False  # its id was taken: another process stored a run of it first

    @property
    def run_id(self) -> str:
        return self._execution.run_id

    @property
    def record(self) -> RunRecord:
        """The live view of the run (updated as events happen)."""
        return self._execution.record

    def cancel(self, reason: str = "cancelled by request") -> None:
        self._execution.stop(CANCELLED, reason)

    def pause(self) -> asyncio.Event:
        """Start no more of its steps; set once none is in flight (see ``hand_off``)."""
        return self._execution.pause()

    def abandon(self, why: str) -> None:
        """Stop executing the run *without ending it*: another process holds it now (or
        may soon). Nothing more of it is written; ``result()`` raises ``RunLost``."""
        if self._lost is None and not self._task.done():
            self._lost = why
            self._execution.abandon(why)
            self._task.cancel()

    def done(self) -> bool:
        return self._task.done()

    async def result(self) -> RunRecord:
        try:
            return await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if self._lost is not None and self._task.cancelled():
                if self.taken:
                    raise run_exists(self.run_id) from None
                raise RunLost(f"run {self.run_id}: {self._lost}", run_id=self.run_id) from None
            raise


class Engine:
    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        registry: AgentRegistry | None = None,
        store: Store | None = None,
        clock: Clock | None = None,
    ) -> None:
        cfg = config or EngineConfig()
        self.config = cfg
        self.registry = registry or cfg.registry or AgentRegistry()
        self.store: Store = store or cfg.store or MemoryStore()
        self.clock: Clock = clock or cfg.clock
        self.rng = cfg.rng
        self.owner = cfg.owner
        self._traceparent = cfg.traceparent
        self._span_traceparent = cfg.span_traceparent
        self.bus = EventBus()
        # The journal hears every event first: a position is the event's place in it.
        self.journal = Journal(self.store, self.owner, cfg.lease_clock)
        self.journal.on_lost = self.run_lost
        self.journal.on_taken = self.run_taken
        self.journal.on_lapse = self._leases_lapsed
        self._renewed_at = -math.inf  # lease clock of the last renewal (or claim)
        self.bus.subscribe(self.journal.append, local=False)
        for observer in cfg.observers:
            self.bus.subscribe(observer)
        self.registry.attach(self.bus.emit, self.clock)
        self._active: dict[str, RunHandle] = {}
        # By workflow object: its plan and the definition snapshot every run of it
        # stores (dumped once per workflow, like the plan, not per run).
        self._plans: dict[int, tuple[Workflow, Plan, dict[str, Any]]] = {}
        # By the JSON of a stored definition: the workflow validated from it. A worker
        # adopts run after run of the same few definitions, each read back as a new
        # dict; validating one again (pydantic, then a new object, so a new plan) was
        # ~10% of a worker's CPU per step of 3-step chains. Workflows are immutable.
        self._stored: dict[bytes, Workflow] = {}
        self._saved_versions: set[tuple[str, str]] = set()
        # By plan: each step's call and compensation (made once, shared by its runs).
        self._calls: dict[int, tuple[Plan, Calls]] = {}
        active = self._active
        self._context = RunContext(self.clock, self.registry, self.journal, self.rng,
                                   self.bus.emit, lambda: len(active), _Children(self),
                                   _Waits(self), self.bus.emit_local)
        self._opened = False
        self._supervisor: asyncio.Task[None] | None = None
        # A worker's engine renews its leases (heartbeat) even with no run in flight.
        self.keep_leases = False
        # Runs stopped by self-fencing, still this owner's in the store: a worker hands
        # them back once it can reach the store again (``take_fenced``).
        self._fenced: set[str] = set()

    @property
    def active_runs(self) -> int:
        """Runs this engine executes now."""
        return len(self._active)

    # --- lifecycle --------------------------------------------------------
    async def open(self) -> None:
        if not self._opened:
            await self.store.open()
            self._opened = True
            self.journal.on_lost = self.run_lost  # (again, if closed before: see aclose)
            self.journal.on_taken = self.run_taken
            if any(getattr(a, "transport", "python") != "python" for a in self.registry.agents):
                # Remote agents get active health checks; in-process ones cannot be down.
                self.registry.start_monitor()

    async def aclose(self) -> None:
        for handle in list(self._active.values()):
            handle.cancel("the engine was closed")
        for handle in list(self._active.values()):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await handle.result()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        await self.registry.stop_monitor()
        if self._opened:
            await self.store.close()
            self._opened = False
            # The journal's one link back to the engine: unlinked, a closed engine is
            # freed by reference counting (its plans, its last run's records), not
            # left in a cycle for the garbage collector.
            self.journal.on_lost = self.journal.on_taken = None

    async def __aenter__(self) -> Engine:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- runs -------------------------------------------------------------
    def plan(self, workflow: Workflow) -> Plan:
        """Compile once per workflow object; many runs of one workflow share it."""
        return self._compiled(workflow)[1]

    def _stored_workflow(self, run: RunRecord) -> Workflow:
        """The workflow of a run's stored definition, validated once per definition."""
        try:
            key = orjson.dumps(run.definition)
        except TypeError:  # not JSON (cannot come from a store): validated, not cached
            key = b""
        workflow = self._stored.get(key) if key else None
        if workflow is None:
            workflow = workflow_from_dict(run.definition,
                                          source=f"run {run.run_id} (stored definition)")
            if key:
                if len(self._stored) > 256:
                    self._stored.clear()
                self._stored[key] = workflow
        return workflow

    def _compiled(self, workflow: Workflow) -> tuple[Workflow, Plan, dict[str, Any]]:
        cached = self._plans.get(id(workflow))
        if cached is not None and cached[0] is workflow:
            return cached
        if len(self._plans) > 256:
            self._plans.clear()
        plan = compile_plan(workflow)
        self._calls_of(plan)  # made with the plan: a run's start pays for neither
        definition = workflow.to_dict()
        try:
            orjson.dumps(definition)  # each run stores it: refused here, not at a commit
        except TypeError as exc:
            raise DefinitionError([Problem(
                f"the definition cannot be stored as JSON: {exc}",
                hint="plain JSON values, nested at most 255 deep")]) from None
        entry = self._plans[id(workflow)] = (workflow, plan, definition)
        return entry

    def _calls_of(self, plan: Plan) -> Calls:
        cached = self._calls.get(id(plan))
        if cached is None or cached[0] is not plan:
            if len(self._calls) > 256:
                self._calls.clear()
            cached = self._calls[id(plan)] = (plan, calls_of(plan))
        return cached[1]

    def check_agents(self, plan: Plan, source: str | None = None) -> None:
        """Every step's agent must be known before a run starts: fail early, all at once."""
        check_agents(self.registry, plan, source)

    async def start(
        self,
        workflow: Workflow,
        input: Any = None,
        *,
        run_id: str | None = None,
        agents_source: Mapping[str, Any] | None = None,
        source: str | None = None,
        traceparent: str | None = None,
    ) -> RunHandle:
        """Validate, persist and start a run; return at once with its handle.

        ``traceparent``: the W3C trace context the run belongs to (when traced; else the
        span current here, if the engine was given ``traceparent`` in its config)."""
        plan, record = await self._prepare(workflow, input, run_id, agents_source, source,
                                           agents=True)
        record.owner = self.owner
        record.lease_expires_at = await self.store.now() + self.config.lease_s  # its clock
        self.leases_renewed()
        self.journal.track(record, new=True, needs=plan.needs)
        if traceparent is None and self._traceparent is not None:
            traceparent = self._traceparent()
        handle = self._launch(plan, record, resumed=False, traceparent=traceparent)
        # The run row and its start commit together, before start() returns; at once
        # when no other run could share the transaction.
        if len(self._active) > 1 or not self.journal.commit_now():
            await self.journal.commit_through(self.journal.position)
        if handle.taken:
            raise run_exists(record.run_id)
        return handle

    async def _prepare(self, workflow: Workflow, input: Any, run_id: str | None,
                       agents_source: Mapping[str, Any] | None, source: str | None, *,
                       agents: bool) -> tuple[Plan, RunRecord]:
        """A new run's plan and record, its input with defaults applied and checked; its
        agents checked too when this process executes it; the workflow stored."""
        await self.open()
        _wf, plan, definition = self._compiled(workflow)
        value = apply_input_defaults(workflow, {} if input is None else input)
        try:
            # Stored as JSON with the run's first batch: what cannot be (nested past the
            # encoder's depth, not a JSON value) is refused here, not in a shared commit.
            orjson.dumps(value)
        except TypeError as exc:
            raise InputError(f"the input cannot be stored as JSON: {exc} (fix: plain JSON"
                             " values, nested at most 255 deep)") from None
        check_input(workflow, value)
        if agents:
            self.check_agents(plan, source)
        key = (workflow.name, str(workflow.version))
        if key not in self._saved_versions:
            await self.store.save_workflow(workflow.name, workflow.version, definition)
            self._saved_versions.add(key)
        return plan, RunRecord(
            run_id=run_id or new_run_id(), workflow=workflow.name, version=workflow.version,
            definition=definition, input=value, created_at=self.clock.now(),
            agents_source=dict(agents_source or {}), queue=workflow.queue)

    def _launch(
        self,
        plan: Plan,
        record: RunRecord,
        *,
        resumed: bool,
        carry: dict[str, RetryState] | None = None,
        rollback: str | None = None,
        redrive: bool = False,
        traceparent: str | None = None,
    ) -> RunHandle:
        execution = self._execution(plan, record, resumed=resumed, carry=carry,
                                    redrive=redrive)
        if rollback is None:
            execution.begin(traceparent)
            if traceparent is None and self._span_traceparent is not None:
                own = self._span_traceparent(record.run_id, None, 0)
                if own is not None:  # a root span: recorded, so later executions join it
                    execution.emit(RunTraced(run_id=record.run_id, ts=self.clock.now(),
                                             traceparent=own))
        work = execution.rollback(rollback) if rollback is not None else execution.execute()
        return self._track(execution, work)

    def span_traceparent(self, run_id: str, step_id: str | None = None,
                         attempt: int = 1) -> str | None:
        """The W3C context of a span this process has open for a run (``step_id`` None)
        or an attempt; None when untraced."""
        fn = self._span_traceparent
        return None if fn is None else fn(run_id, step_id, attempt)

    async def _recorded_trace(self, run_id: str) -> str | None:
        """The trace context the store recorded for a run, which a continuation of it is
        a child of: the process continuing a run has nothing else to stay in its trace
        with. Read only when traced (else nothing is asked of the store)."""
        if self._span_traceparent is None:
            return None
        try:
            found = await self.store.trace_context(run_id)
        except PodiumError as exc:  # a trace is not worth failing a resume for
            log.warning("run %s: could not read its trace context: %s", run_id, exc.message)
            found = None
        # Never traced before (submitted untraced...): a caller's current span, if any.
        if found is None and self._traceparent is not None:
            found = self._traceparent()
        return found

    def _execution(self, plan: Plan, record: RunRecord, *, resumed: bool,
                   carry: dict[str, RetryState] | None = None,
                   redrive: bool = False) -> RunExecution:
        return RunExecution(self._context, plan, self._calls_of(plan), record,
                            resumed=resumed, carry=carry, redrive=redrive)

    def _track(self, execution: RunExecution,
               work: Coroutine[Any, Any, RunRecord]) -> RunHandle:
        run_id = execution.run_id
        task = asyncio.get_running_loop().create_task(work, name=f"podium:run:{run_id}")
        handle = RunHandle(execution, task)
        self._active[run_id] = handle

        def forget(_task: asyncio.Task[RunRecord]) -> None:
            # Only its own entry: an execution abandoned here ends after the run was
            # claimed again and a new one took its place (which must stay counted,
            # cancellable and fenceable).
            if self._active.get(run_id) is handle:
                del self._active[run_id]

        task.add_done_callback(forget)
        self._ensure_supervisor()
        return handle

    async def run(
        self,
        workflow: Workflow,
        input: Any = None,
        *,
        run_id: str | None = None,
        agents_source: Mapping[str, Any] | None = None,
        traceparent: str | None = None,
    ) -> RunRecord:
        """Start a run and wait for it to finish."""
        handle = await self.start(workflow, input, run_id=run_id, agents_source=agents_source,
                                  traceparent=traceparent)
        try:
            return await handle.result()
        except asyncio.CancelledError:
            handle.cancel("the caller was cancelled")
            raise

    async def submit(
        self,
        workflow: Workflow,
        input: Any = None,
        *,
        queue: str | None = None,
        run_id: str | None = None,
        agents_source: Mapping[str, Any] | None = None,
        traceparent: str | None = None,
    ) -> RunRecord:
        """Store a run ``pending``, validated as ``start`` does, and execute nothing: a
        worker claims it (or ``podium resume`` runs it). Its agents need not be known
        here; only workers providing all of them claim it.

        ``traceparent``: the submitter's W3C trace context (else the span current here,
        as for ``start``), stored with the run: the worker's spans join that trace."""
        if traceparent is None and self._traceparent is not None:
            traceparent = self._traceparent()
        plan, record = await self._prepare(workflow, input, run_id, agents_source, None,
                                           agents=False)
        record.queue = queue or workflow.queue
        journal = self.journal
        journal.track(record, new=True, needs=plan.needs)
        self.bus.emit(RunSubmitted(run_id=record.run_id, ts=record.created_at,
                                   workflow=workflow.name, version=workflow.version,
                                   queue=record.queue, traceparent=traceparent))
        try:
            await journal.commit_through(journal.position)
            if not journal.tracks(record.run_id):
                raise run_exists(record.run_id)
        finally:
            journal.forget(record.run_id)  # its events are a worker's to write now
        if isinstance(self.store, WorkerStore):
            await self.store.announce()
        return record

    async def hand_off(self, grace_s: float, hurry: asyncio.Event | None = None) -> list[str]:
        """Stop executing every run without ending it, for other processes to continue.

        No step starts any more; the attempts in flight may finish for up to
        ``grace_s`` (or until ``hurry`` is set: a second signal), and what they did
        is committed. Then every run still here stops where it is, with nothing
        more written: its attempts cut short run again elsewhere with the same
        idempotency key. Returns the ids of those runs, for the caller to release.
        """
        handles = dict(self._active)
        idle = [h.pause() for h in handles.values()]
        race: list[asyncio.Future[Any]] = []
        if idle:
            race.append(asyncio.ensure_future(asyncio.gather(*(e.wait() for e in idle))))
            if hurry is not None:
                race.append(asyncio.ensure_future(hurry.wait()))
            try:
                await asyncio.wait(race, timeout=grace_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for f in race:
                    f.cancel()
        journal = self.journal
        try:
            await journal.commit_through(journal.position)
        except PodiumError as exc:  # what did not commit runs again elsewhere
            log.warning("hand-off: the last commit failed: %s", exc.message)
        left = []
        for rid, handle in handles.items():
            if handle.done():
                continue  # ended within the grace
            journal.forget(rid)
            handle.abandon("handed back: this process is shutting down")
            left.append(rid)
        for handle in handles.values():
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await handle.result()
        return left

    async def cancel(self, run_id: str, reason: str = "cancelled by request") -> bool:
        """Cancel a run here, or ask its owner through the store."""
        handle = self._active.get(run_id)
        if handle is not None:
            handle.cancel(reason)
            return True
        await self.open()
        run = await self.store.get_run(run_id)
        if run.status == RunStatus.WAITING or (
                run.status in LIVE_RUN_STATUSES
                and self.owner_is_dead(run, await self.store.now())):
            # Nobody is executing it: finish it as cancelled here, calling no agent.
            with contextlib.suppress(RunHeld):  # else someone took it first: ask them
                await self._end_unexecuted(run.run_id, CANCELLED, reason)
                return True
        ok = await self.store.request_cancel(run.run_id)
        if ok:  # for this process's observers; the owner records it in the run's timeline
            self.bus.emit(RunCancelRequested(run_id=run.run_id, ts=self.clock.now(),
                                             reason=reason))
        return ok

    async def signal(self, run_id: str, name: str, data: Any = None) -> tuple[RunRecord, bool]:
        """Deliver ``name`` to a run that waits for it (once), and wake the run if it is
        waiting: ``(run, woken)``. ``ConfigError`` names what is wrong: no step of the run
        waits for that signal, the step is done, the signal was sent already."""
        await self.open()
        run = await self.store.get_run(run_id)
        plan = self.plan(workflow_from_dict(run.definition,
                                            source=f"run {run.run_id} (stored definition)"))
        nodes = [n for n in plan.nodes if n.wait is not None and n.wait.signal == name]
        if not nodes:
            waits = sorted({n.wait.signal for n in plan.nodes
                            if n.wait is not None and n.wait.signal is not None})
            known = ", ".join(waits) or "none, it waits for no signal"
            raise ConfigError(f"run {run.run_id} has no step that waits for signal '{name}'"
                              f" (fix: one of: {known})", run_id=run.run_id)
        if run.status in TERMINAL_RUN_STATUSES:
            raise ConfigError(f"run {run.run_id} is {run.status}: it waits for nothing any"
                              " more", run_id=run.run_id)
        step = run.steps.get(nodes[0].id)
        if step is not None and step.status in (StepStatus.SUCCEEDED, StepStatus.FAILED,
                                                StepStatus.SKIPPED, StepStatus.CANCELLED):
            raise ConfigError(f"step '{nodes[0].id}' of run {run.run_id} is {step.status}"
                              " already", run_id=run.run_id)
        if not await self.store.send_signal(run.run_id, name, data, self.clock.now()):
            raise ConfigError(f"signal '{name}' was sent to run {run.run_id} already (a"
                              " signal counts once)", run_id=run.run_id)
        woken = await self.store.wake_run(run.run_id)
        return run, woken

    async def _end_unexecuted(
        self, run_id: str, why: str, message: str, error: ErrorInfo | None = None,
        in_flight: Sequence[str] = (),
    ) -> RunRecord:
        """Take a run nobody executes and end it (cancelled, or failed with ``error``)."""
        run, _wf, plan = await self._take_over(run_id, stale_only=True, counts=False)
        execution = self._execution(plan, run, resumed=True)
        return await execution.end_unexecuted(why, message, error, in_flight)

    # --- recovery -------------------------------------------------------
    def owner_is_dead(self, run: RunRecord, store_now: float) -> bool:
        """A run's owner is gone: its lease ran out by the store's clock (``store_now``),
        or its process vanished from this host (see ``owners.pid_gone``)."""
        if run.owner is None:
            return True
        if run.owner == self.owner:
            return run.run_id not in self._active
        if pid_gone(run.owner):
            return True
        return (run.lease_expires_at or 0) < store_now

    async def stale_runs(self, limit: int = 1000) -> list[RunRecord]:
        """Runs left running or pending by a process that is gone: resumable."""
        await self.open()
        out = []
        now = await self.store.now()
        for status in (RunStatus.RUNNING, RunStatus.PENDING):
            for run in await self.store.list_runs(status=status, limit=limit):
                if self.owner_is_dead(run, now):
                    out.append(run)
        return out

    async def _take_over(
        self, run_id: str, *, stale_only: bool = False, counts: bool = True
    ) -> tuple[RunRecord, Workflow, Plan]:
        """Claim a run for this engine: one left by a dead process, or a finished one.

        The claim is a compare-and-swap on what was read here, so of two processes
        taking over one run exactly one wins; the other gets ``RunHeld`` naming the
        winner. ``stale_only``: only a run still left running by a dead process (a
        ``resume --all``, a server's scan) — one finished meanwhile is not redriven.
        ``counts``: a takeover of a stale run counts toward its ``recoveries``.
        """
        await self.open()
        run = await self.store.get_run(run_id)
        if run.run_id in self._active:
            raise RunHeld(
                f"run {run.run_id} is already executing in this engine", run_id=run.run_id
            )
        # A waiting run is held by no process: anyone may take it (to continue or end it).
        stale = run.status in LIVE_RUN_STATUSES or run.status == RunStatus.WAITING
        if stale and not self.owner_is_dead(run, await self.store.now()):
            raise RunHeld(
                f"run {run.run_id} is executing in another process ({run.owner}); its lease"
                " runs until it stops renewing it (fix: wait, or `podium cancel` it)",
                run_id=run.run_id,
            )
        if stale_only and not stale:
            raise RunHeld(f"run {run.run_id} is {run.status} now (another process finished it)",
                          run_id=run.run_id)
        if stale:
            recoveries = run.recoveries + 1 if counts and run.owner is not None \
                else run.recoveries
        else:  # a finished run: redriven (its takeovers start over) or rolled back
            recoveries = 0 if run.status in _REDRIVEN else run.recoveries
        dead = run.owner is not None and run.owner != self.owner and pid_gone(run.owner)
        if not await self.store.claim_run(run, self.owner, lease_s=self.config.lease_s,
                                          recoveries=recoveries, owner_dead=dead):
            holder = await self.store.get_run(run.run_id)
            raise RunHeld(
                f"run {run.run_id} was taken over by another process first ({holder.owner})",
                run_id=run.run_id,
            )
        workflow = self._stored_workflow(run)
        plan = self.plan(workflow)
        self.check_agents(plan, f"run {run.run_id}")
        self.journal.track(run, new=False, seq=await self.store.last_seq(run.run_id))
        self.leases_renewed()
        return run, workflow, plan

    async def resume(self, run_id: str, *, stale_only: bool = False) -> RunHandle:
        """Continue a run from its checkpoints, with the definition it started with.

        A run left running by a dead process continues: succeeded steps are
        never run again; in-flight steps run again with the same idempotency
        key and their attempt count carried on; pending retry waits are kept.
        A failed or cancelled run is redriven: only its failed, cancelled and
        skipped steps run again. An interrupted rollback continues. A run whose
        cancel was asked for while its owner died ends cancelled, calling no agent.
        ``stale_only``: only a run a dead process left running (see ``_take_over``).
        """
        await self.open()
        existing = await self.store.get_run(run_id)
        if stale_only and existing.status not in LIVE_RUN_STATUSES:
            raise RunHeld(f"run {existing.run_id} is {existing.status} now (another process"
                          " finished it)", run_id=existing.run_id)
        if existing.status == RunStatus.SUCCEEDED:
            raise ConfigError(
                f"run {existing.run_id} already succeeded; there is nothing to resume",
                run_id=existing.run_id,
            )
        if existing.status == RunStatus.ROLLED_BACK:
            raise ConfigError(
                f"run {existing.run_id} was rolled back; start a new run instead",
                run_id=existing.run_id,
            )
        run, _workflow, plan = await self._take_over(existing.run_id, stale_only=stale_only)
        return self._continue(run, plan, await self._recorded_trace(run.run_id))

    async def adopt(self, run: RunRecord) -> RunHandle:
        """Execute a run this engine's owner claimed already (``WorkerStore.claim_runs``).

        As ``resume`` goes on after its claim; a run taken over more often than its
        workflow's ``recovery.max`` ends ``failed`` (``worker_lost``) instead.
        """
        workflow = self._stored_workflow(run)
        plan = self.plan(workflow)
        seq, run.last_seq = run.last_seq, None  # (read with the claim: good once)
        if seq is None:
            seq = await self.store.last_seq(run.run_id)
        self._superseded(run.run_id)
        self.journal.track(run, new=False, seq=seq)
        self.leases_renewed()
        if run.recoveries > workflow.recovery.max:
            message, in_flight = self._lost_message(run, plan)
            log.warning("run %s: %s", run.run_id, message)
            execution = self._execution(plan, run, resumed=True)
            work = execution.end_unexecuted(FAILED, message,
                                            ErrorInfo("worker_lost", message, False), in_flight)
            return self._track(execution, work)
        return self._continue(run, plan, await self._recorded_trace(run.run_id))

    def _superseded(self, run_id: str) -> None:
        """A claim of ``run_id`` (a new epoch) is about to be executed here: whatever
        this engine still runs must stop first, and so must every run here if the
        leases lapsed.

        A worker that wakes from a freeze past its lease can find its own runs in its
        claim (their leases expired by the database's clock, nobody else took them)
        before its supervisor has stopped them. Were the old execution left going, both
        would write under the new epoch (the journal tracks a run by its id) and every
        step would succeed twice. Were the leases left unchecked, this claim's renewal
        would make the other runs' lapsed leases look good again."""
        if self._active:
            self.leases_hold()  # (if they lapsed, every run here stops)
        old = self._active.get(run_id)
        if old is not None and not old.done():
            log.warning("run %s: claimed again while an execution of it was still here"
                        " (this process froze past its lease); that one stops", run_id)
            self.journal.forget(run_id)
            old.abandon("claimed again by this process: a new execution goes on")
        self._fenced.discard(run_id)  # (held by this claim: not to be handed back)

    def _continue(self, run: RunRecord, plan: Plan, traceparent: str | None = None,
                  ) -> RunHandle:
        """Launch a run this engine holds now, from where its store left it;
        ``traceparent``: the trace its new span goes in (``_recorded_trace``)."""
        if run.cancel_requested and run.status in LIVE_RUN_STATUSES:
            execution = self._execution(plan, run, resumed=True)
            work = execution.end_unexecuted(CANCELLED, "cancel requested while its process died")
            return self._track(execution, work)
        if run.phase == "compensate" or run.status == RunStatus.ROLLBACK_FAILED:
            for rec in run.steps.values():
                if rec.compensation_status == CompensationStatus.FAILED:
                    rec.compensation_status, rec.compensation_attempts = None, 0
            return self._launch(plan, run, resumed=True, rollback="resumed rollback")
        carry: dict[str, RetryState] = {}
        redrive = run.status in _REDRIVEN
        for node in plan.nodes:
            found = run.steps.get(node.id)
            if found is None or found.status == StepStatus.SUCCEEDED or decided_skip(found):
                continue  # a branch not taken stays not taken
            rec = found
            if redrive or rec.status in _RUN_AGAIN:
                rec.next_retry_at = None  # a redrive starts each step's retry budget afresh
            elif rec.attempts:
                # Crashed mid-step: the interrupted attempt is not held against the
                # budget; a retry already granted (a pending wait) is.
                used = rec.attempts if rec.next_retry_at is not None else rec.attempts - 1
                carry[node.id] = RetryState(counts=[used] * len(node.retry))
            rec.status = StepStatus.PENDING
            rec.optional = False
        if redrive:  # items of for_each steps that did not succeed run again too
            for sid, rec in run.steps.items():
                if sid not in plan.by_id and rec.status in _RUN_AGAIN:
                    rec.status, rec.attempts, rec.next_retry_at = StepStatus.PENDING, 0, None
        run.error = None
        run.output = None
        # A submitted run that no process started yet starts now, for the first time.
        return self._launch(plan, run, resumed=run.started_at is not None, carry=carry,
                            redrive=redrive, traceparent=traceparent)

    async def recover_stale(self) -> tuple[list[str], float | None]:
        """Take over every run a dead process left, as a long-running engine does.

        A run whose process died again and again (a step that kills it every time)
        is not taken over without end: takeovers of one run wait 1 s, 2 s, 4 s...
        apart (at most a minute), and after its workflow's ``recovery.max`` the run
        ends ``failed`` with ``worker_lost`` naming the steps in flight. Returns
        the ids of the runs resumed, and when the next run that is backing off
        becomes due (None: none is), so a caller can look again then.
        """
        taken = []
        due: float | None = None
        now = await self.store.now()  # recovered_at is the store's time
        for run in await self.stale_runs():
            try:
                limit = workflow_from_dict(run.definition).recovery.max
            except PodiumError as exc:
                log.warning("run %s: its stored definition is unusable: %s", run.run_id,
                            exc.message)
                continue
            try:
                if run.recoveries >= limit:
                    await self._end_lost(run)
                    continue
                if run.recoveries and run.recovered_at is not None:
                    at = run.recovered_at + min(2.0 ** (run.recoveries - 1), 60.0)
                    if now < at:  # backing off: its process died soon after the takeover
                        due = at if due is None else min(due, at)
                        continue
                await self.resume(run.run_id, stale_only=True)
            except RunHeld:
                continue  # another process took it first, or it ended meanwhile
            except PodiumError as exc:
                log.warning("cannot resume run %s: %s", run.run_id, exc.message)
                continue
            log.info("resumed run %s (%s) left by %s", run.run_id, run.workflow, run.owner)
            taken.append(run.run_id)
        return taken, due

    async def _end_lost(self, listed: RunRecord) -> None:
        run = await self.store.get_run(listed.run_id)  # with its steps
        plan = self.plan(workflow_from_dict(run.definition))
        message, in_flight = self._lost_message(run, plan)
        log.warning("run %s: %s", run.run_id, message)
        await self._end_unexecuted(run.run_id, FAILED, message,
                                   ErrorInfo("worker_lost", message, False), in_flight)

    @staticmethod
    def _lost_message(run: RunRecord, plan: Plan) -> tuple[str, list[str]]:
        """Why a poison run is given up, and the steps that were in flight."""
        steps = run.steps

        def done(step_id: str) -> bool:
            rec = steps.get(step_id)
            return rec is not None and rec.status == StepStatus.SUCCEEDED

        # A step's start is committed with the batch after it, so the store may show
        # no attempt of the step that was in flight: then it is one whose inputs all
        # succeeded and that has not finished.
        in_flight = [s.step_id for s in steps.values() if s.status == StepStatus.RUNNING] or [
            node.id for node in plan.nodes
            if steps.get(node.id) is None or steps[node.id].status == StepStatus.PENDING
            if all(done(plan.nodes[d].id) for d in node.deps)
        ]
        names = ", ".join(f"'{s}'" for s in in_flight) or "none"
        message = (
            f"the process running this run died {run.recoveries} times (steps in flight:"
            f" {names}); it is not taken over again (fix: find why that step kills its"
            " process, then `podium resume` the run)"
        )
        return message, in_flight

    def check_compensable(self, run: RunRecord) -> None:
        """Raise ``NothingToCompensate`` when a rollback of ``run`` would undo nothing.

        Marking such a run ``rolled_back`` would claim an undo that never happened.
        """
        if run.phase != "compensate" and not compensable_steps(run):
            raise NothingToCompensate(
                f"run {run.run_id} has nothing to compensate (no succeeded step has a"
                f" `compensate`); it stays {run.status}",
                run_id=run.run_id,
            )

    async def rollback(self, run_id: str) -> RunHandle:
        """Run the compensations of a finished run's succeeded steps, newest first."""
        await self.open()
        existing = await self.store.get_run(run_id)
        if existing.status in LIVE_RUN_STATUSES and not self.owner_is_dead(
                existing, await self.store.now()):
            raise ConfigError(
                f"run {existing.run_id} is still executing (fix: `podium cancel` it first)",
                run_id=existing.run_id,
            )
        if existing.status == RunStatus.ROLLED_BACK:
            raise ConfigError(
                f"run {existing.run_id} is already rolled back", run_id=existing.run_id
            )
        self.check_compensable(existing)  # before the take-over, which writes
        run, _workflow, plan = await self._take_over(existing.run_id)
        return self._launch(plan, run, resumed=True, rollback="requested by `podium rollback`")

    # --- supervision ------------------------------------------------------
    def _ensure_supervisor(self) -> None:
        if self._supervisor is None or self._supervisor.done():
            self._supervisor = asyncio.get_running_loop().create_task(
                supervise(self, self.store, self.config), name="podium:supervisor"
            )

    def active_ids(self) -> list[str]:
        return list(self._active)

    def handle_of(self, run_id: str) -> RunHandle | None:
        """The run if it is executing here."""
        handle = self._active.get(run_id)
        return None if handle is None or handle.done() else handle

    def cancel_requested(self, run_id: str, reason: str = "cancel requested") -> None:
        """Another process asked to cancel a run executing here (seen in the store, or
        notified): recorded in the run's timeline, then the run stops."""
        handle = self._active.get(run_id)
        if handle is None or handle.done() or handle.record.cancel_requested:
            return
        self.bus.emit(RunCancelRequested(run_id=run_id, ts=self.clock.now(), reason=reason))
        handle.cancel(reason)

    def leases_hold(self) -> bool:
        """Whether this engine's leases were renewed less than two thirds of a lease ago;
        if not, every run here is stopped first (self-fencing, as the supervisor does)."""
        return self.journal.leases_hold()

    def fenced_runs(self) -> list[str]:
        """The runs self-fencing stopped that are still held in the store (until
        ``handed_back`` says they are not)."""
        return sorted(self._fenced)

    def handed_back(self, run_ids: Collection[str]) -> None:
        self._fenced.difference_update(run_ids)

    def ensure_supervisor(self) -> bool:
        """Renew leases from now on (a worker's heartbeat), runs or not; True if the
        supervisor had stopped (it stops itself when the leases lapsed: fencing)."""
        stopped = self._supervisor is None or self._supervisor.done()
        self._ensure_supervisor()
        return stopped

    def leases_renewed(self, at: float | None = None) -> None:
        """Every lease this engine holds runs from ``at`` (monotonic) on: until two thirds
        of it have passed, nobody can have taken a run over, so batches need no fencing
        (``Journal.leases_good_until``)."""
        at = self.config.lease_clock() if at is None else at
        self._renewed_at = max(self._renewed_at, at)
        j = self.journal
        j.leases_good_until = max(j.leases_good_until, at + self.config.lease_s * 2 / 3)

    @property
    def renewed_at(self) -> float:
        """When (lease clock) this engine's leases were last renewed or taken."""
        return self._renewed_at

    def _leases_lapsed(self) -> None:
        """An agent was about to be called with the leases past two thirds of their
        length: stop every run here now, as the supervisor would at its next look."""
        if any(not h.done() for h in self._active.values()):
            self.fence_all(self.config.lease_clock() - self._renewed_at)

    def held_runs(self) -> dict[str, int]:
        """The runs executing here, each with the epoch of the claim its execution
        stands on: what a lease renewal asks for (its answer goes to ``run_lost``)."""
        return {rid: h.record.epoch for rid, h in self._active.items() if not h.done()}

    def run_lost(self, run_id: str, epoch: int | None = None) -> None:
        """The store says another process holds ``run_id``: stop executing it here.
        ``epoch``: the claim the store was asked about (``held_runs``); an execution
        of a newer claim (this process claimed the run again meanwhile) goes on."""
        handle = self._active.get(run_id)
        if epoch is not None and handle is not None and handle.record.epoch != epoch:
            return
        self.journal.forget(run_id)
        if handle is not None:
            handle.abandon("another process took it over after this one's lease lapsed;"
                           " this process stopped executing it and wrote nothing more")

    def run_taken(self, run_id: str) -> None:
        """The store refused a new run here: a run with its id was stored first (by
        another process). Nothing of this one was written; it stops at once."""
        handle = self._active.get(run_id)
        if handle is not None:
            handle.taken = True
            handle.abandon("a run with this id was stored first")

    def fence_all(self, silent_s: float) -> None:
        """Self-fencing: leases not renewed for ``silent_s``; stop every run here."""
        if self._active:
            log.error("leases not renewed for %.1fs (the store unreachable, or this process"
                      " frozen): stopping all %d runs here so that another process can take"
                      " them over", silent_s, len(self._active))
        else:
            log.warning("leases not renewed for %.1fs (the store unreachable, or this"
                        " process frozen); no runs here to stop", silent_s)
        self.journal.leases_good_until = -math.inf
        for rid, handle in list(self._active.items()):
            self._fenced.add(rid)
            self.journal.forget(rid)
            handle.abandon(f"its lease was not renewed for {silent_s:.1f}s (the store"
                           " unreachable, or this process frozen); this process stopped"
                           " executing it so that another can take it over")


def check_agents(registry: AgentRegistry, plan: Plan, source: str | None = None) -> None:
    """Every step's agent must be known before a run starts: fail early, all at once."""
    if all(registry.knows(ref) for ref in plan.agent_refs):
        return  # the common case: one look per distinct agent, not per step
    problems = []
    for node in plan.nodes:
        refs = [("agent", node.agent)]
        if node.compensate is not None:
            refs.append(("compensate.agent", node.compensate.agent))
        for fld, ref in refs:
            if not registry.knows(ref):
                what = f"agent id '{ref[1:]}'" if ref.startswith("@") else f"capability '{ref}'"
                problems.append(
                    Problem(
                        f"no registered agent provides {what}",
                        file=source,
                        step=node.id,
                        field=fld,
                        hint=(
                            "register one (--agents FILE, podium.yaml, @agent or the"
                            " podium.agents entry points); known capabilities: "
                            + (", ".join(sorted(registry.capabilities())) or "none")
                        ),
                    )
                )
    if problems:
        raise DefinitionError(problems)
