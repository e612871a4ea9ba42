-- Named queries of the SQLite store. Each block starts with `-- name: NAME`;
-- postgres.sql holds the same names.

-- name: schema_meta
-- What a running process checks: has the schema moved past it?
SELECT key, value FROM mainspring_meta WHERE key IN ('version', 'compatible');

-- name: get_meta
SELECT value FROM mainspring_meta WHERE key = :key;

-- name: set_meta
INSERT INTO mainspring_meta (key, value) VALUES (:key, :value)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- name: insert_run
INSERT INTO mainspring_runs (run_id, workflow_id, workflow_type, task_queue, status, input,
    created_at, next_event_id, wft_ready_at)
VALUES (:run_id, :workflow_id, :workflow_type, :task_queue, 'RUNNING', :input,
    :now, 2, :now);

-- name: run_by_id
SELECT run_id, workflow_id, workflow_type, task_queue, status, input, result, failure,
    created_at, closed_at, next_event_id, wft_ready_at, wft_lease_owner, wft_lease_until,
    wft_fence, wft_attempt, wft_failure, cancel_requested, wft_sticky
FROM mainspring_runs WHERE run_id = :run_id;

-- name: run_by_id_for_update
SELECT run_id, workflow_id, workflow_type, task_queue, status, '' AS input, result, failure,
    created_at, closed_at, next_event_id, wft_ready_at, wft_lease_owner, wft_lease_until,
    wft_fence, wft_attempt, wft_failure, cancel_requested, wft_sticky
FROM mainspring_runs WHERE run_id = :run_id;

-- name: open_run_by_workflow_id
SELECT run_id, workflow_id, workflow_type, task_queue, status, input, result, failure,
    created_at, closed_at, next_event_id, wft_ready_at, wft_lease_owner, wft_lease_until,
    wft_fence, wft_attempt, wft_failure, cancel_requested, wft_sticky
FROM mainspring_runs WHERE workflow_id = :workflow_id AND status = 'RUNNING';

-- name: latest_run_by_workflow_id
SELECT run_id, workflow_id, workflow_type, task_queue, status, input, result, failure,
    created_at, closed_at, next_event_id, wft_ready_at, wft_lease_owner, wft_lease_until,
    wft_fence, wft_attempt, wft_failure, cancel_requested, wft_sticky
FROM mainspring_runs WHERE workflow_id = :workflow_id
ORDER BY status = 'RUNNING' DESC, created_at DESC LIMIT 1;

-- name: list_runs
-- Listing has a query per filter, each with the index it needs spelled out in its WHERE
-- clause (so that even a generic plan can use it). Open runs are found by the partial
-- index of open runs; closed runs by status or type by indexes of closed runs only, which
-- a step of an open run never has to update. A listing reads no run's input or result
-- (they may be megabytes each): describe reads them. (SQLite's planner, without statistics,
-- would rather read every run in created_at order than use a partial index: the
-- filtered queries name theirs with INDEXED BY.)
SELECT run_id, workflow_id, workflow_type, task_queue, status, '' AS input, NULL AS result, failure,
    created_at, closed_at, next_event_id, wft_ready_at, wft_lease_owner, wft_lease_until,
    wft_fence, wft_attempt, wft_failure, cancel_requested, wft_sticky
FROM mainspring_runs
ORDER BY created_at DESC LIMIT :limit;

-- name: list_open_runs
SELECT run_id, workflow_id, workflow_type, task_queue, status, '' AS input, NULL AS result, failure,
    created_at, closed_at, next_event_id, wft_ready_at, wft_lease_owner, wft_lease_until,
    wft_fence, wft_attempt, wft_failure, cancel_requested, wft_sticky
FROM mainspring_runs INDEXED BY mainspring_runs_open_by_time
WHERE status = 'RUNNING'
  AND (:workflow_type IS NULL OR workflow_type = :workflow_type)
ORDER BY created_at DESC LIMIT :limit;

-- name: list_closed_runs
SELECT run_id, workflow_id, workflow_type, task_queue, status, '' AS input, NULL AS result, failure,
    created_at, closed_at, next_event_id, wft_ready_at, wft_lease_owner, wft_lease_until,
    wft_fence, wft_attempt, wft_failure, cancel_requested, wft_sticky
FROM mainspring_runs INDEXED BY mainspring_runs_closed_status
WHERE status <> 'RUNNING' AND status = :status
  AND (:workflow_type IS NULL OR workflow_type = :workflow_type)
ORDER BY created_at DESC LIMIT :limit;

