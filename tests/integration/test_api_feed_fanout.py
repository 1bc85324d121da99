"""``GET /events`` with many streams open at once, against a real ``podium serve`` (its
store's reads counted, ``counted_podium.py``) on SQLite and on PostgreSQL:

- 50 streams each get every event of the runs submitted meanwhile, once, in commit
  order: the same ids in the same order on every stream, each run's whole timeline;
- the database is read no more often with 50 idle streams than with 1 (one reader
  of the feed per process, not one per stream);
- a client that never reads is cut off (its connection dropped) while the others
  get everything;
- a client that reconnects with ``Last-Event-ID`` gets exactly what it missed.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.observe_tools import free_port
from tests.integration.podium_proc import Sandbox, wait_for
from tests.integration.test_api import HANG, RECORD, SLOW, Api, ready

COUNTED = Path(__file__).with_name("counted_podium.py")
Item = tuple[str, str, dict[str, Any]]  # (id, event, data)


def start_counted(sb: Sandbox, db: str | None = None, backlog: int | None = None
                  ) -> tuple[Api, Path]:
    """``podium serve`` with its store's reads counted in a file (see counted_podium)."""
    counts = sb.root / f"counts-{len(sb.procs)}.json"
    argv = sb.argv("serve", "--port", str(port := free_port()), agents=True, db=db)
    argv[1:3] = [str(COUNTED)]  # python counted_podium.py ... instead of python -m podium
    err = (sb.root / f"stderr-{len(sb.procs)}.txt").open("wb")
    (sb.root / f"stdout-{len(sb.procs)}.txt").write_bytes(b"")
    sb._files.append(err)
    env = sb.env() | {"PODIUM_COUNT_FILE": str(counts)}
    if backlog is not None:
        env["PODIUM_TEST_BACKLOG"] = str(backlog)
    proc = subprocess.Popen(argv, cwd=sb.root, env=env, stdout=subprocess.DEVNULL, stderr=err)
    sb.procs.append(proc)
    return ready(sb, proc, port), counts


def read_counts(path: Path) -> dict[str, float]:
    for _ in range(50):
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            time.sleep(0.05)
    raise AssertionError(f"no counts in {path}")


def rate(path: Path, seconds: float = 3.0) -> tuple[float, float]:
    """The server's store reads per second and CPU share over ``seconds``."""
    a = read_counts(path)
    time.sleep(seconds)
    b = read_counts(path)
    span = b["at"] - a["at"]
    reads = sum(b.get(k, 0) - a.get(k, 0) for k in ("read_feed", "feed_head", "get_events",
                                                     "get_run"))
    return reads / span, (b["cpu_s"] - a["cpu_s"]) / span


class Stream:
    """One ``GET /events`` client, parsing as an EventSource does."""

    def __init__(self, api: Api, params: dict[str, str] | None = None,
                 last: str | None = None) -> None:
        self.api, self.params, self.last = api, params, last
        self.items: list[Item] = []
        self.opened = asyncio.Event()

    async def read(self, client: httpx.AsyncClient, stop: Any) -> list[Item]:
        headers = {**self.api.headers(), **({"Last-Event-ID": self.last} if self.last else {})}
        async with client.stream("GET", f"{self.api.url}/events", headers=headers,
                                 params=self.params) as r:
            assert r.status_code == 200, await r.aread()
            fields: dict[str, str] = {}
            async for line in r.aiter_lines():
                if line.startswith(":"):
                    self.opened.set()
                    continue
                if line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
                    continue
                if "data" in fields:
                    self.items.append((fields["id"], fields["event"], json.loads(fields["data"])))
                fields = {}
                if stop(self.items):
                    break
        return self.items


def _finished(runs: set[str]) -> Any:
    return lambda items: runs <= {d["run_id"] for _, e, d in items if e == "run_finished"}


