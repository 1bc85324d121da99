-- Podium schema 5: queues and needs (PostgreSQL's 005 adds the workers of a shared
-- database; SQLite is one host, so `podium worker` refuses it and it has no workers).
-- queue: the queue a run waits in (workflow `queue:`, `podium submit --queue`).
-- capabilities: what executing it needs (capability names, agent ids as "@id"), a
-- JSON list, computed at submit. max_runs: the workflow's limit of runs at once
-- (enforced by PostgreSQL's claims; kept here so both dialects read the same rows).
ALTER TABLE runs ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE runs ADD COLUMN capabilities TEXT NOT NULL DEFAULT '[]';
ALTER TABLE runs ADD COLUMN max_runs INTEGER;
