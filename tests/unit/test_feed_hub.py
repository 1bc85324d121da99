"""``podium.server.feed_hub``: one reader of the feed shared by every ``GET /events``
stream, over a feed in memory that counts its reads."""

from __future__ import annotations

import asyncio
from typing import Any

from podium.events import Event, RunStarted
from podium.server.feed_hub import FeedHub, FeedHubConfig, Frame, Subscription, frames_of
from podium.store.base import FeedPosition


class Feed:
    """An ``EventFeed`` over a list; ``reads`` counts ``read_feed`` calls."""

    def __init__(self) -> None:
        self.rows: list[tuple[FeedPosition, Event]] = []
        self.reads = 0

    def add(self, n: int) -> None:
        for _ in range(n):
            tx = len(self.rows) + 1
            self.rows.append((FeedPosition(tx, f"r{tx}", 1),
                              RunStarted(run_id=f"r{tx}", ts=1.0, workflow="w", version=1)))

    async def read_feed(self, after: FeedPosition, *, limit: int = 500
                        ) -> tuple[list[tuple[FeedPosition, Event]], FeedPosition]:
        self.reads += 1
        page = [(p, e) for p, e in self.rows if p.tx > after.tx][:limit]
        return page, page[-1][0] if page else after

    async def feed_head(self) -> FeedPosition:
        return self.rows[-1][0] if self.rows else FeedPosition()


def _hub(feed: Feed, **config: Any) -> tuple[FeedHub, list[Any]]:
    wakers: list[Any] = []

    def subscribe(fn: Any) -> Any:
        wakers.append(fn)
        return lambda: wakers.remove(fn)

    return FeedHub(feed, subscribe, FeedHubConfig(poll_s=0.02, **config)), wakers


def _txs(frames: list[Frame]) -> list[int]:
    return [f.position.tx for f in frames]


async def _drain(sub: Subscription, until: int, within_s: float = 5.0) -> list[Frame]:
    got: list[Frame] = []

    async def go() -> None:
        while len(got) < until:
            await sub.wake.wait()
            sub.wake.clear()
            got.extend(sub.take(1000))

    await asyncio.wait_for(go(), within_s)
    return got


def test_many_streams_cost_the_feed_what_one_does() -> None:
    async def go() -> None:
        feed = Feed()
        hub, _ = _hub(feed)
        hub.start()
        try:
            await asyncio.sleep(0.2)
            assert feed.reads == 0  # no stream: nothing read
            subs = [hub.join(FeedPosition()) for _ in range(50)]
            assert all(s is not None for s in subs)
            feed.add(30)
            got = await asyncio.gather(*(_drain(s, 30) for s in subs if s is not None))
            assert all(_txs(g) == list(range(1, 31)) for g in got)
            before = feed.reads
            await asyncio.sleep(0.5)  # idle: a read a tick, for 50 streams as for 1
            assert feed.reads - before <= 0.5 / 0.02 + 2
            for s in subs:
                assert s is not None
                hub.leave(s)
            quiet = feed.reads
            await asyncio.sleep(0.2)
            assert feed.reads - quiet <= 1  # the last stream gone: reading stops
        finally:
            await hub.stop()

    asyncio.run(go())


def test_a_recent_position_joins_from_memory_an_old_one_does_not() -> None:
    async def go() -> None:
        feed = Feed()
        hub, _ = _hub(feed, history=10)
        hub.start()
        try:
            first = hub.join(FeedPosition())
            assert first is not None
            feed.add(25)
            await _drain(first, 25)
            recent = hub.join(feed.rows[19][0])  # 20th: the hub holds the last 10
            assert recent is not None
            assert _txs(list(recent.queue)) == list(range(21, 26))
            assert hub.join(feed.rows[5][0]) is None  # forgotten: read the store first
            assert hub.join(hub.position) is not None  # the head: nothing to send
        finally:
            await hub.stop()

    asyncio.run(go())


def test_a_stream_that_falls_behind_is_cut_off_and_its_queue_dropped() -> None:
    async def go() -> None:
        feed = Feed()
        hub, _ = _hub(feed, backlog=100, page=50)
        hub.start()
        try:
            slow = hub.join(FeedPosition())
            fast = hub.join(FeedPosition())
            assert slow is not None
            assert fast is not None
            closed: list[bool] = []
            slow.close = lambda: closed.append(True)
            feed.add(300)
            got = await _drain(fast, 300)
            assert _txs(got) == list(range(1, 301))  # the others: everything
            assert slow.cut
            assert not slow.queue
            assert slow.queued_bytes == 0
            assert hub.streams == 1
        finally:
            await hub.stop()

    asyncio.run(go())


def test_a_page_that_ends_on_unknown_events_still_moves_a_reader_on() -> None:
    start, end = FeedPosition(1, "a", 1), FeedPosition(3, "b", 2)
    frames = frames_of([], end, start)
    assert [(f.position, f.type, f.wire) for f in frames] == [(end, None, b"")]
    assert frames_of([], start, start) == []


def test_a_run_stream_is_handed_its_run_only_from_now_on() -> None:
    async def go() -> None:
        feed = Feed()
        feed.add(3)  # before: not handed out
        hub, _ = _hub(feed)
        hub.start()
        try:
            mine = await hub.join_now("r5")
            every = await hub.join_now()
            feed.add(4)  # r4 .. r7
            assert _txs(await _drain(every, 4)) == [4, 5, 6, 7]
            assert [f.position.run_id for f in mine.take(10)] == ["r5"]
            assert feed.reads >= 1
        finally:
            await hub.stop()

    asyncio.run(go())
