"""A background task that does one round of work, waits, and does the next.

The alert leader and the schedules' firer both live like this: a round returns how
long to wait before the next; a round that fails is logged and retried after
``retry_s``, and never ends the loop (the process must keep evaluating alerts and
firing schedules through a database that comes and goes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

__all__ = ["Rounds"]


class Rounds:
    """Subclasses give ``round()``; ``start()`` and ``stop()`` run and end the loop."""

    retry_s: float = 5.0
    _what = "rounds"  # for the task's name and the log: "alert evaluation", ...
    _log = logging.getLogger("podium")

    _task: asyncio.Task[None] | None = None
    _trouble: str | None = None  # what went wrong last: logged once per change

    def _troubled(self, what: str) -> None:
        if what != self._trouble:
            self._trouble = what
            self._log.warning("%s", what)

    async def round(self) -> float:
        raise NotImplementedError

    def start(self) -> None:
        if self._task is None or self._task.done():
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
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
