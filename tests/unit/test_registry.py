"""Agent selection: health, capacity, weight, region, failover, breakers, waiting."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest

from podium import AgentRegistry, FakeClock, PythonAgent, Unavailable
from podium.agents.base import HealthReport
from podium.agents.breaker import BreakerConfig
from podium.agents.health import HealthConfig
from podium.agents.registry import RegistryConfig
from podium.errors import NoCapacity
from podium.events import AgentHealthChanged, CircuitStateChanged, Event


async def _noop(task: Any) -> Any:
    return None


def agent(agent_id: str, *, cap: int | None = None, weight: float = 1.0,
          region: str | None = None, capability: str = "work") -> PythonAgent:
    return PythonAgent(_noop, id=agent_id, capabilities=[capability], max_concurrency=cap,
                       weight=weight, region=region)


def registry(*agents: PythonAgent, **cfg: Any) -> tuple[AgentRegistry, FakeClock, list[Event]]:
    clock = FakeClock()
    events: list[Event] = []
    reg = AgentRegistry(agents, RegistryConfig(**cfg), clock=clock, rng=random.Random(1))
    reg.attach(events.append, clock)
    return reg, clock, events


async def test_capacity_is_respected_and_the_least_loaded_agent_is_chosen() -> None:
    reg, clock, _ = registry(agent("a", cap=2), agent("b", cap=4))
    leases = [await reg.acquire("work") for _ in range(6)]
    counts = Counter(lease.agent.id for lease in leases)
    assert counts == {"a": 2, "b": 4}
    waiter = asyncio.ensure_future(reg.acquire("work", timeout_s=0.01))
    await asyncio.sleep(0)
    assert not waiter.done()  # the acquire timeout runs on the registry's clock
    clock.advance(0.02)
    with pytest.raises(Unavailable, match="capacity"):
        await waiter
    for lease in leases:
        lease.release()


async def test_load_spreads_by_weight_under_concurrency() -> None:
    reg, _clock, _ = registry(agent("heavy", weight=3.0), agent("light", weight=1.0))
    picks: Counter[str] = Counter()
    held = []
    for _ in range(400):
        lease = await reg.acquire("work")
        picks[lease.agent.id] += 1
        held.append(lease)
        if len(held) >= 8:  # keep 8 calls in flight, like a busy fan-out
            held.pop(0).release()
    ratio = picks["heavy"] / picks["light"]
    assert 2.0 < ratio < 4.5, picks


async def test_waits_for_capacity_then_proceeds() -> None:
    reg, _clock, _ = registry(agent("only", cap=1))
    first = await reg.acquire("work")
    waiter = asyncio.ensure_future(reg.acquire("work", timeout_s=2))
    await asyncio.sleep(0.02)
    assert not waiter.done()
    first.release()
    second = await asyncio.wait_for(waiter, 1)
    assert second.agent.id == "only"
    second.release()


async def test_the_own_region_is_preferred_then_the_fastest_other_region() -> None:
    reg, _clock, _ = registry(agent("eu", region="eu-west", cap=1), agent("us", region="us-east"),
                              agent("ap", region="ap-south"), region="eu-west")
    # Teach the registry the remote latencies through real call outcomes.
    for agent_id, latency in (("us", 0.080), ("ap", 0.200)):
        lease = await reg.acquire(f"@{agent_id}")
        lease.release(True, None, latency)
    local = await reg.acquire("work")
    assert local.agent.id == "eu"
    failover = await reg.acquire("work")  # eu is full: the fastest other region
    assert failover.agent.id == "us"
    local.release()
    failover.release()


async def test_a_retry_avoids_the_agent_that_just_failed() -> None:
    reg, _clock, _ = registry(agent("a"), agent("b"))
    for _ in range(20):
        lease = await reg.acquire("work", avoid="a")
        assert lease.agent.id == "b"
        lease.release()


async def test_healthy_agents_are_preferred_over_degraded_and_unhealthy_are_skipped() -> None:
    reg, _clock, events = registry(agent("a"), agent("b"), agent("c"),
                                   health=HealthConfig(unhealthy_after=1, healthy_after=1))
    reg.observe_check(reg.get("a"), HealthReport("degraded"), 0.01)  # type: ignore[arg-type]
    reg.observe_check(reg.get("b"), HealthReport("unhealthy"), 0.01)  # type: ignore[arg-type]
    reg.observe_check(reg.get("c"), HealthReport("healthy"), 0.01)  # type: ignore[arg-type]
    for _ in range(10):
        lease = await reg.acquire("work")
        assert lease.agent.id == "c"
        lease.release()
    changes = [(e.agent_id, e.old, e.new) for e in events if isinstance(e, AgentHealthChanged)]
    assert ("b", "unknown", "unhealthy") in changes
    report = reg.report()
    assert report["overall"] == "degraded"
    assert report["totals"] == {"agents": 3, "healthy": 1, "degraded": 1, "unhealthy": 1,
                                "unknown": 0}


async def test_health_hysteresis_needs_consecutive_checks_both_ways() -> None:
    reg, _clock, _ = registry(agent("a"), health=HealthConfig(unhealthy_after=3, healthy_after=2))
    a = reg.get("a")
    assert a is not None
    levels = []
    for status in ["healthy", "unhealthy", "unhealthy", "healthy", "unhealthy", "unhealthy",
                   "unhealthy", "healthy", "unhealthy", "healthy", "healthy"]:
        reg.observe_check(a, HealthReport(status), 0.001)  # type: ignore[arg-type]
        levels.append(reg.health_of("a").level)
    assert levels == ["healthy", "healthy", "healthy", "healthy", "healthy", "healthy",
                      "unhealthy", "unhealthy", "unhealthy", "unhealthy", "healthy"]


async def test_passive_detection_ejects_after_consecutive_failures_and_expires() -> None:
    reg, clock, events = registry(agent("a"), agent("b"),
                                  health=HealthConfig(eject_consecutive_failures=3, ejection_s=20),
                                  breaker=BreakerConfig(failure_threshold=100, failure_rate=None))
    for _ in range(3):
        lease = await reg.acquire("@a")
        lease.release(False, "agent_error", 0.01)
    assert reg.health_of("a").level == "unhealthy"
    for _ in range(5):
        lease = await reg.acquire("work")
        assert lease.agent.id == "b"
        lease.release()
    clock.advance(20)
    await reg.acquire("work")  # the ejection ends: probed again as unknown
    assert reg.health_of("a").level == "unknown"
    assert any(isinstance(e, AgentHealthChanged) and e.new == "unhealthy" for e in events)


async def test_an_agent_that_never_fails_keeps_only_its_window_of_calls() -> None:
    """Calls older than the ejection window are dropped as new ones come, not only
    when one fails; the window still decides an ejection by error rate."""
    reg, clock, _ = registry(agent("a"), health=HealthConfig(
        eject_window_s=10, eject_min_calls=4, eject_error_rate=0.5,
        eject_consecutive_failures=100))
    for _ in range(50):
        lease = await reg.acquire("@a")
        lease.release(True, None, 0.01)
        clock.advance(1)
    health = reg.health_of("a")
    assert 10 <= len(health.calls) <= 11
    assert health.total_calls == 50
    outcomes = [False, False, True] * 12  # two failures in three for 6 s
    while outcomes and health.level != "unhealthy":
        ok = outcomes.pop()
        lease = await reg.acquire("@a")
        lease.release(ok, None if ok else "agent_error", 0.01)
        clock.advance(0.5 / 3)
    assert health.level == "unhealthy"
    assert outcomes  # by the error rate over the window, before the 12 rounds ended


async def test_open_breakers_fail_over_at_once_and_all_open_is_unavailable() -> None:
    reg, clock, events = registry(
        agent("a"), agent("b"),
        breaker=BreakerConfig(failure_threshold=2, reset_timeout_s=30, failure_rate=None),
        health=HealthConfig(eject_consecutive_failures=100))
    for agent_id in ("a", "b"):
        for _ in range(2):
            lease = await reg.acquire(f"@{agent_id}")
            lease.release(False, "unavailable", 0.01)
    assert reg.breaker_of("a").state == "open"
    assert reg.breaker_of("b").state == "open"
    with pytest.raises(Unavailable, match="open circuit"):
        await reg.acquire("work")
    clock.advance(30)
    trial = await reg.acquire("work")
    assert reg.breaker_of(trial.agent.id).state == "half_open"
    trial.release(True, None, 0.01)
    assert reg.breaker_of(trial.agent.id).state == "closed"
    opened = [e.agent_id for e in events if isinstance(e, CircuitStateChanged) and e.new == "open"]
    assert sorted(opened) == ["a", "b"]


async def test_round_robin_is_smooth_and_weighted() -> None:
    reg, _clock, _ = registry(agent("a", weight=2), agent("b", weight=1), strategy="round_robin")
    seq = []
    for _ in range(6):
        lease = await reg.acquire("work")
        seq.append(lease.agent.id)
        lease.release()
    assert Counter(seq) == {"a": 4, "b": 2}
    assert seq[:3] in (["a", "b", "a"], ["a", "a", "b"])


async def test_latency_strategy_picks_the_fastest_measured_agent() -> None:
    reg, _clock, _ = registry(agent("slow"), agent("fast"), strategy="latency")
    for agent_id, lat in (("slow", 0.3), ("fast", 0.01)):
        lease = await reg.acquire(f"@{agent_id}")
        lease.release(True, None, lat)
    for _ in range(5):
        lease = await reg.acquire("work")
        assert lease.agent.id == "fast"
        lease.release(True, None, 0.01)


async def test_unknown_capability_is_unavailable_with_a_clear_message() -> None:
    reg, _clock, _ = registry(agent("a"))
    with pytest.raises(Unavailable, match="no agent registered for 'nothing'"):
        await reg.acquire("nothing")


# --- waiting for capacity: who is woken, and that no free slot is left idle ---


def count_selections(reg: AgentRegistry) -> list[int]:
    """Count the registry's selection passes (its look at who can take a call) in ``[0]``."""
    runs = [0]
    usable = reg._usable

    def counting(candidates: Any) -> Any:
        runs[0] += 1
        return usable(candidates)

    reg._usable = counting  # type: ignore[method-assign]
    return runs


