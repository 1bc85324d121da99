"""Agents that joined through the API, mirrored into this process's registry.

``POST /agents`` (``podium agent serve --register``) stores a registration that lives
while its heartbeats come (``AgentDirectory``). Every process that executes runs on
the database (``podium serve``, ``podium worker``) reads the live ones every few
seconds and registers them, or unregisters them once they expired or left, so an
agent joins the whole fleet without an agents file naming it. Health checks and
breakers treat a joined agent like any other.

An agent of the agents file keeps its id: a registration with that id is ignored
here (the API refuses it first). An agent unregistered here is closed a while later,
not at once: calls it has in flight end (or time out) on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from podium.agents.base import Agent
from podium.agents.registry import AgentRegistry
from podium.errors import ConfigError, StoreError
from podium.rounds import Rounds
from podium.store.base import AgentDirectory

__all__ = ["JoinedAgents"]

log = logging.getLogger("podium.joined")

_CLOSE_AFTER_S = 60.0  # an agent that left is closed this long after (its calls end)


class JoinedAgents(Rounds):
    _what = "joined agents"
    _log = log

    def __init__(self, store: AgentDirectory, registry: AgentRegistry, *,
                 interval_s: float = 2.0, health_timeout_s: float = 2.0) -> None:
        self.store = store
        self.registry = registry
        self.interval_s = interval_s
        self.retry_s = max(interval_s, 5.0)
        self.health_timeout_s = health_timeout_s
        self._mine: dict[str, str] = {}  # id -> its entry as registered here (canonical)
        self._closing: dict[asyncio.Task[None], Agent] = {}

    @property
    def ids(self) -> frozenset[str]:
        """The agents this process registered from the directory."""
        return frozenset(self._mine)

    async def round(self) -> float:
        try:
            rows = await self.store.joined_agents()
        except StoreError as exc:
            self._troubled(f"cannot read the joined agents: {exc.message}")
            return self.retry_s
        self._trouble = None
        live = {r.id: json.dumps(r.spec, sort_keys=True) for r in rows}
        for agent_id, entry in list(self._mine.items()):
            if live.get(agent_id) != entry:  # expired, left, or changed what it says
                del self._mine[agent_id]
                self._retire(self.registry.unregister(agent_id))
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

    def _retire(self, agent: Agent | None) -> None:
        if agent is None:
            return

        async def close_later() -> None:
            await asyncio.sleep(_CLOSE_AFTER_S)
            await agent.aclose()

        task = asyncio.get_running_loop().create_task(close_later())
        self._closing[task] = agent
        task.add_done_callback(lambda t: self._closing.pop(t, None))

    async def aclose(self) -> None:
        """Stop reading; close the agents that left (the registry closes the others)."""
        await self.stop()
        for task, agent in list(self._closing.items()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            with contextlib.suppress(Exception):
                await agent.aclose()
        self._closing.clear()
