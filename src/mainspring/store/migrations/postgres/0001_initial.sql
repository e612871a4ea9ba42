-- Mainspring schema version 1 (PostgreSQL).
CREATE TABLE mainspring_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE mainspring_runs (
    run_id           TEXT PRIMARY KEY,
    workflow_id      TEXT NOT NULL,
    workflow_type    TEXT NOT NULL,
    task_queue       TEXT NOT NULL,
    status           TEXT NOT NULL,
    input            TEXT NOT NULL,
    result           TEXT,
    failure          TEXT,
    created_at       DOUBLE PRECISION NOT NULL,
    closed_at        DOUBLE PRECISION,
    next_event_id    BIGINT NOT NULL,
    wft_ready_at     DOUBLE PRECISION,
    wft_lease_owner  TEXT,
    wft_lease_until  DOUBLE PRECISION,
    wft_fence        BIGINT NOT NULL DEFAULT 0,
    wft_attempt      BIGINT NOT NULL DEFAULT 1,
    wft_failure      TEXT,
    cancel_requested BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX mainspring_runs_open ON mainspring_runs (workflow_id) WHERE status = 'RUNNING';
CREATE INDEX mainspring_runs_wft ON mainspring_runs (task_queue, wft_ready_at) WHERE wft_ready_at IS NOT NULL;
CREATE INDEX mainspring_runs_workflow ON mainspring_runs (workflow_id, created_at);
CREATE INDEX mainspring_runs_list ON mainspring_runs (created_at);

CREATE TABLE mainspring_events (
    run_id     TEXT NOT NULL,
    event_id   BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    time       DOUBLE PRECISION NOT NULL,
    data       TEXT NOT NULL,
    PRIMARY KEY (run_id, event_id)
);

CREATE TABLE mainspring_activities (
    run_id            TEXT NOT NULL,
    seq               BIGINT NOT NULL,
    workflow_id       TEXT NOT NULL,
    workflow_type     TEXT NOT NULL,
    activity_type     TEXT NOT NULL,
    task_queue        TEXT NOT NULL,
    input             TEXT NOT NULL,
    options           TEXT NOT NULL,
    attempt           BIGINT NOT NULL DEFAULT 1,
    scheduled_at      DOUBLE PRECISION NOT NULL,
    ready_at          DOUBLE PRECISION NOT NULL,
    deadline          DOUBLE PRECISION,
    lease_owner       TEXT,
    lease_until       DOUBLE PRECISION,
    attempt_deadline  DOUBLE PRECISION,
    fence             BIGINT NOT NULL DEFAULT 0,
    heartbeat_details TEXT,
    last_failure      TEXT,
    cancel_requested  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX mainspring_activities_ready ON mainspring_activities (task_queue, ready_at) WHERE lease_owner IS NULL;
CREATE INDEX mainspring_activities_lease ON mainspring_activities (lease_until) WHERE lease_owner IS NOT NULL;

CREATE TABLE mainspring_timers (
    run_id     TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    task_queue TEXT NOT NULL,
    fire_at    DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX mainspring_timers_due ON mainspring_timers (fire_at);

CREATE TABLE mainspring_queries (
    query_id    TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL,
    task_queue  TEXT NOT NULL,
    name        TEXT NOT NULL,
    args        TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL,
    lease_owner TEXT,
    lease_until DOUBLE PRECISION,
    done        BIGINT NOT NULL DEFAULT 0,
    answer      TEXT,
    error       TEXT
);
CREATE INDEX mainspring_queries_open ON mainspring_queries (task_queue, created_at) WHERE done = 0;
