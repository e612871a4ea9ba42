-- Mainspring schema version 5 (SQLite): open runs newest first, for listing them. SQLite
-- updates an index only when a column it holds changes, so a step of an open run leaves
-- this one alone; it gains an entry when a run starts and loses it when the run closes.
-- (An index only: code of schema version 3 runs on it as before.)
-- compatible: 3
CREATE INDEX IF NOT EXISTS mainspring_runs_open_by_time ON mainspring_runs (created_at)
    WHERE status = 'RUNNING';
