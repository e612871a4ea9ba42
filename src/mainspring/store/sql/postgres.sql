-- Named queries of the PostgreSQL store (psycopg `%(name)s` parameters). sqlite.sql holds
-- the same names returning the same columns. Claim candidates are locked with
-- FOR UPDATE SKIP LOCKED, so concurrent claimers take different rows instead of queueing.

-- name: ping_listener
-- (PostgreSQL only) A notification the sending process's own listener must hear: proof
-- that its listening connection still carries data.
SELECT pg_notify(%(channel)s, %(payload)s);

-- name: server_time
-- (PostgreSQL only) The server's clock, which every process's "now" follows.
SELECT extract(epoch FROM clock_timestamp())::float8;

-- name: schema_meta
-- What a running process checks: has the schema moved past it?
SELECT key, value FROM mainspring_meta WHERE key IN ('version', 'compatible');

-- name: get_meta
SELECT value FROM mainspring_meta WHERE key = %(key)s;

-- name: set_meta
INSERT INTO mainspring_meta (key, value) VALUES (%(key)s, %(value)s)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- name: insert_run
INSERT INTO mainspring_runs (run_id, workflow_id, workflow_type, task_queue, status, input,
    created_at, next_event_id, wft_ready_at)
VALUES (%(run_id)s, %(workflow_id)s, %(workflow_type)s, %(task_queue)s, 'RUNNING',
    %(input)s, %(now)s, 2, %(now)s);

-- name: run_by_id
SELECT run_id, workflow_id, workflow_type, task_queue, status, input, result, failure,
    created_at, closed_at, next_event_id, wft_ready_at, wft_lease_owner, wft_lease_until,
    wft_fence, wft_attempt, wft_failure, cancel_requested, wft_sticky
FROM mainspring_runs WHERE run_id = %(run_id)s;

-- name: run_by_id_for_update
-- Every change to a run holds its row lock, so history appends of one run are serial.
SELECT run_id, workflow_id, workflow_type, task_queue, status, '' AS input, result, failure,
    created_at, closed_at, next_event_id, wft_ready_at, wft_lease_owner, wft_lease_until,
    wft_fence, wft_attempt, wft_failure, cancel_requested, wft_sticky
FROM mainspring_runs WHERE run_id = %(run_id)s
FOR UPDATE;

-- name: open_run_by_workflow_id
SELECT run_id, workflow_id, workflow_type, task_queue, status, input, result, failure,
    created_at, closed_at, next_event_id, wft_ready_at, wft_lease_owner, wft_lease_until,
    wft_fence, wft_attempt, wft_failure, cancel_requested, wft_sticky
FROM mainspring_runs WHERE workflow_id = %(workflow_id)s AND status = 'RUNNING';

-- name: latest_run_by_workflow_id
SELECT run_id, workflow_id, workflow_type, task_queue, status, input, result, failure,
    created_at, closed_at, next_event_id, wft_ready_at, wft_lease_owner, wft_lease_until,
    wft_fence, wft_attempt, wft_failure, cancel_requested, wft_sticky
FROM mainspring_runs WHERE workflow_id = %(workflow_id)s
ORDER BY status = 'RUNNING' DESC, created_at DESC LIMIT 1;

-- name: list_runs
-- Listing has a query per filter, each with the index it needs spelled out in its WHERE
-- clause (so that even a generic plan can use it). Open runs are found by the partial
-- index of open runs; closed runs by status or type by indexes of closed runs only, which
-- a step of an open run never has to update. A listing reads no run's input or result
-- (they may be megabytes each): describe reads them.
SELECT run_id, workflow_id, workflow_type, task_queue, status, '' AS input, NULL AS result, failure,
    created_at, closed_at, next_event_id, wft_ready_at, wft_lease_owner, wft_lease_until,
    wft_fence, wft_attempt, wft_failure, cancel_requested, wft_sticky
FROM mainspring_runs
ORDER BY created_at DESC LIMIT %(limit)s;

-- name: list_open_runs
SELECT run_id, workflow_id, workflow_type, task_queue, status, '' AS input, NULL AS result, failure,
    created_at, closed_at, next_event_id, wft_ready_at, wft_lease_owner, wft_lease_until,
    wft_fence, wft_attempt, wft_failure, cancel_requested, wft_sticky
FROM mainspring_runs
WHERE status = 'RUNNING'
  AND (%(workflow_type)s::text IS NULL OR workflow_type = %(workflow_type)s)
ORDER BY created_at DESC LIMIT %(limit)s;

