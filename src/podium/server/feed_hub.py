"""One reader of the store's feed per ``podium serve``, shared by every ``GET /events``.

Each open stream used to read the feed itself about four times a second, whatever
happened: fifty open streams were two hundred feed queries a second on one
database (and, on PostgreSQL, a pool connection each time). ``FeedHub`` reads the
feed once per tick (``poll_s``), and at once when this process's bus says
something happened, and hands what it read to every stream:

- Each event is encoded once, as the bytes every stream sends (``Frame``).
- Each stream has its own queue of frames, bounded in events and in bytes
  (``backlog``, ``backlog_bytes``): a stream that falls further behind (a client
  that does not read) is cut off, its queue dropped, rather than allowed to hold
  memory; its connection is closed a moment later if it still has not taken its
  last bytes. A client that reconnects with ``Last-Event-ID`` goes on from there.
- The frames read last (up to ``history`` and ``history_bytes``) are kept, so a
  stream that starts at or
  comes back to a recent position joins without reading the database at all; one
  from further back reads the store for itself (``read_feed``, the old way) until
  it reaches a position the hub holds, then joins.
- With no stream open the hub reads nothing.

Filters (``types``) are the stream's own: the hub hands every frame to every
stream, which skips what it does not want. A run's own stream (``GET
/runs/{id}/events``) is handed that run's frames only; it reads the store when it
starts (the run's events so far) and when the run may have come to rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from podium.docs import event_doc
from podium.errors import PodiumError

if TYPE_CHECKING:
    from podium.events import Event
    from podium.store.base import EventFeed, FeedPosition

__all__ = ["FeedHub", "FeedHubConfig", "Frame", "Subscription", "feed_text"]

log = logging.getLogger("podium.server.feed")


def feed_text(position: FeedPosition) -> str:
    """An event id of ``GET /events``: ``<commit>-<number>-<run id>``."""
    return f"{position.tx}-{position.seq}-{position.run_id}"


@dataclass(frozen=True, slots=True)
class Frame:
    """One place in the feed: an event as every stream sends it, or (``type`` None) a
    position only (events of types this Podium does not know, left out)."""

    position: FeedPosition
    type: str | None
    wire: bytes
    event: Event | None = None  # for a run's own stream, whose ids and data differ

    @classmethod
    def of(cls, position: FeedPosition, event: Event) -> Frame:
        doc = {"run_id": event.run_id, **event_doc(event)}
        data = json.dumps(doc, default=str, separators=(",", ":"))
        return cls(position, event.type,
                   f"id: {feed_text(position)}\nevent: {event.type}\ndata: {data}\n\n"
                   .encode(), event)


def frames_of(page: Iterable[tuple[FeedPosition, Event]], scanned: FeedPosition,
              after: FeedPosition) -> list[Frame]:
    """A page of ``read_feed`` as frames; its end as a position-only frame when the page
    ended on events left out, so a reader can go on from there."""
    out = [Frame.of(at, event) for at, event in page]
    if scanned != after and (not out or out[-1].position != scanned):
        out.append(Frame(scanned, None, b""))
    return out


@dataclass(frozen=True)
class FeedHubConfig:
    # How often the feed is read while a stream is open and the bus says nothing (the
    # bus hears this process's own events only: workers' come with the tick).
    poll_s: float = 0.25
    page: int = 500  # events read at a time
    # Frames a stream may have waiting before it is cut off. Frames are shared, so a
    # waiting one costs a stream a reference; the bounds are on how much one slow
    # client keeps of what everyone else has long sent. Most events are a few hundred
    # bytes (10,000: a few MB); a run's output travels in its run_finished event, so
    # bytes are bounded too.
    backlog: int = 10_000
    backlog_bytes: int = 16 * 1024 * 1024
    # Frames kept for streams that start at a recent position (a reconnect).
    history: int = 10_000
    history_bytes: int = 16 * 1024 * 1024
    close_after_s: float = 5.0  # a cut-off stream's connection, if its client is stuck


@dataclass(eq=False)
class Subscription:
    """A stream's place in the hub: frames to send, and whether it was cut off."""

    run_id: str | None = None  # only this run's frames (GET /runs/{id}/events)
    queue: deque[Frame] = field(default_factory=deque)
    queued_bytes: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    cut: bool = False
    done: bool = False  # the stream ended (its generator's finally)
    close: Callable[[], None] | None = None  # drops the connection (uvicorn's transport)

    def put(self, frames: Iterable[Frame]) -> None:
        for frame in frames:
            self.queue.append(frame)
            self.queued_bytes += len(frame.wire)

    def take(self, most: int) -> list[Frame]:
        """Up to ``most`` frames, oldest first."""
        out = [self.queue.popleft() for _ in range(min(most, len(self.queue)))]
        self.queued_bytes -= sum(len(f.wire) for f in out)
        return out


