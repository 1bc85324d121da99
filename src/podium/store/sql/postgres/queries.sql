-- Every statement the PostgreSQL store runs, by name (store/queries.py reads this file).
-- Parameters are psycopg's (%s, %(name)s): never user data in the text. Times are
-- epoch seconds; "now" is always the database's (statement_timestamp), so clock skew
-- between hosts moves no lease. Lists of ids travel as arrays (= ANY(%s)).

-- name: now
SELECT extract(epoch FROM statement_timestamp())::float8;

-- name: batch_write
-- A whole batch in one statement (so one implicit transaction, one round trip): the
-- fence, then every write, only for the runs that passed it. The server runs it from
-- first to last byte without waiting for the client: a writer frozen or cut off can
-- never sit on a row lock (a claim skips locked runs; a multi-statement transaction
-- would hold them for as long as its connection lives).
-- fenced: the batch's existing runs still the writer's at the epochs it claimed them
-- at, locked until the end; free: existing runs written without a fence (a batch
-- with no owner); new runs need none, but one whose id is taken (another process
-- inserted it first, perhaps a moment ago: the insert waits for that transaction)
-- is left out, with its steps and events, instead of failing the whole batch. Every
-- sub-statement sees the same snapshot, so a new run's row and its steps and events
-- go in side by side. Returns the fenced runs that held, then the new runs inserted
-- (fresh: true).
WITH fenced AS (
    SELECT r.run_id FROM runs r
    JOIN unnest(%(fence_ids)s::text[], %(fence_epochs)s::bigint[]) AS b(run_id, epoch)
      ON r.run_id = b.run_id AND r.epoch = b.epoch
    WHERE r.owner = %(owner)s
    FOR NO KEY UPDATE OF r),
held AS (SELECT run_id FROM fenced UNION ALL SELECT unnest(%(free_ids)s::text[])),
fresh AS (
    INSERT INTO runs (run_id, workflow, version, definition, input, status, output, error,
                      created_at, started_at, finished_at, owner, lease_expires_at,
                      cancel_requested, agents_source, phase, queue, capabilities, max_runs)
    SELECT n.run_id, n.workflow, n.version, n.definition, n.input, n.status, n.output,
           n.error, n.created_at, n.started_at, n.finished_at, n.owner,
           n.lease_expires_at, false, n.agents_source, n.phase, n.queue,
           ARRAY(SELECT json_array_elements_text(n.needs::json)), n.max_runs
    FROM unnest(%(n_id)s::text[], %(n_workflow)s::text[], %(n_version)s::text[],
                %(n_definition)s::text[], %(n_input)s::text[], %(n_status)s::text[],
                %(n_output)s::text[], %(n_error)s::text[], %(n_created)s::float8[],
                %(n_started)s::float8[], %(n_finished)s::float8[], %(n_owner)s::text[],
                %(n_lease)s::float8[], %(n_agents)s::text[], %(n_phase)s::text[],
                %(n_queue)s::text[], %(n_needs)s::text[], %(n_max)s::int[])
         AS n(run_id, workflow, version, definition, input, status, output, error,
              created_at, started_at, finished_at, owner, lease_expires_at, agents_source,
              phase, queue, needs, max_runs)
    ON CONFLICT (run_id) DO NOTHING
    RETURNING run_id),
ok AS (SELECT run_id FROM held UNION ALL SELECT run_id FROM fresh),
ev AS (
    INSERT INTO events (run_id, seq, type, ts, data)
    SELECT e.run_id, e.seq, e.type, e.ts, e.data
    FROM unnest(%(e_run)s::text[], %(e_seq)s::bigint[], %(e_type)s::text[],
                %(e_ts)s::float8[], %(e_data)s::text[]) AS e(run_id, seq, type, ts, data)
    WHERE e.run_id IN (SELECT run_id FROM ok)),
upd AS (
    UPDATE runs r SET status = u.status, output = u.output, error = u.error,
                      started_at = u.started_at, finished_at = u.finished_at,
                      phase = u.phase,
                      cancel_requested = CASE WHEN u.ended THEN false
                                              ELSE r.cancel_requested END
    FROM unnest(%(u_id)s::text[], %(u_status)s::text[], %(u_output)s::text[],
                %(u_error)s::text[], %(u_started)s::float8[], %(u_finished)s::float8[],
                %(u_phase)s::text[], %(u_ended)s::bool[])
         AS u(run_id, status, output, error, started_at, finished_at, phase, ended)
    WHERE r.run_id = u.run_id AND u.run_id IN (SELECT run_id FROM held)),
