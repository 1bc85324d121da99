"""The embedded default store: one SQLite file.

Durability: WAL with ``synchronous=NORMAL`` (default) survives a crash of the
process at any instant — a committed transaction is in the WAL, which the OS
keeps even if we die; it may lose the last commits on a power cut.
``durability=strict`` (``sqlite:///p.db?durability=strict``) sets
``synchronous=FULL``: every commit is fsynced and also survives power loss.

Concurrency: several processes may share one file (a run here, ``podium
cancel`` there). Each process has one connection and so one writer; every
write is a short ``BEGIN IMMEDIATE`` transaction (so a lock upgrade can never
fail half-way) and the busy timeout makes the others wait instead of failing
with "database is locked".

Writes run on the event loop's thread: a WAL commit costs tens of
microseconds, less than a hop to a worker thread would. ``flush`` batches
every event appended since the last one into one transaction (group commit).
Checkpoints, which fsync, are the exception: with normal durability a thread
copies the log into the database (``_Checkpointer``); strict durability keeps
them on the writer, whose commits fsync anyway.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import orjson

from podium.errors import ConfigError, RunNotFound, StoreError
from podium.events import ErrorInfo, Event, StepSucceeded, event_from_dict
from podium.store.records import (
    TERMINAL_RUN_STATUSES,
    RunRecord,
    StepRecord,
)
from podium.store.sqlite_alerts import AlertQueries

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "checked_db_path", "migrations"]

log = logging.getLogger("podium.store")

_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 30.0
# Strict durability: the write-ahead log is grown to this size once, then reused.
_STRICT_WAL_BYTES = 1 << 20
# Normal durability: the checkpointer thread runs at most this often, and once the
# log holds this many frames the writer finishes a checkpoint so the log restarts.
_CHECKPOINT_INTERVAL_S = 0.025
_CHECKPOINT_RESTART_FRAMES = 1024
# ...and starts after this many write transactions: a short-lived process (a
# `podium run` of a few steps) leaves its small log to the checkpoint at close
# instead of paying for a thread and a concurrent fsync it has no use for.
_CHECKPOINT_THREAD_AFTER = 32


class _Checkpointer:
    """Copies the write-ahead log into the database on a thread of its own.

    A checkpoint is mostly two fsyncs of pages written since the last one: on
    this project's disks, ~5 ms for every ~60 three-step runs, paid inside a
    COMMIT on the event loop when SQLite checkpoints by itself. Here a thread
    with its own connection does that work (the GIL is released while SQLite
    runs) and the writer's connection never checkpoints automatically.

    The log restarts from its beginning only when a checkpoint has copied all of
    it, which a thread racing a busy writer never achieves. So once the log is
    long, the writer runs one checkpoint itself between two transactions
    (``restart_due``): it copies only what arrived since the thread's last pass.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.restart_due = False
        self.failed = False
        self._thread = threading.Thread(
            target=self._loop, name=f"podium-checkpoint:{path.name}", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Say the log grew (cheap: sets a flag the thread waits on)."""
        if not self._wake.is_set():  # set() takes a lock and notifies, every commit
            self._wake.set()

    def _loop(self) -> None:
        try:
            # Made and used on this thread only. Only normal durability has a
            # checkpointer: a checkpoint's fsyncs follow this connection's setting.
            conn = sqlite3.connect(self._path, isolation_level=None)
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            log.warning("checkpoints of %s stay on the writer: %s", self._path, exc)
            self.failed = True
            return
        try:
            while not self._stopping.is_set():
                self._wake.wait()
                self._wake.clear()
                if self._stopping.is_set():
                    break
                try:
                    _busy, frames, _copied = conn.execute(
                        "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # e.g. the disk is full: try again later
                    log.warning("checkpoint of %s failed, will retry: %s", self._path, exc)
                else:
                    if frames >= _CHECKPOINT_RESTART_FRAMES:
                        self.restart_due = True
                self._stopping.wait(_CHECKPOINT_INTERVAL_S)
        finally:
            conn.close()

    def close(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join()


def migrations() -> list[tuple[int, str]]:
    """Every schema step in order, from the SQL files shipped with the package."""
    folder = resources.files("podium.store") / "sql"
    out = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql"):
            out.append((int(name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(out)


SCHEMA_VERSION = migrations()[-1][0]


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def _error(text: str | None) -> ErrorInfo | None:
    return None if text is None else ErrorInfo.from_dict(orjson.loads(text))


_EVENT_FIELDS: dict[type[Event], tuple[str, ...]] = {}
# Kept elsewhere: run_id and ts have their columns, a step's output is in its row.
_NOT_IN_DATA = frozenset({"run_id", "ts", "output", "output_json"})


def _encode_event(e: Event) -> str:
    """Compact JSON of an event: only fields with a value, none that a column holds.

    Commit cost grows with the bytes written, and an event log row is written for
    every state change, so a few dozen bytes less per event shows per step.
    """
    names = _EVENT_FIELDS.get(type(e))
    if names is None:
        names = _EVENT_FIELDS[type(e)] = tuple(
            name for name in e.__struct_fields__ if name not in _NOT_IN_DATA)
    data = {}
    for name in names:
        value = getattr(e, name)
        if value is not None:
            data[name] = value
    return _dumps(data)


def _error_text(err: ErrorInfo | None) -> str | None:
    return None if err is None else _dumps(err.to_dict())


@dataclass(slots=True)
class _Live:
    """A run this process writes: its record, next event number, what changed.

    ``run`` is the engine's own live record (the one given to ``create_run`` or
    ``adopt``), which the engine moves with ``apply_event`` before it emits each
    event. A flush writes the pending events and the rows they touched as they
    stand *now*, which is every pending event applied: state is never behind the
    log, and no event is applied twice.
    """

    run: RunRecord
    seq: int
    # Touched by events of the batch being written; cleared once it committed.
    dirty_steps: set[str] = field(default_factory=set)
    dirty_run: bool = False
    encoded: dict[str, str] = field(default_factory=dict)  # step id -> output JSON
    # Step id -> (status, attempt) of the row as this process last wrote it; "?" for
    # a row written by an earlier process. Lets the hot transitions write only the
    # columns they change: binding parameters is most of a row write's cost.
    written: dict[str, tuple[str, int]] = field(default_factory=dict)


_STEP_UPSERT = """
INSERT INTO steps (run_id, step_id, status, attempts, agent_id, output, error, started_at,
                   finished_at, next_retry_at, optional, completed_seq, compensation_status,
                   compensation_attempts, compensation_error)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, step_id) DO UPDATE SET
    status = excluded.status, attempts = excluded.attempts, agent_id = excluded.agent_id,
    output = excluded.output, error = excluded.error, started_at = excluded.started_at,
    finished_at = excluded.finished_at, next_retry_at = excluded.next_retry_at,
    optional = excluded.optional, completed_seq = excluded.completed_seq,
    compensation_status = excluded.compensation_status,
    compensation_attempts = excluded.compensation_attempts,
    compensation_error = excluded.compensation_error
