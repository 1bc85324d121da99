-- Podium schema 8: runs that wait (an approval, a signal, a durable timer).
-- A signal is kept by its name, once per run (a second approval of a step is refused
-- by this key); the run reads it when its waiting step is reached. A run waiting with a
-- timer has a row in run_wakes: whoever fires schedules (podium serve, or one worker)
-- wakes it when due, by making it pending again for any process to continue.
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
