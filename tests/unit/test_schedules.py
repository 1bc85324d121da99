"""Schedules: slots from cron (in a time zone) or an interval, each fired at most once.

The scheduler runs against a real engine and the memory store, whose clock is the
test's (time is the store's, as the firer's is); the process side (a server killed
across slots) is in tests/integration/test_schedules_cli.py.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from podium import Engine, EngineConfig
from podium.definition import workflow_from_dict
from podium.errors import ConfigError
from podium.scheduler import Scheduler, check_cron, next_slot, slot_run_id
from podium.store.base import ScheduleRecord
from podium.store.memory import MemoryStore
from tests.conftest import registry_of

T0 = 1_800_000_000.0  # a round epoch second (2027-01-15)
WF = {"name": "job", "steps": [{"id": "a", "agent": "work", "input": "${{ input }}"}]}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def _schedule(**kw: Any) -> ScheduleRecord:
    s = ScheduleRecord(id="job", workflow="job", definition=WF, input={"k": 1},
                       created_at=T0, **{"every_s": 60.0, **kw})
    s.next_at = next_slot(s, T0)
    return s


class Fixture:
    def __init__(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore(clock=self.clock)
        self.calls: list[Any] = []
        self.hold = asyncio.Event()
        self.hold.set()

        async def work(task: Any) -> Any:
            self.calls.append(task.run_id)
            await self.hold.wait()
            return task.input

        self.engine = Engine(EngineConfig(registry=registry_of(work=work), store=self.store))
        self.scheduler = Scheduler(self.engine, self.store, lead=None, start_runs=True)

    async def at(self, offset: float) -> None:
        """Move the store's clock to T0 + offset and let the scheduler look once."""
        self.clock.now = T0 + offset
        await self.scheduler.round()
        for _ in range(20):
            await asyncio.sleep(0)

    async def slots(self) -> list[tuple[float, str, str | None]]:
        return sorted((s.slot - T0, s.status, s.run_id)
                      for s in await self.store.schedule_slots("job", limit=5000))


@pytest.fixture
async def fx() -> Any:
    f = Fixture()
    async with f.engine:
        yield f


async def test_each_slot_fires_once_with_a_run_id_of_its_own(fx: Fixture) -> None:
    await fx.store.add_schedule(_schedule())
    await fx.at(30)
    assert fx.calls == []  # not yet
    await fx.at(61)
    await fx.at(62)  # looked at again: the slot is done
    assert await fx.slots() == [(60.0, "fired", slot_run_id("job", T0 + 60))]
    run = await fx.store.get_run(slot_run_id("job", T0 + 60))
    assert run.status == "succeeded"
    assert run.output == {"a": {"k": 1}}
    assert fx.calls == [run.run_id]
    assert (await fx.store.get_schedule("job")).next_at == T0 + 120


async def test_after_downtime_only_the_latest_catch_up_late_slots_fire(fx: Fixture) -> None:
    await fx.store.add_schedule(_schedule(catch_up=2, overlap="allow"))
    await fx.at(600 + 5)  # 10 slots reached at once; 60..540 are late (over 60 s)
    got = await fx.slots()
    assert [s for s in got if s[1] == "missed"] == [(t, "missed", None)
                                                    for t in range(60, 421, 60)]
    fired = [t for t, status, _ in got if status == "fired"]
    assert fired == [480.0, 540.0, 600.0]  # the 2 latest late ones, and the on-time ones
    assert len(fx.calls) == 3


async def test_overlap_skip_queue_and_allow(fx: Fixture) -> None:
    fx.hold.clear()  # runs stay going
    await fx.store.add_schedule(_schedule())
    await fx.at(61)
    await fx.at(121)  # the first run still going: skipped
    assert [s[1] for s in await fx.slots()] == ["fired", "skipped"]
    await fx.store.delete_schedule("job")

    await fx.store.add_schedule(_schedule(overlap="queue"))
    await fx.at(181)  # 60 and 120 are late (catch_up 1: 120 fires), 180 waits for it
    assert [s[:2] for s in await fx.slots()] == [(60.0, "missed"), (120.0, "fired")]
    assert (await fx.store.get_schedule("job")).next_at == T0 + 180
    await fx.at(241)  # still going: the slot waits, nothing recorded
    assert len(await fx.slots()) == 2
    fx.hold.set()
    for _ in range(50):
        await asyncio.sleep(0)
    await fx.at(245)  # the last run ended: the queued slot fires, late; 240 queues
    assert (await fx.slots())[-1][:2] == (180.0, "fired")
    assert (await fx.store.get_schedule("job")).next_at == T0 + 240

    await fx.store.delete_schedule("job")
    fx.hold.clear()
    await fx.store.add_schedule(_schedule(overlap="allow", catch_up=10))
    await fx.at(301)
    await fx.at(361)
    assert [s[1] for s in await fx.slots()][-2:] == ["fired", "fired"]
    fx.hold.set()


async def test_a_run_started_before_a_crash_is_recorded_not_started_again(fx: Fixture) -> None:
    await fx.store.add_schedule(_schedule())
    # A firer started the slot's run and died before recording the slot.
    run_id = slot_run_id("job", T0 + 60)
    await fx.engine.run(workflow_from_dict(WF), {"k": 1}, run_id=run_id)
    assert fx.calls == [run_id]
    await fx.at(61)
    assert await fx.slots() == [(60.0, "fired", run_id)]
    assert fx.calls == [run_id]  # once


