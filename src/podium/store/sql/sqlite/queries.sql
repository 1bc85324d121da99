-- Every statement the SQLite store runs, by name (store/queries.py reads this file).
-- Parameters are positional (?). {run_columns} and {step_columns} are the store's
-- fixed column lists (with defaults for columns an older, unmigrated file lacks):
-- never user data. Lists of ids are passed as one JSON array (json_each), so no
-- statement is built per call.

-- name: run_insert
-- A taken id inserts nothing (no row changed): that run is left out of its batch.
INSERT INTO runs (run_id, workflow, version, definition, input, status, output, error,
                  created_at, started_at, finished_at, owner, lease_expires_at,
                  cancel_requested, agents_source, phase, queue, capabilities)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)
ON CONFLICT (run_id) DO NOTHING;

-- name: run_update
-- A run's row as its events left it; a run that ended forgets its cancel request.
UPDATE runs SET status = ?, output = ?, error = ?, started_at = ?, finished_at = ?, phase = ?,
                cancel_requested = CASE WHEN ? THEN 0 ELSE cancel_requested END
WHERE run_id = ?;

-- name: event_insert
INSERT INTO events (run_id, seq, type, ts, data) VALUES (?, ?, ?, ?, ?);

-- name: step_upsert
-- Every column of a step's row. An output already stored is kept when the batch has
-- none for it (only a success carries its output; a compensation must not erase it).
INSERT INTO steps (run_id, step_id, status, attempts, agent_id, output, error, started_at,
                   finished_at, next_retry_at, optional, completed_seq, compensation_status,
                   compensation_attempts, compensation_error)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, step_id) DO UPDATE SET
    status = excluded.status, attempts = excluded.attempts, agent_id = excluded.agent_id,
    output = COALESCE(excluded.output, steps.output), error = excluded.error,
    started_at = excluded.started_at, finished_at = excluded.finished_at,
    next_retry_at = excluded.next_retry_at, optional = excluded.optional,
    completed_seq = excluded.completed_seq, compensation_status = excluded.compensation_status,
    compensation_attempts = excluded.compensation_attempts,
    compensation_error = excluded.compensation_error;

-- name: step_insert_running
-- The hot transitions of a run this store inserted, each with only the columns it
-- sets (binding parameters is most of a row write's cost); anything else upserts.
INSERT INTO steps (run_id, step_id, status, attempts, agent_id, started_at, optional)
VALUES (?, ?, 'running', ?, ?, ?, ?);

-- name: step_insert_succeeded
INSERT INTO steps (run_id, step_id, status, attempts, agent_id, output, started_at, finished_at,
                   optional, completed_seq)
VALUES (?, ?, 'succeeded', ?, ?, ?, ?, ?, ?, ?);

-- name: step_update_succeeded
UPDATE steps SET status = 'succeeded', output = ?, error = NULL, finished_at = ?,
                 completed_seq = ?
WHERE run_id = ? AND step_id = ?;

-- name: step_insert_pending
-- A step made ready but not started in that flush (a fan-out wider than a burst).
INSERT INTO steps (run_id, step_id, status, optional) VALUES (?, ?, 'pending', ?);

-- name: step_update_started
-- Its later start, or its start and success in one flush, over that 'pending' row:
-- step_upsert's update with the columns a hot transition leaves empty as constants.
UPDATE steps SET status = ?, attempts = ?, agent_id = ?, output = COALESCE(?, output),
                 error = NULL, started_at = ?, finished_at = ?, next_retry_at = NULL,
                 optional = ?, completed_seq = ?, compensation_status = NULL,
                 compensation_attempts = 0, compensation_error = NULL
WHERE run_id = ? AND step_id = ?;

-- name: last_seq
SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = ?;

-- name: event_exists
SELECT 1 FROM events WHERE run_id = ? AND seq = ?;

-- name: workflow_save
INSERT INTO workflows (name, version, definition, created_at) VALUES (?, ?, ?, ?)
ON CONFLICT (name, version) DO UPDATE SET definition = excluded.definition;

-- name: run_exists
SELECT 1 FROM runs WHERE run_id = ?;

-- name: run_ids_with_prefix
-- A prefix of a run id: the ids in [prefix, prefix + U+FFFF), at most two (ambiguous);
-- child runs (PARENT.STEP) only for a prefix that reaches into one.
SELECT run_id FROM runs WHERE run_id >= ? AND run_id < ?
  AND (instr(run_id, '.') = 0 OR instr(?, '.') > 0) LIMIT 2;

-- name: run_get
SELECT {run_columns} FROM runs WHERE run_id = ?;

-- name: steps_of_run
SELECT {step_columns} FROM steps WHERE run_id = ?;

-- name: runs_list
-- Newest first; a NULL filter matches everything.
SELECT {run_columns} FROM runs
WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR workflow = ?2)
  AND (?4 IS NULL OR created_at < ?4 OR (created_at = ?4 AND run_id < ?5))
