"""The registry: which agents exist, how healthy they are, and who takes the next call.

For every attempt ``acquire`` keeps the agents that have the capability, are
not unhealthy, whose circuit breaker admits a call and that have free
capacity; prefers healthy over degraded, the engine's own region over others
(then other regions by measured latency); and among those applies the
strategy: ``least_loaded`` (power of two choices on in-flight / capacity,
weighted, ties to the lower latency), ``round_robin`` (smooth weighted) or
``latency``. A retry avoids the agent that just failed when another can take
it. An agent refused by its breaker is skipped at once, without costing the
step an attempt; only when every agent is refused, or none stays free within
the acquire timeout, does the call fail as ``unavailable`` (``no_capacity`` when
agents were there but full or busy).

Back-pressure: an agent that answers "busy" (HTTP 429, a 503 with ``Retry-After``)
is released with ``Lease.release_busy``: it is not a failure (its breaker and
health do not hear of it) and it counts as full until its ``Retry-After`` (or a
short back-off) has passed, so the next acquire goes to another agent with room
or waits for one.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from podium.agents.base import Agent, HealthReport
from podium.agents.breaker import BreakerConfig, CircuitBreaker
from podium.agents.health import (
    DEGRADED,
    HEALTHY,
    UNHEALTHY,
    UNKNOWN,
    HealthConfig,
    HealthMonitor,
    HealthState,
    overall_level,
)
from podium.clock import Clock, SystemClock
from podium.errors import ConfigError, NoCapacity, Unavailable
from podium.events import (
    AgentHealthChanged,
    AgentRegistered,
    AgentUnregistered,
    CircuitStateChanged,
    Event,
)

__all__ = ["STRATEGIES", "AgentRegistry", "Departed", "Lease", "RegistryConfig"]

STRATEGIES = ("least_loaded", "round_robin", "latency")


@dataclass(frozen=True)
class RegistryConfig:
    region: str | None = None
    health: HealthConfig = field(default_factory=HealthConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    acquire_timeout_s: float = 30.0
    strategy: str = "least_loaded"


@dataclass(eq=False)
class _Entry:
    agent: Agent
    breaker: CircuitBreaker
    health: HealthState = field(default_factory=HealthState)
    inflight: int = 0
    rr_weight: float = 0.0  # smooth weighted round robin state
    # Back-pressure: full until this time (the clock's monotonic; 0.0 = not busy), and
    # how many busy answers in a row (their back-off grows when no Retry-After says).
    busy_until: float = 0.0
    busy_streak: int = 0

    @property
    def weight(self) -> float:
        return float(getattr(self.agent, "weight", 1.0) or 1.0)

    @property
    def region(self) -> str | None:
        region = getattr(self.agent, "region", None)
        return region if isinstance(region, str) else None

    @property
    def load(self) -> float:
        cap = self.agent.max_concurrency
        return (self.inflight / cap if cap else self.inflight * 1e-3) / self.weight


class Lease:
    """One call's hold on an agent; ``release`` reports how the call went."""

    __slots__ = ("_entry", "_registry", "agent", "capability", "released", "run_id", "trial")

    def __init__(self, registry: AgentRegistry, entry: _Entry, capability: str,
                 trial: bool = False, run_id: str = "") -> None:
        self._registry = registry
        self._entry = entry
        self.agent = entry.agent
        self.capability = capability
        self.released = False
        self.trial = trial  # admitted by a half-open breaker as one of its trial calls
        self.run_id = run_id  # the run whose call this is ("": none said)

    def release(self, ok: bool = True, error_type: str | None = None,
                latency_s: float | None = None) -> None:
        if not self.released:
            self.released = True
            self._registry._release(self._entry, ok, error_type, latency_s, self.trial,
                                    self.run_id)

    def release_busy(self, retry_after_s: float | None = None) -> float:
        """The agent said it is at capacity: free the slot without holding it against
        the agent, and keep calls away from it for a while; return how long."""
        if self.released:
            return 0.0
        self.released = True
        return self._registry._release_busy(self._entry, retry_after_s, self.trial)


class Departed:
    """An agent ``AgentRegistry.retire`` took out: no new call reaches it, and the calls
    it had in flight go on (their leases still release into it); ``inflight`` says how
    many remain, so its owner closes it once they have ended, not while they run."""

    __slots__ = ("_entry",)

    def __init__(self, entry: _Entry) -> None:
        self._entry = entry

    @property
    def agent(self) -> Agent:
        return self._entry.agent

    @property
    def inflight(self) -> int:
        return self._entry.inflight


