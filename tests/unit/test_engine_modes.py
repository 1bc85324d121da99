"""One executor, three modes: ordering, data flow, concurrency and bounds."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from podium import Engine, EngineConfig
from podium.events import Event, StepReady, StepStarted, StepSucceeded
from tests.conftest import registry_of, run_workflow


async def test_sequential_steps_run_in_order_and_see_every_earlier_result() -> None:
    order: list[str] = []

    async def work(task: Any) -> Any:
        order.append(task.step_id)
        return {"from": task.step_id, "got": task.input}

    wf = {
        "name": "seq",
        "mode": "sequential",
        "steps": [
            {"id": "a", "agent": "work"},
            {"id": "b", "agent": "work"},  # default input: the previous output
            {"id": "c", "agent": "work",
             "input": {"first": "${{ steps.a.output.from }}", "n": "${{ input.n }}",
                       "second": "${{ steps.b.output }}"}},
        ],
    }
    run = await run_workflow(wf, {"n": 3}, work=work)
    assert run.status == "succeeded"
    assert order == ["a", "b", "c"]
    assert run.steps["a"].output == {"from": "a", "got": {"n": 3}}
    assert run.steps["b"].output == {"from": "b", "got": {"from": "a", "got": {"n": 3}}}
    c_input = run.steps["c"].output["got"]
    assert c_input["first"] == "a"
    assert c_input["n"] == 3
    assert c_input["second"]["from"] == "b"
    # The sequential output is the last step's output.
    assert run.output == run.steps["c"].output


async def test_parallel_steps_really_overlap_and_the_output_collects_every_result() -> None:
    """All five are in flight at one instant: each waits at a barrier that opens only
    when all five are there (run one after another, the first would wait in vain
    until its 10 s bound fails it)."""
    barrier = asyncio.Barrier(5)

    async def slow(task: Any) -> Any:
        async with asyncio.timeout(10):
            await barrier.wait()
        return task.step_id.upper()

    wf = {"name": "par", "mode": "parallel",
          "steps": [{"id": f"p{i}", "agent": "slow"} for i in range(5)]}
    run = await run_workflow(wf, slow=slow)
    assert run.status == "succeeded", run.error
    assert run.output == {f"p{i}": f"P{i}" for i in range(5)}


async def test_dag_respects_every_edge_and_a_slow_branch_never_holds_back_a_fast_one() -> None:
    """``slow`` (first level) finishes only once ``fast2`` (second level) has: with a
    superstep barrier fast2 would wait for slow, and slow's 10 s bound fails the run."""
    spans: dict[str, tuple[float, float]] = {}
    fast2_done = asyncio.Event()

    async def work(task: Any) -> Any:
        start = time.monotonic()
        if task.step_id == "slow":
            async with asyncio.timeout(10):
                await fast2_done.wait()
        spans[task.step_id] = (start, time.monotonic())
        if task.step_id == "fast2":
            fast2_done.set()
        return {"step": task.step_id, "input": task.input}

    wf = {
        "name": "diamond",
        "steps": [
            {"id": "root", "agent": "work"},
            {"id": "slow", "agent": "work", "depends_on": ["root"]},
            {"id": "fast1", "agent": "work", "depends_on": ["root"]},
            {"id": "fast2", "agent": "work", "depends_on": ["fast1"]},
            {"id": "join", "agent": "work", "depends_on": ["slow", "fast2"]},
        ],
    }
    run = await run_workflow(wf, {"q": 1}, work=work)
    assert run.status == "succeeded", run.error
    edges = [("root", "slow"), ("root", "fast1"), ("fast1", "fast2"), ("slow", "join"),
             ("fast2", "join")]
    for dep, child in edges:
        assert spans[dep][1] <= spans[child][0], f"{child} started before {dep} finished"
    # No superstep barrier: fast2 (second level) finished while slow (first level) ran.
    assert spans["slow"][0] <= spans["fast2"][1] <= spans["slow"][1]
    # Default DAG input: the dependencies' outputs by id; roots get the run input.
    assert run.steps["root"].output["input"] == {"q": 1}
    assert set(run.steps["join"].output["input"]) == {"slow", "fast2"}
    # Default output: the sink steps' outputs.
    assert list(run.output) == ["join"]


async def test_max_parallel_bounds_the_steps_in_flight() -> None:
    """Three steps in flight and never a fourth: the steps are held until three run
    and the loop has turned a hundred more times (in memory, a fourth would have
    started by then: it takes a few turns); then every step goes through."""
    inflight = 0
    peak = 0
    release = asyncio.Event()

    async def work(task: Any) -> Any:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        await release.wait()
        inflight -= 1
        return None

    async def release_once_three_run() -> None:
        try:
            async with asyncio.timeout(10):
                while inflight < 3:
                    await asyncio.sleep(0)
            for _ in range(100):
                await asyncio.sleep(0)
        finally:
            release.set()

    releaser = asyncio.create_task(release_once_three_run())
    wf = {"name": "bounded", "mode": "parallel", "max_parallel": 3,
          "steps": [{"id": f"s{i}", "agent": "work"} for i in range(12)]}
    run = await run_workflow(wf, work=work)
    await releaser  # a TimeoutError here: three never ran at once
    assert run.status == "succeeded", run.error
    assert peak == 3