st AS (
    INSERT INTO steps (run_id, step_id, status, attempts, agent_id, output, error,
                       started_at, finished_at, next_retry_at, optional, completed_seq,
                       compensation_status, compensation_attempts, compensation_error)
    SELECT s.* FROM unnest(%(s_run)s::text[], %(s_step)s::text[], %(s_status)s::text[],
                           %(s_attempts)s::int[], %(s_agent)s::text[], %(s_output)s::text[],
                           %(s_error)s::text[], %(s_started)s::float8[],
                           %(s_finished)s::float8[], %(s_retry)s::float8[],
                           %(s_optional)s::bool[], %(s_completed)s::bigint[],
                           %(s_cstatus)s::text[], %(s_cattempts)s::int[],
                           %(s_cerror)s::text[])
         AS s(run_id, step_id, status, attempts, agent_id, output, error, started_at,
              finished_at, next_retry_at, optional, completed_seq, compensation_status,
              compensation_attempts, compensation_error)
    WHERE s.run_id IN (SELECT run_id FROM ok)
    ON CONFLICT (run_id, step_id) DO UPDATE SET
        status = excluded.status, attempts = excluded.attempts,
        agent_id = excluded.agent_id, output = COALESCE(excluded.output, steps.output),
        error = excluded.error, started_at = excluded.started_at,
        finished_at = excluded.finished_at, next_retry_at = excluded.next_retry_at,
        optional = excluded.optional, completed_seq = excluded.completed_seq,
        compensation_status = excluded.compensation_status,
        compensation_attempts = excluded.compensation_attempts,
        compensation_error = excluded.compensation_error),
slots AS (
    DELETE FROM run_slots WHERE run_id = ANY(%(ended)s::text[])
      AND run_id IN (SELECT run_id FROM ok))
SELECT run_id, false FROM fenced UNION ALL SELECT run_id, true FROM fresh;

-- name: last_seq
SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = %s;

-- name: run_held
SELECT 1 FROM runs WHERE run_id = %s AND owner = %s AND epoch = %s;

-- name: event_exists
SELECT 1 FROM events WHERE run_id = %s AND seq = %s;

-- name: workflow_save
INSERT INTO workflows (name, version, definition, created_at)
VALUES (%s, %s, %s, extract(epoch FROM statement_timestamp()))
ON CONFLICT (name, version) DO UPDATE SET definition = excluded.definition;

-- name: run_exists
SELECT 1 FROM runs WHERE run_id = %s;

-- name: run_ids_with_prefix
-- A prefix of a run id: the ids in [prefix, prefix + U+FFFF), at most two (ambiguous).
-- Keys collate "C" (byte order), so this is a range scan of the primary key. Child
-- runs (PARENT.STEP) only for a prefix that reaches into one.
SELECT run_id FROM runs WHERE run_id >= %s AND run_id < %s
  AND (position('.' in run_id) = 0 OR position('.' in %s) > 0)
ORDER BY run_id LIMIT 2;

-- name: run_get
SELECT run_id, workflow, version, definition, input, status, output, error, created_at,
       started_at, finished_at, owner, lease_expires_at, cancel_requested, agents_source,
       phase, epoch, recoveries, recovered_at, queue
FROM runs WHERE run_id = ANY(%s);

-- name: steps_of_runs
SELECT run_id, step_id, status, attempts, agent_id, output, error, started_at, finished_at,
       next_retry_at, optional, completed_seq, compensation_status, compensation_attempts,
       compensation_error
FROM steps WHERE run_id = ANY(%s);

-- name: runs_list
-- Newest first; a NULL filter matches everything.
SELECT run_id, workflow, version, definition, input, status, output, error, created_at,
       started_at, finished_at, owner, lease_expires_at, cancel_requested, agents_source,
       phase, epoch, recoveries, recovered_at, queue
FROM runs
WHERE (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s)
  AND (%(before_at)s::double precision IS NULL OR (created_at, run_id) < (%(before_at)s, %(before_id)s))
ORDER BY created_at DESC, run_id DESC LIMIT %(limit)s;

-- name: events_of_run
SELECT type, ts, data FROM events WHERE run_id = %s ORDER BY seq;

-- name: trace_context
-- The first run-level event that recorded a trace context (few per run: one per
-- execution), read along the primary key; no event decoded but the one.
SELECT data FROM events
WHERE run_id = %s AND type IN ('run_submitted', 'run_started', 'run_traced')
  AND strpos(data, '"traceparent"') > 0
ORDER BY seq LIMIT 1;

-- name: cancel_request
UPDATE runs SET cancel_requested = true
WHERE run_id = %s AND status NOT IN ('succeeded', 'failed', 'cancelled', 'rolled_back',
                                     'rollback_failed')
RETURNING run_id;

-- name: cancel_requested_among
SELECT run_id FROM runs WHERE cancel_requested AND run_id = ANY(%s);

