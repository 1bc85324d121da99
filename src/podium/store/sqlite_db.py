"""Opening a SQLite database file: checks, migrations, errors in words, one per process.

Why this is careful about file descriptors: on POSIX, closing *any* descriptor
of a file drops *all* of the process's ``fcntl`` locks on it, SQLite's
included. A plain ``open()``/``close()`` of the database (to read its header,
say) while a connection is open makes every other process believe nobody
holds the database: the last one to close it checkpoints and deletes the
write-ahead log under the feet of the connection still writing, and what it
commits afterwards is lost. SQLite guards against this among its own
connections, not against anyone else's descriptors. So nothing here opens,
copies or reads the database or its ``-wal``/``-shm`` except through
``sqlite3`` (a ``stat`` opens nothing), and a process keeps one store object
per database file (``claim_file``), which every caller shares.

A store opened read-only (``podium runs``, ``status``...) connects with
``mode=ro``: it never takes the write lock, never waits for a writer (it reads
the last committed snapshot of the log) and never migrates. Reading a file
with an older schema works all the same: columns added since read as their
defaults.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from podium.errors import StoreError

__all__ = [
    "BUSY_TIMEOUT_S",
    "SCHEMA_VERSION",
    "Opened",
    "SQLitePart",
    "claim_file",
    "connect",
    "file_key",
    "migrate",
    "migrations",
    "release_file",
    "store_error",
]

BUSY_TIMEOUT_S = 30.0


def _sql_folder() -> Any:
    return resources.files("podium.store") / "sql" / "sqlite"


def _migration_files() -> list[tuple[int, Any]]:
    """The numbered schema steps, by version (queries.sql and schema.sql sit beside)."""
    return sorted(((int(e.name.split("_", 1)[0]), e) for e in _sql_folder().iterdir()
                   if e.name.endswith(".sql") and e.name[:1].isdigit()), key=lambda m: m[0])


def migrations() -> list[tuple[int, str]]:
    """Every schema step in order, from the SQL files shipped with the package."""
    return [(v, entry.read_text(encoding="utf-8")) for v, entry in _migration_files()]


# From the file names alone: every process imports this, few migrate anything.
SCHEMA_VERSION = _migration_files()[-1][0]


# --- one store per file per process ----------------------------------------------
_OPEN: dict[str, object] = {}
_OPEN_LOCK = threading.Lock()


def file_key(path: Path) -> str:
    """The name a file is known by in this process (symlinks and ``..`` resolved)."""
    return os.path.realpath(path)


def claim_file(path: Path, store: object) -> None:
    """Record ``store`` as this process's one store of ``path``; refuse a second one."""
    key = file_key(path)
    with _OPEN_LOCK:
        other = _OPEN.get(key)
        if other is not None and other is not store:
            raise StoreError(
                f"{path} is already open in this process by another store object; a second"
                " one could break the first one's locks (fix: get the store with"
                " podium.store.open_store(url), which shares the open one)"
            )
        _OPEN[key] = store


def release_file(path: Path, store: object) -> None:
    with _OPEN_LOCK:
        if _OPEN.get(file_key(path)) is store:
            del _OPEN[file_key(path)]


def open_store_of(path: Path) -> object | None:
    """The store this process has open on ``path``, if any."""
    with _OPEN_LOCK:
        return _OPEN.get(file_key(path))


# --- errors in words ---------------------------------------------------------------
def _read_only_reason(path: Path) -> str | None:
    """Why ``path`` (or the folder it would be made in) cannot be written, if it cannot."""
    where = path if path.exists() else path.parent
    if _on_read_only_mount(where):
        return f"{where} is on a read-only file system"
    if not os.path.exists(where):
        return None
    if not os.access(where, os.W_OK):
        return f"{where} is not writable by this user"
    if path.exists() and not os.access(path.parent, os.W_OK):
        return f"its folder {path.parent} is not writable (SQLite needs to make files beside it)"
    return None


def store_error(exc: sqlite3.Error | OSError, path: Path, doing: str = "database") -> StoreError:
    """A ``StoreError`` that says what happened in words a user acts on.

    SQLite reports a full disk and a read-only mount in several ways (``SQLITE_FULL``,
    an I/O error with ``ENOSPC``, ``SQLITE_READONLY``, "unable to open" when the log
    cannot be made beside the file); each is named for what it is, not "damaged".
    """
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    os_errno = exc.errno if isinstance(exc, OSError) else None
    text = str(exc)
    if primary == sqlite3.SQLITE_FULL or os_errno == errno.ENOSPC:
        return StoreError(
            f"{doing} {path}: the disk is full ({text}); what was committed before is kept"
            " (fix: free some space, then run the command again or `podium resume` the run)"
        )
    reason = _read_only_reason(path)
    if primary == sqlite3.SQLITE_READONLY or os_errno in (errno.EROFS, errno.EACCES) or (
        reason is not None and primary in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR)
    ):
        return StoreError(
            f"{doing} {path} is read-only: {reason or text}"
            " (fix: use a writable folder with --db, or make this one writable)"
        )
    if primary == sqlite3.SQLITE_NOTADB:
        return StoreError(
            f"{path} is not a SQLite database, or a damaged one; it was left untouched (fix:"
            " point --db at a Podium database, or move this file away)"
        )
    if primary == sqlite3.SQLITE_CORRUPT:
        return StoreError(f"{path} is damaged ({text}); it was left untouched")
    if primary == sqlite3.SQLITE_BUSY:
        return StoreError(
            f"{doing} {path} stayed locked by another process for {BUSY_TIMEOUT_S:g}s"
            " (fix: retry; see which podium process holds it)"
        )
    if primary == sqlite3.SQLITE_CANTOPEN:
        return StoreError(f"cannot open {doing} {path}: {text}")
    return StoreError(f"{doing} {path}: {text}")


