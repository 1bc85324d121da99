"""Circuit breakers: stop calling an agent that keeps failing, probe it later.

closed ──(failure_threshold consecutive failures, or failure rate over the
window with at least min_calls)──► open ──(reset_timeout)──► half_open
half_open ──(a trial call succeeds)──► closed;  ──(a trial fails)──► open

Time comes from an injected clock, so tests walk through the states exactly.
Which error types count is configurable; by default ``invalid_input`` and
``cancelled`` do not (a bad request says nothing about the agent's health).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from podium.clock import Clock

__all__ = ["BreakerConfig", "CircuitBreaker"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    failure_threshold: int = 5
    reset_timeout_s: float = 30.0
    half_open_max_calls: int = 1
    # Rate-based tripping: failures / calls over the window, once min_calls were made.
    failure_rate: float | None = 0.5
    window_s: float = 60.0
    min_calls: int = 20
    ignored_errors: frozenset[str] = frozenset({"invalid_input", "cancelled"})


class CircuitBreaker:
    __slots__ = ("_calls", "_clock", "_consecutive", "_failures", "_half_open_inflight",
                 "_on_change", "_opened_at", "config", "state")

    def __init__(
        self,
        config: BreakerConfig,
        clock: Clock,
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        self.config = config
        self.state = CLOSED
        self._clock = clock
        self._on_change = on_change
        self._consecutive = 0
        self._opened_at = 0.0
        self._half_open_inflight = 0
        # When each call of the window ended, and each failure among them: times, not
        # (time, ok) pairs (32 bytes a call instead of 88: a window holds every call
        # of the last minute, 100,000 of them in a 100,000-step fan-out).
        self._calls: deque[float] = deque()
        self._failures: deque[float] = deque()

    def _move(self, new: str) -> None:
        old, self.state = self.state, new
        if new == OPEN:
            self._opened_at = self._clock.monotonic()
        if new != HALF_OPEN:
            self._half_open_inflight = 0
        if new == CLOSED:
            self._consecutive = 0
            self._calls.clear()
            self._failures.clear()
        if old != new and self._on_change is not None:
            self._on_change(old, new)

    def _refresh(self) -> None:
        if self.state == OPEN and (
            self._clock.monotonic() - self._opened_at >= self.config.reset_timeout_s
        ):
            self._move(HALF_OPEN)

    def would_admit(self) -> bool:
        """Whether ``try_acquire`` would succeed now (takes nothing)."""
        self._refresh()
        if self.state == CLOSED:
            return True
        if self.state == HALF_OPEN:
            return self._half_open_inflight < self.config.half_open_max_calls
        return False

    def try_acquire(self) -> bool:
        """Admit one call, or refuse it; a half-open breaker admits a few trials."""
        if not self.would_admit():
            return False
        if self.state == HALF_OPEN:
            self._half_open_inflight += 1
        return True

    def record(self, ok: bool, error_type: str | None = None, *, trial: bool | None = None) -> None:
        """The outcome of an admitted call.

        ``trial`` says whether the call was admitted as a half-open trial; a call
        admitted while the circuit was still closed that ends during half-open
        says nothing about the agent now, so it neither closes nor reopens it.
        Without ``trial``, a call ending in half-open counts as the trial.
        """
        was_trial = self.state == HALF_OPEN if trial is None else trial
        if was_trial:
            self._half_open_inflight = max(0, self._half_open_inflight - 1)
        if not ok and error_type in self.config.ignored_errors:
            return  # neither a success nor a failure of the agent
        if self.state == HALF_OPEN:
            if was_trial:
                self._move(CLOSED if ok else OPEN)
            return
        if self.state != CLOSED:
            return
        now = self._clock.monotonic()
        calls, failures = self._calls, self._failures
        calls.append(now)
        horizon = now - self.config.window_s
        while calls[0] < horizon:
            calls.popleft()
        while failures and failures[0] < horizon:
            failures.popleft()
        if ok:
            self._consecutive = 0
            return
        failures.append(now)
        self._consecutive += 1
        if self._consecutive >= self.config.failure_threshold:
            self._move(OPEN)
            return
        rate = self.config.failure_rate
        if rate is not None and len(calls) >= self.config.min_calls and (
                len(failures) / len(calls) > rate):
            self._move(OPEN)

    def cancel_trial(self) -> None:
        """An admitted call never happened (the caller gave the slot back)."""
        if self.state == HALF_OPEN:
            self._half_open_inflight = max(0, self._half_open_inflight - 1)
