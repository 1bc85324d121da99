-- Podium schema 4: claims that cannot both succeed, and takeovers counted.
-- epoch: +1 on every claim; a claim is a compare-and-swap on it (two resumes of one
-- run: exactly one wins). recoveries: takeovers of the run from a dead process since
-- it last ran to an end or was redriven by hand; recovered_at: the last one's time.
ALTER TABLE runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN recoveries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN recovered_at REAL;
