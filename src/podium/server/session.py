"""The dashboard's logins: a token presented once, then a session cookie.

``POST /session`` takes an API token (``podium token create``), checks it with the
server's ``Authenticator`` and answers with two cookies:

- ``podium_session``: a random id (256 bits) naming a session kept in this process's
  memory (never the token: a stolen cookie dies with the session, and a restart
  logs everybody out). ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no
  other site's page makes the browser send it), ``Path=/``, ``Secure`` when the
  request came over https.
- ``podium_csrf``: a second random value, readable by the page's script, which
  must echo it in ``X-CSRF-Token`` on every request that changes something (the
  "double submit" pattern). A page of another origin can make the browser send
  the cookie but can neither read it nor set the header. The header is compared,
  in constant time, with the value the session was made with, not only with the
  cookie, so a cookie planted by a sibling subdomain does not pass.

``GET /session/link?code=...`` is the other way in: a one-time code this process
issued (``OneTimeLogins``, e.g. to ``podium demo --ui``, which prints the link) for
a token it holds, exchanged once for the same two cookies. The code is not the
token: it is good for one use and ``LOGIN_CODE_S`` at most, lives only in this
process's memory, so a link left in a terminal's scroll-back or a shell history
opens nothing once used, and nothing after a restart.

A session carries the token's id, name and scope; it lasts ``SESSION_S`` at most,
never past the token's own expiry, and every ``RECHECK_S`` the token is read again
from the store, so a revoked token ends its sessions within that time (as it ends
its bearer use within ``podium.auth.CACHE_S``). Bearer requests are unaffected:
a request with an ``Authorization`` header is judged by that header alone.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from podium.clock import Clock, SystemClock

if TYPE_CHECKING:
    from podium.auth import Principal
    from podium.store.base import TokenStore

__all__ = ["CSRF_COOKIE", "CSRF_HEADER", "LOGIN_CODE_S", "MAX_SESSIONS", "RECHECK_S",
           "SESSION_COOKIE", "SESSION_S", "OneTimeLogins", "Session", "Sessions"]

SESSION_COOKIE = "podium_session"
CSRF_COOKIE = "podium_csrf"
CSRF_HEADER = "X-CSRF-Token"
SESSION_S = 8 * 3600.0  # a working day; then the token is asked for again
RECHECK_S = 30.0  # the same bound on a revocation's delay as a bearer token's cache
MAX_SESSIONS = 10_000  # beyond this the oldest is dropped: memory stays bounded
LOGIN_CODE_S = 600.0  # a login link is followed at once, or not at all


@dataclass(slots=True)
class Session:
    principal: Principal
    csrf: str
    expires_at: float  # on the clock's now()
    checked_at: float  # on the clock's monotonic(): when the token was last read


class Sessions:
    """Sessions by id, in memory, each ending at its expiry or its token's revocation."""

    def __init__(self, store: TokenStore | None = None, clock: Clock | None = None) -> None:
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self._by_id: dict[str, Session] = {}

    def open(self, principal: Principal, token_expires_at: float | None) -> tuple[str, Session]:
        """A new session for ``principal``: its id (the cookie's value) and itself."""
        now = self.clock.now()
        expires = now + SESSION_S
        if token_expires_at is not None:
            expires = min(expires, token_expires_at)
        if len(self._by_id) >= MAX_SESSIONS:
            del self._by_id[next(iter(self._by_id))]
        sid = secrets.token_urlsafe(32)
        session = Session(principal, secrets.token_urlsafe(32), expires, self.clock.monotonic())
        self._by_id[sid] = session
        return sid, session

    async def get(self, sid: str | None) -> Session | None:
        """The live session ``sid`` names, or None (unknown, expired, token revoked)."""
        if not sid or len(sid) > 128:
            return None
        session = self._by_id.get(sid)
        if session is None:
            return None
        if self.clock.now() >= session.expires_at:
            del self._by_id[sid]
            return None
        if self.store is not None and self.clock.monotonic() - session.checked_at >= RECHECK_S:
            from podium.auth import token_status

            found = await self.store.token_secret(session.principal.token_id)
            if found is None or token_status(found[0], self.clock.now()) != "active":
                self._by_id.pop(sid, None)
                return None
            session.checked_at = self.clock.monotonic()
        return session

    def close(self, sid: str | None) -> None:
        if sid:
            self._by_id.pop(sid, None)

    def __len__(self) -> int:
        return len(self._by_id)

    @staticmethod
    def csrf_ok(session: Session, presented: str | None) -> bool:
        """Whether ``presented`` (the ``X-CSRF-Token`` header) is this session's value."""
        if not presented:
            return False
        return hmac.compare_digest(presented.encode(), session.csrf.encode())


class OneTimeLogins:
    """Login codes for tokens this process holds: each opens one session, once."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._codes: dict[str, tuple[Principal, float | None, float]] = {}

    def issue(self, principal: Principal, token_expires_at: float | None,
              ttl_s: float = LOGIN_CODE_S) -> str:
        """A fresh code (256 random bits) that logs in as ``principal`` within ``ttl_s``."""
        now = self.clock.now()
        for code in [c for c, (_, _, until) in self._codes.items() if until <= now]:
            del self._codes[code]
        code = secrets.token_urlsafe(32)
        self._codes[code] = (principal, token_expires_at, now + ttl_s)
        return code

    def outstanding(self, code: str) -> bool:
        """Whether ``code`` is still waiting to be used (and not late)."""
        found = self._codes.get(code)
        return found is not None and found[2] > self.clock.now()

    def redeem(self, code: str | None) -> tuple[Principal, float | None] | None:
        """Who ``code`` logs in as (and the token's expiry), once; None if unknown or late."""
        if not code or len(code) > 128:
            return None
        found = self._codes.pop(code, None)
        if found is None or found[2] <= self.clock.now():
            return None
        return found[0], found[1]
