"""JoinedAgents rounds that overlap (the 2 s loop and POST /agents' immediate
round(), on a store whose read awaits: PostgreSQL) could leave the older read's view in the
registry (found in review): one round at a time, so the newer read is applied last."""

from __future__ import annotations

import asyncio

from podium.agents.registry import AgentRegistry
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