-- name: list_closed_runs
SELECT run_id, workflow_id, workflow_type, task_queue, status, '' AS input, NULL AS result, failure,
    created_at, closed_at, next_event_id, wft_ready_at, wft_lease_owner, wft_lease_until,
    wft_fence, wft_attempt, wft_failure, cancel_requested, wft_sticky
FROM mainspring_runs
WHERE status <> 'RUNNING' AND status = %(status)s
  AND (%(workflow_type)s::text IS NULL OR workflow_type = %(workflow_type)s)
ORDER BY created_at DESC LIMIT %(limit)s;

-- name: list_runs_of_type
SELECT * FROM (SELECT run_id, workflow_id, workflow_type, task_queue, status, '' AS input, NULL AS result, failure,
        created_at, closed_at, next_event_id, wft_ready_at, wft_lease_owner, wft_lease_until,
        wft_fence, wft_attempt, wft_failure, cancel_requested, wft_sticky
    FROM mainspring_runs
    WHERE status = 'RUNNING' AND workflow_type = %(workflow_type)s
    ORDER BY created_at DESC LIMIT %(limit)s) AS open_runs
UNION ALL
SELECT * FROM (SELECT run_id, workflow_id, workflow_type, task_queue, status, '' AS input, NULL AS result, failure,
        created_at, closed_at, next_event_id, wft_ready_at, wft_lease_owner, wft_lease_until,
        wft_fence, wft_attempt, wft_failure, cancel_requested, wft_sticky
    FROM mainspring_runs
    WHERE status <> 'RUNNING' AND workflow_type = %(workflow_type)s
    ORDER BY created_at DESC LIMIT %(limit)s) AS closed_runs
ORDER BY created_at DESC LIMIT %(limit)s;

-- name: prunable_runs
-- Retention: the next runs, oldest first, that closed before the cutoff (a run closes
-- after it was created, so the created_at index finds them). Locked before deleting.
SELECT run_id, created_at FROM mainspring_runs
WHERE created_at < %(cutoff)s AND closed_at < %(cutoff)s
  AND (created_at, run_id) > (%(after_at)s, %(after_id)s)
ORDER BY created_at, run_id LIMIT %(limit)s
FOR UPDATE;

-- name: count_prunable
SELECT count(*) FROM mainspring_runs WHERE created_at < %(cutoff)s AND closed_at < %(cutoff)s;

-- name: prune_events
-- The runs prunable_runs locked, by id: a range instead would let a generic plan read
-- the whole events table.
DELETE FROM mainspring_events WHERE run_id = ANY(%(ids)s::text[]);

-- name: prune_activities
DELETE FROM mainspring_activities WHERE run_id = ANY(%(ids)s::text[]);

-- name: prune_timers
DELETE FROM mainspring_timers WHERE run_id = ANY(%(ids)s::text[]);

-- name: prune_queries
DELETE FROM mainspring_queries WHERE run_id = ANY(%(ids)s::text[]);

-- name: prune_runs
DELETE FROM mainspring_runs WHERE run_id = ANY(%(ids)s::text[]) AND closed_at < %(cutoff)s;

-- name: insert_event
INSERT INTO mainspring_events (run_id, event_id, event_type, time, data)
VALUES (%(run_id)s, %(event_id)s, %(event_type)s, %(time)s, %(data)s);

-- name: events_after
SELECT event_id, event_type, time, data FROM mainspring_events
WHERE run_id = %(run_id)s AND event_id > %(after)s ORDER BY event_id;

-- name: wft_candidates
SELECT run_id FROM mainspring_runs
WHERE task_queue = %(task_queue)s AND wft_ready_at IS NOT NULL AND wft_ready_at <= %(now)s
  AND (wft_lease_owner IS NULL OR wft_lease_until < %(now)s) AND status = 'RUNNING'
  AND (wft_sticky IS NULL OR wft_sticky = %(owner)s OR wft_ready_at <= %(sticky_cutoff)s)
ORDER BY wft_ready_at LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: lease_wft
-- A fence is never drawn twice, even after a crash (or a failover) lost a lease that
-- committed without waiting for the disk: a claim draws at least the server's time in
-- µs, later than any lost claim's.
UPDATE mainspring_runs
SET wft_lease_owner = %(owner)s, wft_lease_until = %(until)s,
    wft_fence = GREATEST(wft_fence + 1, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)
WHERE run_id = %(run_id)s
RETURNING wft_fence;

