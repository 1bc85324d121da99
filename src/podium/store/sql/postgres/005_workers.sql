-- Podium schema 5, PostgreSQL: many workers on one database (issue 14, items 3-9).
--
-- Versions share one number line across dialects: SQLite's 005 has the shared columns
-- below (queue, capabilities, max_runs), and no workers table or slots (podium worker
-- refuses SQLite). The statements that use these are in queries.sql (runs_claimable,
-- slot_take, runs_claim, runs_fence...); the sketches below are how they began. All
-- times are database time, in epoch seconds:
-- extract(epoch FROM statement_timestamp()) (now() is frozen at the start of a
-- transaction), never a worker's own clock, so clock skew between hosts moves no lease.

-- One row per live process that owns runs: every `podium worker`, and `podium run`
-- (or resume) on PostgreSQL, which executes as an owner like any worker.
CREATE TABLE workers (
    id           text COLLATE "C" PRIMARY KEY,  -- --name, else host:pid:random. A second
                                                -- worker with a live row's id exits 2; an
                                                -- expired row is taken over (UPDATE ...
                                                -- WHERE heartbeat + lease_s < now)
    host         text NOT NULL,
    pid          integer NOT NULL,
    -- Liveness by pid is a same-host fast path only: valid when both match this
    -- process's (containers repeat hostnames and pids). /proc/sys/kernel/random/boot_id
    -- and the inode of /proc/self/ns/pid.
    boot_id      text,
    pid_ns       text,
    started      double precision NOT NULL,
    -- Renewed every lease/3 by one small UPDATE: that single write is the lease of
    -- every run the worker holds. Expired: heartbeat + lease_s < now.
    heartbeat    double precision NOT NULL,
    lease_s      double precision NOT NULL,     -- its --lease (min 1 s)
    concurrency  integer NOT NULL,              -- its --concurrency, for `podium workers`
    queues       text NOT NULL DEFAULT '["default"]',  -- JSON list, for `podium workers`
    capabilities text NOT NULL DEFAULT '[]',    -- JSON list: what its registry provides,
                                                -- to name a capability no live worker has
    stopping     boolean NOT NULL DEFAULT false -- graceful shutdown under way: claims nothing
);

-- Runs wait in a queue (workflow file `queue:`, `podium submit --queue`); a worker
-- takes only its --queue ones.
ALTER TABLE runs ADD COLUMN queue text COLLATE "C" NOT NULL DEFAULT 'default';
-- What executing the run needs, computed at submit from the definition (steps and
-- compensations): capability names, and agent ids as '@id'. The claim takes only runs
-- whose needs are a subset of the worker's registry (capabilities <@ $mine), *before*
-- claiming, so no worker holds a run it cannot execute (research item 9). An array, so
-- that subset test is one operator; nothing reads it back as JSON.
ALTER TABLE runs ADD COLUMN capabilities text[] COLLATE "C" NOT NULL DEFAULT '{}';
-- The workflow's `max_runs` (NULL: no limit), copied at submit so the claim needs no
-- definition: such a run is claimed only with a slot of run_slots.
ALTER TABLE runs ADD COLUMN max_runs integer;

-- The runs a claim can take: pending ones, and running ones whose owner may be dead.
-- Partial, so it holds only the live part of the table, however many runs ended.
-- The claim (one statement, items 4, 6, 8):
--   UPDATE runs SET owner = $me, epoch = epoch + 1, lease_expires_at = NULL,
--          recoveries = recoveries + (owner IS NOT NULL)::int,
--          recovered_at = CASE WHEN owner IS NOT NULL THEN $now ELSE recovered_at END
--   WHERE run_id IN (
--     SELECT r.run_id FROM runs r LEFT JOIN workers w ON w.id = r.owner
--     WHERE r.status IN ('pending', 'running') AND r.queue = ANY($queues)
--       AND r.capabilities <@ $mine
--       AND (r.owner IS NULL OR w.id IS NULL
--            -- expired, plus the poison backoff: 0, then 1 s, 2 s, 4 s... (capped)
--            OR w.heartbeat + w.lease_s + CASE WHEN r.recoveries = 0 THEN 0
--                 ELSE least(power(2, r.recoveries - 1), 300) END < $now)
--     ORDER BY r.created_at LIMIT $free_slots
--     FOR UPDATE OF r SKIP LOCKED)
--   RETURNING run_id, epoch, recoveries, cancel_requested
-- where $now is the statement's database time. cancel_requested is no longer cleared
-- by a claim (item 7): a run cancelled while its owner was dead ends `cancelled`.
-- After max_recoveries the claimer ends the run `failed` (worker_lost) at once.
CREATE INDEX runs_claimable ON runs (queue, created_at)
    WHERE status IN ('pending', 'running');
-- `podium workers` (runs held) and the release of all of a worker's runs at shutdown:
-- UPDATE runs SET owner = NULL WHERE owner = $me.
CREATE INDEX runs_by_owner ON runs (owner) WHERE owner IS NOT NULL;
-- Fencing (item 3) needs no more than the primary key and epoch: every batch first
--   SELECT run_id FROM runs
--   WHERE (run_id, epoch) IN (SELECT * FROM unnest($ids::text[], $epochs::bigint[]))
--     AND owner = $me FOR NO KEY UPDATE
-- and writes only the events of the runs it got back; the others were lost.

-- A workflow's max_runs enforced across all workers by a unique index, not by counting
-- (concurrent counts race): a run holds one of slots 0..max_runs-1 of its workflow
-- while it is owned, taken in the claim's transaction with
--   INSERT INTO run_slots SELECT $wf, s, $run, $now FROM generate_series(0, $max - 1) s
--   ORDER BY s ON CONFLICT DO NOTHING RETURNING slot
-- which inserts the first free number only (every later row conflicts on run_id); no
-- row back: the workflow is at its limit and the run is not claimed.
-- A takeover keeps the slot (run_id is unique); the run's end or release deletes it.
CREATE TABLE run_slots (
    workflow text COLLATE "C" NOT NULL,
    slot     integer NOT NULL,
    run_id   text COLLATE "C" NOT NULL UNIQUE,
    taken_at double precision NOT NULL,
    PRIMARY KEY (workflow, slot)
);
