"""One run's execution over its plan.

The scheduler knows only "ready steps": a step becomes ready when every
dependency is resolved, and each finished step decrements its dependents'
counters (O(1) per edge, no scans of the plan, no superstep barrier). A
succeeded step's output is flushed to the store before any dependent starts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import traceback
from collections import deque
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from podium.definition.conditions import ConditionError
from podium.definition.models import MAX_DEPTH, MAX_ITEMS
from podium.definition.plan import Plan, PlanNode, WaitSpec
from podium.definition.templates import Scope, TemplateLookupError
from podium.engine import attempt as attempts
from podium.engine.attempt import COMPENSATION, STEP, Call
from podium.engine.context import RunContext
from podium.engine.retry import RetryState
from podium.errors import PodiumError
from podium.events import (
    CompensationFailed,
    CompensationStarted,
    CompensationSucceeded,
    ErrorInfo,
    Event,
    RollbackStarted,
    RunAbandoned,
    RunFinished,
    RunStarted,
    RunWaiting,
    StepCancelled,
    StepFailed,
    StepMapStarted,
    StepReady,
    StepSkipped,
    StepStarted,
    StepSucceeded,
    StepWaiting,
)
from podium.state import (
    CompensationStatus,
    RunRecord,
    RunStatus,
    StepRecord,
    StepStatus,
    apply_event,
    decided_skip,
)

__all__ = ["CANCELLED", "FAILED", "TIMEOUT", "Calls", "RunExecution", "calls_of"]

_ITEM_DONE = frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED})
# A timer due within this many seconds is slept in the process that reached it; a
# longer one suspends the run (no process holds it) until it is due.
_HOLD_S = 30.0
# Items of a for_each step in flight at once when it does not say (its agents' own
# max_concurrency still holds each one to its capacity).
_MAP_WIDTH = 256
# Tasks a run creates before the loop turns once. A fan-out makes all its branches
# ready at once: started in one go, 100,000 of them held 100,000 tasks, their
# coroutines and 300,000 uncommitted events at the same time (~600 MB peak, and
# every collection of the garbage collector rescanning them). A turn in between
# lets the first ones run and commit; none waits for another to finish, so steps
# that wait on I/O all still run at once. Not smaller: each turn commits a batch,
# and on SQLite many small batches rewrite the same B-tree pages again and again
# (at 1,024 the 100,000-branch fan-out spent 3.9 s writing 105 batches, against
# 2.1 s for 20 batches at 8,192 and 1.5 s unbounded; peak RSS 432, 442, 540 MB).
_BURST = 8192

log = logging.getLogger("podium.engine")


def _drop(_event: Event) -> None:
    """Where an abandoned execution's events go: nowhere."""

# Why a run stops before every step resolved (CANCELLED and FAILED are also the
# statuses it ends with; a timed-out run ends failed).
CANCELLED, TIMEOUT, FAILED = RunStatus.CANCELLED, "timeout", RunStatus.FAILED


class Calls(NamedTuple):
    """Each step's call, and the compensation's of the steps that have one, made once
    per plan (not per run); steps that call alike share one. Two tables, not a (call,
    undo) pair per step: the pair was 64 bytes a step (6 MB of a 100,000-step plan) to
    say "no compensation"."""

    main: list[Call]
    undo: dict[int, Call]  # by step index


def calls_of(plan: Plan) -> Calls:
    main: list[Call] = []
    undo: dict[int, Call] = {}
    # Fields as a key, by identity where a field is an object of the plan (a compiled
    # template: equal inputs are one already; retry policies: the defaults' are shared).
    alike: dict[tuple[Any, ...], Call] = {}
    for node in plan.nodes:
        acquire = node.step.acquire_timeout
        key = (node.agent, id(node.input), tuple(map(id, node.retry)), node.timeout_s,
               node.deadline_s, acquire, node.strategy, node.optional)
        c = alike.get(key)
        if c is None:
            c = alike[key] = Call(node.agent, node.input, node.retry, node.timeout_s,
                                  node.deadline_s, acquire, node.strategy, node.optional, STEP)
        main.append(c)
        comp = node.compensate
        if comp is not None:
            undo[node.index] = Call(comp.agent, node.compensate_input, node.compensate_retry,
                                    comp.timeout or node.timeout_s, None, acquire,
                                    node.strategy, False, COMPENSATION)
    return Calls(main, undo)