async def _open(api: Api, n: int, client: httpx.AsyncClient, stop: Any
                ) -> tuple[list[Stream], list[asyncio.Task[list[Item]]]]:
    streams = [Stream(api) for _ in range(n)]
    tasks = [asyncio.create_task(s.read(client, stop)) for s in streams]
    await asyncio.wait_for(asyncio.gather(*(s.opened.wait() for s in streams)), 30)
    return streams, tasks


def _check_timelines(api: Api, items: list[Item], runs: list[str]) -> None:
    ids = [i for i, _, _ in items]
    assert len(set(ids)) == len(ids)  # nothing twice
    for run_id in runs:  # nothing missed: each run's whole timeline, in order
        timeline = api.get(f"/runs/{run_id}").json()["timeline"]
        mine = [e for _, e, d in items if d["run_id"] == run_id]
        assert mine == [t["type"] for t in timeline], run_id


def _fifty_streams(api: Api, counts: Path, submit: Any) -> dict[str, float]:
    """Open 50 streams, submit runs, check every stream got the same, whole, feed;
    measure the idle read rate with 1 stream and with 50."""
    figures: dict[str, float] = {}

    async def go() -> None:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            never: Any = lambda items: False  # noqa: E731  # read until cancelled
            _one, one_tasks = await _open(api, 1, client, never)
            await asyncio.sleep(1.0)  # settled
            figures["reads_1"], figures["cpu_1"] = await asyncio.to_thread(rate, counts)
            one_tasks[0].cancel()
            await asyncio.gather(*one_tasks, return_exceptions=True)

            box: dict[str, set[str]] = {"runs": set()}
            stop = lambda items: bool(box["runs"]) and _finished(box["runs"])(items)  # noqa: E731
            streams, tasks = await _open(api, 50, client, never)
            await asyncio.sleep(1.0)
            figures["reads_50"], figures["cpu_50"] = await asyncio.to_thread(rate, counts)
            runs = await asyncio.to_thread(submit)
            box["runs"] = set(runs)
            assert await asyncio.to_thread(
                wait_for, lambda: all(stop(s.items) for s in streams), 120, 0.1), [
                len(s.items) for s in streams]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            reference = [i for i, _, _ in streams[0].items]
            for s in streams:
                assert [i for i, _, _ in s.items] == reference  # same events, same order
            await asyncio.to_thread(_check_timelines, api, streams[0].items, runs)
            figures["events"] = len(reference)

    asyncio.run(go())
    return figures


def _report(db: str, figures: dict[str, float]) -> None:
    print(f"\n{db}: idle store reads/s 1 stream {figures['reads_1']:.1f},"
          f" 50 streams {figures['reads_50']:.1f}; CPU {figures['cpu_1']:.1%} /"
          f" {figures['cpu_50']:.1%}; {figures['events']:.0f} events on each of 50 streams")


def _assert_flat(figures: dict[str, float]) -> None:
    # One reader per process: 50 streams read as often as 1 (4 reads a second, a tick).
    assert figures["reads_50"] <= figures["reads_1"] * 1.5 + 2, figures
    assert figures["reads_50"] < 10, figures


def test_fifty_streams_get_every_event_once_in_order_reading_the_db_as_one(
        sandbox: Sandbox) -> None:
    api, counts = start_counted(sandbox)

    def submit() -> list[str]:
        return [api.post("/runs", {"definition": SLOW if i == 0 else RECORD,
                                   "input": None if i == 0 else {"n": i}}).json()["run_id"]
                for i in range(8)]

    figures = _fifty_streams(api, counts, submit)
    _report("SQLite", figures)
    _assert_flat(figures)


@pytest.mark.postgres
def test_fifty_streams_on_postgres_with_a_worker(sandbox: Sandbox, pg_url: str) -> None:
    api, counts = start_counted(sandbox, db=pg_url)
    sandbox.spawn("worker", "--name", "w1", agents=True, db=pg_url)

    def submit() -> list[str]:
        return [api.post("/runs", {"definition": RECORD, "input": {"n": i}}).json()["run_id"]
                for i in range(8)]

    figures = _fifty_streams(api, counts, submit)
    _report("PostgreSQL", figures)
    _assert_flat(figures)