class FeedHub:
    """The one follower of the feed (see the module's docstring); ``start``/``stop`` go
    with the server."""

    def __init__(self, store: EventFeed, subscribe: Callable[[Callable[[Any], None]],
                                                             Callable[[], None]],
                 config: FeedHubConfig | None = None) -> None:
        self.store = store
        self.config = config or FeedHubConfig()
        self._subscribe = subscribe
        self._subs: set[Subscription] = set()
        self.position: FeedPosition | None = None  # None: following nothing (no stream)
        self._history: deque[Frame] = deque()
        self._base = 0  # the absolute number of _history[0]
        self._index: dict[FeedPosition, int] = {}
        self._history_bytes = 0
        self._woken = asyncio.Event()
        self._wanted = asyncio.Event()  # a stream is open
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.reads = 0  # read_feed calls made by the hub (for tests and benchmarks)

    @property
    def streams(self) -> int:
        return len(self._subs)

    def start(self) -> None:
        self._unsubscribe = self._subscribe(lambda _event: self._woken.set())
        self._task = asyncio.get_running_loop().create_task(self._follow(),
                                                            name="podium:event-feed")

    async def stop(self, timeout_s: float = 5.0) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, timeout_s)
        for sub in list(self._subs):
            self._cut(sub)

    # --- streams ---------------------------------------------------------------------
    async def join_now(self, run_id: str | None = None) -> Subscription:
        """A stream that wants what is committed from now on (of one run, or all)."""
        if self.position is None:
            head = await self.store.feed_head()
            if self.position is None:  # (nobody came meanwhile)
                self.position = head
                self._reset_history()
        return self._register(self._base + len(self._history), run_id)

    def join(self, after: FeedPosition) -> Subscription | None:
        """A stream that has sent everything up to ``after``, joined with the frames
        that follow it; None when the hub holds no frame at ``after`` (the stream reads
        the store itself, then tries again). Synchronous: nothing is published between
        the look-up and the registration."""
        if self.position is None:  # nothing followed: start from this stream's place
            self.position = after
            self._reset_history()
            start = self._base
        elif after == self.position:
            start = self._base + len(self._history)
        elif after in self._index:
            start = self._index[after] + 1
        else:
            return None
        return self._register(start, None)

    def _register(self, start: int, run_id: str | None) -> Subscription:
        sub = Subscription(run_id=run_id)
        held = len(self._history)
        sub.put(f for f in (self._history[i - self._base]
                            for i in range(start, self._base + held))
                if run_id is None or f.position.run_id == run_id)
        self._subs.add(sub)
        self._wanted.set()
        if sub.queue:
            sub.wake.set()
        return sub

    def leave(self, sub: Subscription) -> None:
        sub.done = True
        self._subs.discard(sub)
        if not self._subs:
            # Nobody follows: stop reading, and let go of what was kept for them.
            self._wanted.clear()
            self.position = None
            self._reset_history()

    def _cut(self, sub: Subscription) -> None:
        sub.cut = True
        sub.queue.clear()
        sub.queued_bytes = 0
        sub.wake.set()
        self._subs.discard(sub)
        if sub.close is not None:
            close = sub.close

            def close_if_stuck() -> None:
                if not sub.done:
                    log.info("closing an event stream whose client stopped reading")
                    close()

            asyncio.get_running_loop().call_later(self.config.close_after_s, close_if_stuck)
        if not self._subs:
            self._wanted.clear()

    # --- the follower ----------------------------------------------------------------
    async def _follow(self) -> None:
        failing = False
        while True:
            await self._wanted.wait()
            try:
                await self._read_all()
                if failing:
                    log.info("the event feed is readable again")
                failing = False
            except PodiumError as exc:  # the database is down: streams stay open, quiet
                if not failing:
                    log.warning("the event feed cannot be read (%s); trying again every"
                                " %.2fs", exc, self.config.poll_s)
                failing = True
            except Exception:  # a bug: every stream would wait for ever on a dead task
                if not failing:
                    log.exception("reading the event feed failed; trying again every"
                                  " %.2fs", self.config.poll_s)
                failing = True
            self._woken.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self.config.poll_s)
            if self._woken.is_set():
                await asyncio.sleep(0.01)  # an event seen on the bus commits a moment later

    async def _read_all(self) -> None:
        while self.position is not None:
            after = self.position
            page, scanned = await self.store.read_feed(after, limit=self.config.page)
            self.reads += 1
            if self.position != after:
                return  # everyone left (and maybe came back) meanwhile: start again
            if scanned == after:
                return
            self._publish(frames_of(page, scanned, after))
            self.position = scanned
            # The streams send what they were given before the next page comes: a
            # store that answers without waiting (SQLite) would otherwise hand out a
            # whole burst at once, and cut off every stream, not only the slow ones.
            await asyncio.sleep(0)

    def _publish(self, frames: list[Frame]) -> None:
        for frame in frames:
            self._index[frame.position] = self._base + len(self._history)
            self._history.append(frame)
            self._history_bytes += len(frame.wire)
        while self._history and (len(self._history) > self.config.history
                                 or self._history_bytes > self.config.history_bytes):
            old = self._history.popleft()
            self._history_bytes -= len(old.wire)
            self._index.pop(old.position, None)
            self._base += 1
        most, most_bytes = self.config.backlog, self.config.backlog_bytes
        by_run: dict[str, list[Frame]] | None = None
        for sub in list(self._subs):
            mine = frames
            if sub.run_id is not None:
                if by_run is None:
                    by_run = {}
                    for frame in frames:
                        by_run.setdefault(frame.position.run_id, []).append(frame)
                mine = by_run.get(sub.run_id, [])
                if not mine:
                    continue
            sub.put(mine)
            if len(sub.queue) > most or sub.queued_bytes > most_bytes:
                self._cut(sub)
            else:
                sub.wake.set()

    def _reset_history(self) -> None:
        self._base += len(self._history)
        self._history.clear()
        self._history_bytes = 0
        self._index.clear()
