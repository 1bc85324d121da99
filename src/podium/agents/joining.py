"""``podium agent serve --register URL``: an agent that joins a Podium fleet by itself.

Once its server listens, the agent registers with ``POST /agents`` on a ``podium
serve`` (an ``agent``-scope token), sends a heartbeat every third of its time to
live, registers again if the server forgot it (it expired while the two could not
talk), and leaves (``DELETE``) when it stops. A refusal that no retry can change
(401, 403, 409, 422) stops the agent with a message; a server that cannot be reached
is tried again, with backoff, while the agent keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import socket
from dataclasses import dataclass
from typing import Any

from podium.errors import ConfigError

__all__ = ["Joining", "check_register_url", "default_agent_id"]

log = logging.getLogger("podium.agent")

_REFUSED = frozenset({400, 401, 403, 409, 413, 422})


def default_agent_id(capability: str, port: int) -> str:
    """``CAPABILITY-HOST-PORT``, in the characters an agent id may have."""
    raw = f"{capability}-{socket.gethostname()}-{port}"
    return re.sub(r"[^A-Za-z0-9_.:-]", "-", raw).lstrip("-_.:") or f"agent-{port}"


@dataclass
class Joining:
    server: str  # the podium serve base URL
    token: str | None  # its agent-scope token
    entry: dict[str, Any]  # id, url, capabilities, region, max_concurrency, token
    ttl_s: float = 30.0
    refused: str | None = None  # why the server refused it for good

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def keep(self) -> None:
        """Join, then heartbeat until cancelled. Returns only when refused for good."""
        import httpx

        backoff = 1.0
        async with httpx.AsyncClient(base_url=self.server, headers=self._headers(),
                                     timeout=10.0) as client:
            joined = False
            while True:
                try:
                    if not joined:
                        joined = await self._join(client)
                        if self.refused is not None:
                            return
                    else:
                        joined = await self._beat(client)
                        if not joined:
                            continue  # forgotten: join again at once
                    backoff = 1.0
                    await asyncio.sleep(self.ttl_s / 3)
                except httpx.HTTPError as exc:
                    log.warning("cannot reach %s to %s: %s (trying again in %.0f s)",
                                self.server, "heartbeat" if joined else "register", exc,
                                backoff)
                    await asyncio.sleep(backoff * random.uniform(0.8, 1.0))
                    backoff = min(backoff * 2, max(self.ttl_s / 3, 1.0))

    async def _join(self, client: Any) -> bool:
        answer = await client.post("/agents", json={**self.entry, "ttl_s": self.ttl_s})
        if answer.status_code in (200, 201):
            log.info("joined the fleet at %s as agent %r (heartbeat every %.0f s)",
                     self.server, self.entry["id"], self.ttl_s / 3)
            return True
        message = _message(answer)
        if answer.status_code in _REFUSED:
            self.refused = f"--register {self.server}: refused: {message}"
            return False
        log.warning("%s did not register agent %r: %s", self.server, self.entry["id"],
                    message)
        return False

    async def _beat(self, client: Any) -> bool:
        answer = await client.post(f"/agents/{self.entry['id']}/heartbeat",
                                   params={"ttl_s": self.ttl_s})
        if answer.status_code == 200:
            return True
        if answer.status_code == 404:
            log.warning("%s forgot agent %r (it expired): registering again", self.server,
                        self.entry["id"])
            return False
        log.warning("heartbeat to %s: %s", self.server, _message(answer))
        return True  # kept: the next one may pass

    async def leave(self) -> None:
        """Tell the server the agent is gone (best effort: it expires anyway)."""
        import httpx

        try:
            async with httpx.AsyncClient(base_url=self.server, headers=self._headers(),
                                         timeout=3.0) as client:
                await client.delete(f"/agents/{self.entry['id']}")
        except httpx.HTTPError as exc:
            log.warning("could not tell %s that agent %r left: %s (it expires in %.0f s)",
                        self.server, self.entry["id"], exc, self.ttl_s)


def _message(answer: Any) -> str:
    try:
        return str(answer.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {answer.status_code}"


def check_register_url(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--register {url!r}: not an http(s) URL of a podium serve (fix:"
                          " e.g. --register http://127.0.0.1:8080)")
    return url.rstrip("/")
