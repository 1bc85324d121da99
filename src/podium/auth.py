"""API tokens for ``podium serve``: made once and shown once, checked on every request.

A token reads ``pdm_<id>_<secret>``: ``id`` (12 characters of lower-case base32) is the
key it is looked up by and may be shown anywhere (``podium token list``); ``secret``
(``secrets.token_urlsafe(32)``, 256 random bits) is printed once, by ``create_token``'s
caller, and never stored: the store keeps a scrypt hash of it with a random salt of
its own (``TokenStore``), and a presented secret is hashed the same way and compared
with ``hmac.compare_digest``. A copy of the database (a backup, a dump) lets nobody
call the API.

Why scrypt although the secret is random, not a password: the bits make guessing
hopeless anyway; the slow hash is defence in depth, so a leaked table costs an
attacker ~20 ms of a core per guess instead of nanoseconds. The cost is paid once per token per
``CACHE_S``, not per request: ``Authenticator`` keeps a verified token for that long.

Scopes (``allows``): admin ⊇ write ⊇ read; ``agent`` grants only agent
self-registration, which admin also grants.

Revocation and expiry, through the cache: expiry is exact (the cached record's
``expires_at`` is read on every hit, on the injected clock); a revocation written
by another process (``podium token revoke``) is honoured within ``CACHE_S`` seconds,
when the cached entry lapses and the store is read again. A revocation made by the
process that holds the ``Authenticator`` takes effect at once if it calls ``forget``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import os
import re
import secrets
from dataclasses import dataclass

from podium.clock import Clock
from podium.definition.durations import MAX_DURATION_S
from podium.errors import ConfigError, StoreError
from podium.redact import register_secret
from podium.store.base import Scope, TokenRecord, TokenStore

__all__ = [
    "CACHE_MAX",
    "CACHE_S",
    "ID_PATTERN",
    "MAX_NAME_CHARS",
    "MIN_EXPIRES_S",
    "SCRYPT_N",
    "SCRYPT_P",
    "SCRYPT_R",
    "Authenticator",
    "Principal",
    "Scope",
    "TokenRecord",
    "allows",
    "create_token",
    "hash_secret",
    "name_problem",
    "parse_token",
    "token_status",
]

log = logging.getLogger("podium.auth")

# scrypt's cost: N=2**13, r=8, p=1 (8 MiB of memory per hash). Measured on the
# project's 2-core machine (Python 3.11, OpenSSL's scrypt), 21 hashes each: 17.6 ms at
# best, medians 25-28 ms with both cores busy (load 2.2), worst 53 ms. N=2**14 was
# 36 ms at best and 58-65 ms medians under the same load: over the 10-50 ms aimed at.
# Stored tokens do not record these: changing them invalidates every token (add a
# column for them first).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**13, 8, 1
_SCRYPT_MAXMEM = 32 * 1024 * 1024  # OpenSSL's limit; a hash needs 128 * r * N bytes
_HASH_BYTES, _SALT_BYTES = 32, 16
# At most this many hashes at once: each holds 8 MiB and a core for tens of ms, so a
# flood of wrong secrets queues here instead of taking every worker thread and memory.
_HASHING_AT_ONCE = 2

CACHE_S = 30.0  # a verified token is trusted this long before the store is read again
CACHE_MAX = 1024  # tokens kept verified at once (the oldest goes first)
TOUCH_EVERY_S = 60.0  # last_used_at is written at most this often per token

MIN_EXPIRES_S = 60.0
MAX_NAME_CHARS = 64

_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_ID_CHARS = 12  # 60 bits: ids are drawn at random, never counted
_SECRET_CHARS = 43  # token_urlsafe(32): 32 bytes in unpadded base64url
_TOKEN = re.compile(rf"pdm_([a-z2-7]{{{_ID_CHARS}}})_([A-Za-z0-9_-]{{{_SECRET_CHARS}}})")
_TOKEN_CHARS = 4 + _ID_CHARS + 1 + _SECRET_CHARS
ID_PATTERN = re.compile(rf"[a-z2-7]{{{_ID_CHARS}}}")

# admin ⊇ write ⊇ read; agent alone, granted by admin too.
_GRANTS: dict[Scope, frozenset[Scope]] = {
    Scope.ADMIN: frozenset(Scope),
    Scope.WRITE: frozenset({Scope.WRITE, Scope.READ}),
    Scope.READ: frozenset({Scope.READ}),
    Scope.AGENT: frozenset({Scope.AGENT}),
}


def allows(granted: Scope, needed: Scope) -> bool:
    """Whether a token of scope ``granted`` may do what needs ``needed``."""
    return needed in _GRANTS.get(granted, frozenset())


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is: the token it presented (by id and name) and its scope."""

    token_id: str
    name: str
    scope: Scope