def _wake(fut: asyncio.Future[bool], _done: object = None) -> None:
    if not fut.done():
        fut.set_result(False)  # not a slot handed over: see AgentRegistry._waking


def _expire(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


def _room(usable: list[_Entry]) -> float:
    """Free slots left among ``usable`` (inf when one of them has no limit)."""
    room = 0.0
    for e in usable:
        cap = e.agent.max_concurrency
        if cap is None:
            return math.inf
        room += max(cap - e.inflight, 0)
    return room


def transport_of(agent: Agent) -> str:
    return str(getattr(agent, "transport", type(agent).__name__))


class AgentRegistry:
    def __init__(
        self,
        agents: Iterable[Agent] = (),
        config: RegistryConfig | None = None,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or RegistryConfig()
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._emit: Callable[[Event], None] | None = None
        # The run whose call is moving a breaker now: its circuit change is recorded in
        # that run's history too (an open circuit explains the run's failover).
        self._cause = ""
        self._entries: dict[str, _Entry] = {}
        self._by_capability: dict[str, list[_Entry]] = {}
        # Callers waiting for a free slot, by the ref they asked for (capability or @id).
        self._waiters: dict[str, deque[asyncio.Future[bool]]] = {}
        # Waiters woken for a freed slot (their future holds True) that have not
        # looked yet, by ref. A woken waiter that takes a slot passes the wake on
        # only while there is more room than such waiters already on their way:
        # passing it on whenever any room was left woke, in a big fan-out, about
        # one waiter in two for nothing (it found its slot taken and waited again).
        self._waking: dict[str, int] = {}
        self._monitor: HealthMonitor | None = None
        for a in agents:
            self.register(a)

    def attach(self, emit: Callable[[Event], None] | None, clock: Clock | None = None) -> None:
        """Send fleet events to ``emit`` (an engine's bus) and read time from ``clock``."""
        self._emit = emit
        if clock is not None:
            self._clock = clock
            for e in self._entries.values():
                e.breaker._clock = clock
        # Agents registered before anyone listened are announced now, so metrics and
        # alerts downstream know the whole fleet.
        for e in self._entries.values():
            self._send(AgentRegistered(ts=self._clock.now(), agent_id=e.agent.id,
                                       capabilities=tuple(sorted(e.agent.capabilities)),
                                       transport=transport_of(e.agent), region=e.region))

    def _send(self, event: Event) -> None:
        if self._emit is not None:
            self._emit(event)

    # --- membership -------------------------------------------------------
    def register(self, agent: Agent) -> None:
        if agent.id in self._entries:
            raise ConfigError(
                f"agent id '{agent.id}' is registered twice (fix: give each agent its own id)")
        agent_id = agent.id

        def on_change(old: str, new: str) -> None:
            self._send(CircuitStateChanged(run_id=self._cause, ts=self._clock.now(),
                                           agent_id=agent_id, old=old, new=new))

        entry = _Entry(agent, CircuitBreaker(self.config.breaker, self._clock, on_change))
        self._entries[agent_id] = entry
        for cap in agent.capabilities:
            self._by_capability.setdefault(cap, []).append(entry)
        self._send(AgentRegistered(ts=self._clock.now(), agent_id=agent_id,
                                   capabilities=tuple(sorted(agent.capabilities)),
                                   transport=transport_of(agent), region=entry.region))
        self._wake()

    def unregister(self, agent_id: str) -> Agent | None:
        entry = self._entries.pop(agent_id, None)
        if entry is None:
            return None
        for cap in entry.agent.capabilities:
            members = self._by_capability.get(cap, [])
            if entry in members:
                members.remove(entry)
        self._send(AgentUnregistered(ts=self._clock.now(), agent_id=agent_id))
        return entry.agent

    def retire(self, agent_id: str) -> Departed | None:
        """``unregister``, keeping sight of the calls still in flight on the agent."""
        entry = self._entries.get(agent_id)
        if entry is None or self.unregister(agent_id) is None:
            return None
        return Departed(entry)

    def get(self, agent_id: str) -> Agent | None:
        entry = self._entries.get(agent_id)
        return entry.agent if entry else None

    @property
    def agents(self) -> list[Agent]:
        return [e.agent for e in self._entries.values()]

    def capabilities(self) -> set[str]:
        return {c for c, members in self._by_capability.items() if members}

    def knows(self, ref: str) -> bool:
        """Whether ``ref`` (capability or ``@id``) names anything registered."""
        if ref.startswith("@"):
            return ref[1:] in self._entries
        return bool(self._by_capability.get(ref))

    def inflight(self, agent_id: str) -> int:
        entry = self._entries.get(agent_id)
        return entry.inflight if entry else 0

    def health_of(self, agent_id: str) -> HealthState:
        return self._entries[agent_id].health

    def breaker_of(self, agent_id: str) -> CircuitBreaker:
        return self._entries[agent_id].breaker

    # --- health -----------------------------------------------------------
    def _set_level(self, entry: _Entry, old: str, reason: str | None) -> None:
        new = entry.health.level
        if new != old:
            self._send(AgentHealthChanged(ts=self._clock.now(), agent_id=entry.agent.id, old=old,
                                          new=new, reason=reason))
            self._wake()

    def observe_check(self, agent: Agent, report: HealthReport, latency_s: float) -> None:
        entry = self._entries.get(agent.id)
        if entry is None:
            return
        old = entry.health.level
        entry.health.observe_check(report, latency_s, self._clock.monotonic(), self.config.health)
        self._set_level(entry, old, report.detail or f"health check: {report.status}")

    async def check_health(self) -> None:
        """One round of active checks of every agent."""
        await self._monitor_for().check_once()

    def _monitor_for(self) -> HealthMonitor:
        if self._monitor is None:
            self._monitor = HealthMonitor(lambda: self.agents, self.observe_check,
                                          self.config.health, self._clock)
        return self._monitor

    def start_monitor(self) -> None:
        """Check every agent on the configured interval until ``stop_monitor``."""
        if self.config.health.interval_s > 0:
            self._monitor_for().start()

    async def stop_monitor(self) -> None:
        if self._monitor is not None:
            await self._monitor.stop()

    def report(self) -> dict[str, Any]:
        """Per agent status, latency, in-flight, error rate, circuit; totals and overall level."""
        now = self._clock.monotonic()
        window = self.config.health.eject_window_s
        agents = []
        counts = {HEALTHY: 0, DEGRADED: 0, UNHEALTHY: 0, UNKNOWN: 0}
        for e in self._entries.values():
            h = e.health
            h.expire_ejection(now)
            counts[h.level] = counts.get(h.level, 0) + 1
            latency = h.latency_s if h.latency_s is not None else h.check_latency_s
            agents.append({
                "id": e.agent.id,
                "capabilities": sorted(e.agent.capabilities),
                "transport": transport_of(e.agent),
                "region": e.region,
                "weight": e.weight,
                "status": h.level,
                "latency_ms": None if latency is None else round(latency * 1000, 2),
                "inflight": e.inflight,
                "max_concurrency": e.agent.max_concurrency,
                "load": h.load,
                "error_rate": round(h.error_rate(now, window), 4),
                "calls": h.total_calls,
                "failures": h.total_failures,
                "circuit": e.breaker.state,
                "detail": h.detail,
            })
        by_cap = {c: [m.health.level for m in members]
                  for c, members in self._by_capability.items() if members}
        return {
            "region": self.config.region,
            "overall": overall_level(by_cap),
            "totals": {"agents": len(agents), **counts},
            "capabilities": {c: {"agents": len(v),
                                 "usable": sum(1 for lv in v if lv != UNHEALTHY)}
                             for c, v in by_cap.items()},
            "agents": agents,
        }

    # --- selection --------------------------------------------------------
    def _candidates(self, ref: str) -> list[_Entry]:
        if ref.startswith("@"):
            e = self._entries.get(ref[1:])
            return [e] if e is not None else []
        return self._by_capability.get(ref, [])

    def _usable(self, candidates: list[_Entry]) -> tuple[list[_Entry], int, int, int, float]:
        """Who can take a call now; how many cannot and why; and when the first agent
        that said it is busy may be asked again (``inf``: none is busy)."""
        now = self._clock.monotonic()
        usable: list[_Entry] = []
        unhealthy = refused = full = 0
        busy_until = math.inf
        for e in candidates:
            old = e.health.level
            if e.health.expire_ejection(now):
                self._set_level(e, old, "ejection expired; probing again")
            if e.busy_until:
                if e.busy_until > now:
                    full += 1  # it said it is at capacity: as good as full until then
                    busy_until = min(busy_until, e.busy_until)
                    continue
                e.busy_until = 0.0
            if e.health.level == UNHEALTHY:
                unhealthy += 1
            elif not e.breaker.would_admit():
                refused += 1
            elif e.agent.max_concurrency is not None and e.inflight >= e.agent.max_concurrency:
                full += 1
            else:
                usable.append(e)
        return usable, unhealthy, refused, full, busy_until

    def _tier(self, usable: list[_Entry]) -> list[_Entry]:
        """Healthy before degraded; own region first, else the fastest other region."""
        best_health = min(0 if e.health.level != DEGRADED else 1 for e in usable)
        group = [e for e in usable if (0 if e.health.level != DEGRADED else 1) == best_health]
        here = self.config.region
        if here is None:
            return group
        local = [e for e in group if e.region in (here, None)]
        if local:
            return local
        by_region: dict[str | None, float] = {}
        for e in group:
            lat = e.health.latency_s if e.health.latency_s is not None else 0.0
            by_region[e.region] = min(by_region.get(e.region, lat), lat)
        fastest = min(by_region, key=lambda r: by_region[r])
        return [e for e in group if e.region == fastest]

    def _choose(self, group: list[_Entry], strategy: str, capability: str) -> _Entry:
        if len(group) == 1:
            return group[0]
        if strategy == "round_robin":
            total = sum(e.weight for e in group)
            for e in group:
                e.rr_weight += e.weight
            best = max(group, key=lambda e: e.rr_weight)
            best.rr_weight -= total
            return best
        if strategy == "latency":
            return min(group, key=lambda e: (e.health.latency_s or 0.0, e.load))
        # least_loaded: power of two choices, drawn by weight.
        weights = [e.weight for e in group]
        a = self._rng.choices(group, weights)[0]
        b = a
        for _ in range(4):
            b = self._rng.choices(group, weights)[0]
            if b is not a:
                break
        if b is a:
            b = min((e for e in group if e is not a), key=lambda e: e.load)
        return min((a, b), key=lambda e: (e.load, e.health.latency_s or 0.0))

    async def acquire(
        self,
        ref: str,
        *,
        avoid: str | None = None,
        timeout_s: float | None = None,
        strategy: str | None = None,
        run_id: str = "",
    ) -> Lease:
        """Hold an agent for one call, waiting up to ``timeout_s`` for capacity.

        ``run_id``: whose call it is; a circuit this call moves (open to half-open as it
        looks, half-open to closed or open when it ends) is told with that run's id.
        """
        capability = ref[1:] if ref.startswith("@") else ref
        candidates = self._candidates(ref)
        if len(candidates) == 1:
            # The common case stays O(1): one agent, unbounded, admitted.
            e = candidates[0]
            if e.agent.max_concurrency is None and e.health.level != UNHEALTHY \
                    and e.breaker.state == "closed" and not e.busy_until:
                e.inflight += 1
                return Lease(self, e, self._capability_for(e, ref, capability),
                             run_id=run_id)
        loop = asyncio.get_running_loop()
        clock = self._clock
        limit = timeout_s if timeout_s is not None else self.config.acquire_timeout_s
        deadline = clock.monotonic() + limit  # on the registry's (injectable) clock
        woken = False
        while True:
            candidates = self._candidates(ref)
            if not candidates:
                raise Unavailable(f"no agent registered for '{ref}'")
            self._cause = run_id
            try:
                usable, unhealthy, refused, full, busy_until = self._usable(candidates)
            finally:
                self._cause = ""
            if avoid is not None and len(usable) > 1:
                usable = [e for e in usable if e.agent.id != avoid] or usable
            while usable:
                group = self._tier(usable)
                e = self._choose(group, strategy or self.config.strategy, capability)
                if e.breaker.try_acquire():
                    trial = e.breaker.state == "half_open"
                    e.inflight += 1
                    if woken and _room(usable) > self._waking.get(ref, 0):
                        # A release wakes one waiter, but room can also appear without
                        # one (a circuit turning half-open): pass the wake along while
                        # there may be room left, instead of waking everyone each time.
                        self._wake_one(ref)
                    return Lease(self, e, self._capability_for(e, ref, capability), trial,
                                 run_id)
                usable.remove(e)
                refused += 1
            if not full:
                parts = []
                if unhealthy:
                    parts.append(f"{unhealthy} unhealthy")
                if refused:
                    parts.append(f"{refused} with an open circuit")
                raise Unavailable(f"no agent can take '{ref}' now ({', '.join(parts)})")
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                raise NoCapacity(
                    f"every agent for '{ref}' stayed at capacity for {limit:g}s")
            fut: asyncio.Future[bool] = loop.create_future()
            queue = self._waiters.setdefault(ref, deque())
            queue.append(fut)
            # A busy agent may be asked again at a set time: sleep on the registry's
            # clock until then (or the end of the wait), whichever a release beats.
            nap: asyncio.Task[None] | None = None
            if busy_until != math.inf:
                nap = loop.create_task(clock.sleep(min(busy_until - clock.monotonic(),
                                                       remaining)))
                nap.add_done_callback(partial(_wake, fut))
            # The end of the wait fails the future itself: a timer per waiter and no
            # more (asyncio.timeout's context costs about as much again, and
            # asyncio.wait_for on 3.11 swallows a cancellation that lands just as the
            # wake does, so a cancelled step would go on to take the slot).
            expiry = clock.call_later(remaining, partial(_expire, fut))
            try:
                await fut
            except BaseException as exc:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    # Woken for a free slot but leaving without taking it (cancelled
                    # in the same instant): hand the wake on, or the slot sits idle.
                    self._wake_one(ref)
                elif fut in queue:
                    queue.remove(fut)
                if isinstance(exc, TimeoutError):
                    raise NoCapacity(
                        f"every agent for '{ref}' stayed at capacity for {limit:g}s") from None
                raise
            finally:
                expiry.cancel()
                if fut.done() and not fut.cancelled() and fut.exception() is None \
                        and fut.result():
                    self._waking[ref] -= 1  # this wake has looked (or handed itself on)
                if nap is not None:
                    nap.cancel()
                    if fut in queue:
                        queue.remove(fut)  # woken by the nap, not by a release
            woken = True

    @staticmethod
    def _capability_for(e: _Entry, ref: str, capability: str) -> str:
        if ref.startswith("@"):
            return next(iter(sorted(e.agent.capabilities)), capability)
        return capability

    def _release(self, e: _Entry, ok: bool, error_type: str | None,
                 latency_s: float | None, trial: bool = False, run_id: str = "") -> None:
        e.inflight -= 1
        if ok:
            e.busy_streak = 0
        if error_type == "cancelled":
            if trial:
                e.breaker.cancel_trial()
        else:
            self._cause = run_id
            try:
                e.breaker.record(ok, error_type, trial=trial)
            finally:
                self._cause = ""
            old = e.health.level
            e.health.observe_call(ok, error_type, latency_s or 0.0, self._clock.monotonic(),
                                  self.config.health)
            if e.health.level != old:
                self._set_level(e, old, e.health.detail)
        # One slot came free: wake one waiter per name this agent answers to. Waking
        # every waiter on every release made a big fan-out quadratic (each of
        # hundreds of waiting steps re-ran selection for every finished call).
        self._wake_agent(e)

    def _release_busy(self, e: _Entry, retry_after_s: float | None, trial: bool) -> float:
        e.inflight -= 1
        if trial:
            e.breaker.cancel_trial()
        e.busy_streak += 1
        if retry_after_s is not None and retry_after_s > 0:
            # Honour it, plus up to 10% so that every engine told the same second does
            # not come back in the same instant.
            delay = retry_after_s * (1.0 + 0.1 * self._rng.random())
        else:
            # No hint: a short back-off that grows while the agent keeps saying busy.
            delay = min(0.05 * 2 ** min(e.busy_streak - 1, 6), 2.0) * (
                0.5 + 0.5 * self._rng.random())
        e.busy_until = max(e.busy_until, self._clock.monotonic() + delay)
        self._wake_agent(e)  # a waiter may find another agent free now
        return delay

    def _wake_agent(self, e: _Entry) -> None:
        if self._waiters:
            for cap in e.agent.capabilities:
                self._wake_one(cap)
            self._wake_one("@" + e.agent.id)

    def _wake_one(self, ref: str) -> None:
        queue = self._waiters.get(ref)
        while queue:
            fut = queue.popleft()
            if not fut.done():
                fut.set_result(True)
                self._waking[ref] = self._waking.get(ref, 0) + 1
                return

    def _wake(self) -> None:
        # Health or membership changed: anyone may fit now, so every waiter looks
        # again; those that find nothing free simply wait again.
        for queue in self._waiters.values():
            while queue:
                fut = queue.popleft()
                if not fut.done():
                    fut.set_result(False)

    async def aclose(self) -> None:
        await self.stop_monitor()
        for e in self._entries.values():
            await e.agent.aclose()
