"""JoinedAgents rounds that overlap (the 2 s loop and POST /agents' immediate
round(), on a store whose read awaits: PostgreSQL) could leave the older read's view in the
registry (found in review): one round at a time, so the newer read is applied last."""

from __future__ import annotations

import asyncio

import pytest

from podium.agents.python import PythonAgent
from podium.agents.registry import AgentRegistry
from podium.clock import FakeClock
from podium.joined import JoinedAgents
from podium.store.base import JoinedAgent

OLD = {"id": "far", "url": "http://127.0.0.1:9/old", "capabilities": ["echo"]}
NEW = {"id": "far", "url": "http://127.0.0.1:9/new", "capabilities": ["echo"]}


class SlowDirectory:
    """joined_agents() answers what was live when it was called, after a delay the
    caller picks (a read on the wire while the row changes)."""

    def __init__(self) -> None:
        self.spec = OLD
        self.delays: list[float] = []

    async def joined_agents(self) -> list[JoinedAgent]:
        snapshot = [JoinedAgent("far", dict(self.spec), 0.0, 1e12)]
        await asyncio.sleep(self.delays.pop(0) if self.delays else 0)
        return snapshot


async def test_an_older_round_finishing_last_does_not_put_back_the_old_url() -> None:
    store, registry = SlowDirectory(), AgentRegistry()
    joined = JoinedAgents(store, registry)  # type: ignore[arg-type]
    await joined.round()
    assert "/old" in repr(registry.get("far"))
    store.delays = [0.2, 0.0]
    loop_round = asyncio.create_task(joined.round())  # the loop's read: sees OLD
    await asyncio.sleep(0.05)
    store.spec = NEW  # POST /agents renews with a new URL, then round() at once
    await joined.round()
    assert "/new" in repr(registry.get("far"))
    await loop_round
    try:
        assert "/new" in repr(registry.get("far")), repr(registry.get("far"))
    finally:
        await joined.aclose()


# --- agents that left: closed once their calls end, and never too many waiting ----------

class Directory:
    """The live registrations are whatever ``rows`` holds now."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, object]] = {}

    async def joined_agents(self) -> list[JoinedAgent]:
        return [JoinedAgent(i, dict(spec), 0.0, 1e12) for i, spec in sorted(self.rows.items())]


class Closing(PythonAgent):
    """An agent that notes when it is closed (a joined agent's HTTP client, here)."""

    closed: list[str]

    async def aclose(self) -> None:
        self.closed.append(self.id)


@pytest.fixture
def closed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``build_joined_agent`` makes ``Closing`` agents; the ids closed, in order."""
    import podium.agents.config

    ids: list[str] = []

    def build(spec: dict[str, object], **_kw: object) -> Closing:
        agent = Closing(lambda task: None, id=str(spec["id"]), capabilities=["echo"])
        agent.closed = ids
        return agent

    monkeypatch.setattr(podium.agents.config, "build_joined_agent", build)
    return ids


def spec(agent_id: str) -> dict[str, object]:
    return {"id": agent_id, "url": f"http://127.0.0.1:9/{agent_id}", "capabilities": ["echo"]}


async def test_an_agent_that_left_is_closed_once_its_calls_in_flight_end(
        closed: list[str]) -> None:
    """It was kept open for an hour (_CLOSE_AFTER_S) in a sleeping task whatever it had
    in flight; now the round after its last call ends closes it, and one with nothing
    in flight is closed by the round that sees it gone."""
    store, registry = Directory(), AgentRegistry()
    store.rows = {"busy": spec("busy"), "idle": spec("idle")}
    joined = JoinedAgents(store, registry)  # type: ignore[arg-type]
    await joined.round()
    lease = await registry.acquire("@busy")
    store.rows = {}
    await joined.round()
    assert registry.get("busy") is None  # no new call reaches it
    assert closed == ["idle"]
    assert joined.closing == 1  # busy: its call goes on
    await joined.round()
    assert closed == ["idle"]
    lease.release()
    await joined.round()
    assert closed == ["idle", "busy"]
    assert joined.closing == 0
    await joined.aclose()


async def test_agents_that_left_with_calls_in_flight_wait_bounded_and_not_for_ever(
        closed: list[str]) -> None:
    """A churn of agents joining and leaving under new ids, each leaving a call in
    flight, kept every one open for an hour; now at most ``max_closing`` wait (the
    oldest beyond are closed at once) and none longer than ``close_after_s``."""
    clock = FakeClock()
    store, registry = Directory(), AgentRegistry(clock=clock)
    joined = JoinedAgents(store, registry, max_closing=3,  # type: ignore[arg-type]
                          close_after_s=60.0, clock=clock)
    leases = []
    for n in range(50):  # join, take a call, leave: under a new id each time
        store.rows = {f"a{n}": spec(f"a{n}")}
        await joined.round()
        leases.append(await registry.acquire(f"@a{n}"))
        assert joined.closing <= 3
    store.rows = {}
    await joined.round()
    assert joined.closing == 3
    assert closed == [f"a{n}" for n in range(47)]  # the oldest first
    clock.advance(59.0)
    await joined.round()
    assert joined.closing == 3
    clock.advance(2.0)  # past close_after_s: closed with their calls in flight
    await joined.round()
    assert (joined.closing, sorted(closed)) == (0, sorted(f"a{n}" for n in range(50)))
    for lease in leases:
        lease.release()  # late: into agents already out and closed, harmlessly
    await joined.aclose()


async def test_aclose_closes_the_agents_still_waiting(closed: list[str]) -> None:
    store, registry = Directory(), AgentRegistry()
    store.rows = {"a": spec("a")}
    joined = JoinedAgents(store, registry)  # type: ignore[arg-type]
    await joined.round()
    lease = await registry.acquire("@a")
    store.rows = {}
    await joined.round()
    assert closed == []
    await joined.aclose()
    assert closed == ["a"]
    lease.release()