-- name: run_claim
-- A compare-and-swap on the epoch the run was read at, of a free run: no owner, the
-- claimer itself, an owner known dead (its pid is gone from the caller's host), or a
-- lease expired by the database's clock. cancel_requested is kept.
UPDATE runs SET owner = %(owner)s,
                lease_expires_at = extract(epoch FROM statement_timestamp()) + %(lease)s,
                epoch = epoch + 1, recoveries = %(recoveries)s,
                recovered_at = CASE WHEN %(recoveries)s > recoveries
                                    THEN extract(epoch FROM statement_timestamp())
                                    ELSE recovered_at END
WHERE run_id = %(run_id)s AND epoch = %(epoch)s
  AND (owner IS NULL OR owner = %(owner)s OR %(dead)s OR lease_expires_at IS NULL
       OR lease_expires_at < extract(epoch FROM statement_timestamp()))
RETURNING lease_expires_at, recovered_at, cancel_requested;

-- name: run_release
WITH released AS (UPDATE runs SET owner = NULL WHERE run_id = %s AND owner = %s
                  RETURNING run_id)
DELETE FROM run_slots WHERE run_id IN (SELECT run_id FROM released);

-- name: run_release_forced
WITH released AS (UPDATE runs SET owner = NULL WHERE run_id = %s RETURNING run_id)
DELETE FROM run_slots WHERE run_id IN (SELECT run_id FROM released);

-- name: leases_renew
-- The runs renewed come back: those asked for and missing were lost.
UPDATE runs SET lease_expires_at = extract(epoch FROM statement_timestamp()) + %s
WHERE owner = %s AND run_id = ANY(%s)
RETURNING run_id;

-- name: heartbeat
-- A worker's row (if the owner is one): its heartbeat, for `podium workers`.
UPDATE workers SET heartbeat = extract(epoch FROM statement_timestamp()), lease_s = %s
WHERE id = %s;

-- name: worker_register
-- A new worker, or the row of a dead one with this id taken over (its heartbeat older
-- than its lease); a live one with this id answers nothing (WorkerNameTaken).
INSERT INTO workers AS w (id, host, pid, boot_id, pid_ns, started, heartbeat, lease_s,
                          concurrency, queues, capabilities, stopping)
VALUES (%s, %s, %s, %s, %s, extract(epoch FROM statement_timestamp()),
        extract(epoch FROM statement_timestamp()), %s, %s, %s, %s, false)
ON CONFLICT (id) DO UPDATE SET
    host = excluded.host, pid = excluded.pid, boot_id = excluded.boot_id,
    pid_ns = excluded.pid_ns, started = excluded.started, heartbeat = excluded.heartbeat,
    lease_s = excluded.lease_s, concurrency = excluded.concurrency, queues = excluded.queues,
    capabilities = excluded.capabilities, stopping = false
WHERE w.heartbeat + w.lease_s < extract(epoch FROM statement_timestamp())
RETURNING id;

-- name: runs_of_dead_namesake
-- Runs a dead worker of the same id still holds: counted as taken over (poison runs
-- stay bounded) and freed, so the new worker of that id does not sit on them unknowing.
WITH released AS (
    UPDATE runs SET owner = NULL, lease_expires_at = NULL, epoch = epoch + 1,
                    recoveries = recoveries + 1,
                    recovered_at = extract(epoch FROM statement_timestamp())
    WHERE owner = %s AND status IN ('pending', 'running')
    RETURNING run_id),
freed AS (DELETE FROM run_slots WHERE run_id IN (SELECT run_id FROM released))
SELECT run_id FROM released;

-- name: worker_stopping
UPDATE workers SET stopping = true WHERE id = %s;

-- name: worker_release_all
WITH released AS (
    UPDATE runs SET owner = NULL, lease_expires_at = NULL
    WHERE owner = %s AND status IN ('pending', 'running')
    RETURNING run_id),
freed AS (DELETE FROM run_slots WHERE run_id IN (SELECT run_id FROM released))
SELECT run_id FROM released;

-- name: worker_delete
DELETE FROM workers WHERE id = %s;

-- name: workers_list
SELECT w.id, w.host, w.pid, w.lease_s, w.concurrency, w.queues, w.capabilities, w.boot_id,
       w.pid_ns, w.started, w.heartbeat, w.stopping,
       (SELECT count(*) FROM runs r
        WHERE r.owner = w.id AND r.status IN ('pending', 'running')),
       -- the roles it leads: a feed position it saved lately (a leader reads every
       -- few seconds)
       ARRAY(SELECT f.name FROM feed_positions f
             WHERE f.holder = w.id
               AND f.saved > extract(epoch FROM statement_timestamp()) - 30
             ORDER BY f.name)
FROM workers w ORDER BY w.started, w.id;

-- name: runs_claimable
-- Up to %(limit)s runs, oldest first, locked for this claim and skipped by any other:
-- pending runs nobody owns (not with takeovers_only: podium serve), and live runs whose
-- owner's lease expired by the database's clock once their poison backoff passed (1 s,
-- 2 s, 4 s... after each takeover, at most 60 s); only of the worker's queues, only
-- with needs (capability names, '@agent' ids) all among what its registry provides,
-- and none of a workflow whose max_runs slots are all taken (a run taken over keeps
-- its slot).
SELECT r.run_id, r.owner IS NOT NULL, r.workflow, r.max_runs FROM runs r
WHERE r.status IN ('pending', 'running') AND r.queue = ANY(%(queues)s)
  AND r.capabilities <@ %(capabilities)s::text[]
  AND (r.owner IS NOT NULL OR NOT %(takeovers_only)s)
  AND (r.owner IS NULL
       OR COALESCE(r.lease_expires_at, 0)
          + CASE WHEN r.recoveries = 0 THEN 0
                 ELSE least(power(2, r.recoveries - 1), 60) END
          < extract(epoch FROM statement_timestamp()))
  AND (r.max_runs IS NULL
       OR EXISTS (SELECT 1 FROM run_slots s WHERE s.run_id = r.run_id)
       OR (SELECT count(*) FROM run_slots s WHERE s.workflow = r.workflow) < r.max_runs)
ORDER BY r.created_at LIMIT %(limit)s
FOR UPDATE OF r SKIP LOCKED;

-- name: runs_claim_now
-- runs_claimable and runs_claim in one statement: one round trip and no BEGIN and
-- COMMIT for the common claim (an idle worker's poll stays this one statement). The
-- same runs, picked, locked and skipped the same way, are claimed at once unless their
-- workflow has max_runs: those are only named (false back), for the claim that takes a
-- slot first (runs_claimable, slot_take, runs_claim in one transaction).
WITH picked AS (
    SELECT r.run_id, r.max_runs FROM runs r
    WHERE r.status IN ('pending', 'running') AND r.queue = ANY(%(queues)s)
      AND r.capabilities <@ %(capabilities)s::text[]
      AND (r.owner IS NOT NULL OR NOT %(takeovers_only)s)
      AND (r.owner IS NULL
           OR COALESCE(r.lease_expires_at, 0)
              + CASE WHEN r.recoveries = 0 THEN 0
                     ELSE least(power(2, r.recoveries - 1), 60) END
              < extract(epoch FROM statement_timestamp()))
      AND (r.max_runs IS NULL
           OR EXISTS (SELECT 1 FROM run_slots s WHERE s.run_id = r.run_id)
           OR (SELECT count(*) FROM run_slots s WHERE s.workflow = r.workflow) < r.max_runs)
    ORDER BY r.created_at LIMIT %(limit)s
    FOR UPDATE OF r SKIP LOCKED),
claimed AS (
    UPDATE runs SET owner = %(me)s, epoch = epoch + 1,
                    lease_expires_at = extract(epoch FROM statement_timestamp()) + %(lease)s,
                    recoveries = recoveries + (owner IS NOT NULL)::int,
                    recovered_at = CASE WHEN owner IS NOT NULL
                                        THEN extract(epoch FROM statement_timestamp())
                                        ELSE recovered_at END
    FROM picked p WHERE runs.run_id = p.run_id AND p.max_runs IS NULL
    RETURNING runs.run_id)
SELECT run_id, true FROM claimed
UNION ALL SELECT run_id, false FROM picked WHERE max_runs IS NOT NULL;

-- name: runs_claimed
-- Runs just claimed, as run_get, with the seq of each one's last event (where its
-- journal numbers on) and whether it has step rows at all (a fresh run has none: no
-- steps_of_runs). A statement of its own, after the claim committed: an event a former
-- owner committed before the claim is seen, and whatever it sends after is fenced.
SELECT run_id, workflow, version, definition, input, status, output, error, created_at,
       started_at, finished_at, owner, lease_expires_at, cancel_requested, agents_source,
       phase, epoch, recoveries, recovered_at, queue,
       (SELECT COALESCE(MAX(e.seq), 0) FROM events e WHERE e.run_id = r.run_id),
       EXISTS (SELECT 1 FROM steps s WHERE s.run_id = r.run_id)
FROM runs r WHERE run_id = ANY(%s);

-- name: slot_take
-- One of the workflow's slots 0..max_runs-1 for the run, enforced by the unique index
-- (counting would race): the first free number is inserted, every later row conflicts
-- on run_id; a run that holds one already keeps it; no row back: the workflow is at
-- its limit.
WITH held AS (SELECT slot FROM run_slots WHERE run_id = %(run)s),
     taken AS (
       INSERT INTO run_slots
       SELECT %(workflow)s, s, %(run)s, extract(epoch FROM statement_timestamp())
       FROM generate_series(0, %(max)s - 1) s
       WHERE NOT EXISTS (SELECT 1 FROM held)
       ORDER BY s ON CONFLICT DO NOTHING RETURNING slot)
SELECT slot FROM held UNION ALL SELECT slot FROM taken;

-- name: runs_claim
-- The runs picked above, now this worker's: the epoch goes up (fencing whatever the
-- former owner still sends), a takeover counts toward the run's recoveries.
UPDATE runs SET owner = %(me)s, epoch = epoch + 1,
                lease_expires_at = extract(epoch FROM statement_timestamp()) + %(lease)s,
                recoveries = recoveries + (owner IS NOT NULL)::int,
                recovered_at = CASE WHEN owner IS NOT NULL
                                    THEN extract(epoch FROM statement_timestamp())
                                    ELSE recovered_at END
