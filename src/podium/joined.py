"""Agents that joined through the API, mirrored into this process's registry.

``POST /agents`` (``podium agent serve --register``) stores a registration that lives
while its heartbeats come (``AgentDirectory``). Every process that executes runs on
the database (``podium serve``, ``podium worker``) reads the live ones every few
seconds and registers them, or unregisters them once they expired or left, so an
agent joins the whole fleet without an agents file naming it. Health checks and
breakers treat a joined agent like any other.

An agent of the agents file keeps its id: a registration with that id is ignored
here (the API refuses it first). An agent unregistered here is not closed at once:
calls it has in flight end on their own. Each round closes those whose calls have
ended, and those that left ``close_after_s`` ago whatever they still have in flight;
at most ``max_closing`` wait so (beyond, the oldest is closed at once), so a churn of
agents joining and leaving under new ids cannot pile up open clients.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque

from podium.agents.registry import AgentRegistry, Departed
from podium.clock import Clock, SystemClock
from podium.errors import ConfigError, StoreError
from podium.rounds import Rounds
from podium.store.base import AgentDirectory

__all__ = ["JoinedAgents"]

log = logging.getLogger("podium.joined")

# An agent that left is closed once its calls in flight have ended, and at the latest
# this long after it left (the API allows a joined agent a call timeout of up to an
# hour: a call still running then has lost its caller anyway).
_CLOSE_AFTER_S = 3660.0
# Agents that left and still have calls in flight, waiting to be closed: over this,
# the oldest is closed at once (its calls fail as they would if it had gone away).
# Each may hold an HTTP connection; a normal leave waits only for the calls it had.
_MAX_CLOSING = 64


class JoinedAgents(Rounds):
    _what = "joined agents"
    _log = log

    def __init__(self, store: AgentDirectory, registry: AgentRegistry, *,
                 interval_s: float = 2.0, health_timeout_s: float = 2.0,
                 close_after_s: float = _CLOSE_AFTER_S, max_closing: int = _MAX_CLOSING,
                 clock: Clock | None = None) -> None:
        self.store = store
        self.registry = registry
        self.interval_s = interval_s
        self.retry_s = max(interval_s, 5.0)
        self.health_timeout_s = health_timeout_s
        self.close_after_s = close_after_s
        self.max_closing = max_closing
        self._clock: Clock = clock or SystemClock()
        self._mine: dict[str, str] = {}  # id -> its entry as registered here (canonical)
        # Agents that left, oldest first, each with when it must be closed at the latest
        # (the clock's monotonic time).
        self._closing: deque[tuple[Departed, float]] = deque()
        # One round at a time: the loop's and the API's (after a join or a leave) must
        # not apply an older read after a newer one.
        self._lock = asyncio.Lock()

    @property
    def ids(self) -> frozenset[str]:
        """The agents this process registered from the directory."""
        return frozenset(self._mine)

    @property
    def closing(self) -> int:
        """Agents that left and are not closed yet (their calls in flight go on)."""
        return len(self._closing)

    async def round(self) -> float:
        async with self._lock:
            return await self._round()

    async def _round(self) -> float:
        try:
            rows = await self.store.joined_agents()
        except StoreError as exc:
            self._troubled(f"cannot read the joined agents: {exc.message}")
            await self._close_done()  # those that left go on ending without a store
            return self.retry_s
        self._trouble = None
        live = {r.id: json.dumps(r.spec, sort_keys=True) for r in rows}
        for agent_id, entry in list(self._mine.items()):
            if live.get(agent_id) != entry:  # expired, left, or changed what it says
                del self._mine[agent_id]
                gone = self.registry.retire(agent_id)
                if gone is not None:
                    self._closing.append((gone, self._clock.monotonic() + self.close_after_s))
        await self._close_done()
        for row in rows:
            if row.id in self._mine or self.registry.get(row.id) is not None:
                continue
            from podium.agents.config import build_joined_agent

            try:
                agent = build_joined_agent(row.spec, health_timeout_s=self.health_timeout_s)
            except ConfigError as exc:
                self._troubled(f"joined agent {row.id!r} not used: {exc.message}")
                continue
            self.registry.register(agent)
            self._mine[row.id] = live[row.id]
        return self.interval_s

    async def _close_done(self) -> None:
        """Close the agents that left whose calls have all ended, those past their time,
        and the oldest beyond ``max_closing``."""
        if not self._closing:
            return
        now = self._clock.monotonic()
        waiting: deque[tuple[Departed, float]] = deque()
        done: list[Departed] = []
        for gone, due in self._closing:
            if gone.inflight <= 0 or now >= due:
                done.append(gone)
            else:
                waiting.append((gone, due))
        while len(waiting) > self.max_closing:
            done.append(waiting.popleft()[0])
        self._closing = waiting
        for gone in done:
            if gone.inflight > 0:
                log.warning("joined agent %r left and is closed with %d calls in flight"
                            " (it left over %.0f s ago, or over %d others wait to close)",
                            gone.agent.id, gone.inflight, self.close_after_s,
                            self.max_closing)
            await _close(gone)

    async def aclose(self) -> None:
        """Stop reading; close the agents that left (the registry closes the others)."""
        await self.stop()
        closing, self._closing = self._closing, deque()
        for gone, _due in closing:
            await _close(gone)


async def _close(gone: Departed) -> None:
    try:
        await gone.agent.aclose()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.warning("joined agent %r: closing it failed", gone.agent.id, exc_info=True)
