"""A prune in one process while another process writes runs to the same database.

The writer (a subprocess) commits runs the way the engine does (a batch that
starts each run, one per step, one that ends it) as fast as it can, from before the
prune starts until it is over; this process prunes thousands of old runs
meanwhile, in small batches so their transactions interleave with the writer's.
Afterwards every run the writer said it committed is there, whole (its events, its
steps) and in the feed; every old run is gone.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from podium.events import StepStarted
from podium.store.base import Batch, FeedPosition, Store
from tests.contract.conftest import make_store
from tests.contract.test_prune_contract import row
from tests.contract.test_store_contract import batch, started, step_row

REPO = Path(__file__).resolve().parents[2]
OLD_RUNS = 2500
WRITER = """
import asyncio, os, sys, time
from podium.events import RunFinished, StepStarted, StepSucceeded
from podium.store.factory import open_store
from tests.contract.test_prune_contract import row
from tests.contract.test_store_contract import batch, started, step_row


async def main(url, prefix, stop):
    store = open_store(url)
    await store.open()
    try:
        i = -1
        while not os.path.exists(stop):  # until the prune is over: all of it overlaps
            i += 1
            rid = f"{prefix}-{i:04}"
            now = time.time()
            await store.write_batch(batch([row(rid, "running", None, owner="writer",
                                               lease=now + 60)], [started(rid, now)],
                                          steps=[step_row(rid, "a", "running")]))
            await store.write_batch(batch(events=[StepSucceeded(
                run_id=rid, ts=now, step_id="a", attempt=1, agent_id="x", output=1,
                duration_s=0.0, output_json="1")], steps=[step_row(
                rid, "a", "succeeded", output=1, completed=1)], seq_from={rid: 1}))
            done = row(rid, "succeeded", time.time())
            await store.write_batch(batch(events=[RunFinished(
                run_id=rid, ts=now, workflow="w", status="succeeded")], runs=[done],
                seq_from={rid: 2}, finished=[rid]))
            print(rid, flush=True)
    finally:
        await store.close()


asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
"""


def url_of(backend: str, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'contract.db'}" if backend == "sqlite" else backend


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(request.param)


async def old_runs(store: Store, n: int) -> None:
    """``n`` runs that ended long ago, each with two events and a step row, 100 a batch."""
    for first in range(0, n, 100):
        ids = [f"old-{i:05}" for i in range(first, min(first + 100, n))]
        b = Batch()
        for rid in ids:
            one = batch([row(rid, "succeeded", 100.0 + first)], [
                started(rid), StepStarted(run_id=rid, ts=3.0, step_id="a", attempt=1,
                                          agent_id="x")],
                steps=[step_row(rid, "a", "succeeded", output=1)])
            b.new_runs += one.new_runs
            b.source += one.source
            b.seqs += one.seqs
            b.steps += one.steps
            b.last_seq.update(one.last_seq)
        await store.write_batch(b)


@pytest.mark.timeout(180)  # thousands of commits on PostgreSQL, two processes
async def test_a_prune_loses_nothing_of_runs_another_process_writes_meanwhile(
        backend: str, tmp_path: Path) -> None:
    store = make_store(backend, tmp_path)
    await store.open()
    try:
        await old_runs(store, OLD_RUNS)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")])}
        writer = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, "-c", WRITER, url_of(backend, tmp_path), "new",
             str(tmp_path / "stop")],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert writer.stdout is not None
            first = await asyncio.to_thread(writer.stdout.readline)  # it is writing
            assert first.startswith("new-"), writer.stderr.read() if writer.stderr else ""
            began = time.monotonic()
            pruned = await store.prune_runs(time.time() - 3600, batch_runs=25)
            took = time.monotonic() - began
            (tmp_path / "stop").touch()
            # (read on the same buffered stream: lines it holds already are not lost)
            rest = await asyncio.to_thread(writer.stdout.read)
            await asyncio.to_thread(writer.wait, 120)
            errors = writer.stderr.read() if writer.stderr else ""
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
            for stream in (writer.stdout, writer.stderr):
                if stream is not None:
                    stream.close()
        assert writer.returncode == 0, errors
        written = [first.strip(), *rest.split()]
        assert len(written) > 1, "the writer wrote nothing while the prune ran"
        assert len(written) == len(set(written))
        assert pruned == OLD_RUNS
        print(f"pruned {pruned} runs in {took:.2f}s while {len(written)} were written")
        listed = [r.run_id for r in await store.list_runs(limit=10_000)]
        assert sorted(listed) == sorted(written)
        for rid in written:
            run = await store.get_run(rid)
            assert run.status == "succeeded", rid
            assert run.steps["a"].output == 1, rid
            assert [e.type for e in await store.get_events(rid)] == [
                "run_started", "step_succeeded", "run_finished"], rid
        fed: dict[str, int] = {}
        after = FeedPosition()
        while True:
            page, after = await store.read_feed(after, limit=500)
            if not page:
                break
            for _, e in page:
                fed[e.run_id] = fed.get(e.run_id, 0) + 1
        assert fed == dict.fromkeys(written, 3)
        # The command on the same database: the writer's runs ended just now, but each
        # is still held by its writer's lease (60 s): none of them goes, even at 0.
        for extra in (["--dry-run"], []):
            res = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "podium", "prune", "--older-than", "0",
                                 "--db", url_of(backend, tmp_path), "--json", *extra],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
                check=False)
            assert res.returncode == 0, res.stderr
            assert orjson.loads(res.stdout)["runs"] == 0
        assert len(await store.list_runs(limit=10_000)) == len(written)
    finally:
        await store.close()
