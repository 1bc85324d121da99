"""Finding an agent for a step: by capability, or by id written ``@agent-id``.

This registry counts in-flight calls per agent, respects ``max_concurrency``,
prefers the least loaded agent, and on a retry prefers a different agent than
the one that just failed. Health checks, breakers and regions plug in behind
``acquire`` without the engine changing.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

from podium.agents.base import Agent
from podium.errors import ConfigError, Unavailable

__all__ = ["AgentRegistry", "Lease"]


class Lease:
    """One call's hold on an agent; ``release`` frees its capacity slot."""

    __slots__ = ("_registry", "agent", "capability", "released")

    def __init__(self, registry: AgentRegistry, agent: Agent, capability: str) -> None:
        self._registry = registry
        self.agent = agent
        self.capability = capability
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._registry._release(self.agent.id)


class AgentRegistry:
    def __init__(self, agents: Iterable[Agent] = ()) -> None:
        self._agents: dict[str, Agent] = {}
        self._by_capability: dict[str, list[Agent]] = {}
        self._inflight: dict[str, int] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()
        for a in agents:
            self.register(a)

    # --- membership -------------------------------------------------------
    def register(self, agent: Agent) -> None:
        if agent.id in self._agents:
            raise ConfigError(f"agent id '{agent.id}' is registered twice (fix: give each agent its own id)")
        self._agents[agent.id] = agent
        self._inflight.setdefault(agent.id, 0)
        for cap in agent.capabilities:
            self._by_capability.setdefault(cap, []).append(agent)
        self._wake()

    def unregister(self, agent_id: str) -> Agent | None:
        agent = self._agents.pop(agent_id, None)
        if agent is not None:
            for cap in agent.capabilities:
                members = self._by_capability.get(cap, [])
                if agent in members:
                    members.remove(agent)
        return agent

    def get(self, agent_id: str) -> Agent | None:
        return self._agents.get(agent_id)

    @property
    def agents(self) -> list[Agent]:
        return list(self._agents.values())

    def capabilities(self) -> set[str]:
        return {c for c, members in self._by_capability.items() if members}

    def knows(self, ref: str) -> bool:
        """Whether ``ref`` (capability or ``@id``) names anything registered."""
        if ref.startswith("@"):
            return ref[1:] in self._agents
        return bool(self._by_capability.get(ref))

    def inflight(self, agent_id: str) -> int:
        return self._inflight.get(agent_id, 0)

    # --- selection --------------------------------------------------------
    def _candidates(self, ref: str) -> list[Agent]:
        if ref.startswith("@"):
            a = self._agents.get(ref[1:])
            return [a] if a is not None else []
        return self._by_capability.get(ref, [])

    def _pick(self, candidates: list[Agent], avoid: str | None) -> Agent | None:
        best: Agent | None = None
        best_key: tuple[int, float] | None = None
        for a in candidates:
            n = self._inflight[a.id]
            cap = a.max_concurrency
            if cap is not None and n >= cap:
                continue
            key = (1 if a.id == avoid else 0, n / cap if cap else n * 1e-9)
            if best_key is None or key < best_key:
                best, best_key = a, key
        return best

    async def acquire(
        self, ref: str, *, avoid: str | None = None, timeout_s: float | None = None
    ) -> Lease:
        """Hold an agent for one call, waiting up to ``timeout_s`` for capacity."""
        capability = ref[1:] if ref.startswith("@") else ref
        candidates = self._candidates(ref)
        if len(candidates) == 1 and candidates[0].max_concurrency is None:
            # The common case stays O(1): one agent, unbounded.
            agent = candidates[0]
            self._inflight[agent.id] += 1
            return Lease(self, agent, capability)
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while True:
            candidates = self._candidates(ref)
            if not candidates:
                raise Unavailable(f"no agent registered for '{ref}'")
            agent_or_none = self._pick(candidates, avoid)
            if agent_or_none is not None:
                self._inflight[agent_or_none.id] += 1
                first = next(iter(agent_or_none.capabilities), capability)
                return Lease(self, agent_or_none, capability if not ref.startswith("@") else first)
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise Unavailable(f"every agent for '{ref}' is at capacity")
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append(fut)
            try:
                await asyncio.wait_for(fut, remaining)
            except TimeoutError:
                raise Unavailable(f"every agent for '{ref}' stayed at capacity") from None
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)

    def _release(self, agent_id: str) -> None:
        if agent_id in self._inflight:
            self._inflight[agent_id] -= 1
        self._wake()

    def _wake(self) -> None:
        # Wake every waiter: they may want different capabilities, and the few
        # that find nothing free simply wait again.
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    async def aclose(self) -> None:
        for a in self._agents.values():
            await a.aclose()
