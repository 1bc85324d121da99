"""Timeouts, cancellation, fail_fast / continue / optional, typed errors, retries."""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

from podium import AgentError, Engine, EngineConfig, FakeClock, InvalidInput, RateLimited
from podium.definition import RetryPolicy, workflow_from_dict
from podium.engine.retry import backoff_delay
from tests.conftest import registry_of, run_workflow


async def test_a_step_attempt_timeout_fails_with_type_timeout_and_is_retried() -> None:
    attempts: list[int] = []

    async def sleepy(task: Any) -> Any:
        attempts.append(task.attempt)
        if task.attempt < 3:
            await asyncio.sleep(5)
        return "late but fine"

    wf = {"name": "to", "steps": [{"id": "a", "agent": "sleepy", "timeout": "50ms",
                                   "retry": {"max_attempts": 3, "initial_delay": 0}}]}
    run = await run_workflow(wf, sleepy=sleepy)
    assert run.status == "succeeded"
    assert attempts == [1, 2, 3]
    assert run.steps["a"].attempts == 3


async def test_timeout_without_retry_fails_the_run_with_error_type_timeout() -> None:
    async def sleepy(task: Any) -> Any:
        await asyncio.sleep(5)

    wf = {"name": "to2", "steps": [{"id": "a", "agent": "sleepy", "timeout": "30ms"}]}
    run = await run_workflow(wf, sleepy=sleepy)
    assert run.status == "failed"
    assert run.error is not None
    assert run.error.type == "timeout"
    assert run.steps["a"].error is not None
    assert run.steps["a"].error.type == "timeout"
    assert run.steps["a"].attempts == 1


async def test_the_whole_run_timeout_cancels_in_flight_steps_and_skips_the_rest() -> None:
    cancelled: list[str] = []

    async def sleepy(task: Any) -> Any:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(task.step_id)
            raise

    wf = {"name": "rto", "timeout": "100ms", "steps": [
        {"id": "a", "agent": "sleepy"}, {"id": "b", "agent": "sleepy", "depends_on": ["a"]}]}
    run = await run_workflow(wf, sleepy=sleepy)
    assert run.status == "failed"
    assert run.error is not None
    assert run.error.type == "timeout"
    assert cancelled == ["a"]
    assert run.steps["a"].status == "cancelled"
    assert run.steps["b"].status == "skipped"


async def test_cancelling_a_run_cancels_in_flight_steps_and_downstream_never_starts() -> None:
    started: list[str] = []
    cancelled: list[str] = []

    async def work(task: Any) -> Any:
        started.append(task.step_id)
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(task.step_id)
            raise

    wf = workflow_from_dict({"name": "cx", "steps": [
        {"id": "a", "agent": "work"}, {"id": "b", "agent": "work"},
        {"id": "c", "agent": "work", "depends_on": ["a", "b"]}]})
    async with Engine(EngineConfig(registry=registry_of(work=work))) as engine:
        handle = await engine.start(wf)
        while len(started) < 2:
            await asyncio.sleep(0.01)
        handle.cancel("user asked")
        run = await handle.result()
    assert run.status == "cancelled"
    assert run.error is not None
    assert run.error.type == "cancelled"
    assert sorted(cancelled) == ["a", "b"]
    assert "c" not in started
    assert [run.steps[s].status for s in "abc"] == ["cancelled", "cancelled", "skipped"]


def _branchy(on_failure: str, *, optional: bool = False) -> dict[str, Any]:
    return {
        "name": "branchy",
        "on_failure": on_failure,
        "steps": [
            {"id": "bad", "agent": "boom", "optional": optional},
            {"id": "after_bad", "agent": "echo", "depends_on": ["bad"],
             "input": {"bad": "${{ steps.bad.output }}"}},
            {"id": "slow", "agent": "slow"},
            {"id": "after_slow", "agent": "echo", "depends_on": ["slow"]},
        ],
    }


