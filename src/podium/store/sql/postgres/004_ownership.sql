-- Podium schema 4, PostgreSQL: claims that cannot both succeed, and takeovers counted.
-- As ../004_ownership.sql. epoch: +1 on every claim; a claim is a compare-and-swap on
-- it, and every batch a worker commits is fenced by it (owner and epoch still this
-- worker's, under a row lock; schema 5). recoveries: takeovers of the run from a dead
-- owner since it last ran to an end or was redriven by hand; recovered_at: the last
-- one's time (database time on PostgreSQL).
ALTER TABLE runs ADD COLUMN epoch bigint NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN recoveries integer NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN recovered_at double precision;
