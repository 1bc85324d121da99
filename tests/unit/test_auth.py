"""API tokens (``podium.auth``) on a fake clock: who a token is, what its scope allows,
that every malformed, unknown, wrong, expired or revoked token is refused, and what the
cache of verified tokens does (one hash per token per ``CACHE_S``, expiry exact,
revocation honoured once an entry lapses, bounded size).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest

import podium.auth as auth
from podium.auth import (
    CACHE_S,
    Authenticator,
    Principal,
    Scope,
    allows,
    create_token,
    parse_token,
    token_status,
)
from podium.clock import FakeClock
from podium.errors import ConfigError, StoreError
from podium.redact import redact
from podium.store.base import TokenRecord
from podium.store.memory import MemoryStore

T0 = 1_800_000_000.0


class CountingStore(MemoryStore):
    """Counts the reads of a token's hash: what the cache spares."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.touches: list[tuple[str, float]] = []
        self.broken = False

    async def token_secret(self, token_id: str) -> tuple[TokenRecord, bytes, bytes] | None:
        self.reads += 1
        if self.broken:
            raise StoreError("database is unreachable (test)")
        return await super().token_secret(token_id)

    async def touch_token(self, token_id: str, at: float) -> None:
        self.touches.append((token_id, at))
        if self.broken:
            raise StoreError("database is unreachable (test)")
        await super().touch_token(token_id, at)


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every secret hashed from now on (the slow part the cache spares)."""
    seen: list[str] = []
    real = auth.hash_secret

    def counting(secret: str, salt: bytes) -> bytes:
        seen.append(secret)
        return real(secret, salt)

    monkeypatch.setattr(auth, "hash_secret", counting)
    return seen


async def made(store: MemoryStore, scope: Scope = Scope.WRITE, name: str | None = "ci",
               expires_s: float | None = None) -> tuple[str, TokenRecord]:
    return await create_token(store, scope, name, expires_s, T0)


@pytest.mark.parametrize(("granted", "allowed"), [
    (Scope.ADMIN, {Scope.ADMIN, Scope.WRITE, Scope.READ, Scope.AGENT}),
    (Scope.WRITE, {Scope.WRITE, Scope.READ}),
    (Scope.READ, {Scope.READ}),
    (Scope.AGENT, {Scope.AGENT}),
])
def test_admin_holds_write_holds_read_and_agent_only_itself(
        granted: Scope, allowed: set[Scope]) -> None:
    assert {needed for needed in Scope if allows(granted, needed)} == allowed


async def test_a_created_token_has_the_documented_shape_and_is_never_stored() -> None:
    store = MemoryStore()
    token, rec = await made(store, Scope.ADMIN, None, 86400.0)
    assert re.fullmatch(r"pdm_[a-z2-7]{12}_[A-Za-z0-9_-]{43}", token)
    assert parse_token(token) == (rec.id, token[17:])
    assert (rec.name, rec.scope, rec.created_at, rec.expires_at) == ("", Scope.ADMIN, T0,
                                                                      T0 + 86400.0)
    _, salt, digest = (await store.token_secret(rec.id)) or (None, b"", b"")
    assert token[17:].encode() not in salt + digest
    other, _ = await made(store)
    assert other[4:16] != token[4:16]
    assert other[17:] != token[17:]
    # Scrubbed from whatever this process writes from now on, whole or secret alone.
    assert token not in redact(f"Authorization: Bearer {token}")
    assert token[17:] not in redact(f"said {token[17:]}")


async def test_the_right_token_is_its_principal() -> None:
    store = MemoryStore()
    token, rec = await made(store, Scope.AGENT, "agent-7")
    who = await Authenticator(store, FakeClock(T0)).authenticate(token)
    assert who == Principal(rec.id, "agent-7", Scope.AGENT)


async def test_a_wrong_secret_for_a_real_id_is_refused(hashes: list[str]) -> None:
    store = MemoryStore()
    token, _ = await made(store)
    a = Authenticator(store, FakeClock(T0))
    wrong = token[:17] + ("A" if token[17] != "A" else "B") + token[18:]
    assert await a.authenticate(wrong) is None
    assert len(hashes) == 2  # made, then checked: the wrong one is never cached
    assert await a.authenticate(wrong) is None
    assert len(hashes) == 3
    assert await a.authenticate(token) is not None


@pytest.mark.parametrize("shape", [
    "", " ", "pdm_", "pdm__", "Bearer {t}", "{t} ", " {t}", "{t}\n", "{t}x", "{t_short}",
    "PDM_{id}_{s}", "pdx_{id}_{s}", "pdm-{id}-{s}", "pdm_{id}{s}", "pdm_{id}__{s}",
    "pdm_{ID}_{s}", "pdm_{id}a_{s}", "pdm_aaaaaaaaaaa1_{s}", "pdm_{id}_{s}=",
    "pdm_{id}_{s_bad}", "pdm_{id}_{s_short}", "pdm_{id}_{s_long}", "pdm_{id}_{s_unicode}",
    "x" * 1_000_000, "pdm_{id}_{s}\x00",
])
async def test_malformed_tokens_are_refused_without_a_read_or_a_hash(
        shape: str, hashes: list[str]) -> None:
    store = CountingStore()
    token, rec = await made(store)
    secret = token[17:]
    subs = {"{t_short}": token[:-1], "{t}": token, "{id}": rec.id, "{ID}": rec.id.upper(),
            "{s_bad}": secret[:-1] + "+", "{s_short}": secret[:-1], "{s_long}": secret + "a",
            "{s_unicode}": secret[:-1] + "é", "{s}": secret}
    presented = shape
    for placeholder, value in subs.items():
        presented = presented.replace(placeholder, value)
    assert presented != token
    before = len(hashes)
    assert await Authenticator(store, FakeClock(T0)).authenticate(presented) is None
    assert (store.reads, len(hashes)) == (0, before)


@pytest.mark.parametrize("value", [None, 42, b"pdm_", ["pdm_"]])
async def test_what_is_not_text_is_refused(value: Any) -> None:
    assert await Authenticator(MemoryStore(), FakeClock(T0)).authenticate(value) is None


async def test_an_unknown_id_is_refused_without_a_hash(hashes: list[str]) -> None:
    store = CountingStore()
    token, _ = await made(store)
    unknown = "pdm_" + ("a" * 12 if token[4:16] != "a" * 12 else "b" * 12) + token[16:]
    assert await Authenticator(store, FakeClock(T0)).authenticate(unknown) is None
    assert (store.reads, len(hashes)) == (1, 1)


async def test_a_verified_token_costs_one_read_and_one_hash_per_cache_period(
        hashes: list[str]) -> None:
    store = CountingStore()
    token, _ = await made(store)
    clock = FakeClock(T0)
    a = Authenticator(store, clock)
    for _ in range(5):
        assert await a.authenticate(token) is not None
    assert (store.reads, len(hashes)) == (1, 2)
    clock.advance(CACHE_S - 0.1)
    assert await a.authenticate(token) is not None
    assert store.reads == 1
    clock.advance(0.2)  # the entry lapsed: read and hashed again
    assert await a.authenticate(token) is not None
    assert (store.reads, len(hashes)) == (2, 3)


async def test_a_burst_of_requests_with_an_uncached_token_pays_for_one_hash(
        hashes: list[str]) -> None:
    store = CountingStore()
    token, rec = await made(store)
    a = Authenticator(store, FakeClock(T0))
    got = await asyncio.gather(*(a.authenticate(token) for _ in range(20)))
    assert {p.token_id for p in got if p is not None} == {rec.id}
    assert None not in got
    assert (store.reads, len(hashes)) == (1, 2)


async def test_a_caller_that_goes_away_does_not_cancel_the_others_wait() -> None:
    store = MemoryStore()
    token, _ = await made(store)
    a = Authenticator(store, FakeClock(T0))
    first = asyncio.create_task(a.authenticate(token))
    second = asyncio.create_task(a.authenticate(token))
    await asyncio.sleep(0)
    first.cancel()
    assert await second is not None
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_expiry_is_exact_even_for_a_cached_token() -> None:
    store = MemoryStore()
    token, _ = await made(store, expires_s=60.0)
    clock = FakeClock(T0)
    a = Authenticator(store, clock)
    assert await a.authenticate(token) is not None
    clock.advance(59.9)  # (the cache entry lapsed meanwhile: read again, still good)
    assert await a.authenticate(token) is not None
    clock.advance(0.1)
    assert await a.authenticate(token) is None
    assert await a.any_tokens() is False


async def test_expiry_is_exact_within_the_cache_period() -> None:
    store = MemoryStore()
    token, _ = await made(store, expires_s=60.0)
    clock = FakeClock(T0 + 50)  # created at T0, checked 50 s later: 10 s to live
    a = Authenticator(store, clock)
    assert await a.authenticate(token) is not None
    clock.advance(9.9)
    assert await a.authenticate(token) is not None
    clock.advance(0.1)
    assert await a.authenticate(token) is None


async def test_a_revocation_elsewhere_is_honoured_once_the_cache_entry_lapses() -> None:
    store = MemoryStore()
    token, rec = await made(store)
    clock = FakeClock(T0)
    a = Authenticator(store, clock)
    assert await a.authenticate(token) is not None
    assert await store.revoke_token(rec.id, clock.now())  # `podium token revoke`
    clock.advance(CACHE_S - 1)
    assert await a.authenticate(token) is not None  # the documented bound
    clock.advance(1)
    assert await a.authenticate(token) is None
    # And a fresh authenticator never accepts it.
    assert await Authenticator(store, clock).authenticate(token) is None


async def test_forget_honours_a_revocation_at_once() -> None:
    store = MemoryStore()
    token, rec = await made(store)
    other, _ = await made(store)
    a = Authenticator(store, FakeClock(T0))
    assert await a.authenticate(token) is not None
    assert await a.authenticate(other) is not None
    await store.revoke_token(rec.id, T0)
    a.forget(rec.id)
    assert await a.authenticate(token) is None
    assert await a.authenticate(other) is not None
    a.forget()
    assert await a.authenticate(other) is not None


async def test_the_cache_is_bounded_and_drops_the_oldest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "CACHE_MAX", 2)
    store = CountingStore()
    tokens = [(await made(store))[0] for _ in range(3)]
    a = Authenticator(store, FakeClock(T0))
    for t in tokens:
        assert await a.authenticate(t) is not None
    assert store.reads == 3
    assert await a.authenticate(tokens[2]) is not None
    assert await a.authenticate(tokens[1]) is not None
    assert store.reads == 3
    assert await a.authenticate(tokens[0]) is not None  # dropped: read again
    assert store.reads == 4


async def test_last_use_is_written_at_most_once_a_minute_per_token() -> None:
    store = CountingStore()
    token, rec = await made(store)
    clock = FakeClock(T0)
    a = Authenticator(store, clock)
    assert await a.authenticate(token) is not None
    clock.advance(10)
    assert await a.authenticate(token) is not None
    assert store.touches == [(rec.id, T0)]
    clock.advance(50)
    assert await a.authenticate(token) is not None
    assert store.touches == [(rec.id, T0), (rec.id, T0 + 60)]
    (listed,) = await store.list_tokens()
    assert listed.last_used_at == T0 + 60


async def test_a_store_that_cannot_be_read_is_an_error_not_a_refusal() -> None:
    store = CountingStore()
    token, _ = await made(store)
    store.broken = True
    with pytest.raises(StoreError, match="unreachable"):
        await Authenticator(store, FakeClock(T0)).authenticate(token)


async def test_a_last_use_that_cannot_be_written_fails_no_request() -> None:
    store = CountingStore()
    token, rec = await made(store)
    clock = FakeClock(T0)
    a = Authenticator(store, clock)
    assert await a.authenticate(token) is not None  # touched at 0
    clock.advance(CACHE_S + 1)
    assert await a.authenticate(token) is not None  # verified again; no touch yet
    assert store.reads == 2
    store.broken = True
    clock.advance(60 - CACHE_S - 0.5)  # a cached hit, its touch due, the write fails
    assert await a.authenticate(token) is not None
    assert store.touches == [(rec.id, T0), (rec.id, T0 + 60.5)]


async def test_any_tokens_counts_only_usable_ones() -> None:
    store = MemoryStore()
    clock = FakeClock(T0)
    a = Authenticator(store, clock)
    assert await a.any_tokens() is False
    _, rec = await made(store)
    assert await a.any_tokens() is True
    await store.revoke_token(rec.id, T0)
    assert await a.any_tokens() is False
    await made(store, expires_s=120.0)
    assert await a.any_tokens() is True
    clock.advance(120)
    assert await a.any_tokens() is False


@pytest.mark.parametrize(("scope", "name", "expires_s", "message"), [
    ("root", "x", None, "scope 'root' is not known.*one of read, write, admin, agent"),
    (Scope.READ, "", None, "1 to 64 characters"),
    (Scope.READ, "x" * 65, None, "1 to 64 characters"),
    (Scope.READ, "a\nb", None, "printable"),
    (Scope.READ, " padded", None, "printable"),
    (Scope.READ, "x", 59.0, "1 minute to 10 years"),
    (Scope.READ, "x", 3651 * 86400.0, "1 minute to 10 years"),
    (Scope.READ, "x", float("nan"), "1 minute to 10 years"),
    (Scope.READ, "x", float("inf"), "1 minute to 10 years"),
])
async def test_a_token_out_of_bounds_is_not_made(scope: Any, name: str, expires_s: float | None,
                                                 message: str) -> None:
    store = MemoryStore()
    with pytest.raises(ConfigError, match=message):
        await create_token(store, scope, name, expires_s, T0)
    assert await store.list_tokens() == []


async def test_a_scope_given_as_text_is_taken() -> None:
    _, rec = await create_token(MemoryStore(), "read", "x", 60.0, T0)  # type: ignore[arg-type]
    assert rec.scope is Scope.READ


def test_status_reads_revoked_then_expired_then_active() -> None:
    rec = TokenRecord("aaaaaaaaaaaa", "x", Scope.READ, T0, T0 + 60)
    assert token_status(rec, T0) == "active"
    assert token_status(rec, T0 + 60) == "expired"
    revoked = TokenRecord("aaaaaaaaaaaa", "x", Scope.READ, T0, T0 + 60, revoked_at=T0 + 1)
    assert token_status(revoked, T0) == "revoked"
    assert token_status(revoked, T0 + 90) == "revoked"


async def test_no_secret_reaches_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="podium.auth")
    store = CountingStore()
    token, rec = await made(store)
    clock = FakeClock(T0)
    a = Authenticator(store, clock)
    wrong = token[:17] + ("A" if token[17] != "A" else "B") + token[18:]
    await a.authenticate(wrong)
    await a.authenticate(token)
    await store.revoke_token(rec.id, T0)
    clock.advance(CACHE_S + 1)
    await a.authenticate(token)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "wrong secret" in text
    assert "revoked" in text
    assert token[17:] not in text
    assert wrong[17:] not in text