async def test_templates_read_run_id_workflow_name_and_interpolate_text() -> None:
    async def echo(task: Any) -> Any:
        return task.input

    wf = {"name": "tpl", "version": 4, "steps": [{"id": "a", "agent": "echo", "input": {
        "run": "${{ run.id }}", "label": "${{ workflow.name }} v${{ workflow.version }}",
        "rows": "${{ input.rows }}", "first": "${{ input.rows[0] }}",
        "msg": "got ${{ input.rows }} rows"}}],
        "output": {"label": "${{ steps.a.output.label }}"}}
    run = await run_workflow(wf, {"rows": [1, 2]}, echo=echo)
    out = run.steps["a"].output
    assert out["run"] == run.run_id
    assert out["label"] == "tpl v4"
    assert out["rows"] == [1, 2]
    assert out["first"] == 1
    assert out["msg"] == "got [1, 2] rows"
    assert run.output == {"label": "tpl v4"}


async def test_a_missing_template_key_fails_the_step_as_invalid_input_without_retry() -> None:
    calls = 0

    async def echo(task: Any) -> Any:
        nonlocal calls
        calls += 1
        return task.input

    wf = {"name": "tpl-miss", "defaults": {"retry": {"max_attempts": 3, "initial_delay": 0}},
          "steps": [{"id": "a", "agent": "echo", "input": "${{ input.nope }}"}]}
    run = await run_workflow(wf, {"x": 1}, echo=echo)
    assert run.status == "failed"
    assert run.steps["a"].error is not None
    assert run.steps["a"].error.type == "invalid_input"
    assert "nope" in run.steps["a"].error.message
    assert calls == 0


async def test_events_arrive_in_order_and_a_dependent_is_ready_only_after_its_dependency() -> None:
    seen: list[Event] = []

    async def work(task: Any) -> Any:
        return 1

    from podium.definition import workflow_from_dict

    wf = workflow_from_dict({"name": "ev", "steps": [
        {"id": "a", "agent": "work"}, {"id": "b", "agent": "work", "depends_on": ["a"]}]})
    async with Engine(EngineConfig(registry=registry_of(work=work))) as engine:
        engine.bus.subscribe(seen.append)
        await engine.run(wf)
    kinds = [(e.type, getattr(e, "step_id", None)) for e in seen]
    assert kinds[0] == ("run_started", None)
    assert kinds[-1] == ("run_finished", None)
    a_done = kinds.index(("step_succeeded", "a"))
    b_ready = kinds.index(("step_ready", "b"))
    assert a_done < b_ready
    assert [e.ts for e in seen] == sorted(e.ts for e in seen)
    started = [e for e in seen if isinstance(e, StepStarted)]
    assert {e.agent_id for e in started} == {"work"}
    assert all(isinstance(e, StepReady | StepStarted | StepSucceeded) or e.type.startswith("run")
               for e in seen)


async def test_sync_agents_run_off_the_event_loop_thread() -> None:
    """Four blocking calls, each in a worker thread, all four at once (a thread
    barrier that times out after 10 s fails them if they are not)."""
    import threading

    loop_thread = threading.get_ident()
    threads: list[int] = []
    barrier = threading.Barrier(4, timeout=10)

    def blocking(task: Any) -> Any:
        threads.append(threading.get_ident())
        barrier.wait()
        return "done"

    wf = {"name": "sync", "mode": "parallel",
          "steps": [{"id": f"s{i}", "agent": "blocking"} for i in range(4)]}
    run = await run_workflow(wf, blocking=blocking)
    assert run.status == "succeeded", run.error
    assert loop_thread not in threads
    assert len(set(threads)) == 4


async def test_a_non_json_output_fails_the_attempt_with_a_clear_message() -> None:
    async def bad(task: Any) -> Any:
        return {"when": object()}

    run = await run_workflow({"name": "nj", "steps": [{"id": "a", "agent": "bad"}]}, bad=bad)
    assert run.status == "failed"
    err = run.steps["a"].error
    assert err is not None
    assert err.type == "agent_error"
    assert "not JSON" in err.message


async def test_steps_that_call_alike_share_one_call_and_each_keeps_its_own_key() -> None:
    """A fan-out's branches (same agent, input, policy) share one call of the plan, yet
    each attempt carries its own step id and idempotency key, and a compensation's key
    is its step's with /compensate; a step that differs (its timeout) has its own."""
    from podium.definition import compile_plan, workflow_from_dict
    from podium.engine.run import calls_of

    wf = workflow_from_dict({"name": "fan", "on_failure": "compensate", "steps": [
        {"id": "a", "agent": "work"},
        *({"id": f"b{i}", "agent": "work", "depends_on": ["a"],
           "compensate": {"agent": "undo"}} for i in range(3)),
        {"id": "c", "agent": "work", "depends_on": ["a"], "timeout": "5s"},
        {"id": "boom", "agent": "boom", "depends_on": ["b0", "b1", "b2", "c"]},
    ]})
    calls = calls_of(compile_plan(wf))
    assert calls.main[1] is calls.main[2] is calls.main[3]
    assert calls.main[4] is not calls.main[1]
    seen: list[tuple[str, int, str]] = []

    def work(task: Any) -> Any:
        seen.append((task.step_id, task.attempt, task.idempotency_key))
        return task.step_id

    def boom(task: Any) -> Any:
        raise RuntimeError("fails after the branches, so they are undone")

    run = await run_workflow(wf, {}, work=work, undo=work, boom=boom)
    assert run.status == "rolled_back", run.error
    rid = run.run_id
    assert sorted(seen) == sorted([
        ("a", 1, f"{rid}/a"), ("c", 1, f"{rid}/c"),
        *((f"b{i}", 1, f"{rid}/b{i}") for i in range(3)),
        *((f"b{i}", 1, f"{rid}/b{i}/compensate") for i in range(3))])
