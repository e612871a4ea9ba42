-- Mainspring schema version 4: listing closed runs by status or by type without reading
-- every run. Only closed runs are indexed: a step of an open run never updates these.
-- (Open runs are listed by the partial index of open runs, mainspring_runs_open.)
-- (Indexes only: code of schema version 3 runs on it as before.)
-- compatible: 3
CREATE INDEX IF NOT EXISTS mainspring_runs_closed_status ON mainspring_runs (status, created_at)
    WHERE status <> 'RUNNING';
CREATE INDEX IF NOT EXISTS mainspring_runs_closed_type ON mainspring_runs (workflow_type, created_at)
    WHERE status <> 'RUNNING';