# 100 steps: about 300 events a run, 80 runs about 4.5 MB of stream: more than the
# kernel buffers for a client that does not read (3 MB on loopback here) and the backlog.
WIDE = {"name": "wide", "mode": "parallel",
        "steps": [{"id": f"s{i:03d}", "agent": "record"} for i in range(100)]}
BACKLOG = 1000
RUNS = 80


@pytest.mark.timeout(240)
def test_a_client_that_never_reads_is_cut_off_and_the_others_get_everything(
        sandbox: Sandbox) -> None:
    api, _counts = start_counted(sandbox, backlog=BACKLOG)
    stuck = socket.socket()
    # A small window, set before the connection: what the kernel takes for it is small.
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", int(api.url.rsplit(":", 1)[1])))
    stuck.sendall(b"GET /events HTTP/1.1\r\nHost: " + api.url.split("//")[1].encode()
                  + b"\r\n\r\n")
    try:
        async def go() -> tuple[list[Item], list[str]]:
            async with httpx.AsyncClient(timeout=120) as client:
                box: dict[str, set[str]] = {"runs": set()}
                _streams, tasks = await _open(api, 3, client, lambda items: bool(
                    box["runs"]) and _finished(box["runs"])(items))

                def submit() -> list[str]:
                    return [api.post("/runs", {"definition": WIDE}).json()["run_id"]
                            for _ in range(RUNS)]

                runs = await asyncio.to_thread(submit)
                box["runs"] = set(runs)
                done = await asyncio.wait_for(asyncio.gather(*tasks), 240)
                assert done[0] == done[1] == done[2]
                return done[0], runs

        t0 = time.monotonic()
        items, runs = asyncio.run(go())
        print(f"\n{len(items)} events in {time.monotonic() - t0:.1f}s")
        assert len(items) > 10 * BACKLOG  # far more than a stream may fall behind
        _check_timelines(api, items, runs)
        # The stuck client's connection was dropped: reading it now ends (EOF or reset)
        # long before it could hold what the others got.
        stuck.settimeout(10)  # less than the keep-alive comment's 15 s
        got = _read_to_the_end(stuck)  # a timeout here: the connection is still open
        whole = sum(len(json.dumps(d)) for _, _, d in items)
        print(f"the stuck client had {got} bytes of {whole}")
        assert got < whole, (got, whole)
        assert "stopped reading" in sandbox.stderr_of(api.proc)
    finally:
        stuck.close()


def _read_to_the_end(sock: socket.socket) -> int:
    """Bytes read until the peer closed (EOF) or reset the connection."""
    got = 0
    try:
        while chunk := sock.recv(65536):
            got += len(chunk)
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"still open after {got} bytes") from None
    return got


def test_a_client_that_reconnects_with_last_event_id_gets_exactly_what_it_missed(
        sandbox: Sandbox) -> None:
    api, _counts = start_counted(sandbox)

    async def go() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            box: dict[str, set[str]] = {"runs": set()}
            stop = lambda items: bool(box["runs"]) and _finished(box["runs"])(items)  # noqa: E731
            _whole, (whole_task,) = await _open(api, 1, client, stop)
            (part,), (part_task,) = await _open(api, 1, client, lambda items: len(items) >= 7)
            first = await asyncio.to_thread(lambda: [api.post(
                "/runs", {"definition": RECORD, "input": {"n": i}}).json()["run_id"]
                for i in range(3)])
            await asyncio.wait_for(part_task, 30)  # dropped after 7 events
            more = await asyncio.to_thread(lambda: [api.post(
                "/runs", {"definition": RECORD, "input": {"n": i}}).json()["run_id"]
                for i in range(3)])
            box["runs"] = set(first + more)
            everything = await asyncio.wait_for(whole_task, 60)
            # Back while the others ran: from a recent position (the server holds it)...
            rest = await Stream(api, last=part.items[-1][0]).read(client, stop)
            assert part.items + rest == everything
            # ... and from long ago: the store, for this client, then the shared reader.
            old = await Stream(api, params={"after": "0"}).read(client, stop)
            assert old == everything
            await asyncio.to_thread(_check_timelines, api, everything, first + more)

    asyncio.run(go())



