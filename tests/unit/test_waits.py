"""Steps that wait: approvals, signals, durable timers; the run suspends, holding nothing.

Through the real engine with in-process agents on the memory store and a fake
clock (timers are the clock's); the process side (the `podium run` that reached a
wait exits, `podium approve`, `podium serve` continues) is in
tests/integration/test_waits_cli.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from podium import Engine, EngineConfig, FakeClock
from podium.definition import workflow_from_dict
from podium.errors import ConfigError, DefinitionError
from podium.store.memory import MemoryStore
from tests.conftest import registry_of

CALLS: list[Any] = []


def _agents() -> dict[str, Any]:
    def prep(task: Any) -> Any:
        CALLS.append(("prep", task.input))
        return {"amount": 120}

    def ship(task: Any) -> Any:
        CALLS.append(("ship", task.input))
        return {"shipped": True, "with": task.input}

    async def slow(task: Any) -> Any:
        CALLS.append(("slow", None))
        await asyncio.sleep(0.05)
        return {"slow": True}

    return {"prep": prep, "ship": ship, "slow": slow}


APPROVAL = {"name": "order", "mode": "sequential", "steps": [
    {"id": "prep", "agent": "prep"},
    {"id": "ok", "approval": {"prompt": "Ship it?"}},
    {"id": "ship", "agent": "ship"}]}


@pytest.fixture(autouse=True)
def _clear() -> None:
    CALLS.clear()


def _engine(clock: FakeClock | None = None) -> Engine:
    config = EngineConfig(registry=registry_of(**_agents()), store=MemoryStore())
    if clock is not None:
        config.clock = clock
    return Engine(config)


async def test_an_approval_suspends_the_run_and_an_approval_continues_it() -> None:
    async with _engine() as engine:
        run = await engine.run(workflow_from_dict(APPROVAL), {})
        assert run.status == "waiting"
        assert run.steps["ok"].status == "waiting"
        stored = await engine.store.get_run(run.run_id)
        assert (stored.status, stored.owner) == ("waiting", None)  # nobody holds it
        _, woken = await engine.signal(run.run_id, "approve:ok",
                                       {"approved": True, "by": "ann", "data": {"n": 1}})
        assert woken
        assert (await engine.store.get_run(run.run_id)).status == "pending"
        done = await (await engine.resume(run.run_id)).result()
        assert done.status == "succeeded", done.error
        assert done.output == {"shipped": True,
                               "with": {"approved": True, "by": "ann", "data": {"n": 1}}}
    assert [c[0] for c in CALLS] == ["prep", "ship"]  # prep never again


async def test_a_rejection_fails_the_step_and_a_signal_counts_once() -> None:
    async with _engine() as engine:
        run = await engine.run(workflow_from_dict(APPROVAL), {})
        await engine.signal(run.run_id, "approve:ok",
                            {"approved": False, "by": "bob", "reason": "too risky"})
        with pytest.raises(ConfigError, match=r"sent to run .* already"):
            await engine.signal(run.run_id, "approve:ok", {"approved": True})
        done = await (await engine.resume(run.run_id)).result()
        assert done.status == "failed"
        err = done.steps["ok"].error
        assert err is not None
        assert (err.type, err.message) == ("rejected", "rejected by bob: too risky")
        with pytest.raises(ConfigError, match="has no step that waits for signal 'nope'"):
            await engine.signal(run.run_id, "nope")
        with pytest.raises(ConfigError, match="is failed"):
            await engine.signal(run.run_id, "approve:ok")


async def test_a_signal_sent_while_other_steps_run_is_not_lost() -> None:
    """Sent while the run still executes a slow branch (so the sender does not wake it):
    the run, suspending after that branch, finds it and makes itself pending."""
    wf = {"name": "race", "steps": [
        {"id": "slow", "agent": "slow"},
        {"id": "go", "wait_for": {"signal": "go"}},
        {"id": "ship", "agent": "ship", "depends_on": ["slow", "go"]}]}
    async with _engine() as engine:
        handle = await engine.start(workflow_from_dict(wf), {})
        for _ in range(100):
            if handle.record.steps.get("go") and handle.record.steps["go"].status == "waiting":
                break
            await asyncio.sleep(0.001)
        _, woken = await engine.signal(handle.run_id, "go", {"k": 1})
        assert not woken  # it was running
        run = await handle.result()
        assert run.status == "waiting"
        assert (await engine.store.get_run(run.run_id)).status == "pending"  # woke itself
        done = await (await engine.resume(run.run_id)).result()
        assert done.status == "succeeded", done.error
        assert done.steps["go"].output == {"k": 1}


async def test_durable_timers_short_ones_slept_long_ones_suspend() -> None:
    clock = FakeClock()
    wf = {"name": "nap", "mode": "sequential", "steps": [
        {"id": "prep", "agent": "prep"}, {"id": "nap", "sleep": "2h"},
        {"id": "ship", "agent": "ship"}]}
    async with _engine(clock) as engine:
        run = await engine.run(workflow_from_dict(wf), {})
        assert run.status == "waiting"
        due = run.steps["nap"].next_retry_at
        assert due == clock.now() + 7200
        assert await engine.store.wakes_due(due) == [run.run_id]
        clock.advance(3600)
        early = await (await engine.resume(run.run_id)).result()
        assert early.status == "waiting"  # the same moment, not an hour from now
        assert early.steps["nap"].next_retry_at == due
        clock.advance(3601)
        done = await (await engine.resume(run.run_id)).result()
        assert done.status == "succeeded", done.error
    assert [c[0] for c in CALLS] == ["prep", "ship"]


async def test_a_short_sleep_is_slept_in_place() -> None:
    wf = {"name": "blink", "mode": "sequential", "steps": [
        {"id": "nap", "sleep": "20ms"}, {"id": "ship", "agent": "ship"}]}
    async with _engine() as engine:
        run = await engine.run(workflow_from_dict(wf), {})
        assert run.status == "succeeded", run.error


async def test_a_signal_timeout_fails_or_continues_with_a_value() -> None:
    clock = FakeClock()
    wf = {"name": "t", "mode": "sequential", "steps": [
        {"id": "w", "wait_for": {"signal": "s", "timeout": "1h",
                                 "on_timeout": {"continue_with": {"default": True}}}},
        {"id": "ship", "agent": "ship"}]}
    async with _engine(clock) as engine:
        run = await engine.run(workflow_from_dict(wf), {})
        assert run.status == "waiting"
        clock.advance(3601)
        done = await (await engine.resume(run.run_id)).result()
        assert done.status == "succeeded"
        assert done.steps["w"].output == {"default": True}
        wf["steps"][0]["wait_for"] = {"signal": "s", "timeout": "1h"}
        run = await engine.run(workflow_from_dict(wf), {})
        clock.advance(3601)
        done = await (await engine.resume(run.run_id)).result()
        assert done.status == "failed"
        err = done.steps["w"].error
        assert err is not None
        assert (err.type, err.message) == ("timeout", "no signal 's' within 3600s")


async def test_wait_until_a_time_from_the_input() -> None:
    wf = {"name": "u", "mode": "sequential", "steps": [
        {"id": "w", "wait_until": "${{ input.at }}"}, {"id": "ship", "agent": "ship"}]}
    async with _engine() as engine:
        run = await engine.run(workflow_from_dict(wf), {"at": "2020-01-01T00:00:00Z"})
        assert run.status == "succeeded", run.error  # in the past: no wait
        run = await engine.run(workflow_from_dict(wf), {"at": "next tuesday"})
        assert run.status == "failed"
        err = run.steps["w"].error
        assert err is not None
        assert err.type == "invalid_input"
        assert "'next tuesday' is not a time" in err.message


async def test_a_waiting_run_can_be_cancelled() -> None:
    async with _engine() as engine:
        run = await engine.run(workflow_from_dict(APPROVAL), {})
        assert await engine.cancel(run.run_id, "no longer needed")
        ended = await engine.store.get_run(run.run_id)
        assert ended.status == "cancelled"
        with pytest.raises(ConfigError):
            await engine.signal(run.run_id, "approve:ok", {"approved": True})


@pytest.mark.parametrize(("step", "message"), [
    ({"approval": {}, "agent": "x"}, "a step does one thing: agent and approval are two"),
    ({"sleep": "1m", "retry": {"max_attempts": 2}}, "retry is not for a step that waits"),
    ({"wait_for": {"signal": "bad name!"}}, "'bad name!' is not allowed here"),
    ({"wait_until": "${{ steps.nope.output }}"}, "names unknown step 'nope'"),
])
def test_validation(step: dict[str, Any], message: str) -> None:
    with pytest.raises(DefinitionError) as info:
        workflow_from_dict({"name": "v", "steps": [{"id": "s", **step}]})
    assert any(message in p.message or message == p.field for p in info.value.problems), \
        [(p.message, p.field) for p in info.value.problems]


async def test_an_alert_rule_on_waiting_time_sees_runs_other_processes_suspended() -> None:
    """A `waiting` rule fires for an approval pending longer than `after`, though the
    process that reached the approval is gone (the manager reads waiting steps from the
    store), and resolves once the step waits no more."""
    from podium.definition.alerts import AlertsFile
    from podium.observe.alerts import AlertManager
    from podium.runtime import StoreLedger

    clock = FakeClock()
    store = MemoryStore()
    config = EngineConfig(registry=registry_of(**_agents()), store=store, clock=clock)
    async with Engine(config) as engine:
        run = await engine.run(workflow_from_dict(APPROVAL), {})  # "another process"
        assert run.status == "waiting"
        rules = AlertsFile.model_validate({"rules": [
            {"name": "approval-late", "kind": "waiting", "after": "4h", "step": "ok"}]})
        manager = AlertManager(rules, StoreLedger(store), clock=clock)
        await manager.tick()
        assert manager.active == {}
        clock.advance(4 * 3600 + 1)
        await manager.tick()
        assert list(manager.active) == [f"approval-late:{run.run_id}/ok"]
        alert = manager.active[f"approval-late:{run.run_id}/ok"]
        assert "has been waiting for 4h" in alert.summary
        await engine.signal(run.run_id, "approve:ok", {"approved": True})
        await (await engine.resume(run.run_id)).result()
        clock.advance(31)
        await manager.tick()
        assert manager.active == {}
        await manager.aclose()


async def test_the_scheduler_wakes_a_timer_when_it_is_due_and_continues_the_run() -> None:
    from podium.scheduler import Scheduler

    clock = FakeClock()
    store = MemoryStore(clock=clock.now)
    config = EngineConfig(registry=registry_of(**_agents()), store=store, clock=clock)
    wf = {"name": "nap", "mode": "sequential", "steps": [
        {"id": "nap", "sleep": "1h"}, {"id": "ship", "agent": "ship"}]}
    async with Engine(config) as engine:
        run = await engine.run(workflow_from_dict(wf), {})
        assert run.status == "waiting"
        scheduler = Scheduler(engine, store, lead=None, start_runs=True)
        await scheduler.round()
        assert (await store.get_run(run.run_id)).status == "waiting"
        clock.advance(3600)
        await scheduler.round()
        for _ in range(100):
            if (await store.get_run(run.run_id)).status == "succeeded":
                break
            await asyncio.sleep(0.01)
        assert (await store.get_run(run.run_id)).status == "succeeded"
        assert await store.wakes_due(clock.now() + 10) == []


async def test_a_parent_waits_for_its_waiting_child_and_goes_on_when_it_ends() -> None:
    wf = {"name": "parent", "workflows": {"order": APPROVAL}, "mode": "sequential",
          "steps": [{"id": "call", "workflow": "order"}, {"id": "after", "agent": "ship"}]}
    async with _engine() as engine:
        run = await engine.run(workflow_from_dict(wf), {})
        assert run.status == "waiting"
        assert run.steps["call"].status == "waiting"
        child_id = f"{run.run_id}.call"
        assert (await engine.store.get_run(child_id)).status == "waiting"
        await engine.signal(child_id, "approve:ok", {"approved": True})
        child = await (await engine.resume(child_id)).result()
        assert child.status == "succeeded"
        assert (await engine.store.get_run(run.run_id)).status == "pending"  # woken
        done = await (await engine.resume(run.run_id)).result()
        assert done.status == "succeeded", done.error
    assert [c[0] for c in CALLS] == ["prep", "ship", "ship"]