class _Branches:
    """``bad`` fails while ``slow`` runs, on any machine at any load.

    ``boom`` raises only once ``slow`` has started, and ``slow`` goes on until
    ``boom`` has raised; with ``until_cancelled`` it then waits for the engine
    to cancel it (10 s at most, then it returns and the test sees it finish).
    Events, not a 20 ms sleep racing a 300 ms one.
    """

    def __init__(self, *, until_cancelled: bool = False) -> None:
        self.until_cancelled = until_cancelled
        self.slow_started = asyncio.Event()
        self.boom_raised = asyncio.Event()

    async def boom(self, task: Any) -> Any:
        await self.slow_started.wait()
        self.boom_raised.set()
        raise ValueError("disk is full")

    async def slow(self, task: Any) -> Any:
        self.slow_started.set()
        await self.boom_raised.wait()
        if self.until_cancelled:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.Event().wait(), 10)
        return "slow done"

    def agents(self) -> dict[str, Any]:
        return {"boom": self.boom, "slow": self.slow, "echo": _echo}


async def _boom(task: Any) -> Any:
    raise ValueError("disk is full")


async def _echo(task: Any) -> Any:
    return task.input


async def test_fail_fast_cancels_in_flight_siblings_and_skips_downstream() -> None:
    branches = _Branches(until_cancelled=True)
    run = await run_workflow(_branchy("fail_fast"), **branches.agents())
    assert run.status == "failed"
    st = {k: v.status for k, v in run.steps.items()}
    assert st == {"bad": "failed", "after_bad": "skipped", "slow": "cancelled",
                  "after_slow": "skipped"}
    assert run.error is not None
    assert run.error.type == "agent_error"
    assert "step 'bad' failed after 1 attempt" in run.error.message
    assert "ValueError: disk is full" in run.error.message


async def test_continue_lets_independent_branches_finish_and_skips_only_downstream() -> None:
    run = await run_workflow(_branchy("continue"), **_Branches().agents())
    assert run.status == "failed"
    st = {k: v.status for k, v in run.steps.items()}
    assert st == {"bad": "failed", "after_bad": "skipped", "slow": "succeeded",
                  "after_slow": "succeeded"}


async def test_an_optional_step_failure_does_not_fail_the_run_and_dependents_see_null() -> None:
    run = await run_workflow(_branchy("fail_fast", optional=True), **_Branches().agents())
    assert run.status == "succeeded"
    assert run.steps["bad"].status == "failed"
    assert run.steps["after_bad"].status == "succeeded"
    assert run.steps["after_bad"].output == {"bad": None}


async def test_a_traceback_is_kept_in_the_record_but_not_in_the_public_error() -> None:
    run = await run_workflow({"name": "tb", "steps": [{"id": "bad", "agent": "boom"}]},
                             boom=_boom)
    err = run.steps["bad"].error
    assert err is not None
    assert err.traceback is not None
    assert "ValueError" in err.traceback
    public = run.to_dict()["steps"]["bad"]["error"]
    assert "traceback" not in public
    assert run.to_dict(verbose=True)["steps"]["bad"]["error"]["traceback"]


async def test_flaky_step_retries_with_the_exact_backoff_sequence_on_the_fake_clock() -> None:
    clock = FakeClock()

    async def flaky(task: Any) -> Any:
        if task.attempt < 4:
            raise AgentError("try later", type="unavailable")
        return task.attempt

    policy = {"max_attempts": 5, "initial_delay": "1s", "backoff": 2.0, "max_delay": "30s",
              "jitter": "full"}
    wf = {"name": "flaky", "steps": [{"id": "a", "agent": "flaky", "retry": policy}]}
    run = await run_workflow(wf, flaky=flaky, clock=clock, seed=42)
    assert run.status == "succeeded"
    assert run.steps["a"].attempts == 4
    rng = random.Random(42)
    p = RetryPolicy.model_validate(policy)
    expected = [backoff_delay(p, n, rng) for n in (1, 2, 3)]
    assert clock.sleeps == expected
    assert all(0 <= d <= 1 * 2 ** (n) for n, d in enumerate(expected))


async def test_explicit_delays_are_used_in_order_without_jitter() -> None:
    clock = FakeClock()

    async def flaky(task: Any) -> Any:
        raise AgentError("nope", type="rate_limited")

    retry = {"max_attempts": 5, "delays": ["1s", "5s", "30s"]}
    wf = {"name": "delays", "steps": [{"id": "a", "agent": "flaky", "retry": retry}]}
    run = await run_workflow(wf, flaky=flaky, clock=clock)
    assert run.status == "failed"
    assert run.steps["a"].attempts == 5
    assert clock.sleeps == [1.0, 5.0, 30.0, 30.0]


async def test_a_no_retry_on_error_is_attempted_once() -> None:
    clock = FakeClock()
    calls = 0

    async def picky(task: Any) -> Any:
        nonlocal calls
        calls += 1
        raise AgentError("schema mismatch", type="bad_schema")

    wf = {"name": "sel", "steps": [{"id": "a", "agent": "picky", "retry": {
        "max_attempts": 5, "initial_delay": "1s", "no_retry_on": ["bad_schema"]}}]}
    run = await run_workflow(wf, picky=picky, clock=clock)
    assert run.status == "failed"
    assert calls == 1
    assert clock.sleeps == []
    assert run.steps["a"].error is not None
    assert run.steps["a"].error.type == "bad_schema"


async def test_invalid_input_is_not_retried_by_default_but_other_errors_are() -> None:
    clock = FakeClock()
    calls: list[str] = []

    async def strict(task: Any) -> Any:
        calls.append(task.step_id)
        if task.step_id == "a":
            raise InvalidInput("field 'x' missing")
        raise RuntimeError("transient")

    wf = {"name": "dflt", "on_failure": "continue",
          "defaults": {"retry": {"max_attempts": 3, "initial_delay": "10ms"}},
          "steps": [{"id": "a", "agent": "strict"}, {"id": "b", "agent": "strict"}]}
    await run_workflow(wf, strict=strict, clock=clock)
    assert calls.count("a") == 1
    assert calls.count("b") == 3


async def test_a_list_of_policies_lets_the_first_matching_one_decide() -> None:
    clock = FakeClock()

    async def agent(task: Any) -> Any:
        raise AgentError("busy", type="rate_limited")

    wf = {"name": "asl", "steps": [{"id": "a", "agent": "agent", "retry": [
        {"retry_on": ["timeout"], "max_attempts": 10, "delays": ["1s"]},
        {"retry_on": ["rate_limited"], "max_attempts": 3, "delays": ["7s"]},
    ]}]}
    run = await run_workflow(wf, agent=agent, clock=clock)
    assert run.steps["a"].attempts == 3
    assert clock.sleeps == [7.0, 7.0]


async def test_a_step_without_retry_policy_is_attempted_once() -> None:
    calls = 0

    async def boom(task: Any) -> Any:
        nonlocal calls
        calls += 1
        raise RuntimeError("x")

    run = await run_workflow({"name": "once", "steps": [{"id": "a", "agent": "boom"}]}, boom=boom)
    assert run.status == "failed"
    assert calls == 1


async def test_retryable_false_stops_retries_and_retry_after_raises_the_delay() -> None:
    """A rate limit that is not back-pressure (``busy=False``: a quota, say) fails the
    attempt, and its retry_after_s lengthens the policy's wait."""
    clock = FakeClock()

    async def agent(task: Any) -> Any:
        if task.step_id == "final":
            raise AgentError("gone for good", type="unavailable", retryable=False)
        if task.attempt == 1:
            raise RateLimited("slow down", retry_after_s=12.0, busy=False)
        return "ok"

    wf = {"name": "ra", "on_failure": "continue", "steps": [
        {"id": "final", "agent": "agent", "retry": {"max_attempts": 4, "initial_delay": "1s"}},
        {"id": "limited", "agent": "agent",
         "retry": {"max_attempts": 4, "initial_delay": "1s", "jitter": "none"}}]}
    run = await run_workflow(wf, agent=agent, clock=clock)
    assert run.steps["final"].attempts == 1
    assert run.steps["limited"].status == "succeeded"
    assert clock.sleeps == [12.0]


async def test_a_step_deadline_bounds_all_attempts_together() -> None:
    """Deadline 10 s, each attempt 4 s (on the FakeClock), 1 s between attempts: the
    second ends at 9 s and another would start at 10 s, so there is no third."""
    clock = FakeClock()
    attempts: list[int] = []

    async def slowish(task: Any) -> Any:
        attempts.append(task.attempt)
        clock.advance(4.0)
        raise RuntimeError("still broken")

    wf = {"name": "dl", "steps": [{"id": "a", "agent": "slowish", "deadline": "10s",
                                   "retry": {"max_attempts": 50, "initial_delay": "1s",
                                             "jitter": "none", "backoff": 1.0}}]}
    run = await run_workflow(wf, slowish=slowish, clock=clock)
    assert run.status == "failed"
    assert attempts == [1, 2]
    assert clock.sleeps == [1.0]
    err = run.steps["a"].error
    assert err is not None
    assert err.type == "agent_error"
    assert "still broken" in err.message
    assert "deadline of 10s leaves no time for another attempt" in err.message