def test_fifty_streams_of_one_run_read_the_db_as_one_and_all_end_alike(
        sandbox: Sandbox) -> None:
    """``GET /runs/{id}/events`` (the dashboard's run page) shares the one reader too: a
    live run watched by 50 streams costs the store what 1 stream does while it waits,
    and every stream gets the run's whole timeline, then ``end``."""
    _fifty_run_streams(sandbox, None)


@pytest.mark.postgres
def test_fifty_streams_of_one_run_on_postgres_with_a_worker(sandbox: Sandbox,
                                                            pg_url: str) -> None:
    _fifty_run_streams(sandbox, pg_url)


def _fifty_run_streams(sandbox: Sandbox, db: str | None) -> None:
    api, counts = start_counted(sandbox, db=db)
    if db is not None:
        sandbox.spawn("worker", "--name", "w1", agents=True, db=db)
    run_id = api.post("/runs", {"definition": HANG}).json()["run_id"]
    api.until_status(run_id, "running")
    figures: dict[str, float] = {}

    async def read(client: httpx.AsyncClient, opened: asyncio.Event
                   ) -> list[tuple[str | None, str, str]]:
        out: list[tuple[str | None, str, str]] = []
        async with client.stream("GET", f"{api.url}/runs/{run_id}/events",
                                 headers=api.headers()) as r:
            assert r.status_code == 200
            fields: dict[str, str] = {}
            async for line in r.aiter_lines():
                if line.startswith(":"):
                    opened.set()
                    continue
                if line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
                    continue
                if fields:
                    out.append((fields.get("id"), fields.get("event", ""), fields["data"]))
                    if fields.get("event") == "end":
                        return out
                fields = {}
        return out

    async def go() -> list[list[tuple[str | None, str, str]]]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=100)
                                     ) as client:
            tasks = []
            for n in (1, 50):
                while len(tasks) < n:
                    opened = asyncio.Event()
                    tasks.append(asyncio.create_task(read(client, opened)))
                    await asyncio.wait_for(opened.wait(), 30)
                await asyncio.sleep(1.0)
                figures[f"reads_{n}"], figures[f"cpu_{n}"] = await asyncio.to_thread(
                    rate, counts)
            assert (await asyncio.to_thread(api.post, f"/runs/{run_id}/cancel")
                    ).status_code == 202
            return await asyncio.wait_for(asyncio.gather(*tasks), 60)

    got = asyncio.run(go())
    print(f"\nGET /runs/{{id}}/events, {'PostgreSQL' if db else 'SQLite'}: idle store"
          " reads/s 1 stream"
          f" {figures['reads_1']:.1f}, 50 streams {figures['reads_50']:.1f}; CPU"
          f" {figures['cpu_1']:.1%} / {figures['cpu_50']:.1%}")
    assert figures["reads_50"] <= figures["reads_1"] * 1.5 + 2, figures
    timeline = api.get(f"/runs/{run_id}").json()["timeline"]
    for items in got:
        assert items == got[0]  # every stream alike
    assert [e for _, e, _ in got[0]] == [t["type"] for t in timeline] + ["end"]
    assert [i for i, _, _ in got[0][:-1]] == [str(n) for n in range(1, len(timeline) + 1)]
    assert json.loads(got[0][-1][2]) == {"status": "cancelled"}
