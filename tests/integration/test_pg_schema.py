"""store/sql/postgres/: each version is SQLite's same version in PostgreSQL's dialect.

Applied in order to a fresh database, one transaction per version under
``pg_advisory_xact_lock`` (as the PostgreSQL store will), the schema after version N
has exactly the tables, columns (names, order, nullability, defaults, type family),
primary keys and indexes that SQLite's migrations give at version N. Versions past
SQLite's last one (the scale-out proposal) only add.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import psycopg
import pytest

from podium.store.sqlite_db import migrate as sqlite_migrate

# One application-wide advisory lock for schema changes: "podium" in ASCII.
LOCK_KEY = int.from_bytes(b"podium", "big")

# SQLite INTEGER columns that are flags: boolean on PostgreSQL.
FLAGS = {("runs", "cancel_requested"), ("steps", "optional"), ("schedules", "paused")}
FAMILY = {"TEXT": {"text"}, "REAL": {"double precision"}, "INTEGER": {"integer", "bigint"},
          "BLOB": {"bytea"}}


def _scripts(*parts: str) -> list[tuple[int, str, str]]:
    folder = resources.files("podium.store").joinpath("sql", *parts)
    out = [(int(e.name.split("_", 1)[0]), e.name, e.read_text(encoding="utf-8"))
           for e in folder.iterdir() if e.name.endswith(".sql") and e.name[:1].isdigit()]
    return sorted(out)


PG = _scripts("postgres")
SQLITE = _scripts("sqlite")
SHARED = [v for v, _, _ in SQLITE if v <= len(PG)]
# What only PostgreSQL has, from version 5 on: the workers of a shared database and
# the slots of max_runs (podium worker refuses SQLite: one host needs neither). Its
# runs.capabilities is an array (the claim's subset test is one operator), SQLite's a
# JSON list.
# From version 6, the fleet's event feed for the one process that evaluates alert rules
# for all (events.tx, its index, the readers' positions); SQLite's 006 adds nothing.
PG_ONLY_TABLES = {"workers", "run_slots", "feed_positions"}
# SQLite's feed of commits (schema 11): PostgreSQL orders events by their transaction.
SQLITE_ONLY_TABLES = {"feed"}
PG_ONLY_TYPES = {("runs", "capabilities"): "ARRAY"}
PG_ONLY_COLUMNS = {("events", "tx")}
PG_ONLY_INDEXES = {"runs_claimable", "runs_by_owner",  # for the claim and `podium workers`
                   "events_feed"}


def pg_migrate(conn: psycopg.Connection[Any], upto: int | None = None,
               before_commit: Callable[[], None] | None = None) -> list[int]:
    """Apply what is missing up to ``upto`` in one transaction; the versions applied."""
    applied = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        current = 0
        row = conn.execute("SELECT to_regclass('podium_meta') IS NOT NULL").fetchone()
        if row and row[0]:
            got = conn.execute(
                "SELECT value FROM podium_meta WHERE key = 'schema_version'").fetchone()
            current = int(got[0]) if got else 0
        for version, _, script in PG:
            if version <= current or (upto is not None and version > upto):
                continue
            conn.execute(script)  # whole: without parameters psycopg sends it as one query
            conn.execute("INSERT INTO podium_meta (key, value) VALUES ('schema_version', %s)"
                         " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                         (str(version),))
            applied.append(version)
        if before_commit is not None:
            before_commit()
    return applied


# --- both schemas in one shape ---------------------------------------------------------


def _default(text: str | None) -> str | None:
    if text is None:
        return None
    text = re.sub(r"::[a-z ]+(\[\])?$", "", text.strip())  # PostgreSQL's casts
    text = {"false": "0", "true": "1"}.get(text, text)
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == "'" else text


def sqlite_shape(version: int) -> dict[str, dict[str, Any]]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        sqlite_migrate(conn, upto=version)
        shape = {}
        for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type ="
                                      " 'table' AND name NOT LIKE 'sqlite_%'"):
            cols = conn.execute(f"PRAGMA table_info({name})").fetchall()
            pk = [c[1] for c in sorted((c for c in cols if c[5]), key=lambda c: c[5])]
            indexes = {
                ix[1]: [r[2] for r in conn.execute(f"PRAGMA index_info({ix[1]})")]
                for ix in conn.execute(f"PRAGMA index_list({name})") if ix[3] == "c"}
            shape[name] = {
                "columns": [(c[1], c[2], bool(c[3] or c[5]), _default(c[4])) for c in cols],
                "pk": pk, "indexes": indexes, "autoincrement": "AUTOINCREMENT" in sql.upper(),
            }
        return shape
    finally:
        conn.close()


def pg_shape(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    shape: dict[str, dict[str, Any]] = {}
    for (table,) in conn.execute("SELECT table_name FROM information_schema.tables WHERE"
                                 " table_schema = current_schema()").fetchall():
        cols = conn.execute(
            "SELECT column_name, data_type, is_nullable = 'NO', column_default,"
            " is_identity = 'YES', collation_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s"
            " ORDER BY ordinal_position", (table,)).fetchall()
        idx = conn.execute(
            "SELECT i.relname, x.indisprimary, x.indisunique, x.indpred IS NOT NULL,"
            "  array(SELECT a.attname FROM unnest(x.indkey) WITH ORDINALITY k(n, o)"
            "        JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.n ORDER BY o)"
            " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
            " JOIN pg_class t ON t.oid = x.indrelid"
            " WHERE t.relname = %s AND t.relnamespace = current_schema()::regnamespace",
            (table,)).fetchall()
        shape[table] = {
            "columns": [(c[0], c[1], c[2], _default(c[3])) for c in cols],
            "identity": [c[0] for c in cols if c[4]],
            "collation": {c[0]: c[5] for c in cols},
            "pk": next((list(i[4]) for i in idx if i[1]), []),
            "indexes": {i[0]: list(i[4]) for i in idx if not i[1] and not i[2]},
            "unique": {i[0]: list(i[4]) for i in idx if not i[1] and i[2]},
            "partial": {i[0] for i in idx if i[3]},
        }
    return shape


def assert_same(table: str, lite: dict[str, Any], pg: dict[str, Any]) -> None:
    names = [c[0] for c in lite["columns"]]
    pg = {**pg, "columns": [c for c in pg["columns"] if (table, c[0]) not in PG_ONLY_COLUMNS]}
    assert [c[0] for c in pg["columns"]] == names, f"{table}: columns differ"
    for (name, ltype, lnotnull, ldefault), (_, ptype, pnotnull, pdefault) in zip(
            lite["columns"], pg["columns"], strict=True):
        where = f"{table}.{name}"
        if (table, name) in FLAGS:
            assert ptype == "boolean", where
        elif (table, name) in PG_ONLY_TYPES:
            assert ptype == PG_ONLY_TYPES[table, name], where
            continue  # an array's default is spelled differently
        else:
            assert ptype in FAMILY[ltype], f"{where}: {ltype} became {ptype}"
        assert pnotnull == lnotnull, f"{where}: NOT NULL differs"
        assert pdefault == ldefault, f"{where}: default {ldefault!r} became {pdefault!r}"
    assert pg["pk"] == lite["pk"], f"{table}: primary key"
    pg_indexes = {k: v for k, v in pg["indexes"].items() if k not in PG_ONLY_INDEXES}
    assert pg_indexes == lite["indexes"], f"{table}: indexes"
    assert pg["identity"] == (lite["pk"] if lite["autoincrement"] else []), table


# --- the tests ---------------------------------------------------------------------------


def test_postgres_versions_line_up_one_for_one_with_sqlites() -> None:
    versions = [v for v, _, _ in PG]
    assert versions == list(range(1, len(PG) + 1)), "numbered 1, 2, 3... without gaps"
    sqlite_versions = [v for v, _, _ in SQLITE]
    assert sqlite_versions == SHARED, "every SQLite version has its PostgreSQL twin"
    for (v, pg_name, _), (_, lite_name, _) in zip(PG, SQLITE, strict=False):
        assert pg_name == lite_name, f"version {v}: {pg_name} vs {lite_name}"


@pytest.mark.postgres
def test_each_version_has_sqlites_tables_columns_keys_and_indexes(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        for version in SHARED:
            assert pg_migrate(conn, upto=version) == [version]
            lite, pg = sqlite_shape(version), pg_shape(conn)
            lite = {t: shape for t, shape in lite.items() if t not in SQLITE_ONLY_TABLES}
            pg = {t: shape for t, shape in pg.items() if t not in PG_ONLY_TABLES}
            assert sorted(pg) == sorted(lite), f"version {version}: tables"
            for table in lite:
                assert_same(table, lite[table], pg[table])
        row = conn.execute("SELECT value FROM podium_meta WHERE key = 'schema_version'")
        assert row.fetchone() == (str(SHARED[-1]),)


@pytest.mark.postgres
def test_the_whole_schema_keeps_json_as_written_and_keys_in_byte_order(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        pg_migrate(conn)
        shape = pg_shape(conn)
        for table, t in shape.items():
            assert all(c[1] != "jsonb" for c in t["columns"]), f"{table}: jsonb reorders keys"
            keyed = set(t["pk"]).union(*t["indexes"].values(), *t["unique"].values())
            for (name, dtype, _, _) in t["columns"]:
                if name in keyed and dtype in ("text", "ARRAY"):
                    assert t["collation"][name] == "C", f"{table}.{name} must sort as SQLite"
        written = '{"z": 1,  "a": [2, 1], "z": 3}'  # odd spacing, a duplicate key
        conn.execute("INSERT INTO runs (run_id, workflow, version, definition, input, status,"
                     " created_at) VALUES ('r1', 'w', '1', %s, %s, 'pending', 0)",
                     (written, written))
        assert conn.execute("SELECT definition, input FROM runs").fetchone() == (
            written, written)
        # A run-id prefix lookup is the same range scan as on SQLite, locale or not.
        conn.execute("INSERT INTO runs (run_id, workflow, version, definition, input, status,"
                     " created_at) VALUES ('r1b', 'w', '1', '{}', '{}', 'pending', 0),"
                     " ('R1', 'w', '1', '{}', '{}', 'pending', 0)")
        found = conn.execute("SELECT run_id FROM runs WHERE run_id >= %s AND run_id < %s"
                             " ORDER BY run_id", ("r1", "r1\uffff")).fetchall()
        assert found == [("r1",), ("r1b",)]


@pytest.mark.postgres
def test_two_processes_migrating_at_once_apply_each_version_once(pg_url: str) -> None:
    first_inside = threading.Event()
    let_go = threading.Event()
    results: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def hold() -> None:
        first_inside.set()
        assert let_go.wait(30)

    def run(name: str, before_commit: Callable[[], None] | None) -> None:
        try:
            with psycopg.connect(pg_url) as conn:
                results[name] = pg_migrate(conn, before_commit=before_commit)
        except BaseException as exc:
            errors.append(exc)

    a = threading.Thread(target=run, args=("a", hold))
    a.start()
    assert first_inside.wait(30)
    b = threading.Thread(target=run, args=("b", None))
    b.start()
    try:
        with psycopg.connect(pg_url, autocommit=True) as watch:
            deadline = time.monotonic() + 30
            while watch.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                                " AND NOT granted").fetchone() != (1,):
                assert time.monotonic() < deadline, "the second migration never waited"
                time.sleep(0.02)
    finally:
        let_go.set()
        a.join(30)
        b.join(30)
    assert not errors, errors
    assert results == {"a": [v for v, _, _ in PG], "b": []}
    with psycopg.connect(pg_url) as conn:
        assert pg_migrate(conn) == [], "an up-to-date database is left alone"


@pytest.mark.postgres
def test_version_5_adds_what_many_workers_need(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        pg_migrate(conn, upto=4)
        before = pg_shape(conn)
        pg_migrate(conn, upto=5)
        after = pg_shape(conn)
    for table, t in before.items():
        assert after[table]["columns"][:len(t["columns"])] == t["columns"], table
        assert t["indexes"].items() <= after[table]["indexes"].items(), table
    workers = [c[0] for c in after["workers"]["columns"]]
    assert workers[:1] == ["id"]
    assert {"host", "pid", "started", "heartbeat", "lease_s"} <= set(workers)
    assert {"queue", "capabilities", "max_runs"} <= {c[0] for c in after["runs"]["columns"]}
    assert {"runs_claimable", "runs_by_owner"} <= after["runs"]["partial"]
    assert after["run_slots"]["pk"] == ["workflow", "slot"]
    assert after["run_slots"]["unique"] == {"run_slots_run_id_key": ["run_id"]}


# The statements 005_workers.sql proposes, as the store would send them.
CLAIM = """
UPDATE runs SET owner = %(me)s, epoch = epoch + 1, lease_expires_at = NULL,
       recoveries = recoveries + (owner IS NOT NULL)::int,
       recovered_at = CASE WHEN owner IS NOT NULL THEN %(now)s ELSE recovered_at END