async def test_a_release_wakes_one_waiter_first_come_first_served() -> None:
    """Each freed slot goes to the longest waiter; the others keep waiting."""
    reg, _clock, _ = registry(agent("only", cap=1))
    held = await reg.acquire("work")
    waiters = [asyncio.ensure_future(reg.acquire("work", timeout_s=5)) for _ in range(4)]
    await asyncio.sleep(0)
    order = []
    pending = set(waiters)
    for _ in range(4):
        held.release()
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1
        (winner,) = done
        order.append(waiters.index(winner))
        held = winner.result()
    held.release()
    assert order == [0, 1, 2, 3]


async def test_a_big_fan_out_does_not_rerun_selection_for_every_waiter_on_every_release(
) -> None:
    """200 callers queue for 2 slots: selection runs O(callers) times, not O(callers²)."""
    reg, _clock, _ = registry(agent("a", cap=1), agent("b", cap=1))
    runs = count_selections(reg)

    async def call() -> str:
        lease = await reg.acquire("work", timeout_s=10)
        await asyncio.sleep(0)
        lease.release()
        return lease.agent.id

    served = Counter(await asyncio.gather(*(call() for _ in range(200))))
    assert sum(served.values()) == 200
    assert set(served) == {"a", "b"}
    assert runs[0] <= 3 * 200, runs  # waking everyone on each release took ~20,000


