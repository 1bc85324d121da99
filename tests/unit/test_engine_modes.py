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
    spans: dict[str, tuple[float, float]] = {}

    async def slow(task: Any) -> Any:
        start = time.monotonic()
        await asyncio.sleep(0.2)
        spans[task.step_id] = (start, time.monotonic())
        return task.step_id.upper()

    wf = {"name": "par", "mode": "parallel",
          "steps": [{"id": f"p{i}", "agent": "slow"} for i in range(5)]}
    t0 = time.monotonic()
    run = await run_workflow(wf, slow=slow)
    elapsed = time.monotonic() - t0
    assert run.status == "succeeded"
    assert run.output == {f"p{i}": f"P{i}" for i in range(5)}
    latest_start = max(s for s, _ in spans.values())
    earliest_end = min(e for _, e in spans.values())
    assert latest_start < earliest_end, "every step was running at one instant"
    assert elapsed < 5 * 0.2, "not run one after another"


async def test_dag_respects_every_edge_and_a_slow_branch_never_holds_back_a_fast_one() -> None:
    spans: dict[str, tuple[float, float]] = {}
    delays = {"root": 0.0, "slow": 0.4, "fast1": 0.01, "fast2": 0.01, "join": 0.0}

    async def work(task: Any) -> Any:
        start = time.monotonic()
        await asyncio.sleep(delays[task.step_id])
        spans[task.step_id] = (start, time.monotonic())
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
    assert run.status == "succeeded"
    edges = [("root", "slow"), ("root", "fast1"), ("fast1", "fast2"), ("slow", "join"),
             ("fast2", "join")]
    for dep, child in edges:
        assert spans[dep][1] <= spans[child][0], f"{child} started before {dep} finished"
    # No superstep barrier: fast2 (second level) finished while slow (first level) ran.
    assert spans["fast2"][1] < spans["slow"][1]
    # Default DAG input: the dependencies' outputs by id; roots get the run input.
    assert run.steps["root"].output["input"] == {"q": 1}
    assert set(run.steps["join"].output["input"]) == {"slow", "fast2"}
    # Default output: the sink steps' outputs.
    assert list(run.output) == ["join"]


async def test_max_parallel_bounds_the_steps_in_flight() -> None:
    inflight = 0
    peak = 0

    async def work(task: Any) -> Any:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        await asyncio.sleep(0.02)
        inflight -= 1
        return None

    wf = {"name": "bounded", "mode": "parallel", "max_parallel": 3,
          "steps": [{"id": f"s{i}", "agent": "work"} for i in range(12)]}
    run = await run_workflow(wf, work=work)
    assert run.status == "succeeded"
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
    import threading

    loop_thread = threading.get_ident()
    threads: list[int] = []

    def blocking(task: Any) -> Any:
        threads.append(threading.get_ident())
        time.sleep(0.05)
        return "done"

    wf = {"name": "sync", "mode": "parallel",
          "steps": [{"id": f"s{i}", "agent": "blocking"} for i in range(4)]}
    t0 = time.monotonic()
    run = await run_workflow(wf, blocking=blocking)
    assert run.status == "succeeded"
    assert loop_thread not in threads
    assert time.monotonic() - t0 < 4 * 0.05 + 0.15  # they overlapped in threads


async def test_a_non_json_output_fails_the_attempt_with_a_clear_message() -> None:
    async def bad(task: Any) -> Any:
        return {"when": object()}

    run = await run_workflow({"name": "nj", "steps": [{"id": "a", "agent": "bad"}]}, bad=bad)
    assert run.status == "failed"
    err = run.steps["a"].error
    assert err is not None
    assert err.type == "agent_error"
    assert "not JSON" in err.message