# --- connecting --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Opened:
    """A connection ready for the store, and how to read run and step rows from it."""

    conn: sqlite3.Connection
    # SELECT lists for runs and steps: a column this file lacks (an older schema, read
    # without migrating) reads as its default.
    run_columns: str
    step_columns: str


RUN_COLUMNS = (
    "run_id", "workflow", "version", "definition", "input", "status", "output", "error",
    "created_at", "started_at", "finished_at", "owner", "lease_expires_at", "cancel_requested",
    "agents_source", "phase", "epoch", "recoveries", "recovered_at", "queue",
)
STEP_COLUMNS = (
    "step_id", "status", "attempts", "agent_id", "output", "error", "started_at", "finished_at",
    "next_retry_at", "optional", "completed_seq", "compensation_status",
    "compensation_attempts", "compensation_error",
)


@cache
def _defaults() -> dict[str, dict[str, str]]:
    """Each column's default in the current schema, by table (from an in-memory copy)."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        migrate(conn)
        return {
            table: {r[1]: (r[4] if r[4] is not None else "NULL")
                    for r in conn.execute(f"PRAGMA table_info({table})")}
            for table in ("runs", "steps")
        }
    finally:
        conn.close()


def _select_list(conn: sqlite3.Connection, table: str, wanted: tuple[str, ...]) -> str:
    present = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
    if present.issuperset(wanted):
        return ", ".join(wanted)
    defaults = _defaults()[table]
    return ", ".join(c if c in present else f"{defaults[c]} AS {c}" for c in wanted)


def _schema_version(conn: sqlite3.Connection, path: Path) -> int | None:
    """The file's Podium schema version; None for an empty database; refuse foreign ones."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        return None
    if "podium_meta" not in tables:
        raise StoreError(
            f"{path} is a SQLite database but not Podium's (tables: "
            f"{', '.join(sorted(tables)[:5])}); it was left untouched (fix: use another --db path)"
        )
    row = conn.execute("SELECT value FROM podium_meta WHERE key = 'schema_version'").fetchone()
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema version {version}, newer than this Podium supports"
            f" ({SCHEMA_VERSION}) (fix: upgrade podium)"
        )
    return version


def connect(path: Path, *, readonly: bool, synchronous: str = "NORMAL") -> Opened:
    """Open ``path`` for the store, checked (and, for writing, migrated) before use.

    The checks run on the store's own connection, before anything is written: a file
    that is not a database, or a database that is not Podium's, is refused untouched.
    """
    if readonly:
        return _connect_readonly(path)
    new = not path.exists()
    if new:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise store_error(exc, path, "cannot create the database") from None
    try:
        conn = sqlite3.connect(
            path, isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise store_error(exc, path) from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        _schema_version(conn, path)  # reads the header and the tables; writes nothing
        # A new file turns to WAL mode through a rollback journal, which SQLite's
        # default (FULL) fsyncs four times (journal, folder, journal, database), and
        # its first write to the log syncs the log and the folder again: 2 ms idle, far
        # more while other processes write to the disk. Normal durability promises to
        # survive a crash of the process, which needs no fsync, and the file holds no
        # run yet: it is made without them. Strict keeps every fsync.
        bare = new and synchronous == "NORMAL"
        conn.execute(f"PRAGMA synchronous = {'OFF' if bare else synchronous}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{path}: cannot use WAL mode (got {mode})")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn)
        if bare:
            conn.execute(f"PRAGMA synchronous = {synchronous}")
    except sqlite3.Error as exc:
        conn.close()
        raise store_error(exc, path) from None
    except BaseException:
        conn.close()
        raise
    return Opened(conn, ", ".join(RUN_COLUMNS), ", ".join(STEP_COLUMNS))


def _empty() -> Opened:
    """Nothing to read yet, and a reader makes no files: an empty schema in memory
    answers "no runs" without creating the database."""
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    migrate(conn)
    return Opened(conn, ", ".join(RUN_COLUMNS), ", ".join(STEP_COLUMNS))


