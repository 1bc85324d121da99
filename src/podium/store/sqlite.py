"""The embedded default store: one SQLite file.

Durability: WAL with ``synchronous=NORMAL`` (default) survives a crash of the
process at any instant — a committed transaction is in the WAL, which the OS
keeps even if we die; it may lose the last commits on a power cut.
``durability=strict`` (``sqlite:///p.db?durability=strict``) sets
``synchronous=FULL``: every commit is fsynced and also survives power loss.

Concurrency: several processes may share one file (a run here, ``podium
cancel`` there). Each process has one store object per file and so one
writer; every write is a short ``BEGIN IMMEDIATE`` transaction (so a lock
upgrade can never fail half-way) and the busy timeout makes the others wait
instead of failing with "database is locked".

Writes run on the event loop's thread (``write_batch_now``): a WAL commit
costs tens of microseconds, less than a hop to a worker thread would.
Checkpoints, which fsync, are the exception: with normal durability a thread
copies the log into the database (``Checkpointer``); strict durability keeps
them on the writer, whose commits fsync anyway. The statements are named, in
``store/sql/sqlite/queries.sql``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from podium.errors import ConfigError, RunNotFound, StoreError
from podium.events import Event
from podium.state import RunRecord
from podium.store.base import NO_RUNS, Batch, event_rows
from podium.store.queries import queries
from podium.store.rows import (
    DefinitionJson,
    dumps,
    events_from_rows,
    run_from_row,
    step_from_row,
    traceparent_of,
)
from podium.store.sqlite_agents import JoinedAgentQueries
from podium.store.sqlite_alerts import AlertQueries
from podium.store.sqlite_checkpoint import CHECKPOINT_THREAD_AFTER, Checkpointer
from podium.store.sqlite_db import (
    SCHEMA_VERSION,
    claim_file,
    connect,
    migrations,
    open_store_of,
    release_file,
    store_error,
)
from podium.store.sqlite_feed import FeedQueries, feed_ranges
from podium.store.sqlite_prune import PruneQueries
from podium.store.sqlite_registry import RegistryQueries
from podium.store.sqlite_schedules import ScheduleQueries
from podium.store.sqlite_tokens import TokenQueries
from podium.store.urls import bad_db

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "checked_db_path", "migrations"]

log = logging.getLogger("podium.store")

# Strict durability: the write-ahead log is grown to this size once, then reused.
_STRICT_WAL_BYTES = 1 << 20
Q = queries("sqlite")
_NOTHING: frozenset[str] = frozenset()
_NO_ROWS: dict[str, tuple[str, int]] = {}  # read, never written
_ROW_STATES: dict[tuple[str, int], tuple[str, int]] = {}  # see write_batch_now
_PENDING_ROW = ("pending", 0)  # a step row's (status, attempts) as step_insert_pending left it


# Linux's PATH_MAX and NAME_MAX: SQLite cannot open more, and says so less clearly.
_MAX_PATH_BYTES, _MAX_NAME_BYTES = 4096, 255


def checked_db_path(path: str, url: str) -> Path:
    """The file ``url`` names, refused at once if no database can live there.

    Checked before anything is opened or created: a FIFO would hang the first
    read for ever, and a directory, a device, a NUL byte or an overlong path
    are a mistyped ``--db`` (exit 2), not a database that went bad (exit 3).
    """
    if "\0" in path:
        raise bad_db(url, "the path has a NUL byte", "check the path")
    encoded = os.fsencode(path)
    if len(encoded) > _MAX_PATH_BYTES or any(
        len(part) > _MAX_NAME_BYTES for part in encoded.split(b"/")
    ):
        raise bad_db(url, f"the path is too long ({len(encoded):,} bytes)",
                      "use a shorter path")
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return Path(path)  # made on open, with its folder
    except OSError as exc:
        raise bad_db(url, f"cannot use the path: {exc.strerror or exc}",
                      "check the path") from None
    if stat.S_ISDIR(mode):
        raise bad_db(url, "it is a directory", "name a file in it, e.g. DIR/podium.db")
    if not stat.S_ISREG(mode):
        raise bad_db(url, "it is not a regular file (a FIFO, a device or a socket)",
                      "name a database file")
    return Path(path)


class SQLiteStore(AlertQueries, ScheduleQueries, RegistryQueries, TokenQueries, FeedQueries,
                  JoinedAgentQueries, PruneQueries):
    def __init__(self, path: Path | str, *, durability: str = "normal",
                 readonly: bool = False) -> None:
        if durability not in ("normal", "strict"):
            raise ConfigError(f"durability {durability!r} is not known (fix: use normal or strict)")
        self.path = Path(path)
        self.durability = durability
        # Readers (podium runs, status...) never take the write lock nor migrate.
        self.readonly = readonly
        self.url = f"sqlite:///{self.path}" + (
            "?durability=strict" if durability == "strict" else ""
        )
        self._conn: sqlite3.Connection | None = None
        self._users = 0  # callers that opened this store and have not closed it yet
        self._run_columns = self._step_columns = ""
        # Normal durability: started by the writes (reading never starts it);
        # False once it failed and SQLite checkpoints by itself.
        self._checkpointer: Checkpointer | None = None
        self._checkpoint_thread = durability == "normal"
        self._writes = 0  # write transactions before the checkpointer started
        # What this store wrote, to write only the columns a hot transition changes:
        # runs it inserted itself (their step rows are all its own), and per such run
        # each step row's (status, attempt) as last committed.
        self._written: dict[str, dict[str, tuple[str, int]]] = {}
        self._definition_json = DefinitionJson()

    @classmethod
    def from_url(cls, url: str, *, readonly: bool = False) -> SQLiteStore:
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
            raise bad_db(url, f"unknown option {', '.join(unknown)}",
                          "the only option is durability=normal or durability=strict")
        if len(durability) != 1 or durability[0] not in ("normal", "strict"):
            raise bad_db(url, f"durability={'&'.join(durability)!r} is not known",
                          "use durability=normal or durability=strict")
        return cls.shared(checked_db_path(path, url), durability=durability[0],
                          readonly=readonly)

    # --- opening ----------------------------------------------------------
    @classmethod
    def shared(cls, path: Path | str, *, durability: str = "normal",
               readonly: bool = False) -> SQLiteStore:
        """This process's store of ``path``: the one already open, else a new one.

        One store per file and process (see ``sqlite_db``): a reader gets the open
        writer, which reads as well; a writer cannot reuse a store opened read-only.
        """
        found = open_store_of(Path(path))
        if found is None:
            return cls(path, durability=durability, readonly=readonly)
        assert isinstance(found, SQLiteStore)
        if readonly:
            return found
        if found.readonly:
            raise StoreError(
                f"{path} is open read-only in this process; it cannot be written through"
                " that store (fix: open the store for writing first)")
        if found.durability != durability:
            raise ConfigError(
                f"{path} is open with durability={found.durability} in this process"
                f" (fix: ask for durability={found.durability}, or close it first)")
        return found

    async def open(self) -> None:
        """Open the file (checked, migrated unless read-only); opening an open store
        again counts one more user, and it closes when the last one closes it."""
        if self._conn is not None:
            self._users += 1
            return
        claim_file(self.path, self)
        try:
            opened = connect(self.path, readonly=self.readonly,
                             synchronous="FULL" if self.durability == "strict" else "NORMAL")
        except BaseException:
            release_file(self.path, self)
            raise
        conn = opened.conn
        self._run_columns, self._step_columns = opened.run_columns, opened.step_columns
        if not self.readonly:
            try:
                if self.durability == "strict":
                    self._preallocate_wal(conn)
                else:
                    conn.execute("PRAGMA wal_autocheckpoint = 0")
            except sqlite3.Error as exc:
                conn.close()
                release_file(self.path, self)
                raise store_error(exc, self.path) from None
        self._conn = conn
        self._users = 1

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

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the store is not open")
        return self._conn

    async def close(self) -> None:
        if self._conn is None:
            return
        self._users -= 1
        if self._users > 0:
            return  # another user of this process's one store of the file still needs it
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        self._conn.close()
        self._conn = None
        self._written.clear()
        release_file(self.path, self)

    def _write(self, fn: Callable[..., Any], *args: Any) -> Any:
        conn = self.conn
        if self.readonly:
            raise StoreError(f"{self.path} was opened read-only; this command cannot write")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn, *args)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise store_error(exc, self.path) from None
        if self._checkpoint_thread:
            self._after_commit()
        return result

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
                if self._writes < CHECKPOINT_THREAD_AFTER:
                    return
                try:
                    ck = self._checkpointer = Checkpointer(self.path)
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

    # --- writes -----------------------------------------------------------
    async def save_workflow(
        self, name: str, version: int | str, definition: dict[str, Any]
    ) -> None:
        def do(conn: sqlite3.Connection) -> None:
            conn.execute(Q["workflow_save"],
                         (name, dumps(version), dumps(definition), time.time()))

        self._write(do)


    async def now(self) -> float:
        return time.time()

    async def write_batch(self, batch: Batch) -> frozenset[str]:
        return self.write_batch_now(batch)

    def write_batch_now(self, batch: Batch) -> frozenset[str]:
        """One transaction; this store's own bookkeeping moves only once it committed.

        Ownership is checked when the batch asks (``Batch.fence``: its writer's leases
        may have lapsed). Otherwise its leases were renewed in time, and on one host
        nobody takes over a run before its lease ends (or its process is gone): a
        check on every batch would cost a query per step for nothing.
        """
        lost: frozenset[str]
        if batch.fence and batch.owner is not None and batch.epochs:
            lost = self._write(self._fenced_batch, batch)
        else:
            # _write(self._batch, batch), inlined: this runs once per step of a chain.
            conn = self._conn
            if conn is None or self.readonly:
                lost = self._write(self._batch, batch)  # (which says what is wrong)
            else:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        lost = self._batch(conn, batch)
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    raise store_error(exc, self.path) from None
                ck = self._checkpointer
                if ck is not None and not ck.failed and not ck.restart_due:
                    ck.poke()  # _after_commit()'s usual case, without its call
                elif self._checkpoint_thread:
                    self._after_commit()
        if lost:
            batch = batch.without(lost)
        written = self._written
        for r in batch.new_runs:
            written.setdefault(r.run_id, {})
        # The step rows as committed, of the runs whose rows are all this store's. Their
        # (status, attempts) are a handful of pairs: one tuple each, not one per step
        # (~5 MB while a 100,000-step run is in flight).
        shared = _ROW_STATES
        for s in batch.steps:
            mine = written.get(s[0])
            if mine is not None:
                state = (s[2], s[3])
                mine[s[1]] = shared.setdefault(state, state) if len(shared) < 64 else state
        for run_id in batch.finished:
            written.pop(run_id, None)
        for run_id in lost:
            written.pop(run_id, None)
        return lost

    def _fenced_batch(self, conn: sqlite3.Connection, batch: Batch) -> frozenset[str]:
        held = {r[0] for r in conn.execute(
            Q["runs_fence"], (dumps(list(batch.epochs.items())), batch.owner))}
        lost = frozenset(batch.epochs.keys() - held)
        taken = self._batch(conn, batch.without(lost) if lost else batch)
        return lost | taken if taken else lost

    def _batch(self, conn: sqlite3.Connection, batch: Batch) -> frozenset[str]:
        """Write the batch; returns its new runs whose id was taken already (another
        process's run): nothing of theirs is written, the rest of the batch is."""
        taken = NO_RUNS
        for r in batch.new_runs:
            if not conn.execute(Q["run_insert"], (
                    r.run_id, r.workflow, dumps(r.version),
                    self._definition_json(r.definition), r.input_json, r.status,
                    r.output_json, r.error_json, r.created_at, r.started_at, r.finished_at,
                    r.owner, r.lease_expires_at, dumps(r.agents_source), r.phase, r.queue,
                    dumps(list(r.needs)))).rowcount:
                taken = taken.union((r.run_id,))
        if taken:
            batch = batch.without(taken)
        if batch.source:
            conn.executemany(Q["event_insert"], event_rows(batch.source, batch.seqs))
            conn.execute(Q["feed_insert"], (feed_ranges(batch),))
        finished = batch.finished
        for r in batch.runs:  # mostly one, where executemany costs more than execute
            conn.execute(Q["run_update"], (
                r.status, r.output_json, r.error_json, r.started_at, r.finished_at,
                r.phase, r.run_id in finished, r.run_id))
        steps = batch.steps
        if not steps:
            return taken
        # Of a run this store inserted, a hot transition writes only the columns it sets
        # (its row is known, see ``_written``).
        written = self._written
        fresh = {r.run_id for r in batch.new_runs} if batch.new_runs else _NOTHING
        # Lists made on first use: a batch mostly has one kind of row (a chain's step).
        upsert: list[tuple[Any, ...]] | None = None
        ins_running: list[tuple[Any, ...]] | None = None
        ins_succeeded: list[tuple[Any, ...]] | None = None
        upd_succeeded: list[tuple[Any, ...]] | None = None
        ins_pending: list[tuple[Any, ...]] | None = None
        upd_started: list[tuple[Any, ...]] | None = None
        for s in steps:
            (rid, sid, status, attempts, agent_id, output, error, started, finished_at,
             next_retry, optional, completed, comp_status, comp_attempts, _comp_error) = s
            mine = written.get(rid)
            if mine is None and rid in fresh:
                mine = _NO_ROWS  # inserted by this very batch: no step row yet
            if mine is not None and error is None and next_retry is None and (
                    comp_status is None and comp_attempts == 0):
                # A run this store inserted: its rows are all its own, so a hot
                # transition writes only the columns it sets.
                prior = mine.get(sid)
                if status == "succeeded" and output is not None:
                    if prior is None:
                        row = (rid, sid, attempts, agent_id, output, started, finished_at,
                               int(optional), completed)
                        if ins_succeeded is None:
                            ins_succeeded = [row]
                        else:
                            ins_succeeded.append(row)
                        continue
                    if prior == ("running", attempts):
                        # That row has this attempt's agent and start already.
                        done = (output, finished_at, completed, rid, sid)
                        if upd_succeeded is None:
                            upd_succeeded = [done]
                        else:
                            upd_succeeded.append(done)
                        continue
                elif (status == "running" and prior is None and finished_at is None
                      and completed is None):
                    started_row = (rid, sid, attempts, agent_id, started, int(optional))
                    if ins_running is None:
                        ins_running = [started_row]
                    else:
                        ins_running.append(started_row)
                    continue
                # A fan-out wider than a burst (run._BURST) commits most of its steps
                # 'pending' first, then started or succeeded: through the upsert, with
                # all its 15 parameters, those two writes were ~70% of a 100,000-step
                # fan-out's row writes and most of their time.
                if prior is None:
                    if status == "pending" and attempts == 0 and agent_id is None and (
                            output is None and started is None and finished_at is None
                            and completed is None):
                        if ins_pending is None:
                            ins_pending = [(rid, sid, int(optional))]
                        else:
                            ins_pending.append((rid, sid, int(optional)))
                        continue
                elif prior == _PENDING_ROW and (status == "running" or (
                        status == "succeeded" and output is not None)):
                    moved = (status, attempts, agent_id, output, started, finished_at,
                             int(optional), completed, rid, sid)
                    if upd_started is None:
                        upd_started = [moved]
                    else:
                        upd_started.append(moved)
                    continue
            if upsert is None:  # a StepRow is the upsert's parameters, in order
                upsert = [s]
            else:
                upsert.append(s)
        if upsert is not None:
            conn.executemany(Q["step_upsert"], upsert)
        if ins_running is not None:
            conn.executemany(Q["step_insert_running"], ins_running)
        if ins_succeeded is not None:
            conn.executemany(Q["step_insert_succeeded"], ins_succeeded)
        if ins_pending is not None:
            conn.executemany(Q["step_insert_pending"], ins_pending)
        for query, rows in (("step_update_succeeded", upd_succeeded),
                            ("step_update_started", upd_started)):
            if rows is not None:
                cur = conn.executemany(Q[query], rows)
                if cur.rowcount != len(rows):
                    raise sqlite3.IntegrityError(
                        "a step row this process wrote is gone (another writer deleted it?)")
        return taken

    async def batch_committed(self, batch: Batch) -> bool:
        """A local commit is never cut off, but the question has an exact answer here too:
        the batch's last event of each of its runs is stored, or the batch is not."""
        try:
            return all(self.conn.execute(Q["event_exists"], (rid, seq)).fetchone() is not None
                       for rid, seq in batch.last_seq.items())
        except sqlite3.Error as exc:
            raise store_error(exc, self.path) from None

    async def last_seq(self, run_id: str) -> int:
        try:
            return int(self.conn.execute(Q["last_seq"], (run_id,)).fetchone()[0])
        except sqlite3.Error as exc:
            raise store_error(exc, self.path) from None

    # --- reads ------------------------------------------------------------
    def _resolve_id(self, run_id: str) -> str:
        conn = self.conn
        if conn.execute(Q["run_exists"], (run_id,)).fetchone():
            return run_id
        rows = conn.execute(Q["run_ids_with_prefix"],
                            (run_id, run_id + "\uffff", run_id)).fetchall()
        if len(rows) == 1:
            return str(rows[0][0])
        if rows:
            raise RunNotFound(
                f"run id prefix '{run_id}' is ambiguous (fix: type more of it)", run_id=run_id
            )
        raise RunNotFound(
            f"no run '{run_id}' in {self.path} (fix: see `podium runs`)", run_id=run_id
        )

    async def get_run(self, run_id: str) -> RunRecord:
        try:
            rid = self._resolve_id(run_id)
            conn = self.conn
            row = conn.execute(Q["run_get"].format(run_columns=self._run_columns),
                               (rid,)).fetchone()
            run = run_from_row(row)
            for s in conn.execute(Q["steps_of_run"].format(step_columns=self._step_columns),
                                  (rid,)):
                run.steps[s[0]] = step_from_row(s)
            run.completions = max((s.completed_seq or 0 for s in run.steps.values()), default=0)
            return run
        except sqlite3.Error as exc:
            raise store_error(exc, self.path) from None

    async def list_runs(
        self, *, status: str | None = None, workflow: str | None = None, limit: int = 50,
        before: tuple[float, str] | None = None,
    ) -> list[RunRecord]:
        at, rid = before if before is not None else (None, None)
        try:
            rows = self.conn.execute(Q["runs_list"].format(run_columns=self._run_columns),
                                     (status, workflow, limit, at, rid)).fetchall()
        except sqlite3.Error as exc:
            raise store_error(exc, self.path) from None
        return [run_from_row(r) for r in rows]

    async def get_events(self, run_id: str) -> Sequence[Event]:
        rid = self._resolve_id(run_id)
        return events_from_rows(rid, self.conn.execute(Q["events_of_run"], (rid,)))

    async def trace_context(self, run_id: str) -> str | None:
        row = self.conn.execute(Q["trace_context"], (run_id,)).fetchone()
        return traceparent_of(row[0]) if row is not None else None

    async def request_cancel(self, run_id: str) -> bool:
        rid = self._resolve_id(run_id)
        return bool(self._write(lambda conn: conn.execute(Q["cancel_request"], (rid,)).rowcount))

    async def cancel_requests(self, run_ids: Collection[str]) -> set[str]:
        if not run_ids:
            return set()
        rows = self.conn.execute(Q["cancel_requested_among"],
                                 (dumps(list(run_ids)),)).fetchall()
        return {r[0] for r in rows}

    async def claim_run(self, run: RunRecord, owner: str, *, lease_s: float,
                        recoveries: int, owner_dead: bool = False) -> bool:
        args = (owner, time.time(), lease_s, recoveries, owner_dead, run.run_id, run.epoch)
        rows = self._write(lambda conn: conn.execute(Q["run_claim"], args).fetchall())
        if not rows:
            return False
        row = rows[0]
        run.epoch += 1
        run.owner, run.recoveries = owner, recoveries
        run.lease_expires_at, run.recovered_at, run.cancel_requested = (
            row[0], row[1], bool(row[2]))
        return True

    async def release_run(self, run_id: str, owner: str, *, force: bool = False) -> None:
        """Give up ownership (or take it from a dead owner when ``force``)."""
        if force:
            self._write(lambda conn: conn.execute(Q["run_release_forced"], (run_id,)))
        else:
            self._write(lambda conn: conn.execute(Q["run_release"], (run_id, owner)))

    async def renew_leases(self, owner: str, run_ids: Collection[str],
                           lease_s: float) -> set[str]:
        if not run_ids:
            return set()
        args = (time.time() + lease_s, owner, dumps(list(run_ids)))
        held = self._write(lambda conn: conn.execute(Q["leases_renew"], args).fetchall())
        return set(run_ids) - {r[0] for r in held}
