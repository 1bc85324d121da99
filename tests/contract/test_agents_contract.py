"""Agents that joined through the API (``AgentDirectory``), on every backend: a row
lives while its heartbeats come, by the store's clock; only its own token renews or
removes it while it lives; an expired one is anyone's to take."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from podium.errors import AgentTaken, TooManyAgents
from podium.store.base import JoinLimits, Store
from tests.contract.conftest import make_store

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


def _spec(agent_id: str) -> dict[str, object]:
    return {**SPEC, "id": agent_id}


async def test_a_token_joins_up_to_its_limit_and_renews_at_it(store: Store) -> None:
    """One token cannot register agents without end (each one is registered, health
    checked and given an HTTP client by every process on the database): a new id over
    ``per_token`` is refused and writes nothing; renewing (or changing) one the token
    holds still works at the limit; another token has a limit of its own."""
    limits = JoinLimits(per_token=3, total=100)
    for n in range(3):
        _, new = await store.join_agent(f"a{n}", _spec(f"a{n}"), "tok-a", 30.0, limits)
        assert new
    with pytest.raises(TooManyAgents, match="limit of 3") as refused:
        await store.join_agent("a3", _spec("a3"), "tok-a", 30.0, limits)
    assert (refused.value.limit, refused.value.per_token) == (3, True)
    assert sorted(a.id for a in await store.joined_agents()) == ["a0", "a1", "a2"]
    row, new = await store.join_agent("a1", {**_spec("a1"), "region": "us"}, "tok-a", 60.0,
                                      limits)
    assert not new
    assert row.spec["region"] == "us"  # a changed spec at the limit: taken
    await store.join_agent("b0", _spec("b0"), "tok-b", 30.0, limits)  # its own limit
    assert await store.leave_agent("a0", "tok-a")
    _, new = await store.join_agent("a3", _spec("a3"), "tok-a", 30.0, limits)  # room again
    assert new
    with pytest.raises(TooManyAgents):
        await store.join_agent("a4", _spec("a4"), "tok-a", 30.0, limits)


async def test_the_database_limit_counts_every_token(store: Store) -> None:
    limits = JoinLimits(per_token=10, total=3)
    await store.join_agent("a0", _spec("a0"), "tok-a", 30.0, limits)
    await store.join_agent("b0", _spec("b0"), "tok-b", 30.0, limits)
    await store.join_agent("admin0", _spec("admin0"), "tok-admin", 30.0, limits)
    with pytest.raises(TooManyAgents, match="limit of 3 for all tokens") as refused:
        await store.join_agent("c0", _spec("c0"), "tok-c", 30.0, limits)
    assert (refused.value.limit, refused.value.per_token) == (3, False)
    await store.join_agent("b0", _spec("b0"), "tok-b", 30.0, limits)  # a renewal: taken
    assert len(await store.joined_agents()) == 3


async def test_expired_registrations_do_not_count(store: Store) -> None:
    limits = JoinLimits(per_token=2, total=100)
    await store.join_agent("a0", _spec("a0"), "tok-a", 0.3, limits)
    await store.join_agent("a1", _spec("a1"), "tok-a", 0.3, limits)
    with pytest.raises(TooManyAgents):
        await store.join_agent("a2", _spec("a2"), "tok-a", 30.0, limits)
    await asyncio.sleep(0.5)  # both expired (the store's clock: real time here)
    await store.join_agent("a2", _spec("a2"), "tok-a", 30.0, limits)
    await store.join_agent("a3", _spec("a3"), "tok-a", 30.0, limits)
    assert sorted(a.id for a in await store.joined_agents()) == ["a2", "a3"]


async def test_a_token_at_its_limit_still_meets_another_tokens_live_id(store: Store) -> None:
    """Taken is said before full: the fix for an id another token holds is another id."""
    limits = JoinLimits(per_token=1, total=100)
    await store.join_agent("far", SPEC, "tok-a", 30.0, limits)
    await store.join_agent("near", _spec("near"), "tok-b", 30.0, limits)
    with pytest.raises(AgentTaken):
        await store.join_agent("far", SPEC, "tok-b", 30.0, limits)


async def test_joins_at_once_never_overshoot_the_limit(store: Store, backend: str,
                                                        tmp_path: Path) -> None:
    """Many joins by one token at once: exactly the limit land, every other one is
    refused. On PostgreSQL through four stores, each in a thread with its own event loop
    and connections (four servers); a process holds one store of a SQLite file (two
    processes: tests/integration/test_api_join_limits.py) and the in-memory store is
    only itself, so there one store takes them all at once."""
    limits = JoinLimits(per_token=5, total=100)

    async def server(k: int, s: Store | None = None) -> list[object]:
        own = s is None
        s = s or make_store(backend, tmp_path)
        if own:
            await s.open()
        try:
            return await asyncio.gather(*(
                s.join_agent(f"x{k}-{n}", _spec(f"x{k}-{n}"), "tok-a", 30.0, limits)
                for n in range(6)), return_exceptions=True)
        finally:
            if own:
                await s.close()

    if not backend.startswith("postgresql://"):
        outcomes = [o for k in range(4) for o in await server(k, store)]
    else:
        parts = await asyncio.gather(*(asyncio.to_thread(asyncio.run, server(k))
                                       for k in range(4)))
        outcomes = [o for part in parts for o in part]
    landed = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, TooManyAgents)]
    assert (len(landed), len(refused)) == (5, 19), outcomes
    assert len(await store.joined_agents()) == 5
