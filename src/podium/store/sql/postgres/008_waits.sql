-- Podium schema 8, PostgreSQL: runs that wait; as ../sqlite/008_waits.sql.
CREATE TABLE signals (
    run_id text COLLATE "C" NOT NULL,
    name   text COLLATE "C" NOT NULL,
    data   text NOT NULL,
    at     double precision NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE run_wakes (
    run_id  text COLLATE "C" PRIMARY KEY,
    wake_at double precision NOT NULL
);
CREATE INDEX run_wakes_due ON run_wakes (wake_at);