WHERE run_id = ANY(%(ids)s)
RETURNING run_id;

-- name: runs_release
WITH released AS (
    UPDATE runs SET owner = NULL, lease_expires_at = NULL
    WHERE owner = %s AND run_id = ANY(%s) AND status IN ('pending', 'running')
    RETURNING run_id),
freed AS (DELETE FROM run_slots WHERE run_id IN (SELECT run_id FROM released))
SELECT run_id FROM released;

-- name: runs_unclaimable
-- Pending runs nobody holds, older than %s seconds: what they need.
SELECT run_id, capabilities FROM runs
WHERE status = 'pending' AND owner IS NULL
  AND created_at < extract(epoch FROM statement_timestamp()) - %s
ORDER BY created_at LIMIT 100;

-- name: live_capabilities
-- What live workers registered with, and what live agents that joined through the API
-- provide (every worker takes those up within seconds).
SELECT capabilities FROM workers
WHERE heartbeat + lease_s >= extract(epoch FROM statement_timestamp()) AND NOT stopping
UNION ALL
SELECT ((spec::jsonb -> 'capabilities') || to_jsonb('@' || id))::text FROM joined_agents
WHERE expires_at > extract(epoch FROM statement_timestamp())
  AND EXISTS (SELECT 1 FROM workers
              WHERE heartbeat + lease_s >= extract(epoch FROM statement_timestamp())
                AND NOT stopping);

-- name: notify
SELECT pg_notify(%s, %s);

-- name: alert_upsert
-- An ack made by another process (podium alerts ack) of the same firing is kept.
INSERT INTO alerts (key, rule, kind, severity, status, summary, labels, run_id, workflow,
                    fired_at, resolved_at, acked_at, acked_by, level, last_notified_at,
                    updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (key) DO UPDATE SET
    rule = excluded.rule, kind = excluded.kind, severity = excluded.severity,
    status = excluded.status, summary = excluded.summary, labels = excluded.labels,
    run_id = excluded.run_id, workflow = excluded.workflow, fired_at = excluded.fired_at,
    resolved_at = excluded.resolved_at,
    acked_at = COALESCE(excluded.acked_at,
                        CASE WHEN excluded.fired_at = alerts.fired_at THEN alerts.acked_at END),
    acked_by = COALESCE(excluded.acked_by,
                        CASE WHEN excluded.fired_at = alerts.fired_at THEN alerts.acked_by END),
    level = excluded.level, last_notified_at = excluded.last_notified_at,
    updated_at = excluded.updated_at;

-- name: alert_history_add
INSERT INTO alert_history (key, ts, what, detail) VALUES (%s, %s, %s, %s);

-- name: alerts_list
SELECT key, rule, kind, severity, status, summary, labels, run_id, workflow, fired_at,
       resolved_at, acked_at, acked_by, level, last_notified_at
FROM alerts WHERE (%(status)s::text IS NULL OR status = %(status)s)
ORDER BY fired_at DESC LIMIT %(limit)s;

-- name: alert_get
SELECT key, rule, kind, severity, status, summary, labels, run_id, workflow, fired_at,
       resolved_at, acked_at, acked_by, level, last_notified_at
FROM alerts WHERE key = %s;

-- name: alert_ack
UPDATE alerts SET acked_at = %s, acked_by = %s, updated_at = %s
WHERE key = %s AND status = 'firing' AND acked_at IS NULL
RETURNING key;

-- name: alert_history_of
SELECT ts, what, detail FROM alert_history WHERE key = %s ORDER BY id;

-- name: attempt_outcomes
-- Every attempt that ended since %s: successes and failed attempts, oldest first.
SELECT e.ts, e.run_id, r.workflow, e.type,
       e.data::json ->> 'step_id', e.data::json ->> 'agent_id',
       (e.data::json ->> 'attempt')::int, e.data::json -> 'error' ->> 'type',
       e.data::json -> 'error' ->> 'message'
FROM runs r JOIN events e ON e.run_id = r.run_id
WHERE (r.finished_at IS NULL OR r.finished_at >= %(since)s) AND e.ts >= %(since)s
  AND e.type IN ('step_succeeded', 'step_attempt_failed')
ORDER BY e.ts;

-- name: feed_read
-- The alert leader's one statement per round, on the connection that holds its role:
-- save the position everything before was evaluated up to, then read what follows it
-- (events of ended transactions only: see 006_event_feed.sql). The save doubles as the
-- leader's sign of life for `podium workers`.
WITH saved AS (
    INSERT INTO feed_positions (name, tx, run_id, seq, holder, saved)
    VALUES (%(name)s, %(tx)s, %(run_id)s, %(seq)s, %(holder)s,
            extract(epoch FROM statement_timestamp()))
    ON CONFLICT (name) DO UPDATE SET tx = EXCLUDED.tx, run_id = EXCLUDED.run_id,
        seq = EXCLUDED.seq, holder = EXCLUDED.holder, saved = EXCLUDED.saved)
SELECT tx, run_id, seq, type, ts, data FROM events
WHERE (tx, run_id, seq) > (%(tx)s, %(run_id)s, %(seq)s)
  AND tx < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
ORDER BY tx, run_id, seq
LIMIT %(limit)s;

-- name: feed_after
-- Everything committed after a position, in commit order, for a reader that holds no
-- role (`GET /events`, `podium runs --watch`): the leader's read without the save.
SELECT tx, run_id, seq, type, ts, data FROM events
WHERE (tx, run_id, seq) > (%(tx)s, %(run_id)s, %(seq)s)
  AND tx < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
ORDER BY tx, run_id, seq
LIMIT %(limit)s;

-- name: feed_head
-- The last position of the feed now: a reader starting here sees only what follows.
SELECT tx, run_id, seq FROM events
WHERE tx < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
ORDER BY tx DESC, run_id DESC, seq DESC LIMIT 1;

-- name: feed_position
-- Where a reader got to, and how many seconds ago (database time).
SELECT tx, run_id, seq, holder,
       extract(epoch FROM statement_timestamp()) - saved
FROM feed_positions WHERE name = %s;

-- name: schedule_add
INSERT INTO schedules (id, workflow, definition, input, cron, every_s, tz, overlap, catch_up,
                       paused, created_at, next_at, agents_source, queue)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s);