ORDER BY created_at DESC, run_id DESC LIMIT ?3;

-- name: events_of_run
SELECT type, ts, data FROM events WHERE run_id = ? ORDER BY seq;

-- name: trace_context
-- The first run-level event that recorded a trace context (few per run: one per
-- execution), read along the primary key; no event decoded but the one.
SELECT data FROM events
WHERE run_id = ? AND type IN ('run_submitted', 'run_started', 'run_traced')
  AND instr(data, '"traceparent"') > 0
ORDER BY seq LIMIT 1;

-- name: cancel_request
UPDATE runs SET cancel_requested = 1
WHERE run_id = ? AND status NOT IN ('succeeded', 'failed', 'cancelled', 'rolled_back',
                                    'rollback_failed');

-- name: cancel_requested_among
SELECT run_id FROM runs
WHERE cancel_requested = 1 AND run_id IN (SELECT value FROM json_each(?));

-- name: run_claim
-- A compare-and-swap on the epoch the run was read at, of a free run: no owner, the
-- claimer itself, an owner known dead (?5: its pid is gone), or an expired lease.
-- cancel_requested is kept: a run cancelled while its owner was dead ends cancelled.
UPDATE runs SET owner = ?1, lease_expires_at = ?2 + ?3, epoch = epoch + 1,
                recoveries = ?4,
                recovered_at = CASE WHEN ?4 > recoveries THEN ?2 ELSE recovered_at END
WHERE run_id = ?6 AND epoch = ?7
  AND (owner IS NULL OR owner = ?1 OR ?5 OR lease_expires_at IS NULL
       OR lease_expires_at < ?2)
RETURNING lease_expires_at, recovered_at, cancel_requested;

-- name: run_release
UPDATE runs SET owner = NULL WHERE run_id = ? AND owner = ?;

-- name: run_release_forced
UPDATE runs SET owner = NULL WHERE run_id = ?;

-- name: leases_renew
-- The runs renewed come back: those asked for and missing were lost.
UPDATE runs SET lease_expires_at = ?
WHERE owner = ? AND run_id IN (SELECT value FROM json_each(?))
RETURNING run_id;

-- name: runs_fence
-- Which of the batch's runs (JSON [[run_id, epoch], ...]) are still the writer's at
-- those epochs; read inside the batch's write transaction, so nobody claims between.
SELECT r.run_id FROM runs r
JOIN json_each(?1) j ON r.run_id = json_extract(j.value, '$[0]')
WHERE r.owner = ?2 AND r.epoch = json_extract(j.value, '$[1]');

