"""A background task that does one round of work, waits, and does the next.

The alert leader and the schedules' firer both live like this: a round returns how
long to wait before the next; a round that fails is logged and retried after
``retry_s``, and never ends the loop (the process must keep evaluating alerts and
firing schedules through a database that comes and goes).

A round may hold a step that must not be cut in two (``whole()``: a schedule's run
started and its slot recorded as fired): ``stop()`` lets such a step finish, within
``stop_grace_s``, before it ends the loop, and no new one begins once it is asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

__all__ = ["Rounds"]


class Rounds:
    """Subclasses give ``round()``; ``start()`` and ``stop()`` run and end the loop."""

    retry_s: float = 5.0
    stop_grace_s: float = 10.0  # how long stop() waits for a step under whole()
    _what = "rounds"  # for the task's name and the log: "alert evaluation", ...
    _log = logging.getLogger("podium")

    _task: asyncio.Task[None] | None = None
    _trouble: str | None = None  # what went wrong last: logged once per change
    _stopping = False
    _whole = 0  # steps under whole() in progress
    _whole_done: asyncio.Event | None = None  # set by the last one out, once stop() waits

    def _troubled(self, what: str) -> None:
        if what != self._trouble:
            self._trouble = what
            self._log.warning("%s", what)

    async def round(self) -> float:
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def whole(self) -> AsyncIterator[None]:
        """A step that ``stop()`` lets finish rather than cuts; none begins once a stop is
        asked (the round ends there, cancelled)."""
        if self._stopping:
            raise asyncio.CancelledError
        self._whole += 1
        try:
            yield
        finally:
            self._whole -= 1
            if self._whole == 0 and self._whole_done is not None:
                self._whole_done.set()

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name=f"podium:{self._what.replace(' ', '-')}")

    async def _loop(self) -> None:
        while True:
            try:
                wait = await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - logged; the loop must go on
                self._log.exception("%s failed", self._what)
                wait = self.retry_s
            await asyncio.sleep(wait)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            if self._whole and not task.done():
                self._whole_done = done = asyncio.Event()
                try:
                    await asyncio.wait_for(done.wait(), self.stop_grace_s)
                except TimeoutError:
                    self._log.warning("%s: stopped after %.0fs in a step that was to"
                                      " finish whole", self._what, self.stop_grace_s)
                finally:
                    self._whole_done = None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