def _connect_readonly(path: Path) -> Opened:
    if not path.exists():
        return _empty()
    try:
        return _open_readonly(path, immutable=False)
    except StoreError:
        # A database on a read-only mount whose log was checkpointed away: SQLite cannot
        # make the shared-memory file a WAL reader needs. Nobody can write the file
        # either, so reading it as immutable is exact.
        if not _on_read_only_mount(path) or os.path.exists(f"{path}-wal"):
            raise
        return _open_readonly(path, immutable=True)


def _on_read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _open_readonly(path: Path, *, immutable: bool) -> Opened:
    uri = "file:" + quote(os.path.abspath(path)) + "?mode=ro" + ("&immutable=1" if immutable
                                                                   else "")
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_S,
                               check_same_thread=False)
    except sqlite3.Error as exc:
        raise store_error(exc, path) from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA query_only = ON")
        if _schema_version(conn, path) is None:
            conn.close()
            return _empty()
        return Opened(conn, _select_list(conn, "runs", RUN_COLUMNS),
                      _select_list(conn, "steps", STEP_COLUMNS))
    except sqlite3.Error as exc:
        conn.close()
        raise store_error(exc, path) from None
    except BaseException:
        conn.close()
        raise


def migrate(conn: sqlite3.Connection, upto: int | None = None) -> None:
    """Bring the schema up to date in one transaction (all steps or none).

    A database without Podium's tables yet (a new file) gets the schema as the
    migrations leave it in one go (``_fresh_schema``): the same tables, indexes
    and schema text, without the dozen ``ALTER TABLE`` steps, each of which
    makes SQLite parse the whole schema again.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        has_meta = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='podium_meta'"
        ).fetchone()
        current = 0
        if has_meta:
            row = conn.execute(
                "SELECT value FROM podium_meta WHERE key='schema_version'").fetchone()
            current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"database schema version {current} is newer than this Podium supports"
                f" ({SCHEMA_VERSION}) (fix: upgrade podium)"
            )
        if not has_meta and (upto is None or upto >= SCHEMA_VERSION):
            for statement in _fresh_schema():
                conn.execute(statement)
            _set_version(conn, SCHEMA_VERSION)
        else:
            _migrate_steps(conn, current, upto)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _migrate_steps(conn: sqlite3.Connection, current: int, upto: int | None) -> None:
    """Every migration after ``current`` (up to ``upto``), one statement at a time."""
    for version, script in migrations():
        if version <= current or (upto is not None and version > upto):
            continue
        body = "\n".join(ln for ln in script.splitlines() if not ln.strip().startswith("--"))
        for statement in body.split(";"):
            if statement.strip():
                conn.execute(statement)
        _set_version(conn, version)


def _set_version(conn: sqlite3.Connection, version: int) -> None:
    conn.execute(
        "INSERT INTO podium_meta (key, value) VALUES ('schema_version', ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(version),),
    )


_SCHEMA_HEADER = "-- The schema the migrations make (by sqlite_db.schema_sql()), version "


@cache
def _fresh_schema() -> tuple[str, ...]:
    """The schema's statements as the migrations leave it, in the order they made them.

    ``schema.sql`` ships them, so that a new database (the first run of a project,
    a test's) does not pay for migrating a copy in memory first (~3 ms). A file not
    made for this schema version (a migration added since) is ignored: the
    statements then come from the migrations, as ``schema_sql`` makes them.
    """
    text = (_sql_folder() / "schema.sql").read_text(encoding="utf-8")
    header, _, body = text.partition("\n")
    if header != f"{_SCHEMA_HEADER}{SCHEMA_VERSION}":
        return _schema_from_migrations()
    statements: list[str] = []
    current = ""
    for line in body.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip("\n").removesuffix(";"))
            current = ""
    return tuple(statements)


def schema_sql() -> str:
    """The text of ``schema.sql`` for the current migrations. After adding one, run
    ``python -c 'import podium.store.sqlite_db as d; print(d.schema_sql(), end="")' >
    src/podium/store/sql/sqlite/schema.sql``."""
    body = "".join(f"{statement};\n\n" for statement in _schema_from_migrations())
    return f"{_SCHEMA_HEADER}{SCHEMA_VERSION}\n{body}"


def _schema_from_migrations() -> tuple[str, ...]:
    """Read back from an in-memory database migrated step by step: SQLite keeps each
    table's ``CREATE`` text with the columns added since, so running these statements
    on an empty file makes the very same schema."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        conn.execute("BEGIN")
        _migrate_steps(conn, 0, None)
        conn.execute("COMMIT")
        return tuple(r[0] for r in conn.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL"
            " AND name NOT LIKE 'sqlite^_%' ESCAPE '^' ORDER BY rowid"))  # SQLite's own
    finally:
        conn.close()


class SQLitePart:
    """A part of ``SQLiteStore`` kept in a module of its own (alerts, schedules, the
    registry, tokens): it uses the store's ``conn``, ``path`` and ``_write``."""

    path: Path

    @property
    def conn(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _write(self, fn: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError
