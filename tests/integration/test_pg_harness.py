"""tests/pg.py's throwaway PostgreSQL: a real server, fresh databases, fsync on, a clean stop."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from tests.pg import REQUIRE_ENV, PgCluster, unavailable

ROOT = Path(__file__).resolve().parents[2]


async def _has_table(url: str, name: str) -> bool:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))
        row = await cur.fetchone()
        assert row is not None
        return bool(row[0])


@pytest.mark.postgres
async def test_a_table_made_in_one_tests_database_is_absent_from_another(
        pg_url: str, pg_cluster: PgCluster) -> None:
    async with AsyncConnectionPool(pg_url, min_size=1, max_size=2, open=False) as pool:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            assert await cur.fetchone() == (0,), "a fresh database has no tables"
            await conn.execute("CREATE TABLE marker (id int PRIMARY KEY)")
            await conn.execute("INSERT INTO marker VALUES (1)")
        # Committed on leaving the block: another connection of the pool sees it.
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT id FROM marker")
            assert await cur.fetchall() == [(1,)]
    with pg_cluster.database("other") as other:
        assert other != pg_url
        assert await _has_table(pg_url, "marker")
        assert not await _has_table(other, "marker")


@pytest.mark.postgres
async def test_the_server_keeps_fsync_and_synchronous_commit_on(pg_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            cur = await conn.execute("SELECT current_setting(%s)", (setting,))
            assert await cur.fetchone() == ("on",), setting


@pytest.mark.postgres
async def test_synchronous_commit_can_be_switched_off_for_one_connection_only(
        pg_url: str) -> None:
    async def relaxed(conn: psycopg.AsyncConnection[TupleRow]) -> None:
        await conn.execute("SET synchronous_commit = off")
        await conn.commit()  # the pool wants its connections idle after configure

    async def setting(conn: psycopg.AsyncConnection[TupleRow]) -> str:
        cur = await conn.execute("SHOW synchronous_commit")
        row = await cur.fetchone()
        assert row is not None
        return str(row[0])

    async with AsyncConnectionPool(pg_url, min_size=1, max_size=1, configure=relaxed,
                                   open=False) as pool, pool.connection() as conn:
        assert await setting(conn) == "off"
    # The same through libpq's options, as a URL can carry it.
    async with await psycopg.AsyncConnection.connect(
            pg_url, options="-c synchronous_commit=off") as conn:
        assert await setting(conn) == "off"
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        assert await setting(conn) == "on"


@pytest.mark.postgres
def test_the_cluster_runs_as_postgres_when_the_tests_run_as_root(pg_cluster: PgCluster) -> None:
    expected = pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else os.geteuid()
    assert pg_cluster.data.stat().st_uid == expected
    pid = int((pg_cluster.data / "postmaster.pid").read_text().split()[0])
    uid_line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if ln.startswith("Uid:"))
    assert int(uid_line.split()[1]) == expected
    assert pg_cluster.url().startswith(f"postgresql://postgres@127.0.0.1:{pg_cluster.port}/")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has stopped serving; only its parent can reap it.
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


@pytest.mark.postgres
def test_stop_ends_the_server_and_removes_its_folder(pg_cluster: PgCluster) -> None:
    # pg_cluster first: its skip (or failure) speaks for a machine without PostgreSQL.
    cluster = PgCluster.start(pg_cluster.bindir)
    pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
    with psycopg.connect(cluster.url(), connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    cluster.stop()
    assert not cluster.folder.exists()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cluster.url(), connect_timeout=2)


_ORPHAN = """
import sys
sys.path.insert(0, sys.argv[1])
from tests.pg import PgCluster
c = PgCluster.start()
print(c.folder, c.port, open(c.data / "postmaster.pid").read().split()[0], flush=True)
sys.stdin.read()  # until killed
"""


@pytest.mark.postgres
def test_a_cluster_whose_test_process_was_killed_is_stopped_by_its_watchdog(
        pg_cluster: PgCluster) -> None:
    with subprocess.Popen([sys.executable, "-c", _ORPHAN, str(ROOT)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            folder, port, pid = proc.stdout.readline().split()
        finally:
            proc.kill()  # no finalizer runs: only the watchdog can stop the server
            proc.wait(timeout=10)
    deadline = time.monotonic() + 20
    while (_alive(int(pid)) or Path(folder).exists()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(int(pid)), "the orphaned postmaster still runs"
    assert not Path(folder).exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=2)


def test_missing_postgres_skips_but_fails_when_required(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no server here"):
        unavailable("no server here")
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="PODIUM_REQUIRE_PG=1 requires PostgreSQL"):
        unavailable("no server here")
