"""A worker: takes runs from a shared database and executes them until told to stop.

Many ``podium worker`` processes on many machines share one PostgreSQL
database. Each registers a row whose heartbeat is the lease of every run it
holds (the engine's supervisor renews it every third of the lease), and claims
runs with one statement that skips what other claimers hold locked: pending
runs, and runs whose owner's lease expired (a dead worker's, after its poison
backoff), only those of its queues whose agents its registry provides, never
more than its free slots. A notification wakes it when runs are submitted or
released; a jittered poll at least every third of a lease is the safety net
(and the only way with notifications off), so a dead worker's runs are taken
over within its lease plus one poll.

Stopping (SIGTERM, Ctrl-C) hands runs back rather than ending them: no step
starts any more, the attempts in flight get ``grace_s`` to finish and commit,
then every run still here is released for another worker to claim at once. A
second signal cuts the grace short (the attempts cut run again elsewhere with
the same idempotency key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from podium.engine.engine import Engine, RunHandle
from podium.engine.owners import host_fingerprint
from podium.errors import PodiumError, RunLost
from podium.state import RunRecord
from podium.store.base import WorkerInfo, WorkerStore

__all__ = ["Worker", "WorkerConfig"]

log = logging.getLogger("podium.worker")


@dataclass(frozen=True)
class WorkerConfig:
    queues: tuple[str, ...] = ("default",)
    concurrency: int = 16
    grace_s: float = 10.0
    # The safety-net poll (jittered); never longer than a third of the lease, so a
    # dead worker's runs are found within their lease plus one poll.
    poll_s: float = 5.0
    # After this long pending, a run no live worker can execute is named in the log.
    missing_after_s: float = 60.0
    # Only runs a dead owner left, never submitted ones (``podium serve``).
    takeovers_only: bool = False


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read(64).strip() or None
    except OSError:
        return None


def _pid_ns() -> str | None:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return None


class Worker:
    def __init__(self, engine: Engine, store: WorkerStore, config: WorkerConfig,
                 rng: random.Random | None = None) -> None:
        self.engine = engine
        self.store = store
        self.config = config
        self.id = engine.owner
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._watching: set[asyncio.Task[None]] = set()
        self._warned_missing: set[str] = set()
        self.claimed = 0  # runs claimed since start (for the log and tests)

    @property
    def capabilities(self) -> tuple[str, ...]:
        """What this worker's registry provides now: agents that join through the API
        (``podium.joined``) add to it while the worker runs."""
        reg = self.engine.registry
        return tuple(sorted(set(reg.capabilities()) | {"@" + a.id for a in reg.agents}))

    def info(self) -> WorkerInfo:
        return WorkerInfo(
            id=self.id, host=socket.gethostname(), pid=os.getpid(),
            lease_s=self.engine.config.lease_s, concurrency=self.config.concurrency,
            queues=self.config.queues, capabilities=self.capabilities,
            boot_id=_boot_id() if host_fingerprint() else None, pid_ns=_pid_ns())

    async def run(self, stop: asyncio.Event, hurry: asyncio.Event | None = None) -> list[str]:
        """Claim and execute runs until ``stop`` is set; then hand back what is left
        (``hurry``: a second signal, cuts the grace short). Returns the runs handed back."""
        engine, store = self.engine, self.store
        await engine.open()
        await store.register_worker(self.info())
        log.info("worker %s: queues %s, %d slots, agents for %s", self.id,
                 ", ".join(self.config.queues), self.config.concurrency,
                 ", ".join(self.capabilities) or "nothing")
        engine.keep_leases = True
        engine.ensure_supervisor()
        try:
            await store.listen(self._notice)
            await self._loop(stop)
        finally:
            handed = await self._stop(hurry)
        return handed

    def _notice(self, kind: str, run_id: str) -> None:
        if kind == "cancel":
            self.engine.cancel_requested(run_id)
        else:
            self._wake.set()

    async def _loop(self, stop: asyncio.Event) -> None:
        cfg, engine, store = self.config, self.engine, self.store
        poll = min(cfg.poll_s, engine.config.lease_s / 3)
        failing = False
        backoff = 0.0
        next_missing = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            self._wake.clear()
            claimed_all = False
            try:
                # Woken from a freeze past its lease, the claim below could find this
                # worker's own runs (expired by the database's clock) while they still
                # execute here: their leases are checked first (lapsed: every run here
                # stops, as the supervisor's next look would stop them).
                lapsed = not engine.leases_hold()
                if engine.ensure_supervisor() or engine.fenced_runs() or lapsed:
                    # Its leases lapsed (frozen, or cut off) and it stopped its runs:
                    # hand back those still its own (nobody else would take them while
                    # its heartbeat lives), then a fresh heartbeat, or the runs claimed
                    # next would look abandoned to other workers at once.
                    fenced = engine.fenced_runs()
                    if fenced:
                        await store.release_runs(self.id, fenced)
                        engine.handed_back(fenced)
                        log.warning("worker %s: handed back %d runs it had stopped",
                                    self.id, len(fenced))
                    await store_renew(engine)
                free = cfg.concurrency - engine.active_runs
                if free > 0:
                    runs = await store.claim_runs(self.id, queues=cfg.queues,
                                                  capabilities=self.capabilities, limit=free,
                                                  takeovers_only=cfg.takeovers_only)
                    for run in runs:
                        await self._start(run)
                    claimed_all = len(runs) == free  # there may be more waiting
                if loop.time() >= next_missing and not cfg.takeovers_only:
                    next_missing = loop.time() + cfg.missing_after_s / 2
                    self._say_missing(await store.missing_capabilities(cfg.missing_after_s))
                if failing:
                    log.warning("worker %s: the database answers again; claiming", self.id)
                    failing, backoff = False, 0.0
            except PodiumError as exc:
                if not failing:
                    log.warning("worker %s: cannot claim runs (will retry): %s", self.id,
                                exc.message)
                    failing = True
                backoff = min(max(backoff * 2, 0.5), poll)
            if claimed_all and not failing:
                continue
            wait = (backoff if failing else poll) * self._rng.uniform(0.8, 1.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await _first(stop.wait(), self._wake.wait())

    async def _start(self, run_record: RunRecord) -> None:
        try:
            handle = await self.engine.adopt(run_record)
        except PodiumError as exc:
            log.error("worker %s: cannot execute run %s (handed back): %s", self.id,
                      run_record.run_id, exc.message)
            await self.store.release_runs(self.id, [run_record.run_id])
            return
        self.claimed += 1
        task = asyncio.get_running_loop().create_task(self._watch(handle))
        self._watching.add(task)
        task.add_done_callback(self._watching.discard)

    async def _watch(self, handle: RunHandle) -> None:
        """A run ended (or was lost): a slot is free, look for work at once."""
        try:
            run = await handle.result()
            log.info("run %s %s", run.run_id, run.status)
        except RunLost as exc:
            log.warning("%s", exc.message)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("run %s ended with an internal error", handle.run_id)
        finally:
            self._wake.set()

    def _say_missing(self, missing: dict[str, list[str]]) -> None:
        for run_id, needs in missing.items():
            if run_id not in self._warned_missing:
                self._warned_missing.add(run_id)
                log.warning("run %s stays pending: no live worker provides %s", run_id,
                            ", ".join(needs))

    async def _stop(self, hurry: asyncio.Event | None) -> list[str]:
        engine, store = self.engine, self.store
        handed: list[str] = []
        try:
            with contextlib.suppress(PodiumError):
                await store.set_stopping(self.id)
            if engine.active_runs:
                log.info("worker %s: stopping; %d runs in flight get %gs to finish their"
                         " attempts", self.id, engine.active_runs, self.config.grace_s)
            handed = await engine.hand_off(self.config.grace_s, hurry)
            for task in list(self._watching):
                task.cancel()
            if handed:
                await store.release_runs(self.id, handed)
            await store.unregister_worker(self.id)
            log.info("worker %s: stopped; %d runs handed back", self.id, len(handed))
        except PodiumError as exc:
            log.warning("worker %s: the database did not take the hand-back (its runs are"
                        " taken over after their lease): %s", self.id, exc.message)
        finally:
            engine.keep_leases = False
        return handed


async def store_renew(engine: Engine) -> None:
    """Renew the engine's leases (its heartbeat) now, and say so to its journal."""
    held = engine.held_runs()
    lost = await engine.store.renew_leases(engine.owner, list(held), engine.config.lease_s)
    engine.leases_renewed()
    for rid in lost:
        engine.run_lost(rid, held[rid])


async def _first(*waits: Coroutine[Any, Any, Any]) -> None:
    """Return when the first of these is done; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
