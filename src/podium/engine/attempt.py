"""One agent call of a step or of its compensation: attempts until it succeeds or gives up.

``attempt`` is one try, a function that returns its ``Outcome``: resolve the
input, acquire an agent, invoke it within the attempt's timeout, and turn what
it answered or raised into an output or a typed, scrubbed, bounded error. An
agent that says it is busy is neither (back-pressure: ``Outcome.busy``).

``call`` is the policy around it: the same attempt again, at once or after a
wait, while agents push back (for at most the acquire timeout); a failed
attempt's retry per the step's policy and deadline, committed before its wait
so a crash during the wait resumes it; and the events of it all, in the words
of steps or of compensations, chosen once (``Words``).
"""

from __future__ import annotations

import asyncio
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import orjson

from podium.agents.base import DEFAULT_MAX_RESPONSE_BYTES, Task
from podium.definition.models import RetryPolicy
from podium.definition.templates import Compiled, Scope, TemplateLookupError
from podium.engine.context import RunContext
from podium.engine.retry import RetryState, next_delay
from podium.errors import AgentError, OutputTooLarge, Unavailable
from podium.events import (
    CompensationAttemptFailed,
    CompensationFailed,
    CompensationRetryScheduled,
    CompensationStarted,
    CompensationSucceeded,
    ErrorInfo,
    Event,
    StepAttemptFailed,
    StepBackPressure,
    StepFailed,
    StepRetryScheduled,
    StepStarted,
    StepSucceeded,
)
from podium.redact import contains_secret, has_secrets, redact, redact_value

__all__ = [
    "COMPENSATION",
    "MAX_ERROR_MESSAGE_CHARS",
    "STEP",
    "Call",
    "Caller",
    "Outcome",
    "Words",
    "attempt",
    "call",
    "classify",
    "error_type_of",
]

# What an agent may put in a stored error: a type is a short identifier (it names a
# retry_on rule and a metric label), a message a few kB, a traceback a few dozen kB.
MAX_ERROR_TYPE_CHARS = 64
MAX_ERROR_MESSAGE_CHARS = 4096
MAX_TRACEBACK_CHARS = 32768
_ERROR_TYPE = re.compile(r"[a-z][a-z0-9_.-]*")


def _cut(text: str, limit: int) -> str:
    """``text`` scrubbed of secrets and at most about ``limit`` characters, saying so if cut.

    Scrubbed before the cut as well as after (a window a little longer than the
    limit): a secret split by the cut must not leave its first half behind.
    """
    if len(text) <= limit:
        return redact(text)
    text = redact(text[: limit + 256])[:limit]
    return f"{text}… [cut: {limit} characters kept]"


def error_type_of(name: str) -> str:
    """An agent's error type if it is a short identifier, else ``agent_error``."""
    if len(name) <= MAX_ERROR_TYPE_CHARS and _ERROR_TYPE.fullmatch(name):
        return name
    return "agent_error"


def classify(exc: BaseException, agent_id: str | None, timeout_s: float | None) -> ErrorInfo:
    """Turn what an attempt raised into a typed error (what ``retry_on`` names).

    Messages and tracebacks are scrubbed of secrets here, once, before they can
    reach the store, the logs or an alert, and cut to a bounded length: they come
    from agents, which may send anything.
    """
    if isinstance(exc, AgentError):
        return ErrorInfo(
            error_type_of(exc.error_type),
            _cut(exc.message, MAX_ERROR_MESSAGE_CHARS),
            exc.retryable,
            agent_id,
            retry_after_s=exc.retry_after_s,
        )
    if isinstance(exc, TimeoutError):
        limit = f" after {timeout_s:g}s" if timeout_s is not None else ""
        return ErrorInfo("timeout", f"attempt timed out{limit}", None, agent_id)
    tb = "".join(traceback.format_exception(exc))
    if len(tb) > MAX_TRACEBACK_CHARS:  # the end says most: where it was raised, and what
        tb = f"[cut: the last {MAX_TRACEBACK_CHARS} characters kept] …" + tb[-MAX_TRACEBACK_CHARS:]
    text = str(exc)
    message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return ErrorInfo("agent_error", _cut(message, MAX_ERROR_MESSAGE_CHARS), None, agent_id,
                     redact(tb))


# --- the words of a call --------------------------------------------------------------
def _compensation_succeeded(run_id: str, ts: float, step_id: str, attempt: int, agent_id: str,
                            output: Any, duration_s: float, output_json: str) -> Event:
    return CompensationSucceeded(run_id=run_id, ts=ts, step_id=step_id, attempt=attempt,
                                 agent_id=agent_id, duration_s=duration_s)


def _compensation_failed(run_id: str, ts: float, step_id: str, attempts: int,
                         error: ErrorInfo, optional: bool) -> Event:
    return CompensationFailed(run_id=run_id, ts=ts, step_id=step_id, attempts=attempts,
                              error=error)


