-- Podium schema 7: schedules (`podium schedule add`), fired by `podium serve` (and, on
-- PostgreSQL, by one worker at a time).
-- A schedule keeps the definition it was added with (as a run keeps its own) and
-- the next slot it fires at; every slot it reaches is one row of schedule_slots,
-- whose key makes a slot fire at most once: fired (with the run it started),
-- skipped (the last run still going, overlap: skip) or missed (over catch_up after
-- downtime). The run of a slot has an id made from the schedule and the slot, so a
-- firer that dies between starting it and recording the slot cannot start it twice.
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
    queue         TEXT NOT NULL DEFAULT 'default'
);
CREATE TABLE schedule_slots (
    schedule_id TEXT NOT NULL,
    slot        REAL NOT NULL,
    status      TEXT NOT NULL,                  -- fired | skipped | missed
    run_id      TEXT,
    at          REAL NOT NULL,
    PRIMARY KEY (schedule_id, slot)
);