def parse_token(presented: object) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed token, else None (nothing else is looked at)."""
    if not isinstance(presented, str) or len(presented) != _TOKEN_CHARS:
        return None
    m = _TOKEN.fullmatch(presented)
    return (m[1], m[2]) if m else None


def hash_secret(secret: str, salt: bytes) -> bytes:
    """The stored form of a secret: scrypt with the token's salt (tens of ms, on purpose)."""
    return hashlib.scrypt(secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                          maxmem=_SCRYPT_MAXMEM, dklen=_HASH_BYTES)


def name_problem(name: str) -> str | None:
    """What is wrong with a token's name, or None."""
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        return f"1 to {MAX_NAME_CHARS} characters"
    if not name.isprintable() or name != name.strip():
        return "printable characters, no leading or trailing space"
    return None


def token_status(record: TokenRecord, now: float) -> str:
    """``revoked``, ``expired`` or ``active`` at ``now``."""
    if record.revoked_at is not None:
        return "revoked"
    if record.expires_at is not None and record.expires_at <= now:
        return "expired"
    return "active"


async def create_token(store: TokenStore, scope: Scope, name: str | None,
                       expires_s: float | None, now: float) -> tuple[str, TokenRecord]:
    """Make a token and keep its record and hash: (the token in clear, its record).

    The token is in no other place afterwards: the caller shows it once. ``ConfigError``
    for a scope, name or lifetime out of bounds (``expires_s``: None for never, else
    ``MIN_EXPIRES_S`` to ten years).
    """
    try:
        scope = Scope(scope)
    except ValueError:
        raise ConfigError(f"scope {scope!r} is not known (fix: one of"
                          f" {', '.join(Scope)})") from None
    if name is not None and (problem := name_problem(name)):
        raise ConfigError(f"token name {name[:MAX_NAME_CHARS]!r}: {problem}")
    if expires_s is not None and not (
            math.isfinite(expires_s) and MIN_EXPIRES_S <= expires_s <= MAX_DURATION_S):
        raise ConfigError(f"a token's lifetime of {expires_s!r} s is not 1 minute to 10 years")
    token_id = "".join(secrets.choice(_ALPHABET) for _ in range(_ID_CHARS))
    secret = secrets.token_urlsafe(32)
    token = f"pdm_{token_id}_{secret}"
    register_secret(token)  # scrubbed from whatever this process writes from now on
    register_secret(secret)
    salt = os.urandom(_SALT_BYTES)
    digest = await asyncio.to_thread(hash_secret, secret, salt)
    record = TokenRecord(id=token_id, name=name or "", scope=scope, created_at=now,
                         expires_at=None if expires_s is None else now + expires_s)
    await store.add_token(record, salt, digest)
    return token, record


@dataclass(frozen=True, slots=True)
class _Verified:
    principal: Principal
    expires_at: float | None
    until: float  # on the clock's monotonic time


