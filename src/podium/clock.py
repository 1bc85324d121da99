"""Time as a dependency.

Policy decisions (backoff waits, deadlines, lease expiry, timeouts) read time
from a ``Clock`` and set their timers through it, so tests can jump it instead
of sleeping. ``FakeClock`` does what stamina's testing mode does: a sleep
returns at once and moves time on, and every requested wait is recorded so
backoff sequences can be asserted exactly; its timers (``call_later``,
``timeout``) fire when its time passes their due time, never by the wall.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "SystemClock", "Timer"]


@runtime_checkable
class Timer(Protocol):
    def cancel(self) -> None: ...


@runtime_checkable
class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds since the epoch (for records people read)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for deadlines)."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    def call_later(self, seconds: float, callback: Callable[[], object]) -> Timer:
        """Call ``callback`` once ``seconds`` have passed on this clock."""
        ...

    def timeout(self, seconds: float) -> AbstractAsyncContextManager[object]:
        """Like ``asyncio.timeout``: cancel the block, raising ``TimeoutError``, once
        ``seconds`` have passed on this clock."""
        ...


class SystemClock:
    # The C functions themselves, not methods wrapping them: the engine reads the
    # clock several times per step, and a Python frame per read shows up there.
    now = staticmethod(time.time)
    monotonic = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_later(self, seconds: float, callback: Callable[[], object]) -> Timer:
        return asyncio.get_running_loop().call_later(seconds, callback)

    def timeout(self, seconds: float) -> AbstractAsyncContextManager[object]:
        return asyncio.timeout(seconds)


class _FakeTimer:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that skips ahead: ``sleep`` advances time and returns at once."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._mono = 0.0
        self.sleeps: list[float] = []
        self._timers: list[tuple[float, int, _FakeTimer, Callable[[], object]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move time on, firing every timer that falls due on the way, in order."""
        end = self._mono + seconds
        while self._timers and self._timers[0][0] <= end:
            due, _n, timer, callback = heapq.heappop(self._timers)
            self._now += due - self._mono
            self._mono = due
            if not timer.cancelled:
                callback()
        self._now += end - self._mono
        self._mono = end

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(seconds, 0.0))
        await asyncio.sleep(0)

    def call_later(self, seconds: float, callback: Callable[[], object]) -> Timer:
        timer = _FakeTimer()
        heapq.heappush(self._timers, (self._mono + max(seconds, 0.0), next(self._order), timer,
                                      callback))
        return timer

    def timeout(self, seconds: float) -> AbstractAsyncContextManager[object]:
        return self._timeout(seconds)

    @asynccontextmanager
    async def _timeout(self, seconds: float) -> AsyncIterator[None]:
        # asyncio's own timeout, told to expire when this clock's time comes: the
        # cancellation and its TimeoutError behave exactly as with the real one.
        async with asyncio.timeout(None) as cm:
            loop = asyncio.get_running_loop()
            timer = self.call_later(seconds, lambda: cm.reschedule(loop.time()))
            try:
                yield
            finally:
                timer.cancel()