-- name: schedules_list
SELECT id, workflow, definition, input, cron, every_s, tz, overlap, catch_up, paused,
       created_at, next_at, agents_source, queue, last_run_id
FROM schedules ORDER BY id;

-- name: schedule_get
SELECT id, workflow, definition, input, cron, every_s, tz, overlap, catch_up, paused,
       created_at, next_at, agents_source, queue, last_run_id
FROM schedules WHERE id = %s;

-- name: schedule_pause
UPDATE schedules SET paused = %s, next_at = COALESCE(%s, next_at) WHERE id = %s;

-- name: schedule_delete
DELETE FROM schedules WHERE id = %s;

-- name: schedule_slots_delete
DELETE FROM schedule_slots WHERE schedule_id = %s;

-- name: slot_add
-- The slot's key makes it once: a second firer of the same slot inserts nothing.
INSERT INTO schedule_slots (schedule_id, slot, status, run_id, at) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (schedule_id, slot) DO NOTHING;

-- name: schedule_move
-- Never back (a late record of an older slot); the run of a fired slot is kept.
UPDATE schedules SET next_at = CASE WHEN next_at < %s THEN %s ELSE next_at END,
                     last_run_id = COALESCE(%s, last_run_id)
WHERE id = %s;

-- name: slots_of
SELECT slot, status, run_id, at FROM schedule_slots WHERE schedule_id = %s
ORDER BY slot DESC LIMIT %s;

-- name: signal_add
INSERT INTO signals (run_id, name, data, at) VALUES (%s, %s, %s, %s)
ON CONFLICT (run_id, name) DO NOTHING;

-- name: signal_get
SELECT data, at FROM signals WHERE run_id = %s AND name = %s;

-- name: wake_set
INSERT INTO run_wakes (run_id, wake_at) VALUES (%s, %s)
ON CONFLICT (run_id) DO UPDATE SET wake_at = EXCLUDED.wake_at;

-- name: wake_clear
DELETE FROM run_wakes WHERE run_id = %s;

-- name: run_wake
-- A waiting run made pending again, owned by nobody: any worker may claim it (and is
-- told so by a notification, as for a submitted run).
UPDATE runs SET status = 'pending', owner = NULL, lease_expires_at = NULL
WHERE run_id = %s AND status = 'waiting';