class Authenticator:
    """Checks presented tokens against the store, keeping verified ones ``CACHE_S``."""

    def __init__(self, store: TokenStore, clock: Clock, cache_s: float = CACHE_S) -> None:
        self.store = store
        self.clock = clock
        self.cache_s = cache_s  # a revocation elsewhere is honoured within this
        # sha256 of the presented token -> what it verified as. Keyed by a digest, so
        # that the cache holds no secret and its lookup reveals nothing by its timing.
        self._cache: dict[bytes, _Verified] = {}
        self._touched: dict[str, float] = {}  # token id -> monotonic time of last touch
        # One verification per token at a time: a burst of requests with a token not
        # cached yet pays for one hash, not one each.
        self._verifying: dict[bytes, asyncio.Task[Principal | None]] = {}
        self._hashing = asyncio.Semaphore(_HASHING_AT_ONCE)

    async def authenticate(self, presented: str) -> Principal | None:
        """Who ``presented`` (the bearer token as sent) is; None for a malformed, unknown,
        wrong, expired or revoked token. Raises ``StoreError`` if the store cannot be
        read (the request is then neither allowed nor refused: the server says 503)."""
        parsed = parse_token(presented)
        if parsed is None:
            return None
        key = hashlib.sha256(presented.encode()).digest()
        hit = self._cache.get(key)
        if hit is not None:
            if self.clock.monotonic() < hit.until and (
                    hit.expires_at is None or self.clock.now() < hit.expires_at):
                await self._touch(hit.principal.token_id)
                return hit.principal
            del self._cache[key]
        task = self._verifying.get(key)
        if task is None:
            task = asyncio.create_task(self._verify(key, *parsed),
                                       name=f"podium-auth-verify-{parsed[0]}")
            self._verifying[key] = task
            task.add_done_callback(lambda t: self._verified(key, t))
        # Shielded: a caller that goes away (a client hung up) does not cancel the
        # verification others wait for; it ends by itself within one hash and one read.
        return await asyncio.shield(task)

    def _verified(self, key: bytes, task: asyncio.Task[Principal | None]) -> None:
        self._verifying.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: if every waiter left, nobody else would

    async def _verify(self, key: bytes, token_id: str, secret: str) -> Principal | None:
        found = await self.store.token_secret(token_id)
        if found is None:
            log.info("token %s: unknown id", token_id)
            return None
        record, salt, stored = found
        if token_status(record, self.clock.now()) != "active":
            log.info("token %s (%s): %s", token_id, record.name, token_status(
                record, self.clock.now()))
            return None
        async with self._hashing:
            digest = await asyncio.to_thread(hash_secret, secret, salt)
        if not hmac.compare_digest(digest, stored):
            log.info("token %s (%s): wrong secret", token_id, record.name)
            return None
        register_secret(f"pdm_{token_id}_{secret}")
        register_secret(secret)
        principal = Principal(record.id, record.name, record.scope)
        if len(self._cache) >= CACHE_MAX:
            del self._cache[next(iter(self._cache))]  # the oldest verified
        self._cache[key] = _Verified(principal, record.expires_at,
                                     self.clock.monotonic() + self.cache_s)
        await self._touch(token_id)
        return principal

    async def _touch(self, token_id: str) -> None:
        """Write the token's last use, at most once per ``TOUCH_EVERY_S``; a failure to
        write it fails no request."""
        mono = self.clock.monotonic()
        last = self._touched.get(token_id)
        if last is not None and mono - last < TOUCH_EVERY_S:
            return
        if len(self._touched) >= 4 * CACHE_MAX:
            self._touched.clear()
        self._touched[token_id] = mono
        try:
            await self.store.touch_token(token_id, self.clock.now())
        except StoreError as exc:
            log.debug("token %s: last use not written: %s", token_id, exc)

    def forget(self, token_id: str | None = None) -> None:
        """Drop what the cache holds of ``token_id`` (None: of every token), so that a
        revocation made by this process is honoured by the next request."""
        for key in [k for k, v in self._cache.items()
                    if token_id is None or v.principal.token_id == token_id]:
            del self._cache[key]

    async def any_tokens(self) -> bool:
        """Whether any token is usable now (neither revoked nor expired); not cached."""
        return await self.store.count_usable_tokens(self.clock.now()) > 0