-- name: list_runs_of_type
SELECT * FROM (SELECT run_id, workflow_id, workflow_type, task_queue, status, '' AS input, NULL AS result, failure,
        created_at, closed_at, next_event_id, wft_ready_at, wft_lease_owner, wft_lease_until,
        wft_fence, wft_attempt, wft_failure, cancel_requested, wft_sticky
    FROM mainspring_runs INDEXED BY mainspring_runs_open_by_time
    WHERE status = 'RUNNING' AND workflow_type = :workflow_type
    ORDER BY created_at DESC LIMIT :limit) AS open_runs
UNION ALL
SELECT * FROM (SELECT run_id, workflow_id, workflow_type, task_queue, status, '' AS input, NULL AS result, failure,
        created_at, closed_at, next_event_id, wft_ready_at, wft_lease_owner, wft_lease_until,
        wft_fence, wft_attempt, wft_failure, cancel_requested, wft_sticky
    FROM mainspring_runs INDEXED BY mainspring_runs_closed_type
    WHERE status <> 'RUNNING' AND workflow_type = :workflow_type
    ORDER BY created_at DESC LIMIT :limit) AS closed_runs
ORDER BY created_at DESC LIMIT :limit;

-- name: prunable_runs
-- Retention: the next runs, oldest first, that closed before the cutoff (a run closes
-- after it was created, so the created_at index finds them).
SELECT run_id, created_at FROM mainspring_runs
WHERE created_at < :cutoff AND closed_at < :cutoff
  AND (created_at, run_id) > (:after_at, :after_id)
ORDER BY created_at, run_id LIMIT :limit;

-- name: count_prunable
SELECT count(*) FROM mainspring_runs WHERE created_at < :cutoff AND closed_at < :cutoff;

-- name: prune_events
-- The runs prunable_runs found, by their range of keys (PostgreSQL: by their ids).
DELETE FROM mainspring_events WHERE run_id IN (
    SELECT run_id FROM mainspring_runs
    WHERE (created_at, run_id) > (:after_at, :after_id)
      AND (created_at, run_id) <= (:last_at, :last_id) AND closed_at < :cutoff);

-- name: prune_activities
DELETE FROM mainspring_activities WHERE run_id IN (
    SELECT run_id FROM mainspring_runs
    WHERE (created_at, run_id) > (:after_at, :after_id)
      AND (created_at, run_id) <= (:last_at, :last_id) AND closed_at < :cutoff);

-- name: prune_timers
DELETE FROM mainspring_timers WHERE run_id IN (
    SELECT run_id FROM mainspring_runs
    WHERE (created_at, run_id) > (:after_at, :after_id)
      AND (created_at, run_id) <= (:last_at, :last_id) AND closed_at < :cutoff);

-- name: prune_queries
DELETE FROM mainspring_queries WHERE run_id IN (
    SELECT run_id FROM mainspring_runs
    WHERE (created_at, run_id) > (:after_at, :after_id)
      AND (created_at, run_id) <= (:last_at, :last_id) AND closed_at < :cutoff);

-- name: prune_runs
DELETE FROM mainspring_runs
WHERE (created_at, run_id) > (:after_at, :after_id)
  AND (created_at, run_id) <= (:last_at, :last_id) AND closed_at < :cutoff;

-- name: insert_event
INSERT INTO mainspring_events (run_id, event_id, event_type, time, data)
VALUES (:run_id, :event_id, :event_type, :time, :data);

-- name: events_after
SELECT event_id, event_type, time, data FROM mainspring_events
WHERE run_id = :run_id AND event_id > :after ORDER BY event_id;

-- name: wft_candidates
SELECT run_id FROM mainspring_runs
WHERE task_queue = :task_queue AND wft_ready_at IS NOT NULL AND wft_ready_at <= :now
  AND (wft_lease_owner IS NULL OR wft_lease_until < :now) AND status = 'RUNNING'
  AND (wft_sticky IS NULL OR wft_sticky = :owner OR wft_ready_at <= :sticky_cutoff)
ORDER BY wft_ready_at LIMIT :limit;

-- name: lease_wft
UPDATE mainspring_runs
SET wft_lease_owner = :owner, wft_lease_until = :until, wft_fence = wft_fence + 1
WHERE run_id = :run_id
RETURNING wft_fence;

-- name: set_run_progress
UPDATE mainspring_runs
SET next_event_id = :next_event_id, wft_ready_at = :wft_ready_at, wft_lease_owner = :owner,
    wft_lease_until = :until, wft_attempt = :wft_attempt, wft_failure = :wft_failure,
    cancel_requested = :cancel_requested,
    wft_sticky = COALESCE(:sticky, wft_sticky)
WHERE run_id = :run_id;

-- name: close_run
UPDATE mainspring_runs
SET status = :status, result = :result, failure = :failure, closed_at = :now,
    next_event_id = :next_event_id, wft_ready_at = NULL, wft_lease_owner = NULL,
    wft_lease_until = NULL, wft_failure = NULL
WHERE run_id = :run_id;

-- name: release_sticky
-- A worker going away gives its runs' next workflow tasks to any worker.
UPDATE mainspring_runs SET wft_sticky = NULL
WHERE status = 'RUNNING' AND task_queue = :task_queue AND wft_sticky = :owner;

-- name: reset_wft_backoff
UPDATE mainspring_runs SET wft_ready_at = :now, wft_sticky = NULL
WHERE task_queue = :task_queue AND status = 'RUNNING' AND wft_ready_at > :now
  AND wft_attempt > 1;

-- name: insert_activity
INSERT INTO mainspring_activities (run_id, seq, workflow_id, workflow_type, activity_type,
    task_queue, input, options, attempt, scheduled_at, ready_at, deadline, lease_owner,
    lease_until, attempt_deadline, fence, sticky)
VALUES (:run_id, :seq, :workflow_id, :workflow_type, :activity_type, :task_queue, :input,
    :options, 1, :now, :now, :deadline, :owner, :until, :attempt_deadline, :fence, :sticky);

-- name: activity_candidates
-- Oldest first: this worker's own fresh attempts, anyone's that have waited longer than
-- the sticky wait (none starves), and those nobody scheduled for itself.
SELECT run_id, seq, options, deadline FROM mainspring_activities
WHERE task_queue = :task_queue AND lease_owner IS NULL AND ready_at <= :now
  AND (ready_at <= :fresh_after OR sticky = :owner OR sticky IS NULL)
ORDER BY ready_at LIMIT :limit;

-- name: activity_candidates_others
-- Then, with slots to spare, other workers' fresh attempts.
SELECT run_id, seq, options, deadline FROM mainspring_activities
WHERE task_queue = :task_queue AND lease_owner IS NULL AND ready_at <= :now
  AND ready_at > :fresh_after AND sticky <> :owner
ORDER BY ready_at LIMIT :limit;

-- name: lease_activity
UPDATE mainspring_activities
SET lease_owner = :owner, lease_until = :until, attempt_deadline = :attempt_deadline,
    fence = fence + 1
WHERE run_id = :run_id AND seq = :seq
RETURNING run_id, seq, workflow_id, workflow_type, activity_type, task_queue, input, options,
    attempt, scheduled_at, deadline, fence, heartbeat_details, lease_until;

-- name: activity_by_key
SELECT run_id, seq, workflow_id, workflow_type, activity_type, task_queue, input, options,
    attempt, scheduled_at, deadline, fence, heartbeat_details, lease_owner, lease_until,
    attempt_deadline, cancel_requested, last_failure, ready_at
FROM mainspring_activities WHERE run_id = :run_id AND seq = :seq;

-- name: register_worker
-- (Also when a mark finds no row: a row deleted while its worker was cut off comes back;
-- a stopped worker's row stays stopped.)
INSERT INTO mainspring_workers (instance, identity, task_queue, workflows, activities,
    started_at, seen_at)
VALUES (:instance, :identity, :task_queue, :workflows, :activities, :now, :now)
ON CONFLICT (instance) DO NOTHING;

-- name: forget_workers
-- Workers stopped or lost long ago (the table stays small).
DELETE FROM mainspring_workers WHERE seen_at < :before;

-- name: worker_seen
UPDATE mainspring_workers SET seen_at = :now
WHERE instance = :instance AND stopped_at IS NULL;

-- name: worker_stopped
UPDATE mainspring_workers SET seen_at = :now, stopped_at = :now
WHERE instance = :instance;

-- name: list_workers
SELECT instance, identity, task_queue, workflows, activities, started_at, seen_at,
    stopped_at
FROM mainspring_workers WHERE seen_at >= :since ORDER BY task_queue, started_at DESC;

-- name: live_workers
-- Workers that serve and were seen lately (for describe: who serves a queued activity).
SELECT instance, identity, task_queue, workflows, activities, started_at, seen_at,
    stopped_at
FROM mainspring_workers WHERE stopped_at IS NULL AND seen_at >= :since;

-- name: run_activities
-- A run's unfinished activities, for describe (the primary key's order).
SELECT seq, activity_type, task_queue, options, attempt, scheduled_at, ready_at, deadline,
    lease_owner, lease_until, heartbeat_details, last_failure, cancel_requested
FROM mainspring_activities WHERE run_id = :run_id ORDER BY seq LIMIT :limit;

-- name: count_run_activities
SELECT count(*) FROM mainspring_activities WHERE run_id = :run_id;

-- name: retry_activity
UPDATE mainspring_activities
SET attempt = attempt + 1, ready_at = :ready_at, lease_owner = NULL, lease_until = NULL,
    attempt_deadline = NULL, last_failure = :failure
WHERE run_id = :run_id AND seq = :seq;

-- name: heartbeat_activity
UPDATE mainspring_activities
SET heartbeat_details = :details, lease_until = :until
WHERE run_id = :run_id AND seq = :seq AND fence = :fence AND lease_owner IS NOT NULL;