-- name: alert_upsert
-- An ack made by another process (podium alerts ack) of the same firing is kept.
INSERT INTO alerts (key, rule, kind, severity, status, summary, labels, run_id, workflow,
                    fired_at, resolved_at, acked_at, acked_by, level, last_notified_at,
                    updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
INSERT INTO alert_history (key, ts, what, detail) VALUES (?, ?, ?, ?);

-- name: alerts_list
SELECT key, rule, kind, severity, status, summary, labels, run_id, workflow, fired_at,
       resolved_at, acked_at, acked_by, level, last_notified_at
FROM alerts WHERE (?1 IS NULL OR status = ?1) ORDER BY fired_at DESC LIMIT ?2;

-- name: alert_get
SELECT key, rule, kind, severity, status, summary, labels, run_id, workflow, fired_at,
       resolved_at, acked_at, acked_by, level, last_notified_at
FROM alerts WHERE key = ?;

-- name: alert_ack
UPDATE alerts SET acked_at = ?, acked_by = ?, updated_at = ?
WHERE key = ? AND status = 'firing' AND acked_at IS NULL;

-- name: alert_history_of
SELECT ts, what, detail FROM alert_history WHERE key = ? ORDER BY id;

-- name: attempt_outcomes
-- Every attempt that ended since ?: successes and failed attempts, oldest first.
SELECT e.ts, e.run_id, r.workflow, e.type,
       json_extract(e.data, '$.step_id'), json_extract(e.data, '$.agent_id'),
       json_extract(e.data, '$.attempt'), json_extract(e.data, '$.error.type'),
       json_extract(e.data, '$.error.message')
FROM runs r JOIN events e ON e.run_id = r.run_id
WHERE (r.finished_at IS NULL OR r.finished_at >= ?1) AND e.ts >= ?1
  AND e.type IN ('step_succeeded', 'step_attempt_failed')
ORDER BY e.ts;

-- name: schedule_add
INSERT INTO schedules (id, workflow, definition, input, cron, every_s, tz, overlap, catch_up,
                       paused, created_at, next_at, agents_source, queue)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: schedules_list
SELECT id, workflow, definition, input, cron, every_s, tz, overlap, catch_up, paused,
       created_at, next_at, agents_source, queue, last_run_id
FROM schedules ORDER BY id;

-- name: schedule_get
SELECT id, workflow, definition, input, cron, every_s, tz, overlap, catch_up, paused,
       created_at, next_at, agents_source, queue, last_run_id
FROM schedules WHERE id = ?;

-- name: schedule_pause
UPDATE schedules SET paused = ?, next_at = COALESCE(?, next_at) WHERE id = ?;

-- name: schedule_delete
DELETE FROM schedules WHERE id = ?;

-- name: schedule_slots_delete
DELETE FROM schedule_slots WHERE schedule_id = ?;

-- name: slot_add
-- The slot's key makes it once: a second firer of the same slot inserts nothing.
INSERT INTO schedule_slots (schedule_id, slot, status, run_id, at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (schedule_id, slot) DO NOTHING;

-- name: schedule_move
-- Never back (a late record of an older slot); the run of a fired slot is kept.
UPDATE schedules SET next_at = CASE WHEN next_at < ? THEN ? ELSE next_at END,
                     last_run_id = COALESCE(?, last_run_id)
WHERE id = ?;

-- name: slots_of
SELECT slot, status, run_id, at FROM schedule_slots WHERE schedule_id = ?
ORDER BY slot DESC LIMIT ?;

-- name: signal_add
INSERT INTO signals (run_id, name, data, at) VALUES (?, ?, ?, ?)
ON CONFLICT (run_id, name) DO NOTHING;

-- name: signal_get
SELECT data, at FROM signals WHERE run_id = ? AND name = ?;

-- name: wake_set
INSERT INTO run_wakes (run_id, wake_at) VALUES (?, ?)
ON CONFLICT (run_id) DO UPDATE SET wake_at = excluded.wake_at;

-- name: wake_clear
DELETE FROM run_wakes WHERE run_id = ?;

-- name: run_wake
-- A waiting run made pending again, owned by nobody: any process may continue it.
UPDATE runs SET status = 'pending', owner = NULL, lease_expires_at = NULL
WHERE run_id = ? AND status = 'waiting';

-- name: wakes_due
SELECT run_id FROM run_wakes WHERE wake_at <= ? ORDER BY wake_at LIMIT ?;

-- name: registered_add
-- A version is written once: a second registration changes nothing, and the caller
-- compares digests to tell "already registered" from "other content".
INSERT INTO registered_workflows (name, version, definition, digest, registered_at)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (name, version) DO NOTHING;

-- name: registered_get
SELECT name, version, digest, registered_at, definition FROM registered_workflows
WHERE name = ? AND version = ?;

-- name: registered_newest
SELECT name, version, digest, registered_at, definition FROM registered_workflows
WHERE name = ? ORDER BY registered_at DESC, version DESC LIMIT 1;

-- name: registered_list
SELECT name, version, digest, registered_at FROM registered_workflows
ORDER BY name, registered_at DESC, version DESC;

-- name: token_add
INSERT INTO api_tokens (id, name, scope, salt, hash, created_at, expires_at, revoked_at,
                        last_used_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: token_secret
SELECT id, name, scope, created_at, expires_at, revoked_at, last_used_at, salt, hash
FROM api_tokens WHERE id = ?;

-- name: tokens_list
SELECT id, name, scope, created_at, expires_at, revoked_at, last_used_at
FROM api_tokens ORDER BY created_at, id;

-- name: token_revoke
UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL;

-- name: tokens_usable
SELECT count(*) FROM api_tokens
WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?1);

-- name: token_touch
-- A later use is never replaced by an earlier one (two servers touching at once).
UPDATE api_tokens SET last_used_at = ?1
WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?1);

-- name: feed_insert
-- One row per committed batch: which events it wrote (schema 11).
INSERT INTO feed (runs) VALUES (?);

-- name: feed_batches
-- The batches from position ? on, oldest first (the first may be partly read).
SELECT pos, runs FROM feed WHERE pos >= ? ORDER BY pos LIMIT ?;

-- name: feed_events
-- The events of one run that one batch wrote.
SELECT seq, type, ts, data FROM events WHERE run_id = ? AND seq BETWEEN ? AND ? ORDER BY seq;

-- name: feed_last
SELECT pos, runs FROM feed ORDER BY pos DESC LIMIT 1;

-- name: agent_join
-- Add or renew a registration: a live row of another token stays untouched (the caller
-- then sees the other token's id read back and refuses). A new one (not the token's own
-- live row renewed) only while the token has fewer than ?6 live rows and the database
-- fewer than ?7: else nothing is written (the caller reads back and refuses). Counted
-- by the statement that inserts, in the caller's BEGIN IMMEDIATE transaction: joins
-- from other processes wait for it, so none overshoots.
INSERT INTO joined_agents (id, spec, token_id, registered_at, expires_at)
SELECT ?1, ?2, ?3, ?4, ?4 + ?5
WHERE EXISTS (SELECT 1 FROM joined_agents WHERE id = ?1 AND token_id = ?3 AND expires_at > ?4)
   OR ((SELECT count(*) FROM joined_agents WHERE token_id = ?3 AND expires_at > ?4) < ?6
       AND (SELECT count(*) FROM joined_agents WHERE expires_at > ?4) < ?7)
ON CONFLICT (id) DO UPDATE SET spec = excluded.spec, token_id = excluded.token_id,
    registered_at = CASE WHEN joined_agents.token_id = excluded.token_id
                          AND joined_agents.expires_at > ?4
                         THEN joined_agents.registered_at ELSE excluded.registered_at END,
    expires_at = excluded.expires_at
WHERE joined_agents.token_id = excluded.token_id OR joined_agents.expires_at <= ?4;

-- name: agent_joined_row
SELECT token_id, registered_at, expires_at FROM joined_agents WHERE id = ?;

-- name: agents_expired_delete
-- Registrations that expired: never read again (a join under their id starts afresh).
DELETE FROM joined_agents WHERE expires_at <= ?;

-- name: agents_live_count
-- The token's live registrations, and the database's (why a join was refused).
SELECT coalesce(sum(token_id = ?1), 0), count(*) FROM joined_agents WHERE expires_at > ?2;

-- name: agent_heartbeat
UPDATE joined_agents SET expires_at = ?3 + ?4
WHERE id = ?1 AND token_id = ?2 AND expires_at > ?3;

-- name: agent_leave
DELETE FROM joined_agents WHERE id = ?1 AND (?2 IS NULL OR token_id = ?2);

-- name: agents_joined
SELECT id, spec, registered_at, expires_at FROM joined_agents WHERE expires_at > ?
ORDER BY id;


-- name: prune_roots
-- The next top-level runs a prune may delete, oldest end first (the index on finished_at,
-- read in order: a batch looks at the runs before it and its own, not at every run):
-- ended before ?1, of the statuses ?2 (a JSON array), of workflow ?3 (NULL: any), free
-- at ?4 (no owner, or its lease expired, as run_claim counts it: a process that claimed
-- it to resume or roll it back holds a live lease), and no child run (RUN.step...,
-- between 'RUN.' and 'RUN/' byte-wise) that is held or not in the terminal statuses ?5.
SELECT r.run_id FROM runs r
WHERE r.finished_at < ?1
  AND instr(r.run_id, '.') = 0
  AND (r.owner IS NULL OR r.lease_expires_at IS NULL OR r.lease_expires_at < ?4)
  AND r.status IN (SELECT value FROM json_each(?2))
  AND (?3 IS NULL OR r.workflow = ?3)
  AND NOT EXISTS (SELECT 1 FROM runs c
                  WHERE c.run_id > r.run_id || '.' AND c.run_id < r.run_id || '/'
                    AND ((c.owner IS NOT NULL AND c.lease_expires_at >= ?4)
                         OR c.status NOT IN (SELECT value FROM json_each(?5))))
ORDER BY r.finished_at
LIMIT ?6;

-- name: prune_children
-- How many child runs the top-level runs ?1 (a JSON array) have: with prune_roots' runs
-- (all of them, LIMIT -1), what a dry run counts.
SELECT count(*) FROM json_each(?1) j
JOIN runs c ON c.run_id > j.value || '.' AND c.run_id < j.value || '/';

-- name: prune_tree
-- The runs ?1 (a JSON array of top-level run ids) and all their child runs.
SELECT value FROM json_each(?1)
UNION ALL
SELECT c.run_id FROM json_each(?1) j
JOIN runs c ON c.run_id > j.value || '.' AND c.run_id < j.value || '/';

-- name: prune_steps
DELETE FROM steps WHERE run_id IN (SELECT value FROM json_each(?));

-- name: prune_events
DELETE FROM events WHERE run_id IN (SELECT value FROM json_each(?));

-- name: prune_signals
DELETE FROM signals WHERE run_id IN (SELECT value FROM json_each(?));

-- name: prune_wakes
DELETE FROM run_wakes WHERE run_id IN (SELECT value FROM json_each(?));

-- name: prune_runs
-- (Checked again under the write lock the candidates were read under: never a live run.)
DELETE FROM runs WHERE run_id IN (SELECT value FROM json_each(?1))
  AND (owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at < ?3)
  AND status IN (SELECT value FROM json_each(?2));

-- name: prune_feed_bounds
SELECT min(pos), max(pos) FROM feed;

-- name: prune_feed
-- Feed rows in [?1, ?2) that name only runs that are gone. Never the last row: a
-- new batch's pos is the highest one plus one, and a reader that read up to a deleted
-- last row would skip a new batch given that number again.
DELETE FROM feed WHERE pos >= ?1 AND pos < ?2 AND pos < (SELECT max(pos) FROM feed)
  AND NOT EXISTS (SELECT 1 FROM json_each(feed.runs) j
                  JOIN runs r ON r.run_id = json_extract(j.value, '$[0]'));
