"""Back-pressure in the engine: a busy agent costs no attempt and opens no breaker.

An agent says it is at capacity by raising a busy ``AgentError`` (``RateLimited``,
or any error with ``busy=True``; HTTP agents turn a 429, or a 503 with
``Retry-After``, into one). The same attempt then goes to another agent with room
at once, or waits for one (the agent's ``Retry-After``, jittered, else a short
back-off), for at most the step's acquire timeout; only then does the attempt
fail, as ``no_capacity``. Time is a ``FakeClock``: every wait is exact.
"""

from __future__ import annotations

import random
from typing import Any

from podium import AgentRegistry, Engine, EngineConfig, FakeClock, MemoryStore, PythonAgent
from podium.agents.breaker import BreakerConfig
from podium.agents.registry import RegistryConfig
from podium.definition import workflow_from_dict
from podium.errors import RateLimited
from podium.events import Event, StepAttemptFailed, StepBackPressure, StepStarted


async def _run(registry: AgentRegistry, wf: dict[str, Any], clock: FakeClock
               ) -> tuple[Any, list[Event]]:
    events: list[Event] = []
    cfg = EngineConfig(registry=registry, store=MemoryStore(), clock=clock,
                       rng=random.Random(1))
    async with Engine(cfg) as engine:
        engine.bus.subscribe(events.append)
        run = await engine.run(workflow_from_dict(wf))
    return run, events


async def test_a_busy_agent_is_waited_out_with_the_same_attempt() -> None:
    clock = FakeClock()
    calls: list[int] = []

    async def busy_twice(task: Any) -> Any:
        calls.append(task.attempt)
        if len(calls) <= 2:
            raise RateLimited("at capacity", retry_after_s=3.0)
        return "done"

    registry = AgentRegistry(
        [PythonAgent(busy_twice, id="only", capabilities=["w"])],
        RegistryConfig(breaker=BreakerConfig(failure_threshold=1)), clock=clock,
        rng=random.Random(2))
    run, events = await _run(registry, {"name": "b", "steps": [{"id": "s", "agent": "w"}]},
                             clock)
    assert run.status == "succeeded"
    assert (run.steps["s"].attempts, calls) == (1, [1, 1, 1])
    assert [type(e) for e in events if isinstance(e, StepBackPressure | StepAttemptFailed)] \
        == [StepBackPressure, StepBackPressure]
    assert len(clock.sleeps) == 2
    assert all(3.0 <= s <= 3.3 for s in clock.sleeps), clock.sleeps  # Retry-After + <= 10%
    assert registry.breaker_of("only").state == "closed"
    assert registry.health_of("only").total_failures == 0


async def test_a_busy_agent_sends_the_attempt_to_another_at_once() -> None:
    clock = FakeClock()

    async def full(task: Any) -> Any:
        raise RateLimited("at capacity")

    async def free(task: Any) -> Any:
        return "taken"

    registry = AgentRegistry(
        [PythonAgent(full, id="full", capabilities=["w"]),
         PythonAgent(free, id="free", capabilities=["w"])],
        RegistryConfig(strategy="round_robin"), clock=clock)
    run, events = await _run(registry, {"name": "b", "steps": [{"id": "s", "agent": "w"}]},
                             clock)
    assert run.status == "succeeded"
    assert run.steps["s"].agent_id == "free"
    assert run.steps["s"].attempts == 1
    assert [e.agent_id for e in events if isinstance(e, StepStarted)] == ["full", "free"]
    assert clock.sleeps == []  # no waiting: another agent had room


async def test_an_agent_busy_for_longer_than_the_acquire_timeout_fails_no_capacity() -> None:
    """Busy for the whole acquire timeout (5 s): the attempt fails as no_capacity, and the
    step's retry policy takes it from there (a second attempt that finds room)."""
    clock = FakeClock()
    calls: list[int] = []

    async def swamped(task: Any) -> Any:
        calls.append(task.attempt)
        if task.attempt == 1:
            raise RateLimited("at capacity", retry_after_s=2.0)
        return "finally"

    registry = AgentRegistry([PythonAgent(swamped, id="sw", capabilities=["w"])], clock=clock,
                             rng=random.Random(3))
    wf = {"name": "b", "steps": [{"id": "s", "agent": "w", "acquire_timeout": "5s",
                                  "retry": {"max_attempts": 2, "initial_delay": "1s",
                                            "jitter": "none"}}]}
    run, events = await _run(registry, wf, clock)
    assert run.status == "succeeded"
    assert run.steps["s"].attempts == 2
    (failed,) = [e for e in events if isinstance(e, StepAttemptFailed)]
    assert failed.error.type == "no_capacity"
    assert "stayed busy or at capacity for 5s" in failed.error.message
    assert calls.count(1) == 3  # at 0 s, ~2.1 s and ~4.3 s; the next would be past 5 s