-- name: delete_activity
DELETE FROM mainspring_activities WHERE run_id = :run_id AND seq = :seq;

-- name: request_cancel_activity
UPDATE mainspring_activities SET cancel_requested = 1
WHERE run_id = :run_id AND seq = :seq;

-- name: delete_run_activities
DELETE FROM mainspring_activities WHERE run_id = :run_id;

-- name: expired_activities
SELECT run_id, seq FROM mainspring_activities
WHERE (lease_owner IS NOT NULL AND lease_until < :now)
   OR (lease_owner IS NULL AND deadline IS NOT NULL AND deadline < :now)
LIMIT :limit;

-- name: insert_timer
INSERT INTO mainspring_timers (run_id, seq, task_queue, fire_at)
VALUES (:run_id, :seq, :task_queue, :fire_at);

-- name: delete_timer
DELETE FROM mainspring_timers WHERE run_id = :run_id AND seq = :seq;

-- name: delete_run_timers
DELETE FROM mainspring_timers WHERE run_id = :run_id;

-- name: due_timers
SELECT run_id, seq FROM mainspring_timers WHERE fire_at <= :now ORDER BY fire_at LIMIT :limit;

-- name: next_timer
SELECT MIN(fire_at) FROM mainspring_timers;

-- name: next_activity_ready
-- Only future times: work ready now is the pollers' (they claim it as slots free).
SELECT MIN(ready_at) FROM mainspring_activities
WHERE task_queue = :task_queue AND lease_owner IS NULL AND ready_at > :now;

-- name: next_activity_expiry
-- When the next lease runs out or the next queued activity's schedule-to-close deadline
-- passes (each read from its partial index).
SELECT MIN(due) FROM (
    SELECT MIN(lease_until) AS due FROM mainspring_activities WHERE lease_owner IS NOT NULL
    UNION ALL
    SELECT MIN(deadline) FROM mainspring_activities
    WHERE lease_owner IS NULL AND deadline IS NOT NULL
) AS next_due;

-- name: next_wft_ready
SELECT MIN(due) FROM (
    SELECT CASE WHEN wft_lease_owner IS NOT NULL THEN wft_lease_until
                WHEN wft_sticky IS NOT NULL THEN wft_ready_at + :sticky_wait
                ELSE wft_ready_at END AS due
    FROM mainspring_runs WHERE task_queue = :task_queue AND wft_ready_at IS NOT NULL
) AS ready WHERE due > :now;

-- name: insert_query
INSERT INTO mainspring_queries (query_id, run_id, task_queue, name, args, created_at, expires_at)
VALUES (:query_id, :run_id, :task_queue, :name, :args, :now, :expires_at);

-- name: query_candidates
SELECT query_id FROM mainspring_queries
WHERE task_queue = :task_queue AND done = 0 AND expires_at > :now
  AND (lease_owner IS NULL OR lease_until < :now)
ORDER BY created_at LIMIT :limit;

-- name: lease_query
UPDATE mainspring_queries SET lease_owner = :owner, lease_until = :until
WHERE query_id = :query_id
RETURNING query_id, run_id, name, args;

-- name: answer_query
UPDATE mainspring_queries SET done = 1, answer = :answer, error = :error
WHERE query_id = :query_id AND done = 0;

-- name: query_by_id
SELECT done, answer, error FROM mainspring_queries WHERE query_id = :query_id;

-- name: delete_query
DELETE FROM mainspring_queries WHERE query_id = :query_id;

-- name: fail_run_queries
UPDATE mainspring_queries SET done = 1, error = :error WHERE run_id = :run_id AND done = 0;

-- name: delete_expired_queries
DELETE FROM mainspring_queries WHERE expires_at < :cutoff;

-- name: take_activity
-- Deletes the attempt if (and only if) the caller still holds its lease.
DELETE FROM mainspring_activities
WHERE run_id = :run_id AND seq = :seq AND fence = :fence AND lease_owner IS NOT NULL
RETURNING attempt, cancel_requested;

-- name: release_eager
-- Gives back an attempt a decision leased to its own worker (fence 1), if it did.
UPDATE mainspring_activities
SET lease_owner = NULL, lease_until = NULL, attempt_deadline = NULL, ready_at = :now
WHERE run_id = :run_id AND seq = :seq AND fence = 1 AND attempt = 1
  AND lease_owner = :owner;

-- name: release_activity
-- Gives a leased attempt back untried (the worker is shutting down): no attempt is used.
UPDATE mainspring_activities
SET lease_owner = NULL, lease_until = NULL, attempt_deadline = NULL, ready_at = :now
WHERE run_id = :run_id AND seq = :seq AND fence = :fence AND lease_owner IS NOT NULL;