"""

# The hot transitions, each with only the columns it sets (the others keep their
# defaults or the values the previous write gave them); everything else upserts.
_STEP_INSERT_RUNNING = """
INSERT INTO steps (run_id, step_id, status, attempts, agent_id, started_at, optional)
VALUES (?, ?, 'running', ?, ?, ?, ?)
"""

_STEP_INSERT_SUCCEEDED = """
INSERT INTO steps (run_id, step_id, status, attempts, agent_id, output, started_at, finished_at,
                   optional, completed_seq)
VALUES (?, ?, 'succeeded', ?, ?, ?, ?, ?, ?, ?)
"""

_STEP_UPDATE_SUCCEEDED = """
UPDATE steps SET status = 'succeeded', output = ?, error = NULL, finished_at = ?,
                 completed_seq = ?
WHERE run_id = ? AND step_id = ?
"""

_RUN_UPDATE = """
UPDATE runs SET status = ?, output = ?, error = ?, started_at = ?, finished_at = ?, phase = ?,
                cancel_requested = CASE WHEN ? THEN 0 ELSE cancel_requested END
WHERE run_id = ?
"""

_RUN_COLUMNS = (
    "run_id, workflow, version, definition, input, status, output, error, created_at, "
    "started_at, finished_at, owner, lease_expires_at, cancel_requested, agents_source, phase"
)


def _bad_db(url: str, why: str, fix: str) -> ConfigError:
    shown = url if len(url) <= 100 else f"{url[:50]}…{url[-40:]} ({len(url):,} characters)"
    return ConfigError(f"database {shown!r} (--db or $PODIUM_DB): {why} (fix: {fix})")


# Linux's PATH_MAX and NAME_MAX: SQLite cannot open more, and says so less clearly.
_MAX_PATH_BYTES, _MAX_NAME_BYTES = 4096, 255


def checked_db_path(path: str, url: str) -> Path:
    """The file ``url`` names, refused at once if no database can live there.

    Checked before anything is opened or created: a FIFO would hang the first
    read for ever, and a directory, a device, a NUL byte or an overlong path
    are a mistyped ``--db`` (exit 2), not a database that went bad (exit 3).
    """
    if "\0" in path:
        raise _bad_db(url, "the path has a NUL byte", "check the path")
    encoded = os.fsencode(path)
    if len(encoded) > _MAX_PATH_BYTES or any(
        len(part) > _MAX_NAME_BYTES for part in encoded.split(b"/")
    ):
        raise _bad_db(url, f"the path is too long ({len(encoded):,} bytes)",
                      "use a shorter path")
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return Path(path)  # made on open, with its folder
    except OSError as exc:
        raise _bad_db(url, f"cannot use the path: {exc.strerror or exc}",
                      "check the path") from None
    if stat.S_ISDIR(mode):
        raise _bad_db(url, "it is a directory", "name a file in it, e.g. DIR/podium.db")
    if not stat.S_ISREG(mode):
        raise _bad_db(url, "it is not a regular file (a FIFO, a device or a socket)",
                      "name a database file")
    return Path(path)


class SQLiteStore(AlertQueries):
    def __init__(self, path: Path | str, *, durability: str = "normal") -> None:
        if durability not in ("normal", "strict"):
            raise ConfigError(f"durability {durability!r} is not known (fix: use normal or strict)")
        self.path = Path(path)
        self.durability = durability
        self.url = f"sqlite:///{self.path}" + (
            "?durability=strict" if durability == "strict" else ""
        )
        self._conn: sqlite3.Connection | None = None
        # Normal durability: started by the writes (reading never starts it);
        # False once it failed and SQLite checkpoints by itself.
        self._checkpointer: _Checkpointer | None = None
        self._checkpoint_thread = durability == "normal"
        self._writes = 0  # write transactions before the checkpointer started
        self._live: dict[str, _Live] = {}
        self._pending: list[Event] = []
        self._new_runs: list[RunRecord] = []
        # The waiters of the flush scheduled for this loop turn (None: none is).
        self._flush_waiters: list[asyncio.Future[None]] | None = None
        self._commits = 0  # transactions of events committed (see pending_commit)
        self._definitions: dict[int, tuple[dict[str, Any], str]] = {}

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        parsed = urlparse(url)
        # sqlite:///relative/path and sqlite:////absolute/path, as SQLAlchemy spells them.
        raw = unquote(parsed.netloc + parsed.path)
        path = raw[1:] if raw.startswith("/") else raw
        if not path:
            raise ConfigError(f"{url!r} names no file (fix: sqlite:///.podium/podium.db)")
        # Only our own option. SQLite's URI options (mode=ro, vfs=...) are not passed
        # on, so accepting them would promise what does not happen (a "read-only"
        # database written to), and a misspelt durability must not pass silently.
        params = parse_qs(parsed.query, keep_blank_values=True)
        unknown = sorted(set(params) - {"durability"})
        durability = params.get("durability", ["normal"])
        if unknown:
            raise _bad_db(url, f"unknown option {', '.join(unknown)}",
                          "the only option is durability=normal or durability=strict")
        if len(durability) != 1 or durability[0] not in ("normal", "strict"):
            raise _bad_db(url, f"durability={'&'.join(durability)!r} is not known",
                          "use durability=normal or durability=strict")
        return cls(checked_db_path(path, url), durability=durability[0])

    # --- opening ----------------------------------------------------------
    def _check_existing(self) -> None:
        """Refuse files that are not Podium's, before touching them at all."""
        try:
            with self.path.open("rb") as f:
                head = f.read(16)
        except OSError as exc:
            raise StoreError(f"cannot read database {self.path}: {exc.strerror or exc}") from None
        if not head:
            return
        if head != _HEADER:
            raise StoreError(
                f"{self.path} is not a SQLite database (fix: point --db at a Podium database,"
                " or move this file away)"
            )
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
            try:
                tables = {
                    r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                }
                if not tables:
                    return
                if "podium_meta" not in tables:
                    raise StoreError(
                        f"{self.path} is a SQLite database but not Podium's (tables: "
                        f"{', '.join(sorted(tables)[:5])}); it was left untouched"
                        " (fix: use another --db path)"
                    )
                row = conn.execute(
                    "SELECT value FROM podium_meta WHERE key = 'schema_version'"
                ).fetchone()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{self.path} is damaged or not a database ({exc}); it was left untouched"
            ) from None
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this Podium supports"
                f" ({SCHEMA_VERSION}) (fix: upgrade podium)"
            )

    async def open(self) -> None:
        if self._conn is not None:
            return
        if self.path.exists():
            self._check_existing()
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create {self.path.parent}: {exc.strerror or exc}"
                ) from None
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: cannot use WAL mode (got {mode})")
            sync = "FULL" if self.durability == "strict" else "NORMAL"
            conn.execute(f"PRAGMA synchronous = {sync}")
            conn.execute("PRAGMA foreign_keys = ON")
            self._migrate(conn)
            if self.durability == "strict":
                self._preallocate_wal(conn)
            else:
                conn.execute("PRAGMA wal_autocheckpoint = 0")
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot prepare database {self.path}: {exc}") from None
        except StoreError:
            conn.close()
            raise
        self._conn = conn

    def _preallocate_wal(self, conn: sqlite3.Connection) -> None:
        """Give the log its working size up front, so commits overwrite it in place.

        With synchronous=FULL every commit fsyncs the log. Appending to the file
        also changes its size, which makes each fsync a journal commit of the file
        system as well: measured on this project's ext4 disks, 500-900 µs per
        commit while the log grows against 250-350 µs once it is reused. SQLite
        reuses the log from its start after a checkpoint, so: write (and drop) one
        filler row of the log's working size once, checkpoint, and cap the log's
        cycle at that size. About 10 ms once per open; nothing is left in the data.
        """
        wal = Path(f"{self.path}-wal")
        pages = _STRICT_WAL_BYTES // int(conn.execute("PRAGMA page_size").fetchone()[0])
        conn.execute(f"PRAGMA wal_autocheckpoint = {pages}")
        try:
            if wal.stat().st_size >= _STRICT_WAL_BYTES:
                return  # another connection grew it already
        except OSError:
            pass
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "INSERT INTO podium_meta (key, value) VALUES ('wal_filler', zeroblob(?))",
                (_STRICT_WAL_BYTES - 64 * 1024,),
            )
            conn.execute("DELETE FROM podium_meta WHERE key = 'wal_filler'")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        # PASSIVE never waits for other connections; once it has copied everything,
        # the next write starts the log over from its beginning.
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    @staticmethod
    def _migrate(conn: sqlite3.Connection, upto: int | None = None) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            has_meta = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='podium_meta'"
            ).fetchone()
            current = 0
            if has_meta:
                row = conn.execute(
                    "SELECT value FROM podium_meta WHERE key='schema_version'"
                ).fetchone()
                current = int(row[0]) if row else 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"database schema version {current} is newer than this Podium supports"
                    f" ({SCHEMA_VERSION}) (fix: upgrade podium)"
                )
            for version, script in migrations():
                if version <= current or (upto is not None and version > upto):
                    continue
                body = "\n".join(
                    ln for ln in script.splitlines() if not ln.strip().startswith("--")
                )
                for statement in body.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO podium_meta (key, value) VALUES ('schema_version', ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(version),),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the store is not open")
        return self._conn

    async def close(self) -> None:
        if self._conn is None:
            return
        if self._pending:
            await self.flush()
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        self._conn.close()
        self._conn = None

    def _write(self, fn: Any, *args: Any) -> Any:
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn, *args)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"database {self.path}: {exc}") from None
        if self._checkpoint_thread:
            self._after_commit()
        return result

    # --- writes -----------------------------------------------------------
    async def save_workflow(
        self, name: str, version: int | str, definition: dict[str, Any]
    ) -> None:
        def do(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO workflows (name, version, definition, created_at) VALUES (?, ?, ?,"
                " julianday('now')) ON CONFLICT (name, version) DO UPDATE SET"
                " definition = excluded.definition",
                (name, _dumps(version), _dumps(definition)),
            )

        self._write(do)

    async def create_run(self, run: RunRecord) -> None:
        """Queue the run's row: it is written by the next flush, in one transaction with
        the run's first events (the engine flushes before any step starts)."""
        self._new_runs.append(run)
        self._live[run.run_id] = _Live(run, 0)

    def _definition_json(self, definition: dict[str, Any]) -> str:
        """The engine gives every run of a workflow the same snapshot object: encode
        it once, not once per run (a 1,000-step definition is ~0.3 ms of JSON)."""
        hit = self._definitions.get(id(definition))
        if hit is not None and hit[0] is definition:
            return hit[1]
        text = _dumps(definition)
        if len(self._definitions) >= 64:
            self._definitions.clear()
        self._definitions[id(definition)] = (definition, text)
        return text

    def _insert_run(self, conn: sqlite3.Connection, run: RunRecord) -> None:
        conn.execute(
            f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"  # noqa: S608 - fixed column list
            " ?, ?, ?)",
            (
                run.run_id,
                run.workflow,
                _dumps(run.version),
                self._definition_json(run.definition),
                _dumps(run.input),
                run.status,
                _dumps(run.output),
                _error_text(run.error),
                run.created_at,
                run.started_at,
                run.finished_at,
                run.owner,
                run.lease_expires_at,
                int(run.cancel_requested),
                _dumps(run.agents_source),
                run.phase,
            ),
        )

    async def adopt(self, run: RunRecord) -> None:
        """Start writing events of an existing run (a resume) from this process."""
        row = self.conn.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = ?", (run.run_id,)
        ).fetchone()
        # Outputs committed by an earlier process: a later event on such a step (its
        # compensation) rewrites the whole row, which must keep the output, not null it.
        encoded = {
            sid: _dumps(s.output)
            for sid, s in run.steps.items()
            if s.status in ("succeeded", "compensated")
        }
        self._live[run.run_id] = _Live(
            run, int(row[0]), encoded=encoded, written=dict.fromkeys(run.steps, ("?", -1)))

    def append(self, event: Event) -> None:
        self._pending.append(event)

    def flush_now(self) -> bool:
        """Commit at once, synchronously, if no batch is forming; False if one is.

        For a caller that knows nothing else is about to finish (one step running
        in the whole engine): waiting a loop turn to gather a batch would gain
        nothing and cost a turn of the loop per step.
        """
        if self._flush_waiters is not None:
            return False
        self._commit_pending()
        return True

    def _commit_pending(self) -> None:
        """Write everything pending in one transaction; on failure keep all of it
        pending for the next flush (nothing was written, the transaction rolled
        back, and the bookkeeping moves only on success)."""
        if not self._pending and not self._new_runs:
            return
        events, self._pending = self._pending, []
        new_runs, self._new_runs = self._new_runs, []
        try:
            self._write(self._commit_events, events, new_runs)()
        except BaseException:
            self._pending[:0] = events
            self._new_runs[:0] = new_runs
            raise
        self._commits += 1

    def _after_commit(self) -> None:
        """Keep the checkpointer going; finish its checkpoint when the log is long.

        Runs after a COMMIT succeeded, so it must not raise (the caller would
        take the committed batch for failed and write it again): a failed
        checkpoint loses nothing, the log just stays longer until the next one.
        """
        try:
            ck = self._checkpointer
            if ck is None:
                self._writes += 1
                if self._writes < _CHECKPOINT_THREAD_AFTER:
                    return
                try:
                    ck = self._checkpointer = _Checkpointer(self.path)
                except RuntimeError as exc:  # no thread can start (a process limit)
                    log.warning("checkpoints of %s stay on the writer: %s", self.path, exc)
                    ck = None
            if ck is None or ck.failed:  # then SQLite checkpoints by itself, as by default
                self._checkpoint_thread = False
                self._checkpointer = None
                self.conn.execute("PRAGMA wal_autocheckpoint = 1000")
            elif ck.restart_due:
                busy, frames, copied = self.conn.execute(
                    "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                # All copied: the next transaction starts the log over. Else another
                # process wrote meanwhile: try again after the next commit, as SQLite's
                # own checkpoints do.
                ck.restart_due = bool(busy) or copied < frames
            else:
                ck.poke()
        except Exception as exc:  # noqa: BLE001 - see above
            log.warning("checkpoint of %s failed, will retry: %s", self.path, exc)

    @property
    def commits(self) -> int:
        return self._commits

    def pending_commit(self) -> int:
        # A flush takes everything pending in one synchronous transaction, so what
        # is appended now is in the very next commit.
        return self._commits + 1

    def _schedule_flush(self) -> list[asyncio.Future[None]]:
        """The waiters of this loop turn's flush, scheduling that flush if need be.

        It runs after every callback already due in this loop turn: all the steps
        finishing "now" join its one transaction.
        """
        if self._flush_waiters is None:
            self._flush_waiters = []
            asyncio.get_running_loop().call_soon(self._do_flush)
        return self._flush_waiters

    def flush_soon(self) -> None:
        if self._pending or self._new_runs:
            self._schedule_flush()

    async def flush(self) -> None:
        if self._flush_waiters is None and not self._pending and not self._new_runs:
            return
        # One future per waiter (not one shared, shielded future): a waiter that is
        # cancelled cancels only its own, never everyone's commit, and this costs a
        # fraction of what ``asyncio.shield`` does per waiter in a big fan-out.
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._schedule_flush().append(fut)
        await fut

    def _do_flush(self) -> None:
        waiters = self._flush_waiters or []
        self._flush_waiters = None
        try:
            self._commit_pending()
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter of the flush
            if not waiters:
                # A flush nobody waits for (flush_soon): the batch stays pending and
                # the next flush, which somebody will wait for, tries again.
                log.warning("commit to %s failed, will retry: %s", self.path, exc)
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _commit_events(
        self, conn: sqlite3.Connection, events: list[Event], new_runs: Sequence[RunRecord] = ()
    ) -> Callable[[], None]:
        """Write a batch; returns what moves the bookkeeping on, to call after COMMIT.

        Until then nothing that says what is *written* changed (sequence numbers,
        ``written``), so a failed commit is simply retried with the next flush, rows
        and all. What is marked dirty here stays dirty until ``settle``.
        """
        for run in new_runs:
            self._insert_run(conn, run)  # as it stands now: its first events included
        lives = self._live
        seqs: dict[str, int] = {}
        rows = []
        # A batch is mostly runs of events of one run: look its state up once per run.
        last: str | None = None
        live: _Live | None = None
        seq = 0
        for e in events:
            rid = e.run_id
            if rid != last:
                if live is not None:
                    seqs[last] = seq  # type: ignore[index]
                last = rid
                live = lives.get(rid)
                if live is None:
                    continue  # a run this process does not own (cancel requests use SQL)
                seq = seqs.get(rid, live.seq)
            elif live is None:
                continue
            seq += 1
            step_id = getattr(e, "step_id", None)
            if step_id is None:
                live.dirty_run = True
            else:
                live.dirty_steps.add(step_id)
                if type(e) is StepSucceeded:
                    # Idempotent: the same output whatever happens to this commit.
                    live.encoded[step_id] = e.output_json
            rows.append((rid, seq, e.type, e.ts, _encode_event(e)))
        if live is not None:
            seqs[last] = seq  # type: ignore[index]
        conn.executemany(
            "INSERT INTO events (run_id, seq, type, ts, data) VALUES (?, ?, ?, ?, ?)", rows
        )
        inserted = {run.run_id for run in new_runs}
        step_rows: list[tuple[Any, ...]] = []
        ins_running: list[tuple[Any, ...]] = []
        ins_succeeded: list[tuple[Any, ...]] = []
        upd_succeeded: list[tuple[Any, ...]] = []
        finished: list[str] = []
        wrote: list[tuple[_Live, str, tuple[str, int]]] = []
        for run_id in seqs:
            live = lives[run_id]
            written = live.written
            steps = live.run.steps
            for sid in live.dirty_steps:
                s = steps[sid]
                status = s.status
                prior = written.get(sid)
                wrote.append((live, sid, (status, s.attempts)))
                plain = (
                    s.error is None
                    and s.next_retry_at is None
                    and s.compensation_status is None
                    and s.compensation_attempts == 0
                    and s.compensation_error is None
                )
                if plain and status == "succeeded":
                    text = live.encoded.get(sid, "null")
                    if prior is None:
                        ins_succeeded.append((
                            run_id, sid, s.attempts, s.agent_id, text, s.started_at,
                            s.finished_at, int(s.optional), s.completed_seq))
                        continue
                    if prior == ("running", s.attempts):
                        # That row has this attempt's agent and start already.
                        upd_succeeded.append((text, s.finished_at, s.completed_seq, run_id, sid))
                        continue
                elif (plain and status == "running" and prior is None
                      and s.finished_at is None and s.completed_seq is None):
                    ins_running.append(
                        (run_id, sid, s.attempts, s.agent_id, s.started_at, int(s.optional)))
                    continue
                out = live.encoded.get(sid, "null") if status in ("succeeded", "compensated") \
                    else None
                step_rows.append(
                    (
                        run_id,
                        sid,
                        status,
                        s.attempts,
                        s.agent_id,
                        out,
                        _error_text(s.error),
                        s.started_at,
                        s.finished_at,
                        s.next_retry_at,
                        int(s.optional),
                        s.completed_seq,
                        s.compensation_status,
                        s.compensation_attempts,
                        _error_text(s.compensation_error),
                    )
                )
            if live.dirty_run:
                r = live.run
                if run_id not in inserted:
                    conn.execute(
                        _RUN_UPDATE,
                        (
                            r.status,
                            _dumps(r.output),
                            _error_text(r.error),
                            r.started_at,
                            r.finished_at,
                            r.phase,
                            r.status in TERMINAL_RUN_STATUSES,
                            run_id,
                        ),
                    )
                if r.status in TERMINAL_RUN_STATUSES:
                    finished.append(run_id)
        if step_rows:
            conn.executemany(_STEP_UPSERT, step_rows)
        if ins_running:
            conn.executemany(_STEP_INSERT_RUNNING, ins_running)
        if ins_succeeded:
            conn.executemany(_STEP_INSERT_SUCCEEDED, ins_succeeded)
        if upd_succeeded:
            cur = conn.executemany(_STEP_UPDATE_SUCCEEDED, upd_succeeded)
            if cur.rowcount != len(upd_succeeded):
                raise sqlite3.IntegrityError(
                    "a step row this process wrote is gone (another writer deleted it?)")

        def settle() -> None:
            """Move the bookkeeping on: called only once the transaction committed."""
            for live, sid, state in wrote:
                live.written[sid] = state
            for run_id, seq in seqs.items():
                live = lives[run_id]
                live.seq = seq
                live.dirty_steps.clear()
                live.dirty_run = False
            for run_id in finished:
                del lives[run_id]

        return settle

    # --- reads ------------------------------------------------------------
    def _resolve_id(self, run_id: str) -> str:
        conn = self.conn
        if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
            return run_id
        rows = conn.execute(
            "SELECT run_id FROM runs WHERE run_id >= ? AND run_id < ? LIMIT 2",
            (run_id, run_id + "\uffff"),
        ).fetchall()
        if len(rows) == 1:
            return str(rows[0][0])
        if rows:
            raise RunNotFound(
                f"run id prefix '{run_id}' is ambiguous (fix: type more of it)", run_id=run_id
            )
        raise RunNotFound(
            f"no run '{run_id}' in {self.path} (fix: see `podium runs`)", run_id=run_id
        )

    @staticmethod
    def _run_from_row(row: Sequence[Any]) -> RunRecord:
        return RunRecord(
            run_id=row[0],
            workflow=row[1],
            version=_loads(row[2]),
            definition=_loads(row[3]),
            input=_loads(row[4]),
            status=row[5],
            output=_loads(row[6]),
            error=_error(row[7]),
            created_at=row[8],
            started_at=row[9],
            finished_at=row[10],
            owner=row[11],
            lease_expires_at=row[12],
            cancel_requested=bool(row[13]),
            agents_source=_loads(row[14]) or {},
            phase=row[15],
        )

    async def get_run(self, run_id: str) -> RunRecord:
        try:
            rid = self._resolve_id(run_id)
            conn = self.conn
            row = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?",  # noqa: S608 - fixed column list
                (rid,),
            ).fetchone()
            run = self._run_from_row(row)
            for s in conn.execute(
                "SELECT step_id, status, attempts, agent_id, output, error, started_at,"
                " finished_at, next_retry_at, optional, completed_seq, compensation_status,"
                " compensation_attempts, compensation_error FROM steps WHERE run_id = ?",
                (rid,),
            ):
                run.steps[s[0]] = StepRecord(
                    step_id=s[0],
                    status=s[1],
                    attempts=s[2],
                    agent_id=s[3],
                    output=_loads(s[4]),
                    error=_error(s[5]),
                    started_at=s[6],
                    finished_at=s[7],
                    next_retry_at=s[8],
                    optional=bool(s[9]),
                    completed_seq=s[10],
                    compensation_status=s[11],
                    compensation_attempts=s[12],
                    compensation_error=_error(s[13]),
                )
            run.completions = max((s.completed_seq or 0 for s in run.steps.values()), default=0)
            return run
        except sqlite3.Error as exc:
            raise StoreError(f"database {self.path}: {exc}") from None

    async def list_runs(
        self, *, status: str | None = None, workflow: str | None = None, limit: int = 50
    ) -> list[RunRecord]:
        clauses, params = [], []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if workflow is not None:
            clauses.append("workflow = ?")
            params.append(workflow)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        try:
            rows = self.conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs {where} ORDER BY created_at DESC LIMIT ?",  # noqa: S608 - clauses are fixed strings
                (*params, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"database {self.path}: {exc}") from None
        return [self._run_from_row(r) for r in rows]

    async def get_events(self, run_id: str) -> Sequence[Event]:
        rid = self._resolve_id(run_id)
        out = []
        for kind, ts, data in self.conn.execute(
            "SELECT type, ts, data FROM events WHERE run_id = ? ORDER BY seq", (rid,)
        ):
            d = orjson.loads(data)
            d["type"] = kind
            d.setdefault("run_id", rid)
            d.setdefault("ts", ts)
            if kind == StepSucceeded.type:
                d.setdefault("output", None)
            try:
                out.append(event_from_dict(d))
            except (KeyError, TypeError):
                continue  # an event type from a newer Podium: skip, don't fail the read
        return out

    async def request_cancel(self, run_id: str) -> bool:
        rid = self._resolve_id(run_id)

        def do(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE runs SET cancel_requested = 1 WHERE run_id = ? AND status NOT IN"
                " ('succeeded', 'failed', 'cancelled', 'rolled_back', 'rollback_failed')",
                (rid,),
            )
            return cur.rowcount

        return bool(self._write(do))

    async def cancel_requests(self, run_ids: Collection[str]) -> set[str]:
        ids = list(run_ids)
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(
            f"SELECT run_id FROM runs WHERE cancel_requested = 1 AND run_id IN ({marks})",  # noqa: S608 - placeholders only
            ids,
        ).fetchall()
        return {r[0] for r in rows}

    async def claim_run(self, run_id: str, owner: str, until: float, now: float) -> bool:
        def do(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE runs SET owner = ?, lease_expires_at = ?, cancel_requested = 0"
                " WHERE run_id = ? AND (owner IS NULL OR owner = ? OR lease_expires_at IS NULL"
                " OR lease_expires_at < ?)",
                (owner, until, run_id, owner, now),
            )
            return cur.rowcount

        return bool(self._write(do))

    async def release_run(self, run_id: str, owner: str, *, force: bool = False) -> None:
        """Give up ownership (or take it from a dead owner when ``force``)."""

        def do(conn: sqlite3.Connection) -> None:
            if force:
                conn.execute("UPDATE runs SET owner = NULL WHERE run_id = ?", (run_id,))
            else:
                conn.execute(
                    "UPDATE runs SET owner = NULL WHERE run_id = ? AND owner = ?", (run_id, owner)
                )

        self._write(do)

    async def renew_leases(self, owner: str, run_ids: Collection[str], until: float) -> None:
        ids = list(run_ids)
        if not ids:
            return
        marks = ",".join("?" * len(ids))

        def do(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"UPDATE runs SET lease_expires_at = ? WHERE owner = ? AND run_id IN ({marks})",  # noqa: S608 - placeholders only
                (until, owner, *ids),
            )

        self._write(do)