@dataclass(frozen=True, slots=True)
class Words:
    """The events one kind of call speaks (a step's, or its compensation's)."""

    started: Callable[..., Event]  # (run_id, ts, step_id, attempt, agent_id)
    succeeded: Callable[..., Event]
    attempt_failed: Callable[..., Event]  # (run_id, ts, step_id, attempt, agent_id, error, ...)
    retry_scheduled: Callable[..., Event]
    failed: Callable[..., Event]
    key_suffix: str = ""  # after the step's id in the idempotency key


# A step's words are the event classes themselves (a call per event, not two); a
# compensation's success and failure carry fewer fields, so theirs drop the rest.
STEP = Words(StepStarted, StepSucceeded, StepAttemptFailed, StepRetryScheduled, StepFailed)
COMPENSATION = Words(CompensationStarted, _compensation_succeeded, CompensationAttemptFailed,
                     CompensationRetryScheduled, _compensation_failed, "/compensate")


@dataclass(slots=True)
class Call:
    """What an agent call of a step is, made once per plan; never changed.

    Without the step's id (``call`` is told it): steps that call alike share one, as a
    fan-out's branches do (one each was 11 MB of a 100,000-step plan), and so do a
    for_each step's items. Not a frozen dataclass: that costs ~1 µs more to make.
    """

    agent_ref: str
    template: Compiled | None
    policies: tuple[RetryPolicy, ...]
    timeout_s: float | None
    deadline_s: float | None
    acquire_timeout_s: float | None
    strategy: str | None
    optional: bool
    words: Words


class Caller(Protocol):
    """What ``call`` needs of the run it works for."""

    run_id: str
    scope: Scope

    def emit(self, event: Event) -> None: ...

    def others_running(self) -> bool: ...

    async def commit_for_retry(self) -> bool:
        """Make the scheduled retry durable before its wait; False: the run is stopping."""
        ...


class Outcome(NamedTuple):
    """How one attempt ended: an output (``encoded`` set), an error, or a busy agent."""

    output: Any = None
    encoded: str | None = None
    error: ErrorInfo | None = None
    agent_id: str | None = None
    busy: AgentError | None = None


def _outcome(fields: tuple[Any, Any, Any, Any, Any]) -> Outcome:
    """An Outcome from all its fields, without NamedTuple's Python-level ``__new__``."""
    return tuple.__new__(Outcome, fields)


async def attempt(ctx: RunContext, c: Call, caller: Caller, step_id: str, number: int,
                  avoid: str | None, wait_s: float | None, deadline: float | None) -> Outcome:
    """One attempt: input, agent, call within the timeout, output or typed error."""
    clock = ctx.clock
    try:
        task_input = c.template.resolve(caller.scope) if c.template is not None else None
    except TemplateLookupError as exc:
        return Outcome(error=ErrorInfo("invalid_input", f"input: {exc}", False))
    try:
        lease = await ctx.registry.acquire(c.agent_ref, avoid=avoid, timeout_s=wait_s,
                                           strategy=c.strategy, run_id=caller.run_id)
    except Unavailable as exc:
        return Outcome(error=ErrorInfo(exc.error_type, exc.message))
    agent = lease.agent
    agent_id = agent.id
    run_id = caller.run_id
    caller.emit(c.words.started(run_id=run_id, ts=clock.now(), step_id=step_id,
                                attempt=number, agent_id=agent_id))
    if caller.others_running():
        # Others run too: commit the starts while the agents work, not in one big
        # transaction when the first of them finishes (it would hold everyone up).
        ctx.journal.soon()
    timeout = c.timeout_s
    if deadline is not None:
        left = deadline - clock.monotonic()
        timeout = left if timeout is None else min(timeout, left)
    task = Task(run_id, step_id, number, f"{run_id}/{step_id}{c.words.key_suffix}",
                lease.capability, task_input)
    mono = clock.monotonic
    call_t0 = mono()
    # Until we know better the call counts as cancelled, which neither the breaker
    # nor the health tracking hold against the agent.
    call_error: str | None = "cancelled"
    try:
        if not ctx.journal.leases_hold():
            # The leases may have lapsed (this process was frozen, or cut off): its runs
            # were just stopped (self-fencing); no call. Checked as late as can be, so
            # that a freeze between the check and the call is a matter of microseconds.
            raise asyncio.CancelledError
        if timeout is None:
            output = await agent.invoke(task)
        else:
            async with clock.timeout(max(timeout, 0.0)):
                output = await agent.invoke(task)
        raw = orjson.dumps(output)
        limit = getattr(agent, "max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES)
        if len(raw) > limit:
            raise OutputTooLarge(
                f"the output of agent '{agent_id}' is {len(raw)} bytes of JSON, over its"
                f" max_response_bytes ({limit}) (fix: return less, e.g. a reference to the"
                " data, or raise max_response_bytes)", agent_id=agent_id)
        if has_secrets() and contains_secret(raw.decode()):
            # A secret Podium read (an agent's token...) echoed back in an output:
            # scrubbed before it is stored or shown, like errors.
            output = redact_value(output)
            raw = orjson.dumps(output)
    except asyncio.CancelledError:
        raise
    except orjson.JSONEncodeError as exc:
        error = ErrorInfo("agent_error", f"output is not JSON: {exc}", False, agent_id)
        call_error = error.type
    except AgentError as exc:
        if exc.busy:
            lease.release_busy(exc.retry_after_s)  # back-pressure: no failure, no attempt
            return Outcome(agent_id=agent_id, busy=exc)
        error = classify(exc, agent_id, timeout)
        call_error = error.type
    except Exception as exc:  # noqa: BLE001 - whatever an agent raises fails the attempt
        error = classify(exc, agent_id, timeout)
        call_error = error.type
    else:
        call_error = None
        return _outcome((output, raw.decode(), None, agent_id, None))
    finally:
        lease.release(call_error is None, call_error, mono() - call_t0)
    return _outcome((None, None, error, agent_id, None))


async def call(ctx: RunContext, c: Call, caller: Caller, sid: str, *, attempts_so_far: int,
               state: RetryState, wait_until: float | None = None) -> bool:
    """Attempt the call until it succeeds (True) or its retry policy gives up (False)."""
    clock = ctx.clock
    mono = clock.monotonic
    emit = caller.emit
    run_id, words = caller.run_id, c.words
    if wait_until is not None and wait_until > clock.now():
        await clock.sleep(wait_until - clock.now())  # a retry delay pending before a crash
    deadline = mono() + c.deadline_s if c.deadline_s is not None else None
    avoid: str | None = None
    number = attempts_so_far
    # Back-pressure: once an agent answered "busy", the same attempt goes to another
    # agent or waits for one, until the step's acquire timeout has passed since.
    busy_end: float | None = None
    busy_message = ""
    while True:
        number += 1
        t0 = mono()
        wait_s = c.acquire_timeout_s if busy_end is None else max(busy_end - mono(), 0.0)
        if deadline is not None:
            left = max(deadline - mono(), 0.0)
            wait_s = left if wait_s is None else min(wait_s, left)
        outcome = await attempt(ctx, c, caller, sid, number, avoid, wait_s, deadline)
        if outcome.encoded is not None:
            emit(words.succeeded(run_id=run_id, ts=clock.now(), step_id=sid, attempt=number,
                                 agent_id=outcome.agent_id, output=outcome.output,
                                 duration_s=mono() - t0, output_json=outcome.encoded))
            return True
        error = outcome.error
        busy = outcome.busy
        if busy is not None:
            assert outcome.agent_id is not None
            window = (c.acquire_timeout_s if c.acquire_timeout_s is not None
                      else ctx.registry.config.acquire_timeout_s)
            if busy_end is None:
                busy_end = mono() + window
            said = redact(busy.message)
            busy_message = (f"every agent for '{c.agent_ref}' stayed busy or at capacity for"
                            f" {window:g}s (last answer, from '{outcome.agent_id}': {said})")
            emit(StepBackPressure(run_id=run_id, ts=clock.now(), step_id=sid, attempt=number,
                                  agent_id=outcome.agent_id, message=said,
                                  retry_after_s=busy.retry_after_s))
            if mono() < busy_end and (deadline is None or mono() < deadline):
                number -= 1  # not an attempt: the same one goes again
                avoid = outcome.agent_id
                continue
            error = ErrorInfo("no_capacity", busy_message, None, outcome.agent_id)
        elif busy_end is not None and error is not None and error.type == "no_capacity":
            error = ErrorInfo("no_capacity", busy_message)  # busy answers, then no room
        assert error is not None
        emit(words.attempt_failed(run_id=run_id, ts=clock.now(), step_id=sid, attempt=number,
                                  agent_id=outcome.agent_id, error=error,
                                  duration_s=mono() - t0))
        delay = next_delay(c.policies, error, state, ctx.rng)
        if delay is not None and deadline is not None and mono() + delay >= deadline:
            delay = None
            error = ErrorInfo(
                error.type,
                f"{error.message} (deadline of {c.deadline_s:g}s leaves no time for another"
                " attempt)",
                error.retryable, error.agent_id, error.traceback)
        if delay is None:
            emit(words.failed(run_id=run_id, ts=clock.now(), step_id=sid, attempts=number,
                              error=error, optional=c.optional))
            return False
        emit(words.retry_scheduled(run_id=run_id, ts=clock.now(), step_id=sid,
                                   attempt=number + 1, delay_s=delay, at=clock.now() + delay))
        scheduled = mono()
        # The granted retry and its due time are committed before the wait: a crash
        # during the wait then resumes it (same attempt count, same due time)
        # instead of silently starting the step over from attempt 1.
        if not await caller.commit_for_retry():
            return False  # the run is stopping with the store's error
        avoid = outcome.agent_id
        busy_end = None  # a new attempt gets a whole acquire timeout of its own
        # The commit took part of the wait: the attempt is due at the time committed,
        # not a commit later (a 10 ms wait would otherwise take 10 ms plus a commit).
        await clock.sleep(max(delay - (mono() - scheduled), 0.0))