-- name: set_run_progress
UPDATE mainspring_runs
SET next_event_id = %(next_event_id)s, wft_ready_at = %(wft_ready_at)s,
    wft_lease_owner = %(owner)s, wft_lease_until = %(until)s, wft_attempt = %(wft_attempt)s,
    wft_failure = %(wft_failure)s, cancel_requested = %(cancel_requested)s,
    wft_sticky = COALESCE(%(sticky)s, wft_sticky)
WHERE run_id = %(run_id)s;

-- name: close_run
UPDATE mainspring_runs
SET status = %(status)s, result = %(result)s, failure = %(failure)s, closed_at = %(now)s,
    next_event_id = %(next_event_id)s, wft_ready_at = NULL, wft_lease_owner = NULL,
    wft_lease_until = NULL, wft_failure = NULL
WHERE run_id = %(run_id)s;

-- name: release_sticky
-- A worker going away gives its runs' next workflow tasks to any worker.
UPDATE mainspring_runs SET wft_sticky = NULL
WHERE status = 'RUNNING' AND task_queue = %(task_queue)s AND wft_sticky = %(owner)s;

-- name: reset_wft_backoff
UPDATE mainspring_runs SET wft_ready_at = %(now)s, wft_sticky = NULL
WHERE task_queue = %(task_queue)s AND status = 'RUNNING' AND wft_ready_at > %(now)s
  AND wft_attempt > 1;

-- name: insert_activity
INSERT INTO mainspring_activities (run_id, seq, workflow_id, workflow_type, activity_type,
    task_queue, input, options, attempt, scheduled_at, ready_at, deadline, lease_owner,
    lease_until, attempt_deadline, fence, sticky)
VALUES (%(run_id)s, %(seq)s, %(workflow_id)s, %(workflow_type)s, %(activity_type)s,
    %(task_queue)s, %(input)s, %(options)s, 1, %(now)s, %(now)s, %(deadline)s, %(owner)s,
    %(until)s, %(attempt_deadline)s, %(fence)s, %(sticky)s);

-- name: activity_candidates
-- Oldest first: this worker's own fresh attempts, anyone's that have waited longer than
-- the sticky wait (none starves), and those nobody scheduled for itself.
SELECT run_id, seq, options, deadline FROM mainspring_activities
WHERE task_queue = %(task_queue)s AND lease_owner IS NULL AND ready_at <= %(now)s
  AND (ready_at <= %(fresh_after)s OR sticky = %(owner)s OR sticky IS NULL)
ORDER BY ready_at LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: activity_candidates_others
-- Then, with slots to spare, other workers' fresh attempts.
SELECT run_id, seq, options, deadline FROM mainspring_activities
WHERE task_queue = %(task_queue)s AND lease_owner IS NULL AND ready_at <= %(now)s
  AND ready_at > %(fresh_after)s AND sticky <> %(owner)s
ORDER BY ready_at LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: lease_activity
UPDATE mainspring_activities
SET lease_owner = %(owner)s, lease_until = %(until)s, attempt_deadline = %(attempt_deadline)s,
    fence = GREATEST(fence + 1, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)
WHERE run_id = %(run_id)s AND seq = %(seq)s
RETURNING run_id, seq, workflow_id, workflow_type, activity_type, task_queue, input, options,
    attempt, scheduled_at, deadline, fence, heartbeat_details, lease_until;

-- name: activity_by_key
-- Locked: every caller goes on to change the attempt, and the fence check must see the
-- latest committed row (a concurrent expiry or completion), as SQLite's single writer does.
SELECT run_id, seq, workflow_id, workflow_type, activity_type, task_queue, input, options,
    attempt, scheduled_at, deadline, fence, heartbeat_details, lease_owner, lease_until,
    attempt_deadline, cancel_requested, last_failure, ready_at
FROM mainspring_activities WHERE run_id = %(run_id)s AND seq = %(seq)s
FOR UPDATE;

