"""The PostgreSQL store beyond the contract suite: what many workers need of it, and
what a user sees when the database is wrong (bad URL, unreachable, newer, not Podium's).

Everything runs against the session's throwaway cluster (tests/pg.py), a fresh
database per test; the CLI cases run ``python -m podium`` in a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from podium.errors import WorkerNameTaken
from podium.store.base import Batch, RunRow, WorkerInfo
from podium.store.postgres import SCHEMA_VERSION, PostgresStore

pytestmark = pytest.mark.postgres

DEF = {"name": "w", "steps": [{"id": "a", "agent": "x"}]}


def _sql(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, args)
        return cur.fetchall() if cur.description else []


def _podium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "podium", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)


def _pending(run_id: str, *, created: float, queue: str = "default",
             needs: tuple[str, ...] = ()) -> RunRow:
    return RunRow(run_id, "pending", "null", None, None, None, "execute", "w", 1, DEF, "{}",
                  created, None, None, {}, queue, needs)


async def _store(url: str) -> PostgresStore:
    store = PostgresStore.from_url(url)
    await store.open()
    return store


def _worker(wid: str, lease_s: float = 5.0) -> WorkerInfo:
    return WorkerInfo(id=wid, host="h", pid=1, lease_s=lease_s)


# --- bad URLs and bad databases: exit 2 or 3, a message, no password ---------------------


@pytest.mark.parametrize(("query", "words"), [
    ("bogus=1", "unknown option bogus"),
    ("pool_max=0", "pool_max='0'"),
    ("schema=Bad-Name", "schema='Bad-Name'"),
    ("notify=maybe", "notify='maybe'"),
    ("schema=a&schema=b", "schema is given twice"),
])
def test_a_bad_url_option_exits_2_naming_it(tmp_path: Path, query: str, words: str) -> None:
    out = _podium(tmp_path, "runs", "--db", f"postgresql://u:hunter2-secret@127.0.0.1:1/x?{query}")
    assert out.returncode == 2, out.stderr
    assert words in out.stderr
    assert "hunter2-secret" not in out.stderr + out.stdout
    assert "Traceback" not in out.stderr


def test_an_overlong_url_exits_2_in_a_short_message(tmp_path: Path) -> None:
    import os

    env = dict(os.environ, PODIUM_DB="postgresql://u@127.0.0.1:1/" + "x" * 100_000)
    out = subprocess.run([sys.executable, "-m", "podium", "runs"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2, out.stderr
    assert "too long" in out.stderr
    assert len(out.stderr) < 1000


def test_an_unreachable_server_exits_3_with_its_address_and_no_password(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens there once closed
    out = _podium(tmp_path, "runs", "--json", "--db",
                  f"postgresql://u:hunter2-secret@127.0.0.1:{port}/x?connect_timeout=3")
    assert out.returncode == 3, out.stderr
    assert str(port) in out.stderr
    assert "127.0.0.1" in out.stderr
    assert "hunter2-secret" not in out.stderr + out.stdout
    assert "Traceback" not in out.stderr
    assert json.loads(out.stdout)["error"]["message"]


def test_an_unknown_database_exits_3_with_the_servers_message(tmp_path: Path,
                                                              pg_url: str) -> None:
    url = pg_url.rsplit("/", 1)[0] + "/no_such_db"
    out = _podium(tmp_path, "runs", "--db", url)
    assert out.returncode == 3, out.stderr
    assert "no_such_db" in out.stderr
    assert "does not exist" in out.stderr


def test_db_upgrade_migrates_once_and_a_newer_database_is_refused(tmp_path: Path,
                                                                  pg_url: str) -> None:
    out = _podium(tmp_path, "db", "upgrade", "--db", pg_url, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["schema_version"] == SCHEMA_VERSION
    assert _sql(pg_url, "SELECT value FROM podium_meta WHERE key = 'schema_version'") == [
        (str(SCHEMA_VERSION),)]
    again = _podium(tmp_path, "db", "upgrade", "--db", pg_url)
    assert again.returncode == 0
    assert "applied" not in again.stdout
    _sql(pg_url, "UPDATE podium_meta SET value = '99' WHERE key = 'schema_version'")
    for args in (["runs"], ["db", "upgrade"]):
        newer = _podium(tmp_path, *args, "--db", pg_url)
        assert newer.returncode == 3, newer.stderr
        assert "schema 99" in newer.stderr
        assert f"up to {SCHEMA_VERSION}" in newer.stderr


def test_a_schema_with_tables_that_are_not_podiums_is_left_untouched(tmp_path: Path,
                                                                     pg_url: str) -> None:
    _sql(pg_url, "CREATE TABLE customers (id int)")
    out = _podium(tmp_path, "db", "upgrade", "--db", pg_url)
    assert out.returncode == 3, out.stderr
    assert "customers" in out.stderr
    assert "schema=podium" in out.stderr
    assert _sql(pg_url, "SELECT to_regclass('runs') IS NULL") == [(True,)]
    # A schema of its own in the same database is fine.
    ok = _podium(tmp_path, "db", "upgrade", "--db", pg_url + "?schema=podium")
    assert ok.returncode == 0, ok.stderr
    assert _sql(pg_url, "SELECT to_regclass('podium.runs') IS NOT NULL") == [(True,)]


# --- what workers need: claims, names, wake-ups, one leader -----------------------------


async def test_concurrent_claimers_never_take_one_run_twice(pg_url: str) -> None:
    stores = [await _store(pg_url) for _ in range(4)]
    try:
        submit = stores[0]
        await submit.write_batch(Batch(new_runs=[_pending(f"r{i:03d}", created=float(i))
                                                 for i in range(200)]))
        for i, s in enumerate(stores):
            await s.register_worker(_worker(f"w{i}"))

        async def drain(s: PostgresStore, wid: str) -> list[str]:
            got: list[str] = []
            while True:
                runs = await s.claim_runs(wid, queues=["default"], capabilities=[], limit=3)
                if not runs:
                    return got
                got += [r.run_id for r in runs]
                assert all(r.owner == wid and r.epoch == 1 for r in runs)

        taken = await asyncio.gather(*(drain(s, f"w{i}") for i, s in enumerate(stores)))
        counts = Counter(r for got in taken for r in got)
        assert len(counts) == 200
        assert max(counts.values()) == 1
        assert all(got for got in taken), "a claimer got nothing: the claims did not overlap"
    finally:
        for s in stores:
            await s.close()


async def test_claims_take_only_their_queues_and_needs_and_oldest_first(pg_url: str) -> None:
    store = await _store(pg_url)
    try:
        await store.write_batch(Batch(new_runs=[
            _pending("old", created=1.0, needs=("summarise",)),
            _pending("other-queue", created=0.5, queue="reports"),
            _pending("needs-gpu", created=0.7, needs=("gpu",)),
            _pending("new", created=2.0, needs=("@echo",))]))
        await store.register_worker(_worker("w"))
        runs = await store.claim_runs("w", queues=["default"],
                                      capabilities={"summarise", "@echo"}, limit=10)
        assert [r.run_id for r in runs] == ["old", "new"]
        await store.register_worker(_worker("gpu-box"))
        await store.register_worker(_worker("reporter"))
        _sql(pg_url, "UPDATE runs SET created_at = 0 WHERE run_id = 'needs-gpu'")
        assert await store.missing_capabilities(0.0) == {"needs-gpu": ["gpu"]}
        gpu = await store.claim_runs("gpu-box", queues=["default"], capabilities={"gpu"},
                                     limit=10)
        assert [r.run_id for r in gpu] == ["needs-gpu"]
        rep = await store.claim_runs("reporter", queues=["reports"], capabilities=(), limit=10)
        assert [r.run_id for r in rep] == ["other-queue"]
    finally:
        await store.close()


async def test_a_dead_workers_runs_are_taken_over_after_its_lease_and_a_poison_backoff(
        pg_url: str) -> None:
    store = await _store(pg_url)
    try:
        await store.write_batch(Batch(new_runs=[_pending("r", created=1.0)]))
        await store.register_worker(_worker("a", lease_s=1.0))
        (run,) = await store.claim_runs("a", queues=["default"], capabilities=(), limit=1)
        await store.register_worker(_worker("b", lease_s=1.0))
        assert await store.claim_runs("b", queues=["default"], capabilities=(), limit=1) == []
        await asyncio.sleep(1.2)  # a stopped renewing: its lease ran out
        (taken,) = await store.claim_runs("b", queues=["default"], capabilities=(), limit=1)
        assert (taken.owner, taken.epoch, taken.recoveries) == ("b", 2, 1)
        # b dies too: the next takeover waits its lease *and* 1 s of backoff.
        await store.register_worker(_worker("c", lease_s=1.0))
        await asyncio.sleep(1.2)
        assert await store.claim_runs("c", queues=["default"], capabilities=(), limit=1) == []
        await asyncio.sleep(1.1)
        (again,) = await store.claim_runs("c", queues=["default"], capabilities=(), limit=1)
        assert (again.owner, again.recoveries) == ("c", 2)
        # a, frozen all along, wakes and writes: fenced off, nothing of it lands.
        lost = await store.write_batch(Batch(owner="a", epochs={"r": run.epoch}))
        assert lost == {"r"}
    finally:
        await store.close()


async def test_a_live_workers_name_is_refused_and_a_dead_ones_taken_with_its_runs(
        pg_url: str) -> None:
    store = await _store(pg_url)
    try:
        await store.write_batch(Batch(new_runs=[_pending("r", created=1.0)]))
        await store.register_worker(_worker("w-1", lease_s=1.0))
        await store.claim_runs("w-1", queues=["default"], capabilities=(), limit=1)
        with pytest.raises(WorkerNameTaken, match="w-1"):
            await store.register_worker(_worker("w-1", lease_s=1.0))
        await asyncio.sleep(1.2)
        await store.register_worker(_worker("w-1", lease_s=1.0))  # the old one died
        ((owner, recoveries, epoch),) = _sql(
            pg_url, "SELECT owner, recoveries, epoch FROM runs WHERE run_id = 'r'")
        assert (owner, recoveries, epoch) == (None, 1, 2)
        (w,) = await store.list_workers()
        assert (w.id, w.runs_held) == ("w-1", 0)
        await store.unregister_worker("w-1")
        assert await store.list_workers() == []
    finally:
        await store.close()


async def test_listeners_hear_submits_and_cancels_and_come_back_after_a_cut(
        pg_url: str) -> None:
    worker, client = await _store(pg_url), await _store(pg_url)
    heard: list[tuple[str, str]] = []
    got = asyncio.Event()

    def on_notice(kind: str, arg: str) -> None:
        heard.append((kind, arg))
        got.set()

    async def next_notice() -> tuple[str, str]:
        await asyncio.wait_for(got.wait(), 10)
        got.clear()
        return heard[-1]

    try:
        await worker.listen(on_notice)
        await client.write_batch(Batch(new_runs=[_pending("r", created=1.0)]))
        for _ in range(20):  # many announcements close together: one notification
            await client.announce()
        assert await next_notice() == ("runs", "")
        await asyncio.sleep(0.2)
        assert heard == [("runs", "")]
        assert await client.request_cancel("r")
        assert await next_notice() == ("cancel", "r")
        # The listening connection is cut: it reconnects and says "look for yourself".
        _sql(pg_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE query LIKE 'LISTEN%%' AND pid <> pg_backend_pid()")
        assert await next_notice() == ("runs", "")
        await client.request_cancel("r")
        assert await next_notice() == ("cancel", "r")
    finally:
        await client.close()
        await worker.close()


async def test_one_leader_per_database_handed_over_when_it_goes(pg_url: str) -> None:
    a, b = await _store(pg_url), await _store(pg_url)
    try:
        assert await a.lead("alerts")
        assert not await b.lead("alerts")
        assert await a.lead("alerts")
        assert await b.lead("other-role")
        await a.close()
        # The server lets the lock go once it has ended a's session, a moment after the
        # client closed it (on a loaded machine, not always before the next statement).
        for _ in range(50):
            if await b.lead("alerts"):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("b never took the role a's close let go")
    finally:
        await b.close()


async def test_a_json_output_reads_back_byte_for_byte(pg_url: str) -> None:
    """Text, not jsonb: keys keep their order and duplicates of nothing are invented."""
    store = await _store(pg_url)
    try:
        out = orjson.dumps({"z": 1, "a": [1.5, "é", None]}).decode()
        await store.write_batch(Batch(new_runs=[_pending("r", created=1.0)._replace(
            output_json=out, status="succeeded")]))
        assert _sql(pg_url, "SELECT output FROM runs")[0][0] == out
        assert list((await store.get_run("r")).output) == ["z", "a"]
    finally:
        await store.close()


async def test_a_batch_keeps_every_character_and_number_as_given(pg_url: str) -> None:
    """The batch's columns travel as array literals built by the store: quotes,
    backslashes, braces, commas, the word NULL, empty and non-ASCII text, a real
    NULL, and floats all come back exactly as they went."""
    from podium.events import RunCancelRequested
    from podium.store.base import StepRow

    nasty = ['a "b" \\c', "{x,y}", "NULL", "", "é ☃ \n\t", '\\"', " lead, trail "]
    store = await _store(pg_url)
    try:
        new = [_pending(f"r{i}", created=0.1 + 0.2 + i)._replace(
                   workflow=text, output_json=orjson.dumps(text).decode(), owner="w")
               for i, text in enumerate(nasty)]
        events = [RunCancelRequested(run_id=f"r{i}", ts=1e-7 * (i + 1))
                  for i in range(len(nasty))]
        steps = [StepRow(f"r{i}", text, "succeeded", 2, None if i % 2 else text,
                         orjson.dumps({"v": text}).decode(), None, 1.5, 2.0, None, bool(i % 2),
                         i, None, 0, None) for i, text in enumerate(nasty)]
        await store.write_batch(Batch(new_runs=new, source=events, seqs=[1] * len(nasty),
                                      last_seq={f"r{i}": 1 for i in range(len(nasty))},
                                      steps=steps))
        runs = {r: (w, o, c) for r, w, o, c in _sql(
            pg_url, "SELECT run_id, workflow, output, created_at FROM runs")}
        got = {r: (s, a, o, opt) for r, s, a, o, opt in _sql(
            pg_url, "SELECT run_id, step_id, agent_id, output, optional FROM steps")}
        ts = dict(_sql(pg_url, "SELECT run_id, ts FROM events"))
        for i, text in enumerate(nasty):
            rid = f"r{i}"
            assert runs[rid] == (text, orjson.dumps(text).decode(), 0.1 + 0.2 + i)
            assert got[rid] == (text, None if i % 2 else text,
                                orjson.dumps({"v": text}).decode(), bool(i % 2))
            assert ts[rid] == 1e-7 * (i + 1)
    finally:
        await store.close()


async def test_a_batch_partly_fenced_off_reads_back_as_landed(pg_url: str) -> None:
    """A cut-off commit whose batch lost one run to a takeover: the rest landed, so it
    must not be written again (its events would clash); the lost run's part never will."""
    from podium.events import RunCancelRequested

    store = await _store(pg_url)
    try:
        await store.write_batch(Batch(new_runs=[_pending("r1", created=1.0),
                                                _pending("r2", created=2.0)]))
        await store.register_worker(_worker("w"))
        await store.claim_runs("w", queues=["default"], capabilities=(), limit=2)
        _sql(pg_url, "UPDATE runs SET owner = 'x', epoch = epoch + 1 WHERE run_id = 'r2'")
        events = [RunCancelRequested(run_id=r, ts=1.0) for r in ("r1", "r2")]
        written = Batch(source=events, seqs=[1, 1], last_seq={"r1": 1, "r2": 1}, owner="w",
                        epochs={"r1": 1, "r2": 1})
        assert await store.write_batch(written) == {"r2"}
        assert await store.batch_committed(written)
        later = Batch(source=[RunCancelRequested(run_id="r1", ts=2.0)], seqs=[2],
                      last_seq={"r1": 2}, owner="w", epochs={"r1": 1})
        assert not await store.batch_committed(later)  # still w's, and not written
    finally:
        await store.close()
