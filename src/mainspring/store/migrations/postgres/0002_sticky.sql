-- Mainspring schema version 2 (PostgreSQL): sticky workflow tasks.
-- The worker that last decided a run and keeps it in memory; other workers leave the
-- run's next workflow task to it for a while (they would replay the whole history).
ALTER TABLE mainspring_runs ADD COLUMN wft_sticky TEXT;
