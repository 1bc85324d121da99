-- Podium schema 3: alerts with their history, and what failure queries need.
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
