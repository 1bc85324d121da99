-- Podium schema 7, PostgreSQL: schedules; as ../sqlite/007_schedules.sql. On a shared
-- database one process at a time fires them (the holder of role "schedules").
CREATE TABLE schedules (
    id            text COLLATE "C" PRIMARY KEY,
    workflow      text NOT NULL,
    definition    text NOT NULL,
    input         text NOT NULL,
    cron          text,
    every_s       double precision,
    tz            text NOT NULL DEFAULT 'UTC',
    overlap       text NOT NULL DEFAULT 'skip',
    catch_up      integer NOT NULL DEFAULT 1,
    paused        boolean NOT NULL DEFAULT false,
    created_at    double precision NOT NULL,
    next_at       double precision NOT NULL,
    agents_source text NOT NULL DEFAULT '{}',
    queue         text NOT NULL DEFAULT 'default'
);
CREATE TABLE schedule_slots (
    schedule_id text COLLATE "C" NOT NULL,
    slot        double precision NOT NULL,
    status      text NOT NULL,
    run_id      text,
    at          double precision NOT NULL,
    PRIMARY KEY (schedule_id, slot)
);