async def test_releases_in_batches_wake_each_waiter_once() -> None:
    """1,000 callers over 4 agents of 16 slots, calls ending together as a fan-out's do:
    a woken caller passes the wake on only for room that no woken caller is already
    on its way to, so each waiting caller looks twice (when it asks, when it is
    woken), never finds its slot taken, and capacity is never exceeded."""
    reg, _clock, _ = registry(*(agent(f"a{i}", cap=16) for i in range(4)))
    runs = count_selections(reg)
    peak = 0

    async def call() -> str:
        nonlocal peak
        lease = await reg.acquire("work", timeout_s=10)
        peak = max(peak, sum(reg.inflight(f"a{i}") for i in range(4)))
        for _ in range(3):
            await asyncio.sleep(0)
        lease.release()
        return lease.agent.id

    served = Counter(await asyncio.gather(*(call() for _ in range(1000))))
    assert sum(served.values()) == 1000
    assert set(served) == {"a0", "a1", "a2", "a3"}
    assert peak == 64
    assert runs[0] == 1000 + (1000 - 64), runs  # passing every wake on: ~2,780
    assert not any(reg._waking.values())  # every wake was looked at


async def test_a_wait_ends_at_its_timeout_on_the_registry_clock_and_leaves_the_queue() -> None:
    reg, clock, _ = registry(agent("only", cap=1))
    held = await reg.acquire("work")
    early = asyncio.ensure_future(reg.acquire("work", timeout_s=5))
    late = asyncio.ensure_future(reg.acquire("work", timeout_s=60))
    await asyncio.sleep(0)
    clock.advance(4.9)
    await asyncio.sleep(0)
    assert not early.done()
    clock.advance(0.1)
    with pytest.raises(NoCapacity, match="stayed at capacity for 5s"):
        await early
    assert not late.done()
    held.release()  # reaches the waiter still there, not the one that gave up
    lease = await asyncio.wait_for(late, 1)
    assert lease.agent.id == "only"
    lease.release()


