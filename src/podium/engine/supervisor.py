"""The supervisor: an engine's leases renewed, and cancel requests from elsewhere.

While an engine executes runs (a worker's: always), it polls the store for
cancel requests other processes made, and renews its leases every third of
their length. A run the store says this owner no longer holds stops at once.
Leases not renewed for two thirds of their length (the store unreachable, or
the process frozen) stop every run here (self-fencing): past the lease another
process may take them over, and two executions of one run must never overlap.
Elapsed time is counted on the engine's lease clock (real monotonic time by
default): leases live on the store's clock, not on a test's fake one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol

from podium.clock import Clock

if TYPE_CHECKING:
    from podium.engine.engine import EngineConfig
    from podium.store.base import RunStore

__all__ = ["after", "supervise"]

log = logging.getLogger("podium.engine")


class Supervised(Protocol):
    owner: str
    clock: Clock
    keep_leases: bool

    @property
    def renewed_at(self) -> float: ...

    def active_ids(self) -> list[str]: ...

    def held_runs(self) -> dict[str, int]: ...

    def cancel_requested(self, run_id: str, reason: str = ...) -> None: ...

    def leases_renewed(self, at: float | None = None) -> None: ...

    def run_lost(self, run_id: str, epoch: int | None = None) -> None: ...

    def fence_all(self, silent_s: float) -> None: ...


async def after(clock: Clock, seconds: float) -> None:
    """Wait on the clock's timer, not its ``sleep``: a background poll is not a policy
    wait (a ``FakeClock`` records sleeps and moves on at once; its timers wait for its
    time to pass)."""
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    timer = clock.call_later(seconds, lambda: None if fut.done() else fut.set_result(None))
    try:
        await fut
    finally:
        timer.cancel()


async def supervise(engine: Supervised, store: RunStore, cfg: EngineConfig) -> None:
    """Run while the engine has runs (or keeps its leases regardless)."""
    clock, elapsed = engine.clock, cfg.lease_clock
    last_renew = last_ok = elapsed()
    failing = False
    while engine.active_ids() or engine.keep_leases:
        await after(clock, cfg.poll_interval_s)
        # Renewed by someone else meanwhile (a worker renews at once after a hand-back).
        last_ok = max(last_ok, engine.renewed_at)
        if elapsed() - last_ok >= cfg.lease_s * 2 / 3:
            # Frozen (or cut off): before anything else, and before renewing anything
            # late. Woken from a freeze, this look races the worker's claim loop, whose
            # timer is due too; the claim checks the leases as well (``Engine.adopt``).
            engine.fence_all(elapsed() - last_ok)
            break
        ids = engine.active_ids()
        if not ids and not engine.keep_leases:
            break
        try:
            for rid in await store.cancel_requests(ids) if ids else ():
                engine.cancel_requested(rid)
            if elapsed() - last_renew >= cfg.lease_s / 3:
                started = elapsed()
                # By epoch: a run lost at the epoch asked about may have been claimed
                # again here while the renewal was on the wire; that execution goes on.
                held = engine.held_runs()
                lost = await store.renew_leases(engine.owner, list(held), cfg.lease_s)
                last_renew = last_ok = started
                engine.leases_renewed(started)
                for rid in lost:
                    engine.run_lost(rid, held[rid])
                if failing:
                    log.warning("supervisor: the store answers again; leases renewed")
                    failing = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - logged once per state change
            if not failing:
                log.warning("supervisor: store poll failed, retrying: %s", exc)
                failing = True
            if elapsed() - last_ok >= cfg.lease_s * 2 / 3:
                engine.fence_all(elapsed() - last_ok)
                break