-- name: wakes_due
SELECT run_id FROM run_wakes WHERE wake_at <= %s ORDER BY wake_at LIMIT %s;

-- name: registered_add
-- A version is written once (the key settles two registrations at once: the second
-- waits for the first and then does nothing); the caller compares digests.
INSERT INTO registered_workflows (name, version, definition, digest, registered_at)
VALUES (%s, %s, %s, %s, extract(epoch FROM statement_timestamp()))
ON CONFLICT (name, version) DO NOTHING
RETURNING name, version, digest, registered_at;

-- name: registered_get
SELECT name, version, digest, registered_at, definition FROM registered_workflows
WHERE name = %s AND version = %s;

-- name: registered_newest
SELECT name, version, digest, registered_at, definition FROM registered_workflows
WHERE name = %s ORDER BY registered_at DESC, version DESC LIMIT 1;

-- name: registered_list
SELECT name, version, digest, registered_at FROM registered_workflows
ORDER BY name, registered_at DESC, version DESC;

-- name: token_add
INSERT INTO api_tokens (id, name, scope, salt, hash, created_at, expires_at, revoked_at,
                        last_used_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s);

-- name: token_secret
SELECT id, name, scope, created_at, expires_at, revoked_at, last_used_at, salt, hash
FROM api_tokens WHERE id = %s;

-- name: tokens_list
SELECT id, name, scope, created_at, expires_at, revoked_at, last_used_at
FROM api_tokens ORDER BY created_at, id;

-- name: token_revoke
UPDATE api_tokens SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL RETURNING id;

-- name: tokens_usable
SELECT count(*) FROM api_tokens
WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > %(now)s);

-- name: token_touch
-- A later use is never replaced by an earlier one (two servers touching at once).
UPDATE api_tokens SET last_used_at = %(at)s
WHERE id = %(id)s AND (last_used_at IS NULL OR last_used_at < %(at)s);

