"""The feed of every committed event (``EventFeed``): what ``GET /events`` and
``podium runs --watch`` follow. Every backend gives each committed event exactly once,
in commit order, from any position a reader kept, and never one of a batch that was
fenced off; a reader polling while two writers commit misses nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from podium.events import StepStarted, StepSucceeded
from podium.store.base import FeedPosition, Store
from tests.contract.conftest import make_store
from tests.contract.test_store_contract import batch, new_run, started


def _key(p: FeedPosition) -> tuple[int, str, int]:
    return (p.tx, p.run_id, p.seq)


def step(run_id: str, step_id: str, ts: float = 3.0) -> StepStarted:
    return StepStarted(run_id=run_id, ts=ts, step_id=step_id, attempt=1, agent_id="x")


async def test_the_feed_gives_every_event_once_in_commit_order_from_any_position(
        store: Store) -> None:
    head0 = await store.feed_head()
    assert await store.read_feed(head0) == []
    await store.write_batch(batch([new_run("a1"), new_run("b1")],
                                  [started("b1"), started("a1"), step("a1", "s")]))
    await store.write_batch(batch(events=[step("b1", "s")], seq_from={"b1": 1}))
    await store.write_batch(batch(events=[step("a1", "t"), step("a1", "u")],
                                  seq_from={"a1": 2}))
    got = await store.read_feed(head0)
    assert [(e.run_id, e.type, getattr(e, "step_id", None)) for _, e in got] == [
        # within one commit: by run, then by number (PostgreSQL's order too)
        ("a1", "run_started", None), ("a1", "step_started", "s"), ("b1", "run_started", None),
        ("b1", "step_started", "s"),
        ("a1", "step_started", "t"), ("a1", "step_started", "u")]
    keys = [_key(p) for p, _ in got]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    assert [p.seq for p, _ in got] == [1, 2, 1, 2, 3, 4]
    assert _key(await store.feed_head()) == keys[-1]
    # From every position a reader may have kept: exactly what follows, in pages too.
    for i, (position, _) in enumerate(got):
        assert [_key(p) for p, _ in await store.read_feed(position)] == keys[i + 1:]
        assert [_key(p) for p, _ in await store.read_feed(position, limit=1)] == keys[i + 1:i + 2]
    assert await store.read_feed(head0, limit=0) == []


async def test_events_of_a_fenced_off_run_never_reach_the_feed(store: Store) -> None:
    now = await store.now()
    head0 = await store.feed_head()
    await store.write_batch(batch([new_run("f1", owner="a", lease=now + 60),
                                   new_run("f2", owner="a", lease=now + 60)],
                                  [started("f1"), started("f2")]))
    assert await store.claim_run(await store.get_run("f1"), "b", lease_s=60.0, recoveries=1,
                                 owner_dead=True)
    ok = [StepSucceeded(run_id=r, ts=3.0, step_id="a", attempt=1, agent_id="x", output=1,
                        duration_s=0.1, output_json="1") for r in ("f1", "f2")]
    zombie = batch(events=ok, seq_from={"f1": 1, "f2": 1})
    zombie.owner, zombie.epochs, zombie.fence = "a", {"f1": 0, "f2": 0}, True
    assert await store.write_batch(zombie) == {"f1"}
    got = [(e.run_id, e.type) for _, e in await store.read_feed(head0)]
    assert got == [("f1", "run_started"), ("f2", "run_started"), ("f2", "step_succeeded")]


async def test_a_reader_polling_while_two_writers_commit_misses_nothing_and_sees_nothing_twice(
        store: Store, backend: str, tmp_path: Path) -> None:
    """Two writers (on PostgreSQL two connection pools to one database; SQLite refuses a
    second store of one file in a process, and its reader in another process is
    ``podium runs --watch`` in tests/integration/test_api_feed.py) commit batches
    concurrently while a reader follows the feed from where it got to."""
    other = make_store(backend, tmp_path) if backend.startswith("postgresql") else store
    if other is not store:
        await other.open()
    try:
        head = await store.feed_head()
        writers_done = asyncio.Event()
        per_writer, runs = 40, {"w1": store, "w2": other}
        for rid, s in runs.items():
            await s.write_batch(batch([new_run(rid)], [started(rid)]))

        async def write(rid: str) -> None:
            for i in range(per_writer):
                await runs[rid].write_batch(batch(events=[step(rid, f"s{i}")],
                                                  seq_from={rid: i + 1}))
                await asyncio.sleep(0)

        seen: list[tuple[int, str, int]] = []

        async def read() -> None:
            position = head
            while True:
                done = writers_done.is_set()
                for p, _ in await store.read_feed(position, limit=7):
                    seen.append(_key(p))
                    position = p
                if done and len(seen) >= 2 * (per_writer + 1):
                    return
                await asyncio.sleep(0.001)

        reader = asyncio.create_task(read())
        await asyncio.gather(write("w1"), write("w2"))
        writers_done.set()
        await asyncio.wait_for(reader, 30)
        assert len(seen) == len(set(seen)) == 2 * (per_writer + 1)  # nothing twice
        assert seen == sorted(seen)
        for rid in runs:  # nothing missed, each run's events in its order
            assert [k[2] for k in seen if k[1] == rid] == list(range(1, per_writer + 2))
    finally:
        if other is not store:
            await other.close()