-- name: register_worker
-- (Also when a mark finds no row: a row deleted while its worker was cut off comes back;
-- a stopped worker's row stays stopped.)
INSERT INTO mainspring_workers (instance, identity, task_queue, workflows, activities,
    started_at, seen_at)
VALUES (%(instance)s, %(identity)s, %(task_queue)s, %(workflows)s, %(activities)s,
    %(now)s, %(now)s)
ON CONFLICT (instance) DO NOTHING;

-- name: forget_workers
-- Workers stopped or lost long ago (the table stays small).
DELETE FROM mainspring_workers WHERE seen_at < %(before)s;

-- name: worker_seen
UPDATE mainspring_workers SET seen_at = %(now)s
WHERE instance = %(instance)s AND stopped_at IS NULL;

-- name: worker_stopped
UPDATE mainspring_workers SET seen_at = %(now)s, stopped_at = %(now)s
WHERE instance = %(instance)s;

-- name: list_workers
SELECT instance, identity, task_queue, workflows, activities, started_at, seen_at,
    stopped_at
FROM mainspring_workers WHERE seen_at >= %(since)s ORDER BY task_queue, started_at DESC;

-- name: live_workers
-- Workers that serve and were seen lately (for describe: who serves a queued activity).
SELECT instance, identity, task_queue, workflows, activities, started_at, seen_at,
    stopped_at
FROM mainspring_workers WHERE stopped_at IS NULL AND seen_at >= %(since)s;

-- name: run_activities
-- A run's unfinished activities, for describe (the primary key's order).
SELECT seq, activity_type, task_queue, options, attempt, scheduled_at, ready_at, deadline,
    lease_owner, lease_until, heartbeat_details, last_failure, cancel_requested
FROM mainspring_activities WHERE run_id = %(run_id)s ORDER BY seq LIMIT %(limit)s;

-- name: count_run_activities
SELECT count(*) FROM mainspring_activities WHERE run_id = %(run_id)s;

-- name: retry_activity
UPDATE mainspring_activities
SET attempt = attempt + 1, ready_at = %(ready_at)s, lease_owner = NULL, lease_until = NULL,
    attempt_deadline = NULL, last_failure = %(failure)s
WHERE run_id = %(run_id)s AND seq = %(seq)s;

-- name: heartbeat_activity
UPDATE mainspring_activities
SET heartbeat_details = %(details)s, lease_until = %(until)s
WHERE run_id = %(run_id)s AND seq = %(seq)s AND fence = %(fence)s AND lease_owner IS NOT NULL;

-- name: delete_activity
DELETE FROM mainspring_activities WHERE run_id = %(run_id)s AND seq = %(seq)s;

-- name: request_cancel_activity
UPDATE mainspring_activities SET cancel_requested = 1
WHERE run_id = %(run_id)s AND seq = %(seq)s;

-- name: delete_run_activities
DELETE FROM mainspring_activities WHERE run_id = %(run_id)s;

-- name: expired_activities
SELECT run_id, seq FROM mainspring_activities
WHERE (lease_owner IS NOT NULL AND lease_until < %(now)s)
   OR (lease_owner IS NULL AND deadline IS NOT NULL AND deadline < %(now)s)
ORDER BY run_id, seq LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: insert_timer
INSERT INTO mainspring_timers (run_id, seq, task_queue, fire_at)
VALUES (%(run_id)s, %(seq)s, %(task_queue)s, %(fire_at)s);

-- name: delete_timer
DELETE FROM mainspring_timers WHERE run_id = %(run_id)s AND seq = %(seq)s;

-- name: delete_run_timers
DELETE FROM mainspring_timers WHERE run_id = %(run_id)s;

-- name: due_timers
-- The oldest due timers, locked in run order (the order every batch locks runs in).
SELECT run_id, seq FROM mainspring_timers
WHERE (run_id, seq) IN (SELECT run_id, seq FROM mainspring_timers WHERE fire_at <= %(now)s
                        ORDER BY fire_at LIMIT %(limit)s)
ORDER BY run_id, seq
FOR UPDATE SKIP LOCKED;

-- name: next_timer
SELECT MIN(fire_at) FROM mainspring_timers;

-- name: next_activity_ready
-- Only future times: work ready now is the pollers' (they claim it as slots free).
SELECT MIN(ready_at) FROM mainspring_activities
WHERE task_queue = %(task_queue)s AND lease_owner IS NULL AND ready_at > %(now)s;

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
                WHEN wft_sticky IS NOT NULL THEN wft_ready_at + %(sticky_wait)s
                ELSE wft_ready_at END AS due
    FROM mainspring_runs WHERE task_queue = %(task_queue)s AND wft_ready_at IS NOT NULL
) AS ready WHERE due > %(now)s;

-- name: insert_query
INSERT INTO mainspring_queries (query_id, run_id, task_queue, name, args, created_at, expires_at)
VALUES (%(query_id)s, %(run_id)s, %(task_queue)s, %(name)s, %(args)s, %(now)s,
    %(expires_at)s);

-- name: query_candidates
SELECT query_id FROM mainspring_queries
WHERE task_queue = %(task_queue)s AND done = 0 AND expires_at > %(now)s
  AND (lease_owner IS NULL OR lease_until < %(now)s)