WHERE run_id IN (
  SELECT r.run_id FROM runs r LEFT JOIN workers w ON w.id = r.owner
  WHERE r.status IN ('pending', 'running') AND r.queue = ANY(%(queues)s)
    AND r.capabilities <@ %(mine)s::text[]
    AND (r.owner IS NULL OR w.id IS NULL
         OR w.heartbeat + w.lease_s + CASE WHEN r.recoveries = 0 THEN 0
              ELSE least(power(2, r.recoveries - 1), 300) END < %(now)s)
  ORDER BY r.created_at LIMIT %(free)s
  FOR UPDATE OF r SKIP LOCKED)
RETURNING run_id, epoch, recoveries
"""
FENCE = """
SELECT run_id FROM runs
WHERE (run_id, epoch) IN (SELECT * FROM unnest(%(ids)s::text[], %(epochs)s::bigint[]))
  AND owner = %(me)s FOR NO KEY UPDATE
"""
SLOT = """
INSERT INTO run_slots SELECT %(wf)s, s, %(run)s, %(now)s FROM generate_series(0, %(max)s - 1) s
ORDER BY s ON CONFLICT DO NOTHING RETURNING slot
"""


@pytest.mark.postgres
def test_the_proposed_claim_fence_and_slot_statements_do_what_the_schema_says(
        pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        pg_migrate(conn)
        now = conn.execute("SELECT extract(epoch FROM statement_timestamp())::float8")
        row = now.fetchone()
        assert row is not None
        t = row[0]
        conn.execute(
            "INSERT INTO workers (id, host, pid, started, heartbeat, lease_s, concurrency)"
            " VALUES ('alive', 'h', 1, %(t)s, %(t)s, 15, 4), ('dead', 'h', 2, %(t)s,"
            " %(t)s - 100, 15, 4)", {"t": t})
        runs = [  # run_id, status, owner, queue, capabilities, recoveries
            ("new", "pending", None, "default", ["a"], 0),
            ("held", "running", "alive", "default", ["a"], 0),
            ("orphan", "running", "dead", "default", ["a"], 0),
            ("poison", "running", "dead", "default", ["a"], 9),  # backoff 256 s: not yet
            ("gone", "running", "vanished", "default", [], 0),   # no workers row at all
            ("cannot", "pending", None, "default", ["a", "gpu"], 0),
            ("elsewhere", "pending", None, "batch", [], 0),
            ("ended", "succeeded", None, "default", [], 0),
        ]
        for i, (rid, status, owner, queue, caps, rec) in enumerate(runs):
            conn.execute(
                "INSERT INTO runs (run_id, workflow, version, definition, input, status,"
                " created_at, owner, queue, capabilities, recoveries) VALUES (%s, 'w', '1',"
                " '{}', '{}', %s, %s, %s, %s, %s, %s)", (rid, status, i, owner, queue, caps, rec))
        got = conn.execute(CLAIM, {"me": "w2", "now": t, "queues": ["default"],
                                   "mine": ["a", "b"], "free": 10}).fetchall()
        assert sorted(got) == [("gone", 1, 1), ("new", 1, 0), ("orphan", 1, 1)]
        fenced = conn.execute(FENCE, {"ids": ["new", "orphan", "held"], "epochs": [1, 0, 0],
                                      "me": "w2"}).fetchall()
        assert fenced == [("new",)], "a stale epoch or another owner's run is not this batch's"
        slots = [conn.execute(SLOT, {"wf": "w", "run": r, "now": t, "max": 2}).fetchall()
                 for r in ("new", "orphan", "gone", "new")]
        assert slots == [[(0,)], [(1,)], [], []], "two slots: two runs, each at most once"