async def test_a_paused_schedule_does_not_fire(fx: Fixture) -> None:
    await fx.store.add_schedule(_schedule())
    await fx.store.set_schedule_paused("job", True)
    await fx.at(200)
    assert await fx.slots() == []
    assert fx.calls == []


def test_cron_slots_in_a_time_zone_across_daylight_saving() -> None:
    paris = ZoneInfo("Europe/Paris")
    s = ScheduleRecord(id="n", workflow="w", definition={}, input=None, cron="30 2 * * *",
                       tz="Europe/Paris")
    # 29 March 2026: 02:00 -> 03:00 in Paris. The 02:30 slot comes at 03:00, once.
    start = datetime(2026, 3, 28, 12, 0, tzinfo=paris).timestamp()
    slots = [next_slot(s, start)]
    for _ in range(2):
        slots.append(next_slot(s, slots[-1]))
    local = [datetime.fromtimestamp(x, paris).strftime("%m-%d %H:%M %Z") for x in slots]
    assert local == ["03-29 03:00 CEST", "03-30 02:30 CEST", "03-31 02:30 CEST"]
    # 25 October 2026: 03:00 -> 02:00; 02:30 happens twice, the slot fires once.
    start = datetime(2026, 10, 24, 12, 0, tzinfo=paris).timestamp()
    a = next_slot(s, start)
    b = next_slot(s, a)
    assert b - a >= 23 * 3600


@pytest.mark.parametrize(("expr", "tz", "message"), [
    ("61 * * * *", "UTC", "--cron '61 * * * *': Bad minute"),
    ("0 0 31 2 *", "UTC", "--cron '0 0 31 2 *'"),
    ("* * *", "UTC", "--cron '* * *'"),
    ("0 2 * * *", "Mars/Olympus", "--tz 'Mars/Olympus': no such time zone"),
])
def test_bad_cron_and_time_zone_name_the_flag(expr: str, tz: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_cron(expr, tz)
    assert message in info.value.message
    assert "fix:" in info.value.message


async def test_skip_keeps_skipping_however_many_slots_the_run_outlasts(fx: Fixture) -> None:
    fx.hold.clear()
    await fx.store.add_schedule(_schedule(overlap="skip"))
    for k in range(1, 15):
        await fx.at(60 * k + 1)
    statuses = [s[1] for s in await fx.slots()]
    assert statuses == ["fired"] + ["skipped"] * 13
    assert len(fx.calls) == 1
    fx.hold.set()


async def test_a_long_downtime_fires_only_the_latest_catch_up_slots(fx: Fixture) -> None:
    await fx.store.add_schedule(_schedule(catch_up=1, overlap="allow"))
    for extra in (0.5, 1.0, 1.5, 2.0):
        await fx.at(60 * 2500 + extra)
    got = await fx.slots()
    fired = [t for t, status, _ in got if status == "fired"]
    assert fired == [60.0 * 2500 - 60, 60.0 * 2500]  # the latest late one, the on-time one
    missed = [t for t, status, _ in got if status == "missed"]
    # The latest missed ones, each (over a thousand); the older ones only counted.
    assert 1000 <= len(missed) < 1100
    assert missed == [60.0 * k for k in range(2499 - len(missed), 2499)]
    assert (await fx.store.get_schedule("job")).next_at == T0 + 60 * 2501
    assert len(fx.calls) == 2


async def test_a_cron_schedule_after_a_long_downtime(fx: Fixture) -> None:
    s = ScheduleRecord(id="job", workflow="job", definition=WF, input={"k": 1},
                       cron="* * * * *", created_at=T0, overlap="allow", catch_up=2)
    s.next_at = next_slot(s, T0)
    await fx.store.add_schedule(s)
    for extra in (5.0, 6.0, 7.0):
        await fx.at(86_400 + extra)  # a day of minutes
    fired = [t for t, status, _ in await fx.slots() if status == "fired"]
    assert len(fired) == 3  # two late, one on time
    assert len(fx.calls) == 3


async def test_a_stop_during_a_firing_lets_its_slot_be_recorded(fx: Fixture) -> None:
    """A stop (a worker's SIGTERM) that comes between a slot's run starting and the slot
    being recorded waits for the record: no run is left that no slot names. A stop
    while the scheduler only waits is at once."""
    recording = asyncio.Event()
    go_on = asyncio.Event()
    record_slot = fx.store.record_slot

    async def slow_record(*args: Any, **kw: Any) -> bool:
        recording.set()
        await go_on.wait()
        return await record_slot(*args, **kw)

    fx.store.record_slot = slow_record  # type: ignore[method-assign]
    await fx.store.add_schedule(_schedule())
    fx.clock.now = T0 + 61
    fx.scheduler.interval_s = fx.scheduler.idle_s = 3600.0
    fx.scheduler.start()
    await asyncio.wait_for(recording.wait(), 5)
    stopping = asyncio.ensure_future(fx.scheduler.stop())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not stopping.done()  # waiting for the record, not cutting it
    go_on.set()
    await asyncio.wait_for(stopping, 5)
    assert await fx.slots() == [(60.0, "fired", slot_run_id("job", T0 + 60))]
    fx.scheduler.start()  # sleeping till its next look (an hour): stopped at once
    for _ in range(20):
        await asyncio.sleep(0)
    await asyncio.wait_for(fx.scheduler.stop(), 1)
