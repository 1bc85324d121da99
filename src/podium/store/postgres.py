"""PostgreSQL: one database that many processes on many hosts share.

``postgresql://user:pass@host:port/db?schema=podium&pool_max=8`` (also
``postgres://``). psycopg 3 with an async connection pool; every statement is
named in ``store/sql/postgres/queries.sql``.

Durability: a batch is one transaction. By default every COMMIT waits for the
server's write-ahead log to reach its disk; ``synchronous_commit=off`` (the
counterpart of SQLite's normal durability) lets the server answer first: it
survives any crash of a worker, but a crash of PostgreSQL itself may lose its
last fraction of a second of commits.

Many writers: every batch of a run that is not new is *fenced*. Under a lock
on the run's row it checks that the writer still owns the run at the epoch it
claimed it at; the runs that fail are left out of the batch (and named), the
rest commits. A claim is an UPDATE of that row, so it waits for such a batch
and bumps the epoch: whatever a former owner sends afterwards is refused.

Leases run on the database's clock (``statement_timestamp()``): each run's
``lease_expires_at``, renewed by its owner every third of a lease, and a
worker's heartbeat row (for ``podium workers`` and its name). A connection cut
while a batch was on the wire raises ``CommitUnknown``: the engine asks
``batch_committed``, which reads the batch's last events back, so nothing is
written twice.

Wake-ups: ``NOTIFY`` on one channel per schema, sent after the commit that
made the work (coalesced: many submits within a few milliseconds send one),
never inside a step's commit, where it would take the server's global notify
lock. ``notify=off`` (behind PgBouncer in transaction mode) turns them off;
workers then find runs by polling alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Callable, Collection, Sequence
from importlib import resources
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from podium.errors import ConfigError, RunNotFound, StoreError, WorkerNameTaken
from podium.events import Event
from podium.redact import mask_url, redact, register_secret
from podium.state import AlertRecord, AttemptOutcome, RunRecord
from podium.store.base import (
    NO_RUNS,
    Batch,
    CommitUnknown,
    FeedPosition,
    ScheduleRecord,
    Signal,
    SlotRecord,
    WorkerInfo,
)
from podium.store.postgres_agents import PostgresAgents
from podium.store.postgres_prune import PostgresPrune
from podium.store.postgres_registry import PostgresRegistry
from podium.store.postgres_tokens import PostgresTokens
from podium.store.queries import queries
from podium.store.rows import (
    DefinitionJson,
    alert_from_row,
    dumps,
    event_from_row,
    events_from_rows,
    run_from_row,
    schedule_from_row,
    schedule_row,
    step_from_row,
    traceparent_of,
)
from podium.store.urls import bad_db

try:
    import psycopg
    from psycopg import sql
    from psycopg_pool import AsyncConnectionPool
except ImportError as _missing:  # pragma: no cover - the extra is not installed
    raise ConfigError(
        "PostgreSQL needs the postgres extra (fix: pip install 'podium[postgres]')"
    ) from _missing

__all__ = ["SCHEMA_VERSION", "PostgresStore", "migrations"]

log = logging.getLogger("podium.store")
Q = queries("postgres")

# pg_advisory_xact_lock key of migrations: one migration at a time per database.
MIGRATION_LOCK = int.from_bytes(b"podium", "big")
_OURS = {"schema", "pool_max", "synchronous_commit", "notify"}
# libpq's own options that make sense here; anything else is a typo until proven not.
_LIBPQ = {"sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword", "application_name",
          "connect_timeout", "target_session_attrs", "options", "keepalives",
          "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout"}
_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_POOL_MAX = 100
_ANNOUNCE_AFTER_S = 0.005  # notifications of submits this close together are one
_LISTEN_BACKOFF_MAX_S = 5.0
_IDLE_IN_TRANSACTION_MS = 5000
# A leader's connection (``lead``) idle this long is ended by the server, and its role
# freed: a frozen leader is replaced within it (a live one reads every few seconds).
_LEAD_IDLE_S = 20.0
_MAX_URL_CHARS = 4096  # libpq's own limits are far above any real connection string


def migrations() -> list[tuple[int, str]]:
    """Every schema step in order, from the SQL files shipped with the package."""
    folder = resources.files("podium.store") / "sql" / "postgres"
    out = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql") and entry.name[:1].isdigit():
            out.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(out)


SCHEMA_VERSION = migrations()[-1][0]


def _max_runs(definition: Any) -> int | None:
    """A workflow's ``max_runs``, read from the run's definition snapshot."""
    most = definition.get("max_runs") if isinstance(definition, dict) else None
    return most if isinstance(most, int) and not isinstance(most, bool) else None


class _Positional:
    """A named statement turned into PostgreSQL's own ``$n`` placeholders, once.

    psycopg parses ``%(name)s`` statements with a regular expression on every call
    when they are over 4,096 characters or 50 parameters (``batch_write`` is both):
    ~0.1 ms of a worker's CPU per batch. Executed by a raw cursor, the text goes as
    it is; ``args`` puts a mapping's values in placeholder order.
    """

    def __init__(self, query: str) -> None:
        names: list[str] = []

        def number(m: re.Match[str]) -> str:
            if m[1] not in names:
                names.append(m[1])
            return f"${names.index(m[1]) + 1}"

        text = re.sub(r"%\((\w+)\)s", number, query)
        if "%" in text:  # %s, %% mean something else to a raw cursor: not here
            raise ValueError(f"a statement to number holds another %: {text[:60]!r}")
        self.sql = text.encode()
        self.names = tuple(names)

    def args(self, params: dict[str, Any]) -> list[Any]:
        return [params[n] for n in self.names]


_BATCH_WRITE = _Positional(Q["batch_write"])
_ESCAPED = re.compile(r'["\\]')  # what a quoted array element escapes


def _texts(values: Sequence[str | None]) -> str:
    """A text[] literal: each value quoted, ``"`` and ``\\`` escaped, None as NULL.

    The arrays of a batch (one per column) went through psycopg's list dumper, in
    Python, element by element: ~0.1-0.7 ms per batch. Built here with str methods,
    the server gets the same text for the same ``array_in``.
    """
    if not values:
        return "{}"
    if None in values:
        return "{" + ",".join("NULL" if v is None else _quoted(v) for v in values) + "}"
    texts = cast("Sequence[str]", values)
    if _ESCAPED.search("".join(texts)) is None:  # (not the joined text: its "," has quotes)
        return '{"' + '","'.join(texts) + '"}'
    return "{" + ",".join(map(_quoted, texts)) + "}"


def _quoted(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _numbers(values: Sequence[float | int | None]) -> str:
    """A float8[], int[] or bigint[] literal (a float's repr reads back exactly, as
    do inf and nan); None as NULL."""
    if not values:
        return "{}"
    return "{" + ",".join("NULL" if v is None else repr(v) for v in values) + "}"


def _bools(values: Sequence[bool | None]) -> str:
    if not values:
        return "{}"
    return "{" + ",".join("NULL" if v is None else ("t" if v else "f") for v in values) + "}"


# StepRow's fields in order: the parameter of each, and how its array is written.
_STEP_COLUMNS: tuple[tuple[str, Callable[[Any], str]], ...] = (
    ("s_run", _texts), ("s_step", _texts), ("s_status", _texts), ("s_attempts", _numbers),
    ("s_agent", _texts), ("s_output", _texts), ("s_error", _texts), ("s_started", _numbers),
    ("s_finished", _numbers), ("s_retry", _numbers), ("s_optional", _bools),
    ("s_completed", _numbers), ("s_cstatus", _texts), ("s_cattempts", _numbers),
    ("s_cerror", _texts))


class PostgresStore(PostgresRegistry, PostgresTokens, PostgresAgents, PostgresPrune):
    def __init__(self, conninfo: str, *, url: str, schema: str = "public", pool_max: int = 8,
                 synchronous_commit: bool = True, notify: bool = True,
                 readonly: bool = False) -> None:
        self._conninfo = conninfo
        self.url = mask_url(url)
        self.schema = schema
        self.pool_max = pool_max
        self.synchronous_commit = synchronous_commit
        self.notify = notify
        self.readonly = readonly
        self.channel = f"podium_{schema}"
        self.applied: list[int] = []  # schema versions this open applied
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._users = 0
        self._definition_json = DefinitionJson()
        self._leases: dict[str, float] = {}  # worker id -> its lease, for its claims
        self._announcing: asyncio.Task[None] | None = None
        self._announce_again = False
        self._listener: asyncio.Task[None] | None = None
        self._lead_conn: psycopg.AsyncConnection[Any] | None = None
        self._roles: set[str] = set()
        self._lead_lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, *, readonly: bool = False) -> PostgresStore:
        if len(url) > _MAX_URL_CHARS:
            raise bad_db(url, f"the URL is too long (over {_MAX_URL_CHARS:,} characters)",
                         "check --db or $PODIUM_DB")
        try:
            parts = urlsplit(url)
            params = parse_qsl(parts.query, keep_blank_values=True)
        except ValueError as exc:
            raise bad_db(url, f"not a URL ({exc})", "postgresql://user@host:5432/db") from None
        if parts.password:
            register_secret(parts.password)
        register_secret(os.environ.get("PGPASSWORD"))
        ours: dict[str, str] = {}
        passed: list[tuple[str, str]] = []
        for key, value in params:
            if key in _OURS:
                if key in ours:
                    raise bad_db(url, f"option {key} is given twice", f"give {key} once")
                ours[key] = value
            elif key in _LIBPQ:
                passed.append((key, value))
            else:
                raise bad_db(url, f"unknown option {key}",
                               "use schema=, pool_max=, synchronous_commit=on|off, "
                               "notify=on|off, or a libpq option such as sslmode=")
        schema = ours.get("schema", "public")
        if not _IDENT.fullmatch(schema):
            raise bad_db(url, f"schema={schema!r} is not a plain lower-case name",
                           "e.g. schema=podium")
        try:
            pool_max = int(ours.get("pool_max", "8"))
        except ValueError:
            pool_max = 0
        if not 1 <= pool_max <= _POOL_MAX:
            raise bad_db(url, f"pool_max={ours.get('pool_max')!r} is not 1 to {_POOL_MAX}",
                           "e.g. pool_max=8")
        flags = {}
        for key in ("synchronous_commit", "notify"):
            value = ours.get(key, "on")
            if value not in ("on", "off"):
                raise bad_db(url, f"{key}={value!r} is not on or off", f"{key}=on or off")
            flags[key] = value == "on"
        if not any(k == "connect_timeout" for k, _ in passed):
            passed.append(("connect_timeout", "10"))
        conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(passed),
                               parts.fragment))
        return cls(conninfo, url=url, schema=schema, pool_max=pool_max,
                   synchronous_commit=flags["synchronous_commit"], notify=flags["notify"],
                   readonly=readonly)

    # --- connections --------------------------------------------------------
    def _connect_kwargs(self) -> dict[str, Any]:
        # A process frozen (or cut off) inside one of our few-millisecond transactions
        # would hold its row locks for as long as its connection lives, and a claim
        # skips locked runs: the server ends such a session after a few idle seconds,
        # so its runs can be taken over (its batch, cut off, is read back as usual).
        options = (f"-c search_path={self.schema}"
                   f" -c idle_in_transaction_session_timeout={_IDLE_IN_TRANSACTION_MS}")
        if not self.synchronous_commit:
            options += " -c synchronous_commit=off"
        # A peer that vanished (a cut cable, a frozen host) is noticed in seconds, not in
        # the kernel's two hours: an idle connection by keepalives, a write on the wire
        # by tcp_user_timeout.
        return {"autocommit": True, "options": options, "keepalives": 1,
                "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
                "tcp_user_timeout": 15000}

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(self._conninfo, **self._connect_kwargs())

    def _error(self, exc: BaseException, doing: str = "") -> StoreError:
        text = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        where = f" ({doing})" if doing else ""
        return StoreError(f"PostgreSQL {self.url}{where}: {text}")

    @property
    def pool(self) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        if self._pool is None:
            raise StoreError("the store is not open")
        return self._pool

    async def open(self) -> None:
        """Connect, migrate (unless read-only) and open the pool; opening an open store
        again counts one more user."""
        if self._pool is not None:
            self._users += 1
            return
        try:
            conn = await self._connect()
        except psycopg.Error as exc:
            raise self._error(exc, "cannot connect") from None
        try:
            async with conn:
                if self.readonly:
                    await self._check_version(conn)
                else:
                    self.applied = await self._migrate(conn)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise StoreError(
                f"{self._error(exc, 'cannot create the schema')} (fix: run `podium db upgrade"
                " --db URL` once as a role that may create tables, e.g. the database's"
                " owner)") from None
        except psycopg.Error as exc:
            raise self._error(exc, "cannot prepare the schema") from None
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            self._conninfo, kwargs=self._connect_kwargs(), min_size=1,
            max_size=self.pool_max, open=False, name="podium", timeout=30.0,
            reconnect_timeout=60.0)
        try:
            await pool.open(wait=True, timeout=30.0)
        except Exception as exc:  # noqa: BLE001 - PoolTimeout and psycopg errors alike
            with contextlib.suppress(Exception):
                await pool.close()
            raise self._error(exc, "cannot connect") from None
        self._pool = pool
        self._users = 1

    async def _version(self, conn: psycopg.AsyncConnection[Any]) -> int | None:
        cur = await conn.execute("SELECT to_regclass('podium_meta') IS NOT NULL")
        row = await cur.fetchone()
        if not row or not row[0]:
            return None
        cur = await conn.execute("SELECT value FROM podium_meta WHERE key = 'schema_version'")
        got = await cur.fetchone()
        return int(got[0]) if got else 0

    async def _check_version(self, conn: psycopg.AsyncConnection[Any]) -> int:
        version = await self._version(conn)
        if version is None:
            raise StoreError(
                f"PostgreSQL {self.url} holds no Podium tables in schema {self.schema!r} yet"
                " (fix: podium db upgrade --db URL, or submit or run a workflow there)")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"PostgreSQL {self.url} was made by a newer Podium (schema {version}; this one"
                f" knows up to {SCHEMA_VERSION}) (fix: upgrade Podium)")
        return version

    async def _migrate(self, conn: psycopg.AsyncConnection[Any]) -> list[int]:
        """Apply what is missing in one transaction under an advisory lock: of many
        processes starting at once, one migrates and the others then find it done."""
        applied = []
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                sql.Identifier(self.schema)))
            found = await self._version(conn)
            if found is None:
                await self._refuse_foreign(conn)
            current = found or 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"PostgreSQL {self.url} was made by a newer Podium (schema {current};"
                    f" this one knows up to {SCHEMA_VERSION}) (fix: upgrade Podium)")
            for version, script in migrations():
                if version <= current:
                    continue
                await conn.execute(script.encode())  # whole: no parameters, one query
                await conn.execute(
                    "INSERT INTO podium_meta (key, value) VALUES ('schema_version', %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(version),))
                applied.append(version)
        if applied:
            log.info("PostgreSQL %s: schema migrated to %d", self.url, applied[-1])
        return applied

    async def _refuse_foreign(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """A schema that holds tables but no Podium ones is somebody else's: untouched."""
        cur = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
            " ORDER BY table_name LIMIT 3", (self.schema,))
        names = [r[0] for r in await cur.fetchall()]
        if names:
            raise StoreError(
                f"PostgreSQL {self.url}: schema {self.schema!r} holds tables that are not"
                f" Podium's ({', '.join(names)}...); nothing was changed (fix: give Podium a"
                " schema of its own, e.g. ?schema=podium, or another database)")

    async def close(self) -> None:
        if self._pool is None:
            return
        self._users -= 1
        if self._users > 0:
            return
        if self._announcing is not None and not self._announcing.done():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._announcing
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(BaseException):
                await self._listener
            self._listener = None
        if self._lead_conn is not None:
            with contextlib.suppress(Exception):
                await self._lead_conn.close()
            self._lead_conn = None
        pool, self._pool = self._pool, None
        with contextlib.suppress(Exception):
            await pool.close()

    def _writable(self) -> None:
        if self.readonly:
            raise StoreError(f"PostgreSQL {self.url} was opened read-only; this command"
                             " cannot write")

    async def _fetch(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(query, params)
                return await cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            raise self._error(exc) from None

    # --- runs -----------------------------------------------------------------
    async def save_workflow(self, name: str, version: int | str,
                            definition: dict[str, Any]) -> None:
        self._writable()
        await self._fetch(Q["workflow_save"], (name, dumps(version), dumps(definition)))


    async def now(self) -> float:
        return float((await self._fetch(Q["now"]))[0][0])

    async def write_batch(self, batch: Batch) -> frozenset[str]:
        """The batch in one statement (``batch_write``): fenced, written, committed in
        one round trip. A connection lost on the way is an unknown outcome
        (``CommitUnknown``): the journal reads back whether it landed."""
        self._writable()
        new = {r.run_id for r in batch.new_runs}
        existing = list(batch.epochs) if batch.owner is not None else sorted(
            ({r.run_id for r in batch.runs} | {s.run_id for s in batch.steps}
             | {e.run_id for e in batch.source}) - new)
        try:
            async with self.pool.connection() as conn:
                cur = psycopg.AsyncRawCursor(conn)
                await cur.execute(_BATCH_WRITE.sql,
                                  _BATCH_WRITE.args(self._batch_params(batch, existing)))
                rows = await cur.fetchall()
        except psycopg.OperationalError as exc:
            raise CommitUnknown(str(self._error(exc, "commit cut off"))) from None
        except psycopg.Error as exc:
            raise self._error(exc, "commit") from None
        held = {run_id for run_id, fresh in rows if not fresh}
        lost = NO_RUNS if batch.owner is None or len(held) == len(existing) else frozenset(
            existing).difference(held)
        if len(rows) - len(held) == len(new):
            return lost
        taken = new.difference(run_id for run_id, fresh in rows if fresh)  # ids taken first
        return lost.union(taken)

    def _batch_params(self, batch: Batch, existing: list[str]) -> dict[str, Any]:
        """The batch as columns: one array literal per column (``unnest`` makes them
        rows), typed by the statement's casts."""
        fenced = batch.owner is not None
        t, num, b = _texts, _numbers, _bools
        p: dict[str, Any] = {
            "owner": batch.owner, "fence_ids": t(existing if fenced else []),
            "fence_epochs": num([batch.epochs[i] for i in existing] if fenced else []),
            "free_ids": t([] if fenced else existing), "ended": t(batch.finished)}
        n = batch.new_runs
        p.update(
            n_id=t([r.run_id for r in n]), n_workflow=t([r.workflow for r in n]),
            n_version=t([dumps(r.version) for r in n]),
            n_definition=t([self._definition_json(r.definition) for r in n]),
            n_input=t([r.input_json for r in n]), n_status=t([r.status for r in n]),
            n_output=t([r.output_json for r in n]), n_error=t([r.error_json for r in n]),
            n_created=num([r.created_at for r in n]),
            n_started=num([r.started_at for r in n]),
            n_finished=num([r.finished_at for r in n]), n_owner=t([r.owner for r in n]),
            n_lease=num([r.lease_expires_at for r in n]),
            n_agents=t([dumps(r.agents_source) for r in n]), n_phase=t([r.phase for r in n]),
            n_queue=t([r.queue for r in n]), n_needs=t([dumps(list(r.needs)) for r in n]),
            n_max=num([_max_runs(r.definition) for r in n]))
        rows = batch.event_rows()
        p.update(e_run=t([e[0] for e in rows]), e_seq=num([e[1] for e in rows]),
                 e_type=t([e[2] for e in rows]), e_ts=num([e[3] for e in rows]),
                 e_data=t([e[4] for e in rows]))
        ended = set(batch.finished)
        u = batch.runs
        p.update(u_id=t([r.run_id for r in u]), u_status=t([r.status for r in u]),
                 u_output=t([r.output_json for r in u]), u_error=t([r.error_json for r in u]),
                 u_started=num([r.started_at for r in u]),
                 u_finished=num([r.finished_at for r in u]),
                 u_phase=t([r.phase for r in u]), u_ended=b([r.run_id in ended for r in u]))
        steps = batch.steps
        for i, (name, kind) in enumerate(_STEP_COLUMNS):
            p[name] = kind([s[i] for s in steps])
        return p

    async def batch_committed(self, batch: Batch) -> bool:
        """Whether the batch landed: each run's last event of it is stored, or the run
        is no longer the writer's at the batch's epoch (fenced off: nothing of it would
        be written again, and writing the rest once more would clash on events that
        did land)."""
        try:
            async with self.pool.connection() as conn:
                for rid, seq in batch.last_seq.items():
                    cur = await conn.execute(Q["event_exists"], (rid, seq))
                    if await cur.fetchone() is not None:
                        continue
                    epoch = batch.epochs.get(rid)
                    if batch.owner is None or epoch is None:
                        return False
                    cur = await conn.execute(Q["run_held"], (rid, batch.owner, epoch))
                    if await cur.fetchone() is not None:
                        return False  # still the writer's, and not written: it never was
                return True
        except psycopg.Error as exc:
            raise self._error(exc) from None

    async def last_seq(self, run_id: str) -> int:
        return int((await self._fetch(Q["last_seq"], (run_id,)))[0][0])

    async def _resolve_id(self, conn: psycopg.AsyncConnection[Any], run_id: str) -> str:
        cur = await conn.execute(Q["run_exists"], (run_id,))
        if await cur.fetchone():
            return run_id
        cur = await conn.execute(Q["run_ids_with_prefix"], (run_id, run_id + "\uffff", run_id))
        rows = await cur.fetchall()
        if len(rows) == 1:
            return str(rows[0][0])
        if rows:
            raise RunNotFound(f"run id prefix '{run_id}' is ambiguous (fix: type more of it)",
                              run_id=run_id)
        raise RunNotFound(f"no run '{run_id}' in {self.url} (fix: see `podium runs`)",
                          run_id=run_id)

    async def _runs(self, conn: psycopg.AsyncConnection[Any], ids: Sequence[str],
                    *, claimed: bool = False) -> list[RunRecord]:
        """The runs with their steps, in the order of ``ids``; ``claimed``: runs this
        process just claimed, each with its ``last_seq`` (``runs_claimed``)."""
        cur = await conn.execute(Q["runs_claimed" if claimed else "run_get"], (list(ids),))
        runs: dict[str, RunRecord] = {}
        with_steps = list(ids)
        if claimed:
            with_steps = []
            for row in await cur.fetchall():
                claimed_run = runs[row[0]] = run_from_row(row)
                claimed_run.last_seq = int(row[20])
                if row[21]:
                    with_steps.append(row[0])
        else:
            runs = {r.run_id: r for r in map(run_from_row, await cur.fetchall())}
        if with_steps:
            cur = await conn.execute(Q["steps_of_runs"], (with_steps,))
            for row in await cur.fetchall():
                found = runs.get(row[0])
                if found is not None:
                    found.steps[row[1]] = step_from_row(row[1:])
        for run in runs.values():
            run.completions = max((s.completed_seq or 0 for s in run.steps.values()),
                                  default=0)
        return [runs[i] for i in ids if i in runs]

    async def get_run(self, run_id: str) -> RunRecord:
        try:
            async with self.pool.connection() as conn:
                rid = await self._resolve_id(conn, run_id)
                found = await self._runs(conn, [rid])
        except psycopg.Error as exc:
            raise self._error(exc) from None
        if not found:
            raise RunNotFound(f"no run '{run_id}' in {self.url} (fix: see `podium runs`)",
                              run_id=run_id)
        return found[0]

    async def list_runs(self, *, status: str | None = None, workflow: str | None = None,
                        limit: int = 50, before: tuple[float, str] | None = None,
                        ) -> list[RunRecord]:
        at, rid = before if before is not None else (None, None)
        rows = await self._fetch(Q["runs_list"], {"status": status, "workflow": workflow,
                                                  "limit": limit, "before_at": at,
                                                  "before_id": rid})
        return [run_from_row(r) for r in rows]

    async def get_events(self, run_id: str) -> Sequence[Event]:
        try:
            async with self.pool.connection() as conn:
                rid = await self._resolve_id(conn, run_id)
                cur = await conn.execute(Q["events_of_run"], (rid,))
                rows = await cur.fetchall()
        except psycopg.Error as exc:
            raise self._error(exc) from None
        return events_from_rows(rid, rows)

    async def trace_context(self, run_id: str) -> str | None:
        rows = await self._fetch(Q["trace_context"], (run_id,))
        return traceparent_of(rows[0][0]) if rows else None

    async def request_cancel(self, run_id: str) -> bool:
        """Mark the run, and tell its worker at once (the notification goes out with the
        commit); a worker that missed it finds the mark at its next lease renewal."""
        self._writable()
        try:
            async with self.pool.connection() as conn:
                rid = await self._resolve_id(conn, run_id)
                async with conn.transaction():
                    cur = await conn.execute(Q["cancel_request"], (rid,))
                    hit = await cur.fetchone() is not None
                    if hit and self.notify:
                        await conn.execute(Q["notify"], (self.channel, "cancel:" + rid))
        except psycopg.Error as exc:
            raise self._error(exc) from None
        return hit

    async def cancel_requests(self, run_ids: Collection[str]) -> set[str]:
        if not run_ids:
            return set()
        return {r[0] for r in await self._fetch(Q["cancel_requested_among"], (list(run_ids),))}

    async def claim_run(self, run: RunRecord, owner: str, *, lease_s: float,
                        recoveries: int, owner_dead: bool = False) -> bool:
        self._writable()
        rows = await self._fetch(Q["run_claim"], {
            "owner": owner, "lease": lease_s, "recoveries": recoveries, "dead": owner_dead,
            "run_id": run.run_id, "epoch": run.epoch})
        if not rows:
            return False
        run.epoch += 1
        run.owner, run.recoveries = owner, recoveries
        run.lease_expires_at, run.recovered_at, run.cancel_requested = (
            rows[0][0], rows[0][1], bool(rows[0][2]))
        return True

    async def release_run(self, run_id: str, owner: str, *, force: bool = False) -> None:
        self._writable()
        if force:
            await self._fetch(Q["run_release_forced"], (run_id,))
        else:
            await self._fetch(Q["run_release"], (run_id, owner))
        await self.announce()

    async def renew_leases(self, owner: str, run_ids: Collection[str],
                           lease_s: float) -> set[str]:
        """The runs' leases and, if ``owner`` is a worker, its heartbeat: one transaction."""
        self._writable()
        try:
            async with self.pool.connection() as conn:
                if not run_ids:  # an idle worker: one statement, no BEGIN and COMMIT
                    await conn.execute(Q["heartbeat"], (lease_s, owner))
                    return set()
                async with conn.transaction():
                    await conn.execute(Q["heartbeat"], (lease_s, owner))
                    cur = await conn.execute(Q["leases_renew"],
                                             (lease_s, owner, list(run_ids)))
                    held = {r[0] for r in await cur.fetchall()}
        except psycopg.Error as exc:
            raise self._error(exc, "lease renewal") from None
        return set(run_ids) - held

    # --- alerts -----------------------------------------------------------------
    async def save_alert(self, alert: AlertRecord, what: str, detail: str = "",
                         ts: float | None = None) -> None:
        self._writable()
        a = alert
        now = ts if ts is not None else (a.last_notified_at or a.resolved_at or a.fired_at)
        row = (a.key, a.rule, a.kind, a.severity, a.status, a.summary, dumps(a.labels),
               a.run_id, a.workflow, a.fired_at, a.resolved_at, a.acked_at, a.acked_by, a.level,
               a.last_notified_at, now)
        try:
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute(Q["alert_upsert"], row)
                await conn.execute(Q["alert_history_add"], (a.key, now, what, detail))
        except psycopg.Error as exc:
            raise self._error(exc) from None

    # --- schedules ----------------------------------------------------------
    async def add_schedule(self, schedule: ScheduleRecord) -> None:
        self._writable()
        try:
            async with self.pool.connection() as conn:
                await conn.execute(Q["schedule_add"], schedule_row(schedule))
        except psycopg.errors.UniqueViolation:
            raise ConfigError(f"a schedule '{schedule.id}' exists already (fix: --name"
                              " another, or `podium schedule delete` it)") from None
        except psycopg.Error as exc:
            raise self._error(exc) from None

    async def list_schedules(self) -> list[ScheduleRecord]:
        return [schedule_from_row(r) for r in await self._fetch(Q["schedules_list"])]

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord:
        rows = await self._fetch(Q["schedule_get"], (schedule_id,))
        if not rows:
            known = [r[0] for r in await self._fetch("SELECT id FROM schedules ORDER BY id")]
            raise ConfigError(f"no schedule '{schedule_id}' (fix: one of: "
                              f"{', '.join(known) or 'none yet'}; see `podium schedule list`)")
        return schedule_from_row(rows[0])

    async def set_schedule_paused(self, schedule_id: str, paused: bool,
                                  next_at: float | None = None) -> bool:
        self._writable()
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(Q["schedule_pause"], (paused, next_at, schedule_id))
                return cur.rowcount > 0
        except psycopg.Error as exc:
            raise self._error(exc) from None

    async def delete_schedule(self, schedule_id: str) -> bool:
        self._writable()
        try:
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute(Q["schedule_slots_delete"], (schedule_id,))
                cur = await conn.execute(Q["schedule_delete"], (schedule_id,))
                return cur.rowcount > 0
        except psycopg.Error as exc:
            raise self._error(exc) from None

    async def record_slot(self, schedule_id: str, slot: SlotRecord, next_at: float) -> bool:
        self._writable()
        try:
            async with self.pool.connection() as conn, conn.transaction():
                cur = await conn.execute(Q["slot_add"], (schedule_id, slot.slot, slot.status,
                                                         slot.run_id, slot.at))
                if not cur.rowcount:
                    return False
                await conn.execute(Q["schedule_move"], (next_at, next_at, slot.run_id,
                                                        schedule_id))
                return True
        except psycopg.Error as exc:
            raise self._error(exc) from None

    async def schedule_slots(self, schedule_id: str, limit: int = 20) -> list[SlotRecord]:
        rows = await self._fetch(Q["slots_of"], (schedule_id, limit))
        return [SlotRecord(r[0], r[1], r[2], r[3]) for r in rows]

    # --- waits ----------------------------------------------------------------
    async def send_signal(self, run_id: str, name: str, data: Any, at: float) -> bool:
        self._writable()
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(Q["signal_add"], (run_id, name, dumps(data), at))
                return cur.rowcount > 0
        except psycopg.Error as exc:
            raise self._error(exc) from None

    async def get_signal(self, run_id: str, name: str) -> Signal | None:
        rows = await self._fetch(Q["signal_get"], (run_id, name))
        return None if not rows else Signal(name, orjson.loads(rows[0][0]), rows[0][1])

    async def set_wake(self, run_id: str, wake_at: float | None) -> None:
        self._writable()
        if wake_at is None:
            await self._fetch(Q["wake_clear"], (run_id,))
        else:
            await self._fetch(Q["wake_set"], (run_id, wake_at))

    async def wake_run(self, run_id: str) -> bool:
        self._writable()
        try:
            async with self.pool.connection() as conn, conn.transaction():
                cur = await conn.execute(Q["run_wake"], (run_id,))
                woken = cur.rowcount > 0
                if woken:
                    await conn.execute(Q["wake_clear"], (run_id,))
        except psycopg.Error as exc:
            raise self._error(exc) from None
        if woken:
            await self.announce()  # a pending run for the workers, as a submit is
        return woken

    async def wakes_due(self, now: float, limit: int = 100) -> list[str]:
        return [r[0] for r in await self._fetch(Q["wakes_due"], (now, limit))]

    async def list_alerts(self, *, status: str | None = None,
                          limit: int = 100) -> list[AlertRecord]:
        rows = await self._fetch(Q["alerts_list"], {"status": status, "limit": limit})
        return [alert_from_row(r) for r in rows]

    async def get_alert(self, key: str) -> AlertRecord | None:
        rows = await self._fetch(Q["alert_get"], (key,))
        return alert_from_row(rows[0]) if rows else None

    async def ack_alert(self, key: str, by: str, now: float) -> bool:
        self._writable()
        try:
            async with self.pool.connection() as conn, conn.transaction():
                cur = await conn.execute(Q["alert_ack"], (now, by, now, key))
                hit = await cur.fetchone() is not None
                if hit:
                    await conn.execute(Q["alert_history_add"], (key, now, "acked", by))
        except psycopg.Error as exc:
            raise self._error(exc) from None
        return hit

    async def alert_history(self, key: str) -> list[dict[str, Any]]:
        rows = await self._fetch(Q["alert_history_of"], (key,))
        return [{"key": key, "ts": r[0], "what": r[1], "detail": r[2]} for r in rows]

    async def attempt_outcomes(self, since: float) -> list[AttemptOutcome]:
        rows = await self._fetch(Q["attempt_outcomes"], {"since": since})
        return [AttemptOutcome(ts=r[0], run_id=r[1], workflow=r[2], step_id=r[4],
                               agent_id=r[5], attempt=int(r[6] or 0),
                               ok=r[3] == "step_succeeded", error_type=r[7], message=r[8])
                for r in rows]

    # --- workers ----------------------------------------------------------------
    async def register_worker(self, info: WorkerInfo) -> None:
        self._writable()
        try:
            async with self.pool.connection() as conn, conn.transaction():
                cur = await conn.execute(Q["worker_register"], (
                    info.id, info.host, info.pid, info.boot_id, info.pid_ns, info.lease_s,
                    info.concurrency, dumps(list(info.queues)), dumps(list(info.capabilities))))
                if await cur.fetchone() is None:
                    raise WorkerNameTaken(
                        f"a live worker is already named {info.id!r} (fix: give this one"
                        " another --name, or stop that one first)")
                # A dead worker of this name may still hold runs: they are taken over.
                cur = await conn.execute(Q["runs_of_dead_namesake"], (info.id,))
                freed = len(await cur.fetchall())
        except psycopg.Error as exc:
            raise self._error(exc, "worker registration") from None
        self._leases[info.id] = info.lease_s
        if freed:
            log.warning("worker %s: took over %d runs a dead worker of this name held",
                        info.id, freed)
            await self.announce()

    async def set_stopping(self, worker_id: str) -> None:
        await self._fetch(Q["worker_stopping"], (worker_id,))

    async def unregister_worker(self, worker_id: str) -> None:
        try:
            async with self.pool.connection() as conn, conn.transaction():
                cur = await conn.execute(Q["worker_release_all"], (worker_id,))
                released = len(await cur.fetchall())
                await conn.execute(Q["worker_delete"], (worker_id,))
        except psycopg.Error as exc:
            raise self._error(exc, "worker unregistration") from None
        self._leases.pop(worker_id, None)
        if released:
            await self.announce()

    async def list_workers(self) -> list[WorkerInfo]:
        rows = await self._fetch(Q["workers_list"])
        return [WorkerInfo(id=r[0], host=r[1], pid=r[2], lease_s=r[3], concurrency=r[4],
                           queues=tuple(orjson.loads(r[5])),
                           capabilities=tuple(orjson.loads(r[6])), boot_id=r[7], pid_ns=r[8],
                           started=r[9], heartbeat=r[10], stopping=r[11], runs_held=int(r[12]),
                           roles=tuple(r[13] or ()))
                for r in rows]

    async def claim_runs(self, worker_id: str, *, queues: Sequence[str],
                         capabilities: Collection[str], limit: int,
                         takeovers_only: bool = False) -> list[RunRecord]:
        self._writable()
        if limit <= 0:
            return []
        lease = self._leases.get(worker_id, 15.0)
        wanted = {"queues": list(queues), "capabilities": sorted(capabilities),
                  "limit": limit, "takeovers_only": takeovers_only}
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(Q["runs_claim_now"],
                                         {**wanted, "me": worker_id, "lease": lease})
                ids, slotted = [], 0
                for run_id, claimed in await cur.fetchall():
                    if claimed:
                        ids.append(run_id)
                    else:
                        slotted += 1
                if slotted:  # runs of workflows with max_runs: a slot each, or wait
                    ids += await self._claim_with_slots(conn, {**wanted, "limit": slotted},
                                                        worker_id, lease)
                if not ids:
                    return []
                runs = await self._runs(conn, ids, claimed=True)
        except psycopg.Error as exc:
            raise self._error(exc, "claim") from None
        runs.sort(key=lambda r: r.created_at)
        return runs

    async def _claim_with_slots(self, conn: psycopg.AsyncConnection[Any],
                                wanted: dict[str, Any], worker_id: str,
                                lease: float) -> list[str]:
        """The claim of runs whose workflow limits its runs: each takes a slot first, in
        the transaction that claims it (a run that gets none stays for later)."""
        async with conn.transaction():
            cur = await conn.execute(Q["runs_claimable"], wanted)
            ids = []
            for run_id, _taken, workflow, most in await cur.fetchall():
                if most is not None:
                    got = await conn.execute(Q["slot_take"], {
                        "run": run_id, "workflow": workflow, "max": most})
                    if await got.fetchone() is None:
                        continue
                ids.append(run_id)
            if not ids:
                return []
            cur = await conn.execute(Q["runs_claim"], {
                "me": worker_id, "ids": ids, "lease": lease})
            return [r[0] for r in await cur.fetchall()]

    async def release_runs(self, worker_id: str, run_ids: Collection[str]) -> None:
        if not run_ids:
            return
        rows = await self._fetch(Q["runs_release"], (worker_id, list(run_ids)))
        if rows:
            await self.announce()

    async def missing_capabilities(self, older_than_s: float) -> dict[str, list[str]]:
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(Q["runs_unclaimable"], (older_than_s,))
                waiting = await cur.fetchall()
                if not waiting:
                    return {}
                cur = await conn.execute(Q["live_capabilities"])
                have: set[str] = set()
                for (caps,) in await cur.fetchall():
                    have.update(orjson.loads(caps))
        except psycopg.Error as exc:
            raise self._error(exc) from None
        out = {}
        for run_id, needs in waiting:
            missing = [n for n in needs if n not in have]
            if missing:
                out[run_id] = missing
        return out

    async def announce(self) -> None:
        """Notify the workers a few milliseconds from now, once for every call made
        meanwhile; one that comes while a notification is on the wire sends another."""
        if not self.notify or self._pool is None or self.readonly:
            return
        if self._announcing is not None and not self._announcing.done():
            self._announce_again = True
            return
        self._announcing = asyncio.get_running_loop().create_task(
            self._send_announcements(), name="podium:notify")

    async def _send_announcements(self) -> None:
        while True:
            await asyncio.sleep(_ANNOUNCE_AFTER_S)
            self._announce_again = False
            try:
                await self._fetch(Q["notify"], (self.channel, "runs"))
            except StoreError as exc:  # polling finds the runs all the same
                log.debug("notification not sent: %s", exc.message)
            if not self._announce_again:
                return

    async def listen(self, on_notice: Callable[[str, str], None]) -> None:
        if not self.notify or self._listener is not None:
            return
        conn = await self._listen_connection()  # the first connection's errors are the caller's
        self._listener = asyncio.get_running_loop().create_task(
            self._listen(conn, on_notice), name="podium:listen")

    async def _listen_connection(self) -> psycopg.AsyncConnection[Any]:
        try:
            conn = await self._connect()
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except psycopg.Error as exc:
            raise self._error(exc, "listen") from None
        return conn

    async def _listen(self, conn: psycopg.AsyncConnection[Any] | None,
                      on_notice: Callable[[str, str], None]) -> None:
        """Deliver notifications until closed; reconnect after a lost connection and then
        report "runs" once (what was sent meanwhile is gone: look for yourself)."""
        backoff = 0.0
        while True:
            try:
                if conn is None:
                    conn = await self._listen_connection()
                    on_notice("runs", "")
                    log.info("PostgreSQL %s: listening again", self.url)
                backoff = 0.0
                async for n in conn.notifies():
                    kind, _, arg = n.payload.partition(":")
                    on_notice(kind, arg)
            except asyncio.CancelledError:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
                raise
            except (psycopg.Error, StoreError) as exc:
                log.warning("PostgreSQL %s: notifications lost (%s); reconnecting", self.url,
                            exc)
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
                conn = None
            backoff = min(max(backoff * 2, 0.25), _LISTEN_BACKOFF_MAX_S)
            await asyncio.sleep(backoff)

    async def lead(self, role: str) -> bool:
        """A session advisory lock on a connection of its own: held while it lives.

        The server ends that session after ``_LEAD_IDLE_S`` without a statement, so a
        holder frozen (SIGSTOP, a paused VM) or cut off loses the role to another
        process instead of keeping it for as long as its socket stays open: a holder
        uses it (``lead`` or ``feed``) every few seconds.
        """
        async with self._lead_lock:
            try:
                if self._lead_conn is None or self._lead_conn.closed:
                    self._roles.clear()
                    self._lead_conn = await self._lead_connect()
                if role in self._roles:
                    await self._lead_conn.execute("SELECT 1")  # still connected: still held
                    return True
                cur = await self._lead_conn.execute(
                    "SELECT pg_try_advisory_lock(hashtext(%s))",
                    (f"podium:{self.schema}:{role}",))
                row = await cur.fetchone()
            except psycopg.Error as exc:
                await self._lead_lost()
                raise self._error(exc, "lead") from None
            if row and row[0]:
                self._roles.add(role)
                return True
            return False

    async def _lead_connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await self._connect()
        try:
            await conn.execute(f"SET idle_session_timeout = {int(_LEAD_IDLE_S * 1000)}")
        except psycopg.errors.UndefinedObject:  # PostgreSQL before 14: held while connected
            log.debug("PostgreSQL %s: no idle_session_timeout; a frozen leader keeps its"
                      " role until its connection drops", self.url)
        return conn

    async def _lead_lost(self) -> None:
        self._roles.clear()
        if self._lead_conn is not None:
            with contextlib.suppress(Exception):
                await self._lead_conn.close()
            self._lead_conn = None

    async def feed(self, role: str, after: FeedPosition, *, holder: str,
                   limit: int = 1000) -> tuple[list[Event], FeedPosition]:
        """Read on the role's own connection: if the read succeeds, the role was held
        while it ran (a session lock lives exactly as long as its session)."""
        async with self._lead_lock:
            conn = self._lead_conn
            if conn is None or conn.closed or role not in self._roles:
                raise StoreError(f"PostgreSQL {self.url}: role {role!r} is not held here"
                                 " (fix: lead it first)")
            try:
                cur = await conn.execute(Q["feed_read"], {
                    "name": role, "tx": after.tx, "run_id": after.run_id, "seq": after.seq,
                    "holder": holder, "limit": limit})
                rows = await cur.fetchall()
            except psycopg.Error as exc:
                await self._lead_lost()
                raise self._error(exc, "feed") from None
        if not rows:
            return [], after
        events: list[Event] = []
        for row in rows:
            events += events_from_rows(row[1], (row[3:],))
        last = rows[-1]
        return events, FeedPosition(int(last[0]), last[1], int(last[2]))

    async def read_feed(self, after: FeedPosition, *, limit: int = 500
                        ) -> tuple[list[tuple[FeedPosition, Event]], FeedPosition]:
        if limit <= 0:
            return [], after
        rows = await self._fetch(Q["feed_after"], {
            "tx": after.tx, "run_id": after.run_id, "seq": after.seq, "limit": limit})
        out: list[tuple[FeedPosition, Event]] = []
        scanned = after
        for tx, rid, seq, kind, ts, data in rows:
            scanned = FeedPosition(int(tx), rid, int(seq))
            event = event_from_row(rid, kind, ts, data)
            if event is not None:
                out.append((scanned, event))
        return out, scanned

    async def feed_head(self) -> FeedPosition:
        rows = await self._fetch(Q["feed_head"])
        if not rows:
            return FeedPosition()
        return FeedPosition(int(rows[0][0]), rows[0][1], int(rows[0][2]))

    async def feed_position(self, role: str) -> tuple[FeedPosition, float] | None:
        rows = await self._fetch(Q["feed_position"], (role,))
        if not rows:
            return None
        tx, run_id, seq, _holder, age = rows[0]
        return FeedPosition(int(tx), run_id, int(seq)), float(age)
