"""The API tokens' contract, the same on the in-memory, SQLite and PostgreSQL stores: a
token's record, salt and hash read back as written (bytes intact), an id is taken once,
a revocation happens once, only unrevoked unexpired tokens count as usable, and a
token's last use only moves forward.
"""

from __future__ import annotations

import os

import pytest

from podium.auth import Authenticator, create_token, hash_secret
from podium.clock import FakeClock
from podium.errors import ConfigError
from podium.store.base import Scope, Store, TokenRecord

T0 = 1_800_000_000.0


def record(token_id: str = "aaaabbbbcccc", **kw: object) -> TokenRecord:  # noqa: S107 - an id
    fields: dict[str, object] = {"id": token_id, "name": "ci", "scope": Scope.WRITE,
                                 "created_at": T0, "expires_at": T0 + 3600.0, **kw}
    return TokenRecord(**fields)  # type: ignore[arg-type]


async def test_a_token_reads_back_as_written_with_its_salt_and_hash(store: Store) -> None:
    assert await store.token_secret("aaaabbbbcccc") is None
    assert await store.list_tokens() == []
    # Every byte value, NUL and high bytes included: kept as bytes, not text.
    salt, digest = bytes(range(16)), bytes(range(255, 223, -1))
    await store.add_token(record(), salt, digest)
    got = await store.token_secret("aaaabbbbcccc")
    assert got == (record(), salt, digest)
    assert isinstance(got[1], bytes)
    assert isinstance(got[2], bytes)
    assert got[0].scope is Scope.WRITE
    forever = record("ddddeeeeffff", name="", scope=Scope.AGENT, created_at=T0 + 1,
                     expires_at=None)
    await store.add_token(forever, b"s" * 16, b"h" * 32)
    assert await store.list_tokens() == [record(), forever]  # oldest first


async def test_an_id_is_taken_once(store: Store) -> None:
    await store.add_token(record(), b"s" * 16, b"h" * 32)
    with pytest.raises(ConfigError, match="'aaaabbbbcccc' exists already"):
        await store.add_token(record(name="other"), b"t" * 16, b"i" * 32)
    got = await store.token_secret("aaaabbbbcccc")
    assert got is not None
    assert (got[0].name, got[1]) == ("ci", b"s" * 16)


async def test_a_revocation_happens_once_and_unknown_ids_change_nothing(store: Store) -> None:
    await store.add_token(record(), b"s" * 16, b"h" * 32)
    assert await store.revoke_token("nobodyhere22", T0 + 5) is False
    assert await store.revoke_token("aaaabbbbcccc", T0 + 5) is True
    assert await store.revoke_token("aaaabbbbcccc", T0 + 9) is False
    (listed,) = await store.list_tokens()
    assert listed.revoked_at == T0 + 5
    got = await store.token_secret("aaaabbbbcccc")
    assert got is not None
    assert got[0].revoked_at == T0 + 5


async def test_only_tokens_neither_revoked_nor_expired_are_usable(store: Store) -> None:
    assert await store.count_usable_tokens(T0) == 0
    await store.add_token(record("aaaaaaaaaaaa", expires_at=T0 + 60), b"s" * 16, b"h" * 32)
    await store.add_token(record("bbbbbbbbbbbb", expires_at=None), b"s" * 16, b"h" * 32)
    await store.add_token(record("cccccccccccc", expires_at=None), b"s" * 16, b"h" * 32)
    assert await store.count_usable_tokens(T0) == 3
    await store.revoke_token("cccccccccccc", T0 + 1)
    assert await store.count_usable_tokens(T0 + 59.5) == 2
    assert await store.count_usable_tokens(T0 + 60) == 1  # expired at its expires_at
    assert await store.count_usable_tokens(T0 + 10 * 365 * 86400) == 1


async def test_a_tokens_last_use_only_moves_forward(store: Store) -> None:
    await store.add_token(record(), b"s" * 16, b"h" * 32)
    await store.touch_token("aaaabbbbcccc", T0 + 100)
    await store.touch_token("aaaabbbbcccc", T0 + 50)  # a slower server's older news
    await store.touch_token("nobodyhere22", T0 + 100)  # nothing to touch: no error
    (listed,) = await store.list_tokens()
    assert listed.last_used_at == T0 + 100
    await store.touch_token("aaaabbbbcccc", T0 + 200)
    (listed,) = await store.list_tokens()
    assert listed.last_used_at == T0 + 200


async def test_a_created_token_authenticates_against_the_store_and_its_hash_is_kept(
        store: Store) -> None:
    token, rec = await create_token(store, Scope.READ, "dash", 3600.0, T0)
    got = await store.token_secret(rec.id)
    assert got is not None
    stored, salt, digest = got
    assert stored == rec
    secret = token.split("_", 2)[2]
    assert digest == hash_secret(secret, salt)
    assert len(salt) == 16
    assert os.fsencode(secret) not in salt + digest
    clock = FakeClock(T0)
    who = await Authenticator(store, clock).authenticate(token)
    assert who is not None
    assert (who.token_id, who.name, who.scope) == (rec.id, "dash", Scope.READ)