ORDER BY created_at LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: lease_query
UPDATE mainspring_queries SET lease_owner = %(owner)s, lease_until = %(until)s
WHERE query_id = %(query_id)s
RETURNING query_id, run_id, name, args;

-- name: answer_query
UPDATE mainspring_queries SET done = 1, answer = %(answer)s, error = %(error)s
WHERE query_id = %(query_id)s AND done = 0;

-- name: query_by_id
SELECT done, answer, error FROM mainspring_queries WHERE query_id = %(query_id)s;

-- name: delete_query
DELETE FROM mainspring_queries WHERE query_id = %(query_id)s;

-- name: fail_run_queries
UPDATE mainspring_queries SET done = 1, error = %(error)s
WHERE run_id = %(run_id)s AND done = 0;

-- name: delete_expired_queries
DELETE FROM mainspring_queries WHERE expires_at < %(cutoff)s;

-- name: take_activity
-- Deletes the attempt if (and only if) the caller still holds its lease.
DELETE FROM mainspring_activities
WHERE run_id = %(run_id)s AND seq = %(seq)s AND fence = %(fence)s AND lease_owner IS NOT NULL
RETURNING attempt, cancel_requested;

-- name: take_activity_with_run
-- take_activity and run_by_id_for_update in one statement (see _pg_statements.py): the
-- run's row, locked, then how many attempts were taken (0 or 1) and the taken one's
-- attempt and cancel_requested.
WITH taken AS (
    DELETE FROM mainspring_activities
    WHERE run_id = %(run_id)s AND seq = %(seq)s AND fence = %(fence)s
      AND lease_owner IS NOT NULL
    RETURNING attempt AS taken_attempt, cancel_requested AS taken_cancel
)
SELECT run_id, workflow_id, workflow_type, task_queue, status, '' AS input, result, failure,
    created_at, closed_at, next_event_id, wft_ready_at, wft_lease_owner, wft_lease_until,
    wft_fence, wft_attempt, wft_failure, cancel_requested, wft_sticky,
    (SELECT count(*) FROM taken), (SELECT taken_attempt FROM taken),
    (SELECT taken_cancel FROM taken)
FROM mainspring_runs WHERE run_id = %(run_id)s
FOR UPDATE;

-- name: take_activities_with_runs
-- take_activity_with_run for many steps (distinct runs) at once: one statement for a
-- batch's read-ahead. The runs are locked in run-id order (byte order, as the batch
-- sorts them); one row per run found: its columns, then whether an attempt was taken,
-- its attempt and its cancel_requested.
WITH keys AS (
    SELECT * FROM unnest(%(run_ids)s::text[], %(seqs)s::bigint[], %(fences)s::bigint[])
        AS k(run_id, seq, fence)
), taken AS (
    DELETE FROM mainspring_activities a USING keys k
    WHERE a.run_id = k.run_id AND a.seq = k.seq AND a.fence = k.fence
      AND a.lease_owner IS NOT NULL
    RETURNING a.run_id, a.attempt AS taken_attempt, a.cancel_requested AS taken_cancel
)
SELECT r.run_id, r.workflow_id, r.workflow_type, r.task_queue, r.status, '' AS input,
    r.result, r.failure, r.created_at, r.closed_at, r.next_event_id, r.wft_ready_at,
    r.wft_lease_owner, r.wft_lease_until, r.wft_fence, r.wft_attempt, r.wft_failure,
    r.cancel_requested, r.wft_sticky, t.run_id IS NOT NULL, t.taken_attempt, t.taken_cancel
FROM mainspring_runs r LEFT JOIN taken t ON t.run_id = r.run_id
WHERE r.run_id = ANY(%(run_ids)s::text[])
ORDER BY r.run_id COLLATE "C"
FOR UPDATE OF r;

-- name: release_eager
-- Gives back an attempt a decision leased to its own worker (fence 1), if it did.
UPDATE mainspring_activities
SET lease_owner = NULL, lease_until = NULL, attempt_deadline = NULL, ready_at = %(now)s
WHERE run_id = %(run_id)s AND seq = %(seq)s AND fence = 1 AND attempt = 1
  AND lease_owner = %(owner)s;

-- name: release_activity
-- Gives a leased attempt back untried (the worker is shutting down): no attempt is used.
UPDATE mainspring_activities
SET lease_owner = NULL, lease_until = NULL, attempt_deadline = NULL, ready_at = %(now)s
WHERE run_id = %(run_id)s AND seq = %(seq)s AND fence = %(fence)s AND lease_owner IS NOT NULL;