-- name: agent_join
-- Add or renew a registration (database time): a live row of another token stays
-- untouched (the caller then sees the other token's id read back and refuses). A new
-- one (not the token's own live row renewed) only while the token has fewer than
-- per_token live rows and the database fewer than total: else nothing is written.
-- Counted by the statement that inserts, under agents_join_lock (taken by the
-- transaction's statement before: this statement's snapshot then has every join
-- committed before it), so joins at once through several servers never overshoot.
WITH now AS (SELECT extract(epoch FROM statement_timestamp()) AS t)
INSERT INTO joined_agents AS j (id, spec, token_id, registered_at, expires_at)
SELECT %(id)s, %(spec)s, %(token_id)s, now.t, now.t + %(ttl)s FROM now
WHERE EXISTS (SELECT 1 FROM joined_agents o
              WHERE o.id = %(id)s AND o.token_id = %(token_id)s AND o.expires_at > now.t)
   OR ((SELECT count(*) FROM joined_agents o
        WHERE o.token_id = %(token_id)s AND o.expires_at > now.t) < %(per_token)s
       AND (SELECT count(*) FROM joined_agents o WHERE o.expires_at > now.t) < %(total)s)
ON CONFLICT (id) DO UPDATE SET spec = EXCLUDED.spec, token_id = EXCLUDED.token_id,
    registered_at = CASE WHEN j.token_id = EXCLUDED.token_id
                          AND j.expires_at > EXCLUDED.registered_at
                         THEN j.registered_at ELSE EXCLUDED.registered_at END,
    expires_at = EXCLUDED.expires_at
WHERE j.token_id = EXCLUDED.token_id OR j.expires_at <= EXCLUDED.registered_at;

-- name: agents_join_lock
-- One join at a time per schema (until its transaction ends): a count read beside
-- another join's uncommitted insert would let both in over the limit. Joins are rare
-- (an agent's start); heartbeats and reads never take it.
SELECT pg_advisory_xact_lock(hashtext(%s));

-- name: agent_joined_row
SELECT token_id, registered_at, expires_at FROM joined_agents WHERE id = %s;

-- name: agents_expired_delete
-- Registrations that expired: never read again (a join under their id starts afresh).
DELETE FROM joined_agents WHERE expires_at <= extract(epoch FROM statement_timestamp());

-- name: agents_live_count
-- The token's live registrations, and the database's (why a join was refused).
SELECT count(*) FILTER (WHERE token_id = %s), count(*) FROM joined_agents
WHERE expires_at > extract(epoch FROM statement_timestamp());

-- name: agent_heartbeat
UPDATE joined_agents SET expires_at = extract(epoch FROM statement_timestamp()) + %(ttl)s
WHERE id = %(id)s AND token_id = %(token_id)s
  AND expires_at > extract(epoch FROM statement_timestamp())
RETURNING expires_at;

-- name: agent_leave
DELETE FROM joined_agents WHERE id = %(id)s
  AND (%(token_id)s::text IS NULL OR token_id = %(token_id)s);

-- name: agents_joined
SELECT id, spec, registered_at, expires_at FROM joined_agents
WHERE expires_at > extract(epoch FROM statement_timestamp()) ORDER BY id;


-- name: prune_roots
-- The next top-level runs a prune may delete, oldest end first (the index on finished_at,
-- read in order: a batch looks at the runs before it and its own, not at every run):
-- ended before %(before)s, of %(statuses)s, of %(workflow)s (NULL: any), not among
-- %(skip)s (found held once locked), free (no owner, or its lease expired, as run_claim
-- counts it: a process that claimed it to resume or roll it back holds a live lease),
-- no child run (RUN.step..., between 'RUN.' and 'RUN/' byte-wise) held or live, and no
-- event of the tree that a feed reader's fresh saved position (the alert leader's,
-- saved less than %(stale)s seconds ago: a new leader carries on from it) has not read.
WITH fresh AS MATERIALIZED (
    SELECT tx, run_id, seq FROM feed_positions
    WHERE saved > extract(epoch FROM statement_timestamp()) - %(stale)s)
SELECT r.run_id FROM runs r
WHERE r.finished_at < %(before)s
  AND strpos(r.run_id, '.') = 0
  AND r.run_id <> ALL(%(skip)s::text[])
  AND (r.owner IS NULL OR r.lease_expires_at IS NULL
       OR r.lease_expires_at < extract(epoch FROM statement_timestamp()))
  AND r.status = ANY(%(statuses)s::text[])
  AND (%(workflow)s::text IS NULL OR r.workflow = %(workflow)s::text)
  AND NOT EXISTS (SELECT 1 FROM runs c
                  WHERE c.run_id > r.run_id || '.' AND c.run_id < r.run_id || '/'
                    AND ((c.owner IS NOT NULL
                          AND c.lease_expires_at >= extract(epoch FROM statement_timestamp()))
                         OR c.status <> ALL(%(terminal)s::text[])))
  AND NOT EXISTS (SELECT 1 FROM fresh f
                  WHERE EXISTS (SELECT 1 FROM events e WHERE e.run_id = r.run_id
                                  AND (e.tx, e.run_id, e.seq) > (f.tx, f.run_id, f.seq))
                     OR EXISTS (SELECT 1 FROM events e
                                WHERE e.run_id > r.run_id || '.' AND e.run_id < r.run_id || '/'
                                  AND (e.tx, e.run_id, e.seq) > (f.tx, f.run_id, f.seq)))
ORDER BY r.finished_at
LIMIT %(limit)s;

-- name: prune_children
-- How many child runs the top-level runs %(roots)s have: with prune_roots' runs (all of
-- them, LIMIT NULL), what a dry run counts. No lock: MVCC keeps writers going.
SELECT count(*) FROM unnest(%(roots)s::text[]) AS j(id)
JOIN runs c ON c.run_id > j.id || '.' AND c.run_id < j.id || '/';

-- name: prune_tree
-- The runs %(roots)s and all their child runs, each with its top-level run, status and
-- whether a process holds it, locked (a claim or a resume of any of them waits for the prune's commit, and
-- then finds no row); read again after the lock, so a run claimed meanwhile shows it.
SELECT j.id, c.run_id, c.status,
       c.owner IS NOT NULL AND c.lease_expires_at >= extract(epoch FROM statement_timestamp())
FROM unnest(%(roots)s::text[]) AS j(id)
JOIN runs c ON c.run_id = j.id COLLATE "C"
    OR (c.run_id > j.id || '.' AND c.run_id < j.id || '/')
FOR UPDATE OF c;

-- name: prune_delete
-- Everything of the runs %(ids)s, in one statement (one transaction with the lock).
WITH s AS (DELETE FROM steps WHERE run_id = ANY(%(ids)s::text[])),
     e AS (DELETE FROM events WHERE run_id = ANY(%(ids)s::text[])),
     g AS (DELETE FROM signals WHERE run_id = ANY(%(ids)s::text[])),
     w AS (DELETE FROM run_wakes WHERE run_id = ANY(%(ids)s::text[])),
     l AS (DELETE FROM run_slots WHERE run_id = ANY(%(ids)s::text[]))
DELETE FROM runs WHERE run_id = ANY(%(ids)s::text[])
  AND (owner IS NULL OR lease_expires_at IS NULL
       OR lease_expires_at < extract(epoch FROM statement_timestamp()))
  AND status = ANY(%(terminal)s::text[]);
