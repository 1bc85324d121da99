"""Agents that joined through the API (``AgentDirectory``), on every backend: a row
lives while its heartbeats come, by the store's clock; only its own token renews or
removes it while it lives; an expired one is anyone's to take."""

from __future__ import annotations

import asyncio

import pytest

from podium.errors import AgentTaken
from podium.store.base import Store

SPEC = {"id": "far", "url": "http://127.0.0.1:9/", "capabilities": ["echo"], "region": "eu"}


async def test_join_renew_heartbeat_and_leave(store: Store) -> None:
    assert await store.joined_agents() == []
    row, new = await store.join_agent("far", SPEC, "tok-a", 30.0)
    assert new
    assert row.id == "far"
    assert row.spec == SPEC
    assert row.expires_at == pytest.approx(row.registered_at + 30.0, abs=1.0)
    again, new = await store.join_agent("far", {**SPEC, "region": "us"}, "tok-a", 60.0)
    assert not new  # the same token renews (and may change what it says of itself)
    assert again.registered_at == pytest.approx(row.registered_at, abs=1e-3)
    assert again.expires_at > row.expires_at
    [listed] = await store.joined_agents()
    assert (listed.id, listed.spec["region"]) == ("far", "us")
    beat = await store.agent_heartbeat("far", "tok-a", 30.0)
    assert beat is not None
    assert beat == pytest.approx(listed.expires_at - 30.0, abs=2.0)
    assert await store.agent_heartbeat("far", "tok-b", 30.0) is None  # not its token
    assert await store.agent_heartbeat("near", "tok-a", 30.0) is None  # never joined
    assert not await store.leave_agent("far", "tok-b")
    assert [a.id for a in await store.joined_agents()] == ["far"]
    assert await store.leave_agent("far", "tok-a")
    assert await store.joined_agents() == []
    assert await store.agent_heartbeat("far", "tok-a", 30.0) is None  # gone: join again
    await store.join_agent("far", SPEC, "tok-a", 30.0)
    assert await store.leave_agent("far", None)  # an admin removes whoever's


async def test_a_live_id_is_its_tokens_and_an_expired_one_anyones(store: Store) -> None:
    await store.join_agent("far", SPEC, "tok-a", 0.3)
    with pytest.raises(AgentTaken, match="another token"):
        await store.join_agent("far", SPEC, "tok-b", 30.0)
    await asyncio.sleep(0.5)  # (the store's own clock: real time here)
    assert await store.joined_agents() == []  # expired: not listed
    assert await store.agent_heartbeat("far", "tok-a", 30.0) is None  # too late
    row, new = await store.join_agent("far", {**SPEC, "region": "ap"}, "tok-b", 30.0)
    assert new
    assert row.spec["region"] == "ap"
    [listed] = await store.joined_agents()
    assert listed.spec["region"] == "ap"
    with pytest.raises(AgentTaken):
        await store.join_agent("far", SPEC, "tok-a", 30.0)
