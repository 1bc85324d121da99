-- Podium schema 2, PostgreSQL: rollback state, so compensation survives a crash.
-- As ../002_compensation.sql; completed_seq is an event number (bigint, as events.seq).
ALTER TABLE runs ADD COLUMN phase text COLLATE "C" NOT NULL DEFAULT 'execute';
ALTER TABLE steps ADD COLUMN compensation_status text COLLATE "C";
ALTER TABLE steps ADD COLUMN compensation_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE steps ADD COLUMN compensation_error text;
ALTER TABLE steps ADD COLUMN completed_seq bigint;
