-- Podium schema 2: rollback state, so compensation survives a crash.
ALTER TABLE runs ADD COLUMN phase TEXT NOT NULL DEFAULT 'execute';
ALTER TABLE steps ADD COLUMN compensation_status TEXT;
ALTER TABLE steps ADD COLUMN compensation_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE steps ADD COLUMN compensation_error TEXT;
ALTER TABLE steps ADD COLUMN completed_seq INTEGER;
