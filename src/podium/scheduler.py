"""Schedules fired (every slot at most once) and waiting runs woken when their timer is
due, by one process at a time.

``podium schedule add`` stores a workflow's definition, its input and when it
fires (five cron fields in a time zone, or ``--every``). A firer looks at the
schedules whose next slot has come, on the store's clock, and for each slot:

- records it ``missed`` when it is late (its firer was down) beyond the
  ``catch_up`` latest late slots, which fire late instead;
- with ``overlap: skip``, records it ``skipped`` while the schedule's last run is
  still going; with ``queue``, waits for that run to end; with ``allow``, fires;
- fires it: a run whose id is made from the schedule and the slot
  (``ID-EPOCH``), started here (``podium serve`` on SQLite) or submitted for the
  workers (PostgreSQL), then records the slot with that run and moves the
  schedule to its next slot, in one transaction.

A slot's row has a unique key, and its run an id of its own making: a firer
that dies between starting the run and recording the slot finds the run at its
next look and records it, never starting a second. On a database many processes
share, only the holder of the ``schedules`` role fires (an advisory lock; a new
holder takes over within ``retry_s`` of the last one's death). There, a firer looks
when the next slot comes and at least every ``idle_s``: a schedule just added is seen
within it, and an idle worker costs the database a few statements a minute.

Slots come from ``cronsim`` (cron fields in a time zone, with daylight-saving
changes as cron has them: a slot in the skipped hour fires when the hour comes
back, once), never from arithmetic on local times.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from podium.definition.loader import workflow_from_dict
from podium.errors import ConfigError, PodiumError, RunNotFound, StoreError
from podium.rounds import Rounds
from podium.state import LIVE_RUN_STATUSES, RunStatus
from podium.store.base import ScheduleRecord, SlotRecord, Store, WorkerStore

if TYPE_CHECKING:
    from podium.engine import Engine

__all__ = ["ROLE", "Scheduler", "check_cron", "next_slot", "slot_run_id", "zone"]

log = logging.getLogger("podium.schedules")

ROLE = "schedules"
# A slot reached within this many seconds is on time; later, it was missed while no
# firer ran, and fires only among the latest ``catch_up`` such slots.
GRACE_S = 60.0
# Missed slots recorded one by one after a downtime (the latest ones; older ones are
# counted in the log), and slots walked per schedule in one round.
MAX_SLOTS = 1000
MAX_WALK = 200_000


def zone(name: str, flag: str = "--tz") -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{flag} {name!r}: no such time zone (fix: an IANA name, e.g."
                          " Europe/Paris or UTC)") from None


def check_cron(expr: str, tz: str, flag: str = "--cron") -> None:
    """A cron expression that cannot be read, or that never fires, is refused."""
    where = zone(tz)
    if len(expr) > 256:
        raise ConfigError(f"{flag}: over 256 characters (fix: five fields, e.g. '0 2 * * *')")
    try:
        it = CronSim(expr, datetime.now(where))
        next(it)
    except CronSimError as exc:
        raise ConfigError(f"{flag} {expr!r}: {exc} (fix: five fields, minute hour"
                          " day-of-month month day-of-week, e.g. '0 2 * * *')") from None
    except StopIteration:
        raise ConfigError(f"{flag} {expr!r} never fires (fix: check its day and month)") \
            from None


def next_slot(schedule: ScheduleRecord, after: float) -> float:
    """The first slot of ``schedule`` strictly after ``after`` (epoch seconds)."""
    if schedule.every_s is not None:
        k = math.floor((after - schedule.created_at) / schedule.every_s) + 1
        return schedule.created_at + max(k, 1) * schedule.every_s
    assert schedule.cron is not None
    where = zone(schedule.tz)
    start = datetime.fromtimestamp(after, UTC).astimezone(where)
    for slot in CronSim(schedule.cron, start):
        at = slot.timestamp()
        if at > after:
            return at
    raise ConfigError(f"schedule {schedule.id}: its cron never fires again")


def slot_run_id(schedule_id: str, slot: float) -> str:
    """The id of the run of one slot: made, not drawn, so it is started once."""
    return f"{schedule_id}-{round(slot)}"


class Scheduler(Rounds):
    """Fires due schedules; with ``lead``, only while holding the ``schedules`` role.

    ``start_runs``: execute a slot's run in this process (``podium serve`` on
    SQLite); else submit it for the workers (PostgreSQL).
    """

    _what = "firing schedules"
    _log = log

    def __init__(self, engine: Engine, store: Store, *, lead: WorkerStore | None,
                 start_runs: bool, interval_s: float = 1.0, idle_s: float = 15.0,
                 retry_s: float = 10.0) -> None:
        self.engine = engine
        self.store = store
        self.lead = lead
        self.start_runs = start_runs
        self.interval_s = interval_s
        # On a shared database every look costs statements on a server many workers
        # share: look again when the next slot comes, and at least every ``idle_s`` (a
        # schedule just added, a timer to wake), not every second.
        self.idle_s = idle_s if lead is not None else interval_s
        self.retry_s = retry_s
        self.fired: list[str] = []  # run ids started or submitted here

    async def round(self) -> float:
        """Fire what is due; the seconds to wait until the next look."""
        if self.lead is not None:
            try:
                if not await self.lead.lead(ROLE):
                    return self.retry_s
            except StoreError as exc:
                self._troubled(f"cannot lead the schedules: {exc.message}")
                return self.retry_s
        wait = self.idle_s
        try:
            now = await self.store.now()
            for schedule in await self.store.list_schedules():
                if schedule.paused:
                    continue
                if schedule.next_at <= now:
                    try:
                        await self._due(schedule, now)
                    except PodiumError as exc:
                        self._troubled(f"schedule {schedule.id}: {exc.message}")
                    wait = self.interval_s  # look again soon: its next slot, a queue
                else:
                    wait = min(wait, schedule.next_at - now)
            await self._wake(now)
        except StoreError as exc:
            self._troubled(f"cannot read the schedules: {exc.message}")
            return self.retry_s
        self._trouble = None
        return max(wait, self.interval_s)

    async def _due(self, s: ScheduleRecord, now: float) -> None:
        """Every slot from ``s.next_at`` to ``now``: the latest ``catch_up`` late ones and
        the ones on time fire (overlap permitting), the older late ones are missed.

        Slots are walked, not kept: after a long downtime only the last few matter, and
        only the latest ``MAX_SLOTS`` missed ones are recorded one by one (the count of
        the others is logged). An interval schedule jumps over the gap at once.
        """
        keep = s.catch_up + int(GRACE_S) + 2  # enough for the catch-up and the on-time
        tail: deque[float] = deque(maxlen=keep)
        dropped: deque[float] = deque(maxlen=MAX_SLOTS)
        skipped = 0
        slot = s.next_at
        if s.every_s is not None and now - slot > (keep + MAX_SLOTS) * s.every_s:
            gap = math.floor((now - slot) / s.every_s) - (keep + MAX_SLOTS)
            skipped, slot = gap, slot + gap * s.every_s
        walked = 0
        while slot <= now:
            if len(tail) == keep:
                dropped.append(tail[0])
            tail.append(slot)
            slot = next_slot(s, slot)
            walked += 1
            if walked >= MAX_WALK:
                break  # the rest in the next rounds, from where this one recorded
        complete = slot > now
        late = [x for x in tail if now - x > GRACE_S]
        fire = set(late[len(late) - s.catch_up:]) if s.catch_up > 0 and complete else set()
        missed = list(dropped) + [x for x in late if x not in fire]
        if not complete:  # a walk cut short: only what is surely missed is recorded
            missed = list(dropped)
        older = skipped + walked - len(tail) - len(dropped)
        if older > 0:
            log.warning("schedule %s: %d slots missed while nothing fired (not each"
                        " recorded)", s.id, older)
        order = sorted(missed) + ([x for x in tail if x not in missed] if complete else [])
        for i, at in enumerate(order):
            after = order[i + 1] if i + 1 < len(order) else (slot if complete
                                                                else next_slot(s, at))
            if at in missed:
                await self.store.record_slot(s.id, SlotRecord(at, "missed", None, now), after)
                continue
            if s.overlap != "allow" and await self._going(s):
                if s.overlap == "queue":
                    return  # this slot fires once the last run has ended
                await self.store.record_slot(s.id, SlotRecord(at, "skipped", None, now), after)
                continue
            # Whole: a stop (SIGTERM) between the run's start and the slot's record would
            # leave a run no slot names until the next firer's look.
            async with self.whole():
                run_id = await self._fire(s, at)
                s.last_run_id = run_id
                if await self.store.record_slot(s.id, SlotRecord(
                        at, "fired", run_id, await self.store.now()), after):
                    log.info("schedule %s: slot %s fired run %s", s.id, _when(at), run_id)

    async def _wake(self, now: float) -> None:
        """Waiting runs whose timer is due become pending again: continued here (the
        embedded database), or by a worker (PostgreSQL: told by a notification). Here,
        so are the pending runs nobody holds: woken by a signal (`podium approve`), or
        submitted (`podium submit`)."""
        for run_id in await self.store.wakes_due(now):
            if await self.store.wake_run(run_id):
                log.info("run %s: its timer is due; it goes on", run_id)
        if not self.start_runs:
            return
        for run in await self.store.list_runs(status=RunStatus.PENDING, limit=100):
            if run.owner is None and self.engine.handle_of(run.run_id) is None:
                try:
                    await self.engine.resume(run.run_id, stale_only=True)
                except PodiumError as exc:  # another process took it first, say
                    log.info("run %s: not continued here: %s", run.run_id, exc.message)

    async def _going(self, s: ScheduleRecord) -> bool:
        """Whether the run of the schedule's last fired slot is still going."""
        if s.last_run_id is None:
            return False
        try:
            return (await self.store.get_run(s.last_run_id)).status in LIVE_RUN_STATUSES
        except RunNotFound:
            return False

    async def _fire(self, s: ScheduleRecord, slot: float) -> str:
        run_id = slot_run_id(s.id, slot)
        with contextlib.suppress(RunNotFound):
            await self.store.get_run(run_id)
            return run_id  # started before a crash: recorded now, never started twice
        workflow = workflow_from_dict(s.definition, source=f"schedule {s.id}")
        if self.start_runs:
            await self.engine.start(workflow, s.input, run_id=run_id,
                                    agents_source=s.agents_source)
        else:
            await self.engine.submit(workflow, s.input, run_id=run_id, queue=s.queue,
                                     agents_source=s.agents_source)
        self.fired.append(run_id)
        return run_id


    # --- lifecycle ------------------------------------------------------------
    async def aclose(self) -> None:
        await self.stop()

def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(s: ScheduleRecord) -> dict[str, Any]:
    """A schedule as ``podium schedule list --json`` shows it."""
    return {"id": s.id, "workflow": s.workflow, "cron": s.cron, "every_s": s.every_s,
            "tz": s.tz, "overlap": s.overlap, "catch_up": s.catch_up, "paused": s.paused,
            "next_at": s.next_at, "input": s.input, "queue": s.queue}
