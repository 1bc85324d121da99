"""The SQLite store on real files: migrations, refusing foreign files, durability settings,
several processes on one file, and group commit.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from podium import Engine
from podium.agents.base import Task
from podium.definition import workflow_from_dict
from podium.errors import StoreError
from podium.store.base import Batch
from podium.store.factory import open_store
from podium.store.sqlite import SCHEMA_VERSION, SQLiteStore
from podium.store.sqlite_checkpoint import CHECKPOINT_THREAD_AFTER as _CHECKPOINT_THREAD_AFTER
from podium.store.sqlite_checkpoint import Checkpointer as _Checkpointer
from podium.store.sqlite_db import _fresh_schema, _schema_from_migrations, migrate, schema_sql
from tests.conftest import registry_of
from tests.integration.podium_proc import Sandbox, chain

OLD_DEFINITION = {"name": "old", "version": 1, "steps": [{"id": "a", "agent": "work"}]}


def make_schema_1_db(path: Path) -> None:
    """A database as the first Podium release left it: schema 1 and one finished run."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        migrate(conn, upto=1)
        assert conn.execute("SELECT value FROM podium_meta").fetchone() == ("1",)
        conn.execute(
            "INSERT INTO workflows (name, version, definition, created_at) VALUES (?, ?, ?, ?)",
            ("old", "1", json.dumps(OLD_DEFINITION), 100.0))
        conn.execute(
            "INSERT INTO runs (run_id, workflow, version, definition, input, status, output,"
            " error, created_at, started_at, finished_at, owner, lease_expires_at,"
            " cancel_requested, agents_source)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("r1old", "old", "1", json.dumps(OLD_DEFINITION), '{"n": 5}', "succeeded",
             '{"total": 42}', None, 100.0, 100.5, 102.0, None, None, 0,
             '{"agents_file": null, "entry_points": true}'))
        conn.execute(
            "INSERT INTO steps (run_id, step_id, status, attempts, agent_id, output, error,"
            " started_at, finished_at, next_retry_at, optional)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("r1old", "a", "succeeded", 2, "work-1", '{"total": 42}', None, 100.6, 101.9, None, 0))
        for seq, kind, data in [
            (1, "run_started", {"run_id": "r1old", "ts": 100.5, "workflow": "old", "version": 1}),
            (2, "step_succeeded", {"run_id": "r1old", "ts": 101.9, "step_id": "a", "attempt": 2,
                                   "agent_id": "work-1", "duration_s": 0.1}),
            (3, "run_finished", {"run_id": "r1old", "ts": 102.0, "workflow": "old",
                                 "status": "succeeded", "output": {"total": 42}}),
        ]:
            conn.execute("INSERT INTO events (run_id, seq, type, ts, data) VALUES (?, ?, ?, ?, ?)",
                         ("r1old", seq, kind, data["ts"], json.dumps(data)))
    finally:
        conn.close()


def schema_version(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM podium_meta WHERE key = 'schema_version'").fetchone()
    finally:
        conn.close()
    return int(row[0])


def fingerprint(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


# --- migrations -----------------------------------------------------------------------


async def test_schema_1_database_is_upgraded_with_its_data(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    make_schema_1_db(db)
    store = SQLiteStore(db)
    await store.open()
    try:
        assert schema_version(db) == SCHEMA_VERSION
        columns = {r[1] for r in store.conn.execute("PRAGMA table_info(steps)")}
        assert {"compensation_status", "completed_seq"} <= columns
        run = await store.get_run("r1o")  # a prefix is enough
        assert (run.run_id, run.workflow, run.version, run.status) == ("r1old", "old", 1,
                                                                        "succeeded")
        assert (run.input, run.output, run.definition) == ({"n": 5}, {"total": 42},
                                                           OLD_DEFINITION)
        assert (run.phase, run.created_at, run.finished_at) == ("execute", 100.0, 102.0)
        step = run.steps["a"]
        assert (step.status, step.attempts, step.agent_id, step.output) == (
            "succeeded", 2, "work-1", {"total": 42})
        assert (step.compensation_status, step.compensation_attempts) == (None, 0)
        events = await store.get_events("r1old")
        assert [e.type for e in events] == ["run_started", "step_succeeded", "run_finished"]
        assert [r.run_id for r in await store.list_runs()] == ["r1old"]
    finally:
        await store.close()
    reopened = SQLiteStore(db)  # opening an up-to-date file again changes nothing
    await reopened.open()
    await reopened.close()
    assert schema_version(db) == SCHEMA_VERSION


def test_the_cli_reads_a_schema_1_database_and_a_writing_command_upgrades_it(
    sandbox: Sandbox,
) -> None:
    """Reading commands never migrate (they never take the write lock): `status` reads
    the old schema as it is; the first command that writes upgrades it."""
    make_schema_1_db(sandbox.db)
    out = sandbox.podium("status", "r1old", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert (doc["status"], doc["output"]) == ("succeeded", {"total": 42})
    assert doc["steps"]["a"]["attempts"] == 2
    assert schema_version(sandbox.db) == 1
    out = sandbox.podium("cancel", "r1old")
    assert out.returncode == 0, out.stderr
    assert schema_version(sandbox.db) == SCHEMA_VERSION


def test_a_new_file_gets_the_schema_the_migrations_make_step_by_step(tmp_path: Path) -> None:
    """A new file is made in one go, not by every migration (fewer schema re-parses):
    the schema must be exactly the one a database upgraded through each step has."""
    def schema(path: Path, upto: int | None) -> list[Any]:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            if upto is None:
                migrate(conn)
            else:  # one short of the last, then the last: the step-by-step path
                migrate(conn, upto=upto)
                migrate(conn)
            rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"
                                " ORDER BY type, name").fetchall()
            tables = [r[1] for r in rows if r[0] == "table"]
            return [rows, conn.execute("SELECT * FROM podium_meta").fetchall(),
                    *(conn.execute(f"PRAGMA table_xinfo({t})").fetchall() for t in tables),
                    *(conn.execute(f"PRAGMA index_list({t})").fetchall() for t in tables)]
        finally:
            conn.close()

    fresh = schema(tmp_path / "fresh.db", None)
    assert fresh == schema(tmp_path / "stepwise.db", SCHEMA_VERSION - 1)
    assert fresh == schema(tmp_path / "from-1.db", 1)
    assert fresh[1] == [("schema_version", str(SCHEMA_VERSION))]


def test_the_shipped_schema_is_the_one_the_migrations_make() -> None:
    """A new file takes its schema from schema.sql; after a new migration, make it again
    (the command is in sqlite_db.schema_sql's docstring)."""
    shipped = (resources.files("podium.store") / "sql" / "sqlite" / "schema.sql").read_text()
    assert shipped == schema_sql()
    assert _fresh_schema() == _schema_from_migrations()


async def test_a_migration_that_fails_leaves_the_old_schema(tmp_path: Path) -> None:
    db = tmp_path / "clash.db"
    make_schema_1_db(db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("ALTER TABLE runs ADD COLUMN phase TEXT")  # migration 2 adds it too: clash
    conn.close()
    store = SQLiteStore(db)
    with pytest.raises(StoreError, match="duplicate column"):
        await store.open()
    assert schema_version(db) == 1  # every step of the upgrade rolled back together
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        cols = {r[1] for r in conn.execute("PRAGMA table_info(steps)")}
        assert "compensation_status" not in cols
        assert conn.execute("SELECT status FROM runs").fetchall() == [("succeeded",)]
    finally:
        conn.close()


async def test_newer_schema_is_refused_and_left_untouched(sandbox: Sandbox) -> None:
    db = sandbox.db
    store = SQLiteStore(db)
    await store.open()
    await store.close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE podium_meta SET value = ? WHERE key = 'schema_version'",
                 (str(SCHEMA_VERSION + 1),))
    conn.close()
    before = fingerprint(db)

    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}.*newer"):
        await SQLiteStore(db).open()
    assert fingerprint(db) == before

    out = sandbox.podium("runs")
    assert out.returncode == 3
    assert "newer than this Podium supports" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert fingerprint(db) == before
    assert schema_version(db) == SCHEMA_VERSION + 1


# --- files that are not Podium's ----------------------------------------------------------


def _random_bytes(path: Path) -> str:
    data = os.urandom(8192)
    path.write_bytes(b"\x00junk" + data)  # never the SQLite header
    return "not a SQLite database"


def _damaged_sqlite(path: Path) -> str:
    path.write_bytes(b"SQLite format 3\x00" + os.urandom(8176))
    return "or a damaged one"


def _foreign_sqlite(path: Path) -> str:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers (name) VALUES ('Ada')")
    conn.commit()
    conn.close()
    return "a SQLite database but not Podium's (tables: customers)"


@pytest.mark.parametrize("make", [_random_bytes, _damaged_sqlite, _foreign_sqlite],
                         ids=["random-bytes", "damaged-sqlite", "foreign-sqlite"])
async def test_a_file_that_is_not_a_podium_database_is_refused_untouched(
    sandbox: Sandbox, make: Any
) -> None:
    db = sandbox.db
    message = make(db)
    before = fingerprint(db)
    with pytest.raises(StoreError, match=r"untouched|not a SQLite database") as info:
        await SQLiteStore(db).open()
    assert message in str(info.value)
    assert fingerprint(db) == before

    wf = sandbox.workflow("one", chain(1))
    for args, agents in ((("runs", "--json"), False), (("run", str(wf), "--json"), True)):
        out = sandbox.podium(*args, agents=agents)
        assert out.returncode == 3, out.stderr
        assert out.stderr.startswith("error: ")
        assert message in out.stderr
        assert "Traceback" not in out.stderr + out.stdout
        error = json.loads(out.stdout)["error"]  # one whole document, never half of one
        assert (error["type"], error["exit_code"]) == ("store_error", 3)
        assert message in error["message"]
    assert fingerprint(db) == before
    assert sorted(p.name for p in db.parent.iterdir() if p.name.startswith(db.name)) == [db.name]


# --- durability settings ------------------------------------------------------------------


async def _work(task: Task) -> Any:
    return {"step": task.step_id, "n": task.input}


@pytest.mark.parametrize(("query", "synchronous"), [("", 1), ("?durability=strict", 2)],
                         ids=["normal", "strict"])
async def test_durability_settings(tmp_path: Path, query: str, synchronous: int) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}{query}"
    store = open_store(url)
    assert isinstance(store, SQLiteStore)
    wf = workflow_from_dict({"name": "d", "mode": "sequential", "steps": [
        {"id": "a", "agent": "work", "input": 1}, {"id": "b", "agent": "work", "input": 2}],
        "output": "${{ steps.b.output }}"})
    async with Engine(registry=registry_of(work=_work), store=store) as engine:
        conn = store.conn
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == synchronous
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        wal = tmp_path / "d.db-wal"
        if query:
            # Strict: the log was grown once so that fsynced commits overwrite it in
            # place, its cycle is capped at that size, and the filler row is gone.
            assert wal.stat().st_size >= 1 << 20
            assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == (1 << 20) // 4096
            assert conn.execute("SELECT key FROM podium_meta").fetchall() == [("schema_version",)]
        else:
            assert wal.stat().st_size < 1 << 20
        run = await engine.run(wf)
        assert run.status == "succeeded"
    again = open_store(url)  # what was committed is there for the next process
    await again.open()
    try:
        stored = await again.get_run(run.run_id)
        assert (stored.status, stored.output) == ("succeeded", {"step": "b", "n": 2})
        assert {k: s.status for k, s in stored.steps.items()} == {"a": "succeeded",
                                                                 "b": "succeeded"}
    finally:
        await again.close()


def _checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("podium-checkpoint")]


async def test_the_log_is_checkpointed_by_a_thread_and_starts_over(tmp_path: Path) -> None:
    """Normal durability: the writer's connection never checkpoints inside a COMMIT; a
    thread copies the log into the database, and once the log is long the writer
    finishes a checkpoint so the log starts over: it stays bounded however long the
    engine writes. Without the restarts, 600 runs leave a log of ~50 MB."""
    db = tmp_path / "c.db"
    store = SQLiteStore(db)
    wf = workflow_from_dict({"name": "c", "mode": "sequential", "steps": [
        {"id": s, "agent": "work", "input": 1} for s in ("a", "b", "c")]})
    async with Engine(registry=registry_of(work=_work), store=store) as engine:
        assert store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        opened_size = db.stat().st_size
        biggest = 0
        for i in range(600):
            run = await engine.run(wf)
            assert run.status == "succeeded"
            if i == 0:
                assert _checkpoint_threads() == []  # 4 transactions so far
            if i % 50 == 0:
                biggest = max(biggest, (tmp_path / "c.db-wal").stat().st_size)
        assert len(_checkpoint_threads()) == 1
        frame = 24 + store.conn.execute("PRAGMA page_size").fetchone()[0]
        # Restarts keep it near 1,024 frames, plus what a busy machine writes before the
        # thread's next pass (seen up to ~3,150 frames on a loaded 2-core VM); without
        # restarts it passes 12,000.
        assert biggest < 5 * 1024 * frame
        assert db.stat().st_size > 10 * opened_size  # the pages reached the database file
    assert _checkpoint_threads() == []  # close stops the thread


async def test_the_checkpointer_starts_only_once_a_process_keeps_writing(tmp_path: Path) -> None:
    """`podium runs`/`status` only read, a `podium run` of a few steps writes a few
    transactions: neither starts the thread (the log is checkpointed at close)."""
    store = SQLiteStore(tmp_path / "r.db")
    await store.open()
    try:
        assert await store.list_runs() == []
        for n in range(_CHECKPOINT_THREAD_AFTER - 1):
            await store.save_workflow("w", n, {"name": "w"})
        assert _checkpoint_threads() == []
        await store.save_workflow("w", "last", {"name": "w"})
        assert len(_checkpoint_threads()) == 1
    finally:
        await store.close()
    assert _checkpoint_threads() == []


async def test_a_checkpoint_held_back_by_a_reader_is_finished_later(tmp_path: Path) -> None:
    """The writer's end of a checkpoint cannot copy past what another connection still
    reads (a long read in another process): it tries again after its next commit,
    and stops trying once everything is copied."""
    db = tmp_path / "h.db"
    store = SQLiteStore(db)
    await store.open()
    try:
        for n in range(_CHECKPOINT_THREAD_AFTER):
            await store.save_workflow("w", n, {"name": "w"})
        ck = store._checkpointer
        assert ck is not None
        ck.close()  # its thread stops: only the writer checkpoints from here on
        reader = sqlite3.connect(db, isolation_level=None)
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM workflows").fetchone() == (32,)
        await store.save_workflow("w", "after the reader's snapshot", {"name": "w"})
        ck.restart_due = True
        await store.save_workflow("w", "held back", {"name": "w"})
        assert ck.restart_due  # frames past the reader's snapshot are not copied yet
        reader.execute("COMMIT")
        reader.close()
        await store.save_workflow("w", "free", {"name": "w"})
        assert not ck.restart_due
        size = (tmp_path / "h.db-wal").stat().st_size
        await store.save_workflow("w", "restarted", {"name": "w"})
        assert (tmp_path / "h.db-wal").stat().st_size == size  # written from its start again
    finally:
        await store.close()


async def test_strict_durability_checkpoints_on_the_writer(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", durability="strict")
    await store.open()
    try:
        await store.save_workflow("w", 1, {"name": "w"})
        assert _checkpoint_threads() == []
    finally:
        await store.close()


async def test_a_checkpointer_that_cannot_start_hands_checkpoints_back_to_sqlite(
        tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "f.db")
    wf = workflow_from_dict({"name": "f", "steps": [{"id": "a", "agent": "work", "input": 1}]})
    async with Engine(registry=registry_of(work=_work), store=store) as engine:
        for _ in range(_CHECKPOINT_THREAD_AFTER):
            assert (await engine.run(wf)).status == "succeeded"
        real = store._checkpointer
        assert real is not None
        real.close()
        # A real failure: the thread's connection cannot open a file in a missing folder.
        broken = _Checkpointer(tmp_path / "missing" / "f.db")
        broken._thread.join()
        assert broken.failed
        store._checkpointer = broken
        assert (await engine.run(wf)).status == "succeeded"
        assert store._checkpointer is None
        assert store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000


# --- several processes, one file -------------------------------------------------------------


def test_several_processes_share_one_file(sandbox: Sandbox) -> None:
    assert not sandbox.db.exists()  # both runs race to create the schema too
    wf = sandbox.workflow("busy", chain(40, sleep_ms=(5, 25)))
    runs = [sandbox.spawn("run", str(wf), "--json", agents=True) for _ in range(2)]
    reads = 0
    problems: list[str] = []
    # A third process reads all along: runs, then the status of one of the runs.
    while reads < 3 or any(p.poll() is None for p in runs):
        listed = sandbox.podium("runs", "--json")
        reads += 1
        if listed.returncode != 0 or "locked" in listed.stderr:
            problems.append(f"runs: {listed.returncode} {listed.stderr}")
            continue
        rows = json.loads(listed.stdout)
        if rows:
            shown = sandbox.podium("status", rows[reads % len(rows)]["run_id"], "--json")
            if shown.returncode != 0 or "locked" in shown.stderr:
                problems.append(f"status: {shown.returncode} {shown.stderr}")
        assert reads < 60, "the runs never finished"
    assert problems == []
    for p in runs:
        assert p.wait(timeout=60) == 0, sandbox.stderr_of(p)
        assert "locked" not in sandbox.stderr_of(p)
        assert json.loads(sandbox.stdout_of(p))["status"] == "succeeded"
    ids = sandbox.run_ids()
    assert len(ids) == 2
    for run_id in ids:
        assert sandbox.run_row(run_id)["status"] == "succeeded"
        steps = sandbox.steps(run_id)
        assert [s["status"] for s in steps.values()] == ["succeeded"] * 40
        events = sandbox.events(run_id)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len(sandbox.executions()) == 80


# --- group commit --------------------------------------------------------------------------------


class BatchRecordingStore(SQLiteStore):
    """Remembers which events went into each transaction."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[set[tuple[str, str | None]]] = []

    def write_batch_now(self, batch: Batch) -> frozenset[str]:
        lost = super().write_batch_now(batch)  # only batches that committed are counted
        self.batches.append({(e.type, getattr(e, "step_id", None)) for e in batch.source})
        return lost


async def test_group_commit_of_a_200_step_fan_out(tmp_path: Path) -> None:
    store = BatchRecordingStore(tmp_path / "g.db")
    await store.open()
    commits: list[str] = []

    def trace(sql: str) -> None:
        if sql.strip().upper().startswith("COMMIT"):
            commits.append(sql)

    store.conn.set_trace_callback(trace)
    branches = [f"b{i:03d}" for i in range(200)]
    wf = workflow_from_dict({"name": "wide", "steps": [
        {"id": "root", "agent": "work"},
        *({"id": b, "agent": "work", "depends_on": ["root"], "input": b} for b in branches),
        {"id": "join", "agent": "work", "depends_on": branches},
    ]})
    async with Engine(registry=registry_of(work=_work), store=store) as engine:
        run = await engine.run(wf)
        assert run.status == "succeeded"
        n = len(commits)
        # One transaction per step would be 202 or more; completions in one loop turn share one.
        assert n <= 20, f"{n} commits for 202 steps"
        assert len(store.batches) <= n
        rows = store.conn.execute(
            "SELECT status, COUNT(*) FROM steps WHERE run_id = ? GROUP BY status",
            (run.run_id,)).fetchall()
        assert rows == [("succeeded", 202)]
        kinds = dict(store.conn.execute(
            "SELECT type, COUNT(*) FROM events WHERE run_id = ? GROUP BY type",
            (run.run_id,)).fetchall())
        assert (kinds["step_succeeded"], kinds["run_finished"]) == (202, 1)

    def batch_of(kind: str, step: str) -> int:
        return next(i for i, b in enumerate(store.batches) if (kind, step) in b)

    # The durability rule: a dependent starts only after its inputs' success is committed.
    last_branch = max(batch_of("step_succeeded", b) for b in branches)
    assert batch_of("step_started", "join") > last_branch
    assert min(batch_of("step_started", b) for b in branches) > batch_of("step_succeeded", "root")


async def test_stored_steps_equal_the_engines_record_on_every_write_path(tmp_path: Path) -> None:
    """The hot transitions write only the columns they change; what a reader gets
    back must be exactly the engine's own record, whatever path each row took:
    started and succeeded in one flush (insert), succeeded after a committed
    'running' row (update), retried (upsert) and compensated (upsert)."""
    import asyncio

    calls: dict[str, int] = {}

    async def quick(task: Task) -> Any:
        return {"step": task.step_id, "input": task.input}

    async def slow(task: Task) -> Any:
        await asyncio.sleep(0.05)  # its 'running' row commits before it succeeds
        return [task.step_id, 1.5, None]

    async def flaky(task: Task) -> Any:
        calls[task.step_id] = calls.get(task.step_id, 0) + 1
        if calls[task.step_id] < 3:
            raise RuntimeError("not yet")
        return "third time"

    async def undo(task: Task) -> Any:
        return "undone"

    async def boom(task: Task) -> Any:
        raise ValueError("no")

    wf = workflow_from_dict({"name": "paths", "on_failure": "compensate", "steps": [
        {"id": "a", "agent": "quick"},
        {"id": "s1", "agent": "slow", "depends_on": ["a"]},
        {"id": "s2", "agent": "slow", "depends_on": ["a"], "compensate": {"agent": "undo"}},
        {"id": "f", "agent": "flaky", "depends_on": ["a"],
         "retry": {"max_attempts": 4, "initial_delay": "1ms", "jitter": "none"}},
        {"id": "end", "agent": "quick", "depends_on": ["s1", "s2", "f"]},
    ]})
    wf_fail = workflow_from_dict({**wf.model_dump(mode="json", exclude_none=True),
                                  "name": "paths-fail",
                                  "steps": [*wf.model_dump(mode="json", exclude_none=True)["steps"],
                                            {"id": "z", "agent": "boom", "depends_on": ["end"]}]})
    store = SQLiteStore(tmp_path / "p.db")
    reg = registry_of(quick=quick, slow=slow, flaky=flaky, undo=undo, boom=boom)
    async with Engine(registry=reg, store=store) as engine:
        done = [await engine.run(wf, {"n": 1})]
        calls.clear()
        done.append(await engine.run(wf_fail, {"n": 2}))
    assert [r.status for r in done] == ["succeeded", "rolled_back"]
    await assert_stored_as_run(tmp_path / "p.db", done)
    paths = {sid: s.attempts for sid, s in done[0].steps.items()}
    assert paths["f"] == 3
    assert done[1].steps["s2"].compensation_status == "succeeded"


async def assert_stored_as_run(db: Path, runs: list[Any]) -> None:
    """A fresh store on ``db`` reads back every step of ``runs`` as the engine recorded it."""
    fresh = SQLiteStore(db)
    await fresh.open()
    try:
        for live in runs:
            stored = await fresh.get_run(live.run_id)
            assert set(stored.steps) == set(live.steps)
            for sid, rec in live.steps.items():
                assert stored.steps[sid] == rec, sid
    finally:
        await fresh.close()


class StepRowRecordingStore(SQLiteStore):
    """Remembers the (status, attempts) of every step row each committed batch wrote."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.rows: list[tuple[str, str, int]] = []

    def write_batch_now(self, batch: Batch) -> Any:
        lost = super().write_batch_now(batch)
        self.rows += [(s[1], s[2], s[3]) for s in batch.steps]
        return lost


async def test_steps_committed_pending_read_back_as_the_engines_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Branches of a fan-out wider than a burst are committed 'pending' first (their own
    insert), then started, or started and succeeded in one flush (an update of that
    row): what a reader gets back, live or after the run, is the engine's record."""
    import asyncio

    from podium.engine import run as run_module

    monkeypatch.setattr(run_module, "_BURST", 3)

    async def quick(task: Task) -> Any:
        return {"step": task.step_id}

    async def slow(task: Task) -> Any:
        await asyncio.sleep(0.03)  # its 'running' row commits before it succeeds
        return [task.step_id, 2]

    async def undo(task: Task) -> Any:
        return "undone"

    async def boom(task: Task) -> Any:
        raise ValueError("no")

    branches = [{"id": f"b{i}", "agent": "slow" if i % 3 == 0 else "quick",
                 "depends_on": ["root"], **({"optional": True} if i == 4 else {}),
                 **({"compensate": {"agent": "undo"}} if i % 4 == 1 else {})}
                for i in range(14)]
    spec = {"name": "wide", "on_failure": "compensate", "steps": [
        {"id": "root", "agent": "quick"}, *branches,
        {"id": "join", "agent": "quick", "depends_on": [b["id"] for b in branches]}]}
    failing = {**spec, "name": "wide-fail",
               "steps": [*spec["steps"], {"id": "z", "agent": "boom", "depends_on": ["join"]}]}
    store = StepRowRecordingStore(tmp_path / "w.db")
    reg = registry_of(quick=quick, slow=slow, undo=undo, boom=boom)
    async with Engine(registry=reg, store=store) as engine:
        done = [await engine.run(workflow_from_dict(spec)),
                await engine.run(workflow_from_dict(failing))]
    assert [r.status for r in done] == ["succeeded", "rolled_back"]
    pending = {sid for sid, status, _ in store.rows if status == "pending"}
    assert len(pending) >= 8  # most branches waited for a later burst
    after = {(sid, status) for sid, status, _ in store.rows if sid in pending}
    assert {"running", "succeeded"} <= {status for _, status in after}
    await assert_stored_as_run(tmp_path / "w.db", done)
    assert done[1].steps["b1"].compensation_status == "succeeded"


@pytest.mark.parametrize("seed", range(6))
async def test_no_step_starts_before_all_its_inputs_are_committed(tmp_path: Path,
                                                                  seed: int) -> None:
    """Random DAGs with random agent latencies: whichever input finishes last, and
    whatever else finishes while it waits for its commit, a step's first start is
    in a later transaction than the success of every step it depends on."""
    import asyncio
    import random

    rng = random.Random(seed)
    delays = {}

    async def work(task: Task) -> Any:
        await asyncio.sleep(delays[task.step_id])
        return task.step_id

    steps: list[dict[str, Any]] = []
    for i in range(40):
        sid = f"s{i:02d}"
        delays[sid] = rng.choice([0, 0, 0.001, 0.002, 0.005])
        deps = sorted(rng.sample([s["id"] for s in steps], k=min(len(steps), rng.randint(0, 3))))
        steps.append({"id": sid, "agent": "work", "depends_on": deps})
    wf = workflow_from_dict({"name": f"random-{seed}", "steps": steps})
    store = BatchRecordingStore(tmp_path / "r.db")
    async with Engine(registry=registry_of(work=work), store=store) as engine:
        run = await engine.run(wf)
    assert run.status == "succeeded"

    def batch_of(kind: str, step: str) -> int:
        return next(i for i, b in enumerate(store.batches) if (kind, step) in b)

    for s in steps:
        for dep in s["depends_on"]:
            assert batch_of("step_succeeded", dep) < batch_of("step_started", s["id"]), (
                s["id"], dep)


async def test_an_input_that_succeeds_while_the_last_one_waits_is_committed_first(
        tmp_path: Path) -> None:
    """a feeds d alone and e with c. a's success makes d ready, so a waits for its
    commit; c succeeds right after that commit, before a resumes, without waiting
    (e still had a outstanding). When a then makes e ready too, c's success must
    be committed before e starts."""
    import asyncio

    c_may_finish = asyncio.Event()

    class Releasing(BatchRecordingStore):
        def write_batch_now(self, batch: Batch) -> frozenset[str]:
            lost = super().write_batch_now(batch)
            if ("step_succeeded", "a") in self.batches[-1]:
                c_may_finish.set()  # c's task is woken before a's
            return lost

    async def quick(task: Task) -> Any:
        return task.step_id

    async def held(task: Task) -> Any:
        await c_may_finish.wait()
        return task.step_id

    wf = workflow_from_dict({"name": "race", "steps": [
        {"id": "a", "agent": "quick"}, {"id": "c", "agent": "held"},
        # e first: it is the step a's own task goes on with, without a loop turn.
        {"id": "e", "agent": "quick", "depends_on": ["a", "c"]},
        {"id": "d", "agent": "quick", "depends_on": ["a"]}]})
    store = Releasing(tmp_path / "race.db")
    async with Engine(registry=registry_of(quick=quick, held=held), store=store) as engine:
        run = await engine.run(wf)
    assert run.status == "succeeded"

    def batch_of(kind: str, step: str) -> int:
        return next(i for i, b in enumerate(store.batches) if (kind, step) in b)

    assert batch_of("step_succeeded", "c") < batch_of("step_started", "e")
    assert batch_of("step_succeeded", "a") < batch_of("step_started", "e")


async def test_a_join_removes_the_registrations_that_expired(tmp_path: Path) -> None:
    """The table held one row per agent id ever seen (an expired row stayed until its id
    joined again): a churn of ids grew it without end, and every join's count reads it."""
    store = SQLiteStore(tmp_path / "joined.db")
    await store.open()
    try:
        for n in range(50):
            await store.join_agent(f"gone-{n}", {"id": f"gone-{n}"}, f"tok-{n}", 0.2)
        await asyncio.sleep(0.4)
        await store.join_agent("here", {"id": "here"}, "tok-a", 30.0)
        rows = store.conn.execute("SELECT id FROM joined_agents").fetchall()
        assert rows == [("here",)]
    finally:
        await store.close()
