"""Agent health: active checks with hysteresis, passive outlier detection, reports.

Levels: healthy, degraded, unhealthy, unknown (never checked yet). Active
checks flip an agent to unhealthy only after ``unhealthy_after`` failed checks
in a row, and back only after ``healthy_after`` good ones, so one slow probe
does not make traffic flap. Real call results eject an agent sooner: many
consecutive failures, or a high error rate over a window, mark it unhealthy
before the next check; it comes back through active checks, or after
``ejection_s`` when nothing checks it (then it is probed again as unknown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from podium.agents.base import Agent, HealthReport
from podium.clock import Clock

__all__ = ["HealthConfig", "HealthMonitor", "HealthState", "overall_level"]

log = logging.getLogger("podium.agents.health")

HEALTHY: Final = "healthy"
DEGRADED: Final = "degraded"
UNHEALTHY: Final = "unhealthy"
UNKNOWN: Final = "unknown"
IGNORED_ERRORS = frozenset({"invalid_input", "cancelled"})
_EWMA_ALPHA = 0.3


@dataclass(frozen=True)
class HealthConfig:
    interval_s: float = 10.0
    timeout_s: float = 2.0
    unhealthy_after: int = 3
    healthy_after: int = 2
    # Passive outlier detection from real calls.
    eject_consecutive_failures: int = 5
    eject_error_rate: float = 0.5
    eject_window_s: float = 30.0
    eject_min_calls: int = 10
    ejection_s: float = 30.0


@dataclass
class HealthState:
    """What the registry knows of one agent's health right now."""

    level: str = UNKNOWN
    ok_streak: int = 0
    fail_streak: int = 0
    ejected_until: float | None = None
    consecutive_call_failures: int = 0
    # When each call in the window ended, and each failure among them: two deques of
    # times rather than one of (time, ok) pairs, 32 bytes a call instead of 88.
    calls: deque[float] = field(default_factory=deque)
    failures: deque[float] = field(default_factory=deque)
    latency_s: float | None = None  # EWMA of call latency
    check_latency_s: float | None = None
    load: float | None = None
    last_check_at: float | None = None
    detail: str | None = None
    total_calls: int = 0
    total_failures: int = 0

    def error_rate(self, now: float, window_s: float) -> float:
        calls, failures = self.calls, self.failures
        horizon = now - window_s
        while calls and calls[0] < horizon:
            calls.popleft()
        while failures and failures[0] < horizon:
            failures.popleft()
        if not calls:
            return 0.0
        return len(failures) / len(calls)

    def observe_check(self, report: HealthReport, latency_s: float, now: float,
                      cfg: HealthConfig) -> str:
        """Fold one active check in; return the (possibly new) level."""
        self.last_check_at = now
        self.detail = report.detail
        self.load = report.load
        self.check_latency_s = latency_s if self.check_latency_s is None else (
            _EWMA_ALPHA * latency_s + (1 - _EWMA_ALPHA) * self.check_latency_s)
        if report.status == UNHEALTHY or report.status == UNKNOWN:
            self.fail_streak += 1
            self.ok_streak = 0
            if self.fail_streak >= cfg.unhealthy_after:
                self.level = UNHEALTHY
            return self.level
        self.ok_streak += 1
        self.fail_streak = 0
        if self.level == UNHEALTHY:
            if self.ok_streak >= cfg.healthy_after:
                self.level = report.status
                self.ejected_until = None
                self.consecutive_call_failures = 0
                self.calls.clear()
                self.failures.clear()
        else:
            self.level = report.status
        return self.level

    def observe_call(self, ok: bool, error_type: str | None, latency_s: float, now: float,
                     cfg: HealthConfig) -> str:
        """Fold one real call in (passive detection); return the level."""
        if ok or error_type not in IGNORED_ERRORS:
            self.latency_s = latency_s if self.latency_s is None else (
                _EWMA_ALPHA * latency_s + (1 - _EWMA_ALPHA) * self.latency_s)
        if not ok and error_type in IGNORED_ERRORS:
            return self.level
        self.total_calls += 1
        calls = self.calls
        calls.append(now)
        # Calls older than the window leave as new ones come, not only when one fails:
        # an agent that never failed kept every call it ever made (100,000 of them,
        # ~9 MB, after one 100,000-step fan-out, and more with each run after it).
        horizon = now - cfg.eject_window_s
        while calls[0] < horizon:
            calls.popleft()
        if ok:
            self.consecutive_call_failures = 0
            return self.level
        self.failures.append(now)
        self.total_failures += 1
        self.consecutive_call_failures += 1
        rate = self.error_rate(now, cfg.eject_window_s)
        if self.level != UNHEALTHY and (
            self.consecutive_call_failures >= cfg.eject_consecutive_failures
            or (len(self.calls) >= cfg.eject_min_calls and rate > cfg.eject_error_rate)
        ):
            self.level = UNHEALTHY
            self.ok_streak = 0
            self.ejected_until = now + cfg.ejection_s
            self.detail = (f"ejected after {self.consecutive_call_failures} consecutive failures"
                           f" (error rate {rate:.0%})")
        return self.level

    def expire_ejection(self, now: float) -> bool:
        """An ejection with nobody checking ends after its time: probe again."""
        if self.ejected_until is not None and now >= self.ejected_until:
            self.ejected_until = None
            self.level = UNKNOWN
            self.consecutive_call_failures = 0
            self.calls.clear()
            self.failures.clear()
            return True
        return False


def overall_level(levels_by_capability: dict[str, list[str]]) -> str:
    """healthy: all agents healthy; degraded: some are not, but every capability
    still has a usable one; unhealthy: some capability has none."""
    everything = [lv for lvs in levels_by_capability.values() for lv in lvs]
    if not everything:
        return UNKNOWN
    for levels in levels_by_capability.values():
        if not any(lv in (HEALTHY, DEGRADED, UNKNOWN) for lv in levels):
            return UNHEALTHY
    return HEALTHY if all(lv == HEALTHY for lv in everything) else DEGRADED


class HealthMonitor:
    """Checks every agent on an interval; results go to ``observe``.

    A named background task, started and stopped by its owner; a check that
    hangs is cut at ``timeout_s`` and counts as unhealthy.
    """

    def __init__(
        self,
        agents: Callable[[], Iterable[Agent]],
        observe: Callable[[Agent, HealthReport, float], None],
        config: HealthConfig,
        clock: Clock,
    ) -> None:
        self._agents = agents
        self._observe = observe
        self.config = config
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def check_once(self) -> None:
        await asyncio.gather(*(self._check(a) for a in list(self._agents())))

    async def _check(self, agent: Agent) -> None:
        t0 = self._clock.monotonic()
        try:
            async with asyncio.timeout(self.config.timeout_s):
                report = await agent.health()
        except TimeoutError:
            report = HealthReport(UNHEALTHY, detail=f"health check timed out after "
                                  f"{self.config.timeout_s:g}s")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failing check means unhealthy
            report = HealthReport(UNHEALTHY, detail=f"{type(exc).__name__}: {exc}")
        self._observe(agent, report, self._clock.monotonic() - t0)

    async def _loop(self) -> None:
        while True:
            try:
                await self.check_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("health check round failed")
            await asyncio.sleep(self.config.interval_s)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name="podium:health-monitor")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()