async def test_a_waiter_woken_as_its_wait_runs_out_takes_the_slot() -> None:
    reg, clock, _ = registry(agent("only", cap=1))
    held = await reg.acquire("work")
    waiter = asyncio.ensure_future(reg.acquire("work", timeout_s=5))
    await asyncio.sleep(0)
    held.release()  # wakes it ...
    clock.advance(5)  # ... and its wait runs out before it could look
    lease = await asyncio.wait_for(waiter, 1)
    assert lease.agent.id == "only"
    lease.release()
    assert not any(reg._waking.values())


async def test_a_waiter_cancelled_just_as_it_is_woken_passes_the_slot_on() -> None:
    reg, _clock, _ = registry(agent("only", cap=1))
    held = await reg.acquire("work")
    first = asyncio.ensure_future(reg.acquire("work", timeout_s=5))
    second = asyncio.ensure_future(reg.acquire("work", timeout_s=5))
    await asyncio.sleep(0)
    held.release()  # wakes `first` ...
    first.cancel()  # ... which is cancelled before it could take the slot
    lease = await asyncio.wait_for(second, 1)
    assert lease.agent.id == "only"
    lease.release()
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_room_that_appears_without_a_release_reaches_every_waiter() -> None:
    """A circuit turning half-open frees a slot nobody released: the woken waiter
    passes the wake on, so both waiting calls proceed after one release."""
    reg, clock, _ = registry(
        agent("a", cap=1), agent("b"),
        breaker=BreakerConfig(failure_threshold=1, reset_timeout_s=30, failure_rate=None),
        health=HealthConfig(eject_consecutive_failures=100))
    lease = await reg.acquire("@b")
    lease.release(False, "unavailable", 0.01)
    assert reg.breaker_of("b").state == "open"
    held = await reg.acquire("work")
    assert held.agent.id == "a"
    waiters = [asyncio.ensure_future(reg.acquire("work", timeout_s=60)) for _ in range(2)]
    await asyncio.sleep(0)
    clock.advance(30)  # b may take a trial call now, but nothing tells the waiters
    held.release()
    leases = await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert sorted(lease.agent.id for lease in leases) == ["a", "b"]
    for lease in leases:
        lease.release()
