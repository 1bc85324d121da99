-- Podium schema 1, PostgreSQL: workflows, runs, steps, and the append-only event log.
--
-- The same tables, columns, keys and indexes as ../001_initial.sql (SQLite), in
-- PostgreSQL's words (tests/integration/test_pg_schema.py compares them version by
-- version):
-- * Times are epoch seconds in double precision, as SQLite's REAL: one unit in every
--   column, comparable with the engine's clock and, for leases, with the database's
--   own extract(epoch FROM statement_timestamp()).
-- * JSON that users read back (definitions, inputs, outputs, errors, event data) is
--   text holding exactly the bytes the store wrote: jsonb would reorder keys and drop
--   duplicates, and json would be parsed by the server on every write and by psycopg
--   (stdlib json) on every read; the store encodes and decodes with orjson itself.
--   Queries that look inside cast: data::json ->> 'step_id'.
-- * Keys, identifiers and statuses collate "C": byte order, as SQLite's BINARY, so
--   listings sort as they do on SQLite and a run-id prefix lookup is a plain range
--   scan of the primary key whatever the cluster's locale (en_US.UTF-8 would not).
-- * Flags are boolean (SQLite: INTEGER 0/1); the store passes Python bools.
-- * No foreign keys, as on SQLite: steps and events are written in the same batch as
--   their run, and a check per row would cost on the hot path for nothing.
-- Scripts run whole (several statements in one simple-protocol execute), in one
-- transaction with the version bump, under pg_advisory_xact_lock.

CREATE TABLE podium_meta (
    key   text COLLATE "C" PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE workflows (
    name       text COLLATE "C" NOT NULL,
    version    text COLLATE "C" NOT NULL,    -- JSON: 3 and "3" stay distinct
    definition text NOT NULL,
    created_at double precision NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE runs (
    run_id           text COLLATE "C" PRIMARY KEY,
    workflow         text COLLATE "C" NOT NULL,
    version          text COLLATE "C" NOT NULL,
    definition       text NOT NULL,
    input            text NOT NULL,
    status           text COLLATE "C" NOT NULL,
    output           text,
    error            text,
    created_at       double precision NOT NULL,
    started_at       double precision,
    finished_at      double precision,
    owner            text COLLATE "C",
    lease_expires_at double precision,
    cancel_requested boolean NOT NULL DEFAULT false,
    agents_source    text NOT NULL DEFAULT '{}'
);
CREATE INDEX runs_by_created ON runs (created_at);
CREATE INDEX runs_by_status ON runs (status, created_at);
CREATE INDEX runs_by_workflow ON runs (workflow, created_at);

CREATE TABLE steps (
    run_id        text COLLATE "C" NOT NULL,
    step_id       text COLLATE "C" NOT NULL,
    status        text COLLATE "C" NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    agent_id      text COLLATE "C",
    output        text,
    error         text,
    started_at    double precision,
    finished_at   double precision,
    next_retry_at double precision,
    optional      boolean NOT NULL DEFAULT false,
    PRIMARY KEY (run_id, step_id)
);

-- seq is bigint: a run's event numbers never wrap, however long it retries.
CREATE TABLE events (
    run_id text COLLATE "C" NOT NULL,
    seq    bigint NOT NULL,
    type   text COLLATE "C" NOT NULL,
    ts     double precision NOT NULL,
    data   text NOT NULL,
    PRIMARY KEY (run_id, seq)
);
