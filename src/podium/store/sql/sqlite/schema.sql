-- The schema the migrations make (by sqlite_db.schema_sql()), version 12
CREATE TABLE podium_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE workflows (
    name       TEXT NOT NULL,
    version    TEXT NOT NULL,            -- JSON: 3 and "3" stay distinct
    definition TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE runs (
    run_id           TEXT PRIMARY KEY,
    workflow         TEXT NOT NULL,
    version          TEXT NOT NULL,
    definition       TEXT NOT NULL,
    input            TEXT NOT NULL,
    status           TEXT NOT NULL,
    output           TEXT,
    error            TEXT,
    created_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    owner            TEXT,
    lease_expires_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    agents_source    TEXT NOT NULL DEFAULT '{}'
, phase TEXT NOT NULL DEFAULT 'execute', epoch INTEGER NOT NULL DEFAULT 0, recoveries INTEGER NOT NULL DEFAULT 0, recovered_at REAL, queue TEXT NOT NULL DEFAULT 'default', capabilities TEXT NOT NULL DEFAULT '[]', max_runs INTEGER);

CREATE INDEX runs_by_created ON runs (created_at);

CREATE INDEX runs_by_status ON runs (status, created_at);

CREATE INDEX runs_by_workflow ON runs (workflow, created_at);

CREATE TABLE steps (
    run_id        TEXT NOT NULL,
    step_id       TEXT NOT NULL,
    status        TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    agent_id      TEXT,
    output        TEXT,
    error         TEXT,
    started_at    REAL,
    finished_at   REAL,
    next_retry_at REAL,
    optional      INTEGER NOT NULL DEFAULT 0, compensation_status TEXT, compensation_attempts INTEGER NOT NULL DEFAULT 0, compensation_error TEXT, completed_seq INTEGER,
    PRIMARY KEY (run_id, step_id)
) WITHOUT ROWID;

CREATE TABLE events (
    run_id TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    type   TEXT NOT NULL,
    ts     REAL NOT NULL,
    data   TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

CREATE TABLE alerts (
    key              TEXT PRIMARY KEY,
    rule             TEXT NOT NULL,
    kind             TEXT NOT NULL,
    severity         TEXT NOT NULL,
    status           TEXT NOT NULL,          -- firing | resolved
    summary          TEXT NOT NULL,
    labels           TEXT NOT NULL DEFAULT '{}',
    run_id           TEXT,
    workflow         TEXT,
    fired_at         REAL NOT NULL,
    resolved_at      REAL,
    acked_at         REAL,
    acked_by         TEXT,
    level            INTEGER NOT NULL DEFAULT -1,
    last_notified_at REAL,
    updated_at       REAL NOT NULL
);

CREATE INDEX alerts_by_status ON alerts (status, fired_at);

CREATE TABLE alert_history (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    key    TEXT NOT NULL,
    ts     REAL NOT NULL,
    what   TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);

CREATE INDEX alert_history_by_key ON alert_history (key, id);

CREATE INDEX runs_by_finished ON runs (finished_at);

CREATE TABLE schedules (
    id            TEXT PRIMARY KEY,
    workflow      TEXT NOT NULL,
    definition    TEXT NOT NULL,
    input         TEXT NOT NULL,
    cron          TEXT,                         -- five fields, or every_s
    every_s       REAL,
    tz            TEXT NOT NULL DEFAULT 'UTC',
    overlap       TEXT NOT NULL DEFAULT 'skip',  -- skip | queue | allow
    catch_up      INTEGER NOT NULL DEFAULT 1,
    paused        INTEGER NOT NULL DEFAULT 0,
    created_at    REAL NOT NULL,
    next_at       REAL NOT NULL,                -- the next slot, epoch seconds
    agents_source TEXT NOT NULL DEFAULT '{}',
    queue         TEXT NOT NULL DEFAULT 'default',
    last_run_id   TEXT                          -- the run of the last slot fired
);

CREATE TABLE schedule_slots (
    schedule_id TEXT NOT NULL,
    slot        REAL NOT NULL,
    status      TEXT NOT NULL,                  -- fired | skipped | missed
    run_id      TEXT,
    at          REAL NOT NULL,
    PRIMARY KEY (schedule_id, slot)
);

CREATE TABLE signals (
    run_id TEXT NOT NULL,
    name   TEXT NOT NULL,
    data   TEXT NOT NULL,
    at     REAL NOT NULL,
    PRIMARY KEY (run_id, name)
);

CREATE TABLE run_wakes (
    run_id  TEXT PRIMARY KEY,
    wake_at REAL NOT NULL
);

CREATE INDEX run_wakes_due ON run_wakes (wake_at);

CREATE TABLE registered_workflows (
    name          TEXT NOT NULL,
    version       TEXT NOT NULL,
    definition    TEXT NOT NULL,
    digest        TEXT NOT NULL,
    registered_at REAL NOT NULL,               -- the store's clock, epoch seconds
    PRIMARY KEY (name, version)
);

CREATE INDEX registered_workflows_newest ON registered_workflows (name, registered_at);

CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    scope         TEXT NOT NULL,
    salt          BLOB NOT NULL,
    hash          BLOB NOT NULL,
    created_at    REAL NOT NULL,               -- epoch seconds
    expires_at    REAL,                        -- NULL: never
    revoked_at    REAL,
    last_used_at  REAL                         -- written at most once a minute per token
);

CREATE TABLE feed (
    pos  INTEGER PRIMARY KEY,
    runs TEXT NOT NULL
);

CREATE TABLE joined_agents (
    id            TEXT PRIMARY KEY,
    spec          TEXT NOT NULL,
    token_id      TEXT NOT NULL,
    registered_at REAL NOT NULL,
    expires_at    REAL NOT NULL
);