def _epoch(value: Any) -> float:
    """A ``wait_until`` time: epoch seconds, or an RFC 3339 string with its offset."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a time")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value!r} is not a time (fix: epoch seconds, or RFC 3339"
                             " such as 2026-12-24T18:00:00Z)") from None
        if when.tzinfo is None:
            raise ValueError(f"{value!r} has no time zone (fix: end it with Z or +01:00)")
        return when.timestamp()
    raise ValueError(f"{value!r} is not a time (fix: epoch seconds or RFC 3339)")


class _Item:
    """What one item of a for_each step offers ``attempt.call``: the run's, with the item
    in its scope."""

    __slots__ = ("_run", "run_id", "scope")

    def __init__(self, run: RunExecution, scope: Scope) -> None:
        self._run = run
        self.run_id = run.run_id
        self.scope = scope

    def emit(self, event: Event) -> None:
        self._run.emit(event)

    def others_running(self) -> bool:
        return True

    async def commit_for_retry(self) -> bool:
        return await self._run.commit_for_retry()


class RunExecution:
    # Slots, not an instance dict: past 30 attributes CPython 3.11 stops sharing an
    # instance dict's keys, and then no ``self.method()`` call site specializes (each
    # call a type lookup plus dict lookups). At 34 attributes that cost a chain step
    # ~4,800 instructions, 2% (callgrind, chain(100) runs in one engine).
    __slots__ = (
        "_arrivals",
        "_arriving",
        "_begun",
        "_burst",
        "_continue_with",
        "_deferred",
        "_done",
        "_emit_bus",
        "_first_failure",
        "_gated",
        "_idle",
        "_infra_error",
        "_inline_slot",
        "_max",
        "_need",
        "_paused",
        "_queue",
        "_recs",
        "_remaining",
        "_resolved",
        "_stop_message",
        "_stopping",
        "_suspending",
        "_tasks",
        "_unresolved",
        "_waiting",
        "calls",
        "carry",
        "ctx",
        "plan",
        "record",
        "redrive",
        "resumed",
        "run_id",
        "scope",
    )

    def __init__(
        self,
        ctx: RunContext,
        plan: Plan,
        calls: Calls,
        record: RunRecord,
        *,
        resumed: bool,
        carry: dict[str, RetryState] | None = None,
        redrive: bool = False,
    ) -> None:
        self.ctx = ctx
        # A failed or cancelled run driven again: its failed child runs are redriven too
        # (a run resumed after a crash takes a child's end as it is).
        self.redrive = redrive
        self.calls = calls
        # Retry budgets carried over from before a crash, by step id.
        self.carry = carry or {}
        self.plan = plan
        self.record = record
        self.run_id = record.run_id
        self.resumed = resumed
        wf = plan.workflow
        self.scope = Scope(record.input, {}, record.run_id, wf.name, wf.version)
        self._emit_bus = ctx.publish
        self._recs: list[StepRecord] = []
        fresh = True  # no step has a record yet: a new run
        for node in plan.nodes:
            rec = record.steps.get(node.id)
            if rec is None:
                rec = record.steps[node.id] = StepRecord(node.id)
            else:
                fresh = False
            self._recs.append(rec)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._queue: deque[int] = deque()
        # Tasks created since the loop last turned for a burst (see _BURST).
        self._burst = 0
        self._deferred = False
        self._remaining = [0] * len(plan.nodes)
        # Per step: the journal position its inputs' successes are at (_inputs_pending).
        self._need = [0] * len(plan.nodes)
        self._unresolved = 0
        self._max = wf.max_parallel
        self._stopping: str | None = None
        self._stop_message: str | None = None
        self._first_failure: tuple[str, ErrorInfo] | None = None
        self._infra_error: ErrorInfo | None = None
        # Resolved = no longer blocks its dependents (succeeded, or optional and failed);
        # on a resume some steps start resolved.
        self._resolved = [False] * len(self._recs) if fresh else [
            rec.status == StepStatus.SUCCEEDED or (rec.status == StepStatus.FAILED and rec.optional)
            or decided_skip(rec)
            for rec in self._recs
        ]
        # Steps that decide for themselves when ready (a ``when:``, a trigger rule);
        # every step decides once a step was skipped or failed without failing the run.
        self._gated: Sequence[bool] = plan.gated
        if not fresh and any(rec.status == StepStatus.SKIPPED for rec in self._recs):
            self._all_decide()
        self._arrivals: deque[int] = deque()
        self._arriving = False
        # Steps that wait (a signal, an approval, a timer): with nothing else to run,
        # the run suspends (``RunWaiting``) instead of holding a process.
        self._waiting: set[int] = set()
        self._suspending = False
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._begun = False
        # While a finishing step makes others ready, its task may carry on with one.
        self._inline_slot: asyncio.Task[Any] | None = None
        self._continue_with: PlanNode | None = None
        # Handing the run back (a worker shutting down): no step starts; ``_idle`` is
        # set once none is in flight.
        self._paused = False
        self._idle: asyncio.Event | None = None

    # --- events -----------------------------------------------------------
    def begin(self, traceparent: str | None = None) -> None:
        """Emit the run's start (the caller flushes it together with the run's creation)."""
        wf = self.plan.workflow
        self._begun = True
        self.emit(
            RunStarted(
                run_id=self.run_id,
                ts=self.ctx.clock.now(),
                workflow=wf.name,
                version=wf.version,
                resumed=self.resumed,
                traceparent=traceparent,
            )
        )

    def emit(self, event: Event) -> None:
        apply_event(self.record, event)
        self._emit_bus(event)

    def _all_decide(self) -> None:
        """A step was skipped, or failed without failing the run: from now on every step
        decides for itself when ready (by its trigger rule)."""
        self._gated = [True] * len(self._recs)

    # --- lifecycle --------------------------------------------------------
    async def execute(self) -> RunRecord:
        clock = self.ctx.clock
        wf = self.plan.workflow
        t0 = clock.monotonic()
        if not self._begun:
            self.begin()
        outputs = self.scope.outputs
        assert isinstance(outputs, dict)
        resolved = self._resolved
        plan = self.plan
        if not any(resolved):  # a new run: every dependency is still to come
            self._unresolved = len(plan.nodes)
            self._remaining = list(plan.dep_counts)
            starts: Sequence[int] = plan.roots
        else:
            for node in plan.nodes:
                if resolved[node.index]:
                    rec = self._recs[node.index]
                    outputs[node.id] = rec.output if rec.status == StepStatus.SUCCEEDED else None
                else:
                    self._unresolved += 1
                    self._remaining[node.index] = sum(1 for d in node.deps if not resolved[d])
            starts = [node.index for node in plan.nodes
                      if not resolved[node.index] and self._remaining[node.index] == 0]
        timer = None
        if wf.timeout is not None:
            message = f"run exceeded its timeout of {wf.timeout:g}s"
            timer = clock.call_later(wf.timeout, lambda: self.stop(TIMEOUT, message))
        try:
            await self._flush()  # the run and its start are durable before any step runs
            for i in starts:
                if self._gated[i]:
                    self._arrive(i)
                elif self._stopping is None and not resolved[i]:
                    self._make_ready(i)  # what _arrive decides for it, without deciding
            self._check_done()
            try:
                await self._done
            except asyncio.CancelledError:
                # The engine is shutting down: stop our steps, then let it go on.
                self.stop(CANCELLED, "the engine was shut down")
                await self._drain()
                raise
            await self._drain()
        finally:
            if timer is not None:
                timer.cancel()
        return await self._finish(clock.monotonic() - t0)

    async def end_unexecuted(
        self, why: str, message: str, error: ErrorInfo | None = None,
        in_flight: Sequence[str] = (),
    ) -> RunRecord:
        """End a run that no process executes any more, calling no agent.

        A dead owner's run that is cancelled (``why`` = CANCELLED), or given up
        (FAILED with ``error``, e.g. ``worker_lost``): the steps it had
        ``in_flight`` fail with ``error``, every other unfinished step is skipped.
        """
        if error is not None:
            self._infra_error = error
            ts = self.ctx.clock.now()
            index = {node.id: node.index for node in self.plan.nodes}
            for step_id in in_flight:
                i = index.get(step_id)
                if i is None or self._resolved[i]:
                    continue
                self._resolved[i] = True
                self.emit(StepFailed(run_id=self.run_id, ts=ts, step_id=step_id,
                                     attempts=self._recs[i].attempts, error=error))
        await self._stop_children(f"its parent run {self.run_id} ended {why}: {message}")
        self.stop(why, message)
        return await self._finish(0.0)

    async def _stop_children(self, reason: str) -> None:
        """The child runs this run may have left going (its process died), asked to
        cancel: they end when their own owner sees it, or at their next takeover."""
        children = self.ctx.children
        if children is None:
            return
        steps = self.record.steps
        for node in self.plan.nodes:
            if node.sub is None:
                continue
            keys = [k for k in steps if k.startswith(node.id + "[")] \
                if node.for_each is not None else [node.id]
            for key in keys:
                rec = steps.get(key)
                if rec is None or rec.status != StepStatus.SUCCEEDED:
                    await children.stop(f"{self.run_id}.{key}", reason)

    async def _drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def _finish(self, duration_s: float) -> RunRecord:
        if self._suspending and self._stopping is None and self._infra_error is None:
            return await self._suspend()
        wf = self.plan.workflow
        output: Any = None
        error: ErrorInfo | None = None
        if self._infra_error is not None:
            status, error = FAILED, self._infra_error
        elif self._stopping == CANCELLED:
            status = RunStatus.CANCELLED
            error = ErrorInfo("cancelled", self._stop_message or "the run was cancelled")
        elif self._stopping == TIMEOUT:
            status, error = FAILED, ErrorInfo("timeout", self._stop_message or "run timed out")
        elif self._first_failure is not None:
            step_id, err = self._first_failure
            attempts = self.record.steps[step_id].attempts
            tries = f" after {attempts} attempt{'s' if attempts != 1 else ''}" if attempts else ""
            error = ErrorInfo(
                err.type,
                f"step '{step_id}' failed{tries}: {err.message}",
                err.retryable,
                err.agent_id,
                err.traceback,
            )
            if wf.on_failure == "compensate" and self._undoable():
                self.record.error = error  # kept as the reason once rolled back
                return await self.rollback(f"step '{step_id}' failed")
            # Nothing to undo: the run failed, and "rolled_back" would claim an undo.
            status = FAILED
        else:
            try:
                output = self.plan.output.resolve(self.scope)
                status = RunStatus.SUCCEEDED
            except TemplateLookupError as exc:
                status, error = FAILED, ErrorInfo("invalid_input", f"output: {exc}")
        self.emit(
            RunFinished(
                run_id=self.run_id,
                ts=self.ctx.clock.now(),
                workflow=wf.name,
                status=status,
                output=output,
                error=error,
                duration_s=duration_s,
            )
        )
        await self._commit()
        if self.record.parent is not None and self.ctx.waits is not None:
            await self.ctx.waits.child_ended(self.record.parent)
        return self.record

    def stop(self, reason: str, message: str | None = None) -> None:
        """Stop the run: cancel in-flight steps, skip the ones not started."""
        if self._stopping is not None or self._done.done():
            return
        self._stopping = reason
        self._stop_message = message
        why = {CANCELLED: "run cancelled", TIMEOUT: "run timed out"}.get(reason, "run failed")
        if message:
            why = f"{why}: {message}"
        ts = self.ctx.clock.now()
        for i, rec in enumerate(self._recs):
            if not self._resolved[i] and i not in self._tasks:
                self._resolved[i] = True
                self.emit(StepSkipped(run_id=self.run_id, ts=ts, step_id=rec.step_id, reason=why))
        self._queue.clear()
        for task in self._tasks.values():
            task.cancel()
        self._done.set_result(None)

    def pause(self) -> asyncio.Event:
        """Start no more steps (a worker hands the run back); the event is set once no
        step is in flight. Ready steps stay ready, for whoever executes the run next."""
        self._paused = True
        if self._idle is None:
            self._idle = asyncio.Event()
        if not self._tasks:
            self._idle.set()
        return self._idle

    def abandon(self, why: str) -> None:
        """Stop at once, writing nothing more (another process holds the run now): no
        step starts from here on, even in this very turn, and those in flight are
        cancelled. This process's observers are told (``RunAbandoned``): nothing else of
        this execution reaches them, not even the end of its calls in flight."""
        self.pause()
        self._queue.clear()
        if self._emit_bus is not _drop and self.ctx.publish_local is not None:
            self.ctx.publish_local(RunAbandoned(run_id=self.run_id, ts=self.ctx.clock.now(),
                                                reason=why))
        # Nothing it does from now on reaches the journal (nor anyone else): the run is
        # another execution's, perhaps this very engine's after a new claim.
        self._emit_bus = _drop
        for task in self._tasks.values():
            task.cancel()

    # --- scheduling -------------------------------------------------------
    def _make_ready(self, i: int) -> None:
        self.emit(
            StepReady(run_id=self.run_id, ts=self.ctx.clock.now(), step_id=self.plan.nodes[i].id)
        )
        if self._paused or (self._max is not None and len(self._tasks) >= self._max):
            self._queue.append(i)
        elif self._burst >= _BURST:
            self._queue.append(i)
            self._defer()
        else:
            self._start(i)

    def _start(self, i: int) -> None:
        node = self.plan.nodes[i]
        if self._inline_slot is not None and self._continue_with is None:
            # The finishing step's task runs this one next (a chain's common case):
            # no new task, no extra turn of the loop. It is registered at once, so
            # cancellation and max_parallel see it like any other.
            self._continue_with = node
            self._tasks[i] = self._inline_slot
            return
        self._burst += 1
        self._tasks[i] = asyncio.get_running_loop().create_task(
            self._step(node), name=f"podium:{self.run_id}:{node.id}"
        )

    def _defer(self) -> None:
        """Start the queued steps after the loop turned (a burst is over)."""
        if not self._deferred:
            self._deferred = True
            asyncio.get_running_loop().call_soon(self._next_burst)

    def _next_burst(self) -> None:
        self._deferred = False
        self._burst = 0
        self._pump()

    def _pump(self) -> None:
        if self._paused:
            return
        while self._queue and (self._max is None or len(self._tasks) < self._max):
            if self._burst >= _BURST:
                self._defer()
                return
            self._start(self._queue.popleft())

    def _check_done(self) -> None:
        if not self._tasks and self._idle is not None:
            self._idle.set()
        if self._unresolved == 0 and not self._tasks and not self._done.done():
            self._done.set_result(None)
        elif self._waiting and not self._tasks and not self._queue and not self._paused \
                and self._stopping is None and not self._done.done():
            # Only waits are left (what is unresolved besides depends on them).
            self._suspending = True
            self._done.set_result(None)

    def _resolve(self, node: PlanNode) -> None:
        self._resolved[node.index] = True
        self._unresolved -= 1
        remaining = self._remaining
        for d in node.dependents:
            remaining[d] -= 1
            if remaining[d] == 0 and self._stopping is None:
                if self._gated[d]:
                    self._arrive(d)
                else:
                    self._make_ready(d)

    def _arrive(self, i: int) -> None:
        """Every dependency of ``i`` resolved: decide whether it runs. Decisions that skip
        make more arrive; they are taken in a loop here, not by recursion, so a skip
        down a chain of 10,000 steps is as deep as one."""
        self._arrivals.append(i)
        if self._arriving:
            return
        self._arriving = True
        try:
            while self._arrivals:
                self._decide(self._arrivals.popleft())
        finally:
            self._arriving = False

    def _decide(self, i: int) -> None:
        if self._stopping is not None or self._resolved[i]:
            return
        node = self.plan.nodes[i]
        blocked = self._blocked(node)
        if blocked is not None:
            self._skip(node, *blocked)
            return
        if node.when is not None:
            outputs = self.scope.outputs
            assert isinstance(outputs, dict)
            try:
                go = node.when.evaluate(self.record.input, outputs)
            except ConditionError as exc:
                self.emit(StepFailed(run_id=self.run_id, ts=self.ctx.clock.now(),
                                     step_id=node.id, attempts=0,
                                     error=ErrorInfo("condition_error", f"when: {exc}", False),
                                     optional=node.optional))
                self._on_failed(node, self._recs[i])
                return
            if not go:
                self._skip(node, f"when was false: {node.when.source}", True,
                           node.when.source)
                return
        self._make_ready(i)

    def _blocked(self, node: PlanNode) -> tuple[str, bool] | None:
        """Why the trigger rule skips ``node`` (and whether for good), or None."""
        if node.trigger == "all_done" or not node.deps:
            return None
        recs = self._recs
        if node.trigger == "one_success":
            if any(recs[d].status == StepStatus.SUCCEEDED for d in node.deps):
                return None
            names = ", ".join(f"'{self.plan.nodes[d].id}'" for d in node.deps)
            return (f"none of its inputs succeeded ({names})",
                    all(decided_skip(recs[d]) for d in node.deps))
        for d in node.deps:
            rec = recs[d]
            if rec.status == StepStatus.SKIPPED:
                return f"upstream step '{rec.step_id}' was skipped", decided_skip(rec)
            if rec.status == StepStatus.FAILED and not rec.optional:
                return f"upstream step '{rec.step_id}' failed", False
        return None

    def _skip(self, node: PlanNode, why: str, decided: bool,
              condition: str | None = None) -> None:
        self._all_decide()
        self.emit(StepSkipped(run_id=self.run_id, ts=self.ctx.clock.now(), step_id=node.id,
                              reason=why, decided=decided, condition=condition))
        self.scope.outputs[node.id] = None  # type: ignore[index]
        self.ctx.journal.soon()  # seen by `podium status` while the other branch runs
        self._resolve(node)

    async def _commit(self) -> None:
        journal = self.ctx.journal
        # Alone in the engine (a chain, one run at a time): nothing could share the
        # transaction, so commit now instead of waiting a loop turn for a batch.
        if len(self._tasks) <= 1 and self.ctx.runs_active() <= 1 and journal.commit_now():
            return
        await journal.commit_through(journal.position)

    async def _commit_all(self) -> None:
        """Everything this engine appended so far, durable (the run's own events with it)."""
        journal = self.ctx.journal
        await journal.commit_through(journal.position)

    async def _flush(self) -> None:
        try:
            await self._commit()
        except PodiumError as exc:
            self._infra_error = ErrorInfo("store_error", exc.message)
            self.stop(FAILED, exc.message)
            raise

    def _inputs_pending(self, node: PlanNode, gen: int) -> bool:
        """Record that ``node``'s success is at journal position ``gen``, as an input of
        its dependents; say whether a dependent that ``node`` is about to make ready
        has an input not durable yet (then the caller commits and asks again).

        A commit makes everything appended before it durable. While the caller waits,
        other inputs of its dependents may succeed without waiting (they were not
        the last), leaving it more dependents to make ready, with inputs appended
        after that commit: hence asking again after each one.
        """
        journal = self.ctx.journal
        need = self._need
        remaining = self._remaining
        durable = journal.durable
        readying = pending = False
        for d in node.dependents:
            if need[d] < gen:
                need[d] = gen
            if remaining[d] == 1:
                readying = True
                if need[d] > durable:
                    pending = True
        if not readying:
            journal.soon()  # nobody waits for it: a checkpoint within a loop turn
        return pending

    async def _step(self, node: PlanNode) -> None:
        current: PlanNode | None = node
        while current is not None:
            await self._step_once(current)
            current, self._continue_with = self._continue_with, None

    async def _step_once(self, node: PlanNode) -> None:
        rec = self._recs[node.index]
        try:
            ok = await self._attempts(node, rec)
        except asyncio.CancelledError:
            self._tasks.pop(node.index, None)
            if rec.status not in (StepStatus.SUCCEEDED, StepStatus.FAILED):
                self.emit(
                    StepCancelled(
                        run_id=self.run_id,
                        ts=self.ctx.clock.now(),
                        step_id=node.id,
                        attempt=rec.attempts,
                    )
                )
            if self._stopping is None:
                raise
            self._check_done()
            return
        except Exception as exc:  # an engine bug must fail the run, never hang it
            log.exception("internal error in step %s of run %s", node.id, self.run_id)
            err = ErrorInfo(
                "internal",
                f"{type(exc).__name__}: {exc}",
                False,
                traceback="".join(traceback.format_exception(exc)),
            )
            self.emit(
                StepFailed(
                    run_id=self.run_id,
                    ts=self.ctx.clock.now(),
                    step_id=node.id,
                    attempts=rec.attempts,
                    error=err,
                )
            )
            ok = False
        if ok is None:  # it waits: neither resolved nor failed
            self._tasks.pop(node.index, None)
            self._waiting.add(node.index)
            self._pump()
            self._check_done()
            return
        if ok:
            # The durability rule: committed before dependents start. Only the step
            # that makes a dependent ready waits for that, and it waits until every
            # input of the dependent is durable, not just its own: in a fan-in, the
            # other 999 branches finish without waiting for a commit at all. What
            # is not waited for still commits within a loop turn (a checkpoint while
            # other steps run); only the run's last step commits with the run's end.
            if self._stopping is None and node.dependents:
                gen = self.ctx.journal.position  # its success, just appended
                try:
                    while self._inputs_pending(node, gen):
                        await self._flush()
                except (PodiumError, asyncio.CancelledError):
                    self._tasks.pop(node.index, None)
                    self._check_done()
                    return
            elif node.dependents or self._unresolved > 1:
                self.ctx.journal.soon()
            # The task registered for this step is the one running it (asyncio's
            # current_task() is a Python-level lookup in 3.11, per step).
            self._inline_slot = self._tasks.pop(node.index, None)
            try:
                if self._stopping is None:
                    self.scope.outputs[node.id] = rec.output  # type: ignore[index]
                    self._resolve(node)
            finally:
                self._inline_slot = None
        else:
            self._inline_slot = self._tasks.pop(node.index, None)
            try:
                self._on_failed(node, rec)
            finally:
                self._inline_slot = None
        self._pump()
        self._check_done()

    def _on_failed(self, node: PlanNode, rec: StepRecord) -> None:
        if self._stopping is not None:
            return
        if node.optional:
            self.scope.outputs[node.id] = None  # type: ignore[index]
            self._resolve(node)
            return
        assert rec.error is not None
        if self._first_failure is None:
            self._first_failure = (node.id, rec.error)
        if self.plan.workflow.on_failure == "continue":
            # Its dependents decide by their trigger rule: skipped by default, run by
            # all_done, run by one_success if another input succeeded.
            self._all_decide()
            self.scope.outputs[node.id] = None  # type: ignore[index]
            self._resolve(node)
        else:
            self._resolved[node.index] = True
            self._unresolved -= 1
            self.stop(FAILED, f"step '{node.id}' failed")

    # --- attempts ---------------------------------------------------------
    def others_running(self) -> bool:
        return len(self._tasks) > 1

    async def commit_for_retry(self) -> bool:
        try:
            await self._flush()
        except PodiumError:
            return False  # the run is stopping with the store error
        return True

    async def _attempts(self, node: PlanNode, rec: StepRecord) -> bool | None:
        if node.special:
            if node.wait is not None:
                return await self._wait(node, rec)
            if node.for_each is not None:
                return await self._map(node)
            if node.sub is not None:
                return await self._child(node, node.id, self.scope)
        state = self.carry.pop(node.id, None)
        return await attempts.call(
            self.ctx, self.calls.main[node.index], self, node.id, attempts_so_far=rec.attempts,
            state=state or RetryState(), wait_until=rec.next_retry_at)

    # --- waits --------------------------------------------------------------
    async def _wait(self, node: PlanNode, rec: StepRecord) -> bool | None:
        """A step that waits: done if its signal came or its timer is due (a short
        timer is slept here); else None, and the run suspends once nothing else runs.

        Its wake-up time is committed with its ``StepWaiting`` the first time, so a
        resume (or another process) waits for the same moment.
        """
        wait = node.wait
        waits = self.ctx.waits
        assert wait is not None
        assert waits is not None
        clock = self.ctx.clock
        until = rec.next_retry_at  # kept from before a crash: the same moment
        if until is None:
            try:
                until = self._wake_time(wait, clock.now())
            except (TemplateLookupError, ValueError) as exc:
                return self._wait_failed(node, ErrorInfo(
                    "invalid_input", f"wait_until: {exc}", False))
            self.emit(StepWaiting(run_id=self.run_id, ts=clock.now(), step_id=node.id,
                                  until=until, signal=wait.signal))
            self.ctx.journal.soon()
        if wait.signal is not None:
            sent, data = await waits.signal(self.run_id, wait.signal)
            if sent:
                return self._signalled(node, wait.kind, data)
        if until is not None:
            left = until - clock.now()
            if left > _HOLD_S:
                return None
            if left > 0:
                if wait.signal is not None:
                    return None  # a signal's timeout: the process need not sit through it
                await clock.sleep(left)
            return self._timed_out(node) if wait.signal is not None else self._woke(node)
        return None

    def _wake_time(self, wait: WaitSpec, now: float) -> float | None:
        if wait.kind == "sleep":
            assert wait.sleep_s is not None
            return now + wait.sleep_s
        if wait.kind == "until":
            assert wait.until is not None
            return _epoch(wait.until.resolve(self.scope))
        return None if wait.timeout_s is None else now + wait.timeout_s

    def _wait_failed(self, node: PlanNode, error: ErrorInfo) -> bool:
        self.emit(StepFailed(run_id=self.run_id, ts=self.ctx.clock.now(), step_id=node.id,
                             attempts=0, error=error, optional=node.optional))
        return False

    def _done_waiting(self, node: PlanNode, output: Any) -> bool:
        self.emit(StepSucceeded(run_id=self.run_id, ts=self.ctx.clock.now(), step_id=node.id,
                                attempt=1, agent_id="wait", output=output, duration_s=0.0,
                                output_json=orjson.dumps(output).decode()))
        return True

    def _signalled(self, node: PlanNode, kind: str, data: Any) -> bool:
        if kind == "approval" and isinstance(data, dict) and data.get("approved") is False:
            by = f" by {data['by']}" if data.get("by") else ""
            reason = f": {data['reason']}" if data.get("reason") else ""
            return self._wait_failed(node, ErrorInfo("rejected", f"rejected{by}{reason}",
                                                     False))
        return self._done_waiting(node, data)

    def _woke(self, node: PlanNode) -> bool:
        return self._done_waiting(node, None)

    def _timed_out(self, node: PlanNode) -> bool:
        wait = node.wait
        assert wait is not None
        if wait.on_timeout == "fail":
            what = "approval" if wait.kind == "approval" else f"signal '{wait.signal}'"
            return self._wait_failed(node, ErrorInfo(
                "timeout", f"no {what} within {wait.timeout_s:g}s", False))
        return self._done_waiting(node, wait.on_timeout.continue_with)

    async def _suspend(self) -> RunRecord:
        """Nothing runs until a signal or a timer: commit ``waiting`` and let the run go."""
        waits = self.ctx.waits
        assert waits is not None
        nodes = [self.plan.nodes[i] for i in sorted(self._waiting)]
        dues = [self._recs[n.index].next_retry_at for n in nodes]
        wake = min((d for d in dues if d is not None), default=None)
        self.emit(RunWaiting(run_id=self.run_id, ts=self.ctx.clock.now(),
                             steps=tuple(n.id for n in nodes), wake_at=wake))
        await self._commit_all()
        await waits.suspended(self.run_id, wake,
                              [n.wait.signal for n in nodes
                               if n.wait is not None and n.wait.signal is not None])
        return self.record

    # --- for_each -----------------------------------------------------------
    async def _map(self, node: PlanNode) -> bool | None:
        """Run ``node`` once per item of its list, ``item_concurrency`` at a time.

        Each item is a step of its own (``ID[i]``: its events, retries, row and
        idempotency key), committed on its own like any step, so a resume runs only
        the items that did not succeed (nor fail for good) before. Items are pulled
        by a few workers from one iterator, not one task each: 10,000 items cost
        what 10,000 steps do. The step succeeds with the results in input order
        (``null`` for a tolerated failure); once more items failed than ``tolerate``
        allows, no new item starts and the step fails, naming the failed items.
        """
        clock = self.ctx.clock
        t0 = clock.monotonic()
        assert node.for_each is not None
        try:
            items = node.for_each.resolve(self.scope)
        except TemplateLookupError as exc:
            return self._map_failed(node, ErrorInfo("invalid_input", f"for_each: {exc}", False))
        if not isinstance(items, list):
            kind = "null" if items is None else type(items).__name__
            return self._map_failed(node, ErrorInfo(
                "invalid_input", f"for_each gave {kind}, not a list (fix: point for_each at a"
                " list, e.g. ${{ steps.split.output.documents }})", False))
        n = len(items)
        if n > MAX_ITEMS:
            return self._map_failed(node, ErrorInfo(
                "invalid_input", f"for_each gave {n:,} items, over {MAX_ITEMS:,} (fix: split"
                " the list over several steps or sub-workflows)", False))
        self.emit(StepMapStarted(run_id=self.run_id, ts=clock.now(), step_id=node.id, items=n))
        steps = self.record.steps
        results: list[Any] = [None] * n
        failed: list[int] = []
        waiting: list[int] = []
        todo: list[tuple[int, int, float | None]] = []
        for i in range(n):
            rec = steps.get(f"{node.id}[{i}]")
            if rec is None:
                todo.append((i, 0, None))
            elif rec.status == StepStatus.SUCCEEDED:
                results[i] = rec.output
            elif rec.status == StepStatus.FAILED:
                failed.append(i)  # failed for good before a crash (a redrive resets it)
            else:  # cut short by a crash: the interrupted attempt is not held against it
                used = rec.attempts if rec.next_retry_at is not None else max(rec.attempts - 1, 0)
                todo.append((i, used, rec.next_retry_at))
        allowed = node.tolerate.allows(n) if node.tolerate is not None else 0
        main = self.calls.main[node.index]
        item_call = dataclasses.replace(main, optional=False)  # an item's failure is counted
        base = self.scope
        pending = iter(todo)

        async def work() -> None:
            for i, used, wait_until in pending:
                if len(failed) > allowed or self._paused:
                    return  # handed back: the items not started are the next owner's
                key = f"{node.id}[{i}]"
                scope = Scope(base.input, base.outputs, base.run_id, base.workflow_name,
                              base.workflow_version, items[i], i)
                state = RetryState(counts=[used] * len(main.policies)) if used else RetryState()
                try:
                    if node.sub is not None:
                        ok = await self._child(node, key, scope, optional=False)
                    else:
                        ok = await attempts.call(self.ctx, item_call, _Item(self, scope), key,
                                                 attempts_so_far=used, state=state,
                                                 wait_until=wait_until)
                except asyncio.CancelledError:
                    rec = steps.get(key)
                    if rec is not None and rec.status not in (StepStatus.SUCCEEDED,
                                                              StepStatus.FAILED):
                        self.emit(StepCancelled(run_id=self.run_id, ts=clock.now(),
                                                step_id=key, attempt=rec.attempts))
                    raise
                if ok is None:
                    waiting.append(i)  # its child run waits: so does the map
                elif ok:
                    results[i] = steps[key].output
                    self.ctx.journal.soon()  # each item's result durable within a turn
                else:
                    failed.append(i)

        width = min(node.item_concurrency or _MAP_WIDTH, len(todo))
        if width:
            async with asyncio.TaskGroup() as group:
                for _ in range(width):
                    group.create_task(work())
        if self._paused and any(steps.get(f"{node.id}[{i}]") is None
                                or steps[f"{node.id}[{i}]"].status not in _ITEM_DONE
                                for i, _used, _wait in todo):
            # Handed back with items not started: nothing more is decided here; the
            # hand-off abandons the run, and its next owner runs the rest.
            await asyncio.Event().wait()
        if waiting and len(failed) <= allowed:
            return None  # items whose child runs wait: the map goes on when they end
        if len(failed) > allowed:
            failed.sort()
            first = steps[f"{node.id}[{failed[0]}]"].error
            shown = ", ".join(str(i) for i in failed[:20]) + (" ..." if len(failed) > 20 else "")
            limit = "none may" if node.tolerate is None else f"tolerate allows {allowed}"
            return self._map_failed(node, ErrorInfo(
                "items_failed",
                f"{len(failed)} of {n} items failed ({limit}): items {shown};"
                f" item {failed[0]}: {first.message if first else 'failed'}",
                False, first.agent_id if first else None))
        raw = orjson.dumps(results).decode()
        self.emit(StepSucceeded(run_id=self.run_id, ts=clock.now(), step_id=node.id,
                                attempt=1, agent_id=node.agent, output=results,
                                duration_s=clock.monotonic() - t0, output_json=raw))
        return True

    # --- sub-workflows --------------------------------------------------------
    async def _child(self, node: PlanNode, key: str, scope: Scope, *,
                     optional: bool | None = None) -> bool | None:
        """Run ``node``'s sub-workflow as a child run, its output the step's output.

        The child's id is this run's and the step's (``RUN.STEP``, ``RUN.STEP[i]`` for an
        item): made, never drawn, so a resume finds the child it started instead of
        starting a second one. A run that stops (cancelled, failed, timed out) stops its
        children; one handed to another process leaves them to it.
        """
        clock = self.ctx.clock
        children = self.ctx.children
        assert node.sub is not None
        assert children is not None
        name = node.sub.workflow.name
        optional = node.optional if optional is None else optional
        t0 = clock.monotonic()
        child_id = f"{self.run_id}.{key}"
        self.emit(StepStarted(run_id=self.run_id, ts=clock.now(), step_id=key, attempt=1,
                              agent_id=f"workflow:{name}"))
        self.ctx.journal.soon()
        error: ErrorInfo | None = None
        try:
            value = node.input.resolve(scope) if node.input is not None else None
        except TemplateLookupError as exc:
            error = ErrorInfo("invalid_input", f"input: {exc}", False)
        if error is None and child_id.count(".") > MAX_DEPTH:
            error = ErrorInfo("invalid_input", f"sub-workflows nested more than {MAX_DEPTH}"
                              " deep", False)
        if error is None:
            try:
                child = await children.run(child_id, node.sub.workflow, value,
                                           self.record.agents_source, self.redrive)
            except asyncio.CancelledError:
                if self._stopping is not None and not self._paused:
                    children.cancel(child_id, f"its parent run {self.run_id} stopped")
                raise
            except PodiumError as exc:
                error = ErrorInfo("sub_workflow_error", f"workflow '{name}' (run {child_id}):"
                                  f" {exc.message}", False)
            else:
                if child.status == RunStatus.WAITING:
                    # The child waits (an approval...): so does this step; the child's end
                    # wakes this run (``Waits.child_ended``).
                    self.emit(StepWaiting(run_id=self.run_id, ts=clock.now(), step_id=key))
                    return None
                if child.status == RunStatus.SUCCEEDED:
                    self.emit(StepSucceeded(
                        run_id=self.run_id, ts=clock.now(), step_id=key, attempt=1,
                        agent_id=f"workflow:{name}", output=child.output,
                        duration_s=clock.monotonic() - t0,
                        output_json=orjson.dumps(child.output).decode()))
                    return True
                why = child.error.message if child.error is not None else child.status
                error = ErrorInfo(child.error.type if child.error else "sub_workflow_failed",
                                  f"workflow '{name}' (run {child_id}) {child.status}: {why}",
                                  False)
        self.emit(StepFailed(run_id=self.run_id, ts=clock.now(), step_id=key, attempts=1,
                             error=error, optional=optional))
        return False

    def _undoable(self) -> list[tuple[int, PlanNode, str]]:
        """What a rollback undoes, newest first: succeeded steps with a ``compensate`` or
        a sub-workflow, and the succeeded items of such for_each steps (whether or not
        the step as a whole succeeded: a map that failed half-way undoes its half)."""
        steps = self.record.steps
        out: list[tuple[int, PlanNode, str]] = []
        for node in self.plan.nodes:
            if node.compensate is None and node.sub is None:
                continue
            if node.for_each is None:
                rec = self._recs[node.index]
                if rec.status == StepStatus.SUCCEEDED:
                    out.append((rec.completed_seq or 0, node, node.id))
                continue
            prefix = node.id + "["
            out += [(r.completed_seq or 0, node, key) for key, r in steps.items()
                    if key.startswith(prefix) and r.status == StepStatus.SUCCEEDED]
        out.sort(key=lambda entry: entry[0], reverse=True)
        return out

    async def _undo_item(self, node: PlanNode, key: str, rec: StepRecord) -> bool:
        """One item's compensation: the step's ``compensate``, with the item in scope and
        ``steps.ID.output`` reading that item's own output."""
        comp = node.compensate
        assert comp is not None
        index = int(key[len(node.id) + 1:-1])
        base = self.scope
        outputs = dict(base.outputs)
        outputs[node.id] = rec.output
        scope = Scope(base.input, outputs, base.run_id, base.workflow_name,
                      base.workflow_version, self._item_value(node, index), index)
        return await attempts.call(
            self.ctx, self.calls.undo[node.index], _Item(self, scope), key, state=RetryState(),
            attempts_so_far=rec.compensation_attempts
            if rec.compensation_status == CompensationStatus.RUNNING else 0)

    def _item_value(self, node: PlanNode, index: int) -> Any:
        """The item a for_each step ran with at ``index`` (its list read again: it comes
        from committed data, so it is the same list)."""
        assert node.for_each is not None
        try:
            items = node.for_each.resolve(self.scope)
        except TemplateLookupError:
            return None
        return items[index] if isinstance(items, list) and index < len(items) else None

    async def _undo_child(self, node: PlanNode, key: str) -> bool:
        """A rollback of a step (or item) that ran a sub-workflow: its child run is rolled
        back, as the step's compensation."""
        clock = self.ctx.clock
        children = self.ctx.children
        assert node.sub is not None
        assert children is not None
        agent = f"workflow:{node.sub.workflow.name}"
        t0 = clock.monotonic()
        self.emit(CompensationStarted(run_id=self.run_id, ts=clock.now(), step_id=key,
                                      attempt=1, agent_id=agent))
        await self._commit_all()
        child_id = f"{self.run_id}.{key}"
        try:
            child = await children.rollback(child_id)
        except PodiumError as exc:
            error = ErrorInfo("rollback_failed", f"run {child_id}: {exc.message}", False)
        else:
            if child is None or child.status == RunStatus.ROLLED_BACK:
                self.emit(CompensationSucceeded(run_id=self.run_id, ts=clock.now(),
                                                step_id=key, attempt=1, agent_id=agent,
                                                duration_s=clock.monotonic() - t0))
                return True
            why = child.error.message if child.error is not None else child.status
            error = ErrorInfo("rollback_failed", f"run {child_id} {child.status}: {why}",
                              False)
        self.emit(CompensationFailed(run_id=self.run_id, ts=clock.now(), step_id=key,
                                     attempts=1, error=error))
        return False

    def _map_failed(self, node: PlanNode, error: ErrorInfo) -> bool:
        self.emit(StepFailed(run_id=self.run_id, ts=self.ctx.clock.now(), step_id=node.id,
                             attempts=1, error=error, optional=node.optional))
        return False

    # --- rollback ---------------------------------------------------------
    async def rollback(self, reason: str) -> RunRecord:
        """Undo succeeded steps in reverse completion order; resumable after a crash."""
        clock = self.ctx.clock
        wf = self.plan.workflow
        t0 = clock.monotonic()
        outputs = self.scope.outputs
        assert isinstance(outputs, dict)
        for node in self.plan.nodes:
            rec = self._recs[node.index]
            outputs[node.id] = rec.output if rec.status in (
                StepStatus.SUCCEEDED, StepStatus.COMPENSATED) else None
        if self.record.phase != "compensate":
            self.emit(RollbackStarted(run_id=self.run_id, ts=clock.now(), reason=reason))
            await self._commit_all()
        failed: list[str] = []
        first_error: ErrorInfo | None = None
        error: ErrorInfo | None
        for _seq, node, key in self._undoable():
            rec = self.record.steps[key]
            if node.sub is not None:  # its children, rolled back before what came before
                ok = await self._undo_child(node, key)
            elif key == node.id:
                ok = await attempts.call(
                    self.ctx, self.calls.undo[node.index], self, key, state=RetryState(),
                    attempts_so_far=rec.compensation_attempts
                    if rec.compensation_status == CompensationStatus.RUNNING else 0)
            else:
                ok = await self._undo_item(node, key, rec)
            await self._commit_all()  # each undo is durable before the next starts
            if not ok:
                failed.append(key)
                first_error = first_error or rec.compensation_error
        if failed:
            status = RunStatus.ROLLBACK_FAILED
            error = ErrorInfo(
                first_error.type if first_error else "agent_error",
                "could not undo step"
                + ("s " if len(failed) > 1 else " ")
                + ", ".join(f"'{f}'" for f in failed)
                + (f": {first_error.message}" if first_error else ""),
            )
        else:
            status, error = RunStatus.ROLLED_BACK, self.record.error
        self.emit(
            RunFinished(
                run_id=self.run_id,
                ts=clock.now(),
                workflow=wf.name,
                status=status,
                output=None,
                error=error,
                duration_s=clock.monotonic() - t0,
            )
        )
        await self._commit_all()
        return self.record
