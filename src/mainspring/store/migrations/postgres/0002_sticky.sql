-- Mainspring schema version 2 (PostgreSQL): sticky workflow tasks.
-- The worker that last decided a run and keeps it in memory; other workers leave the
-- run's next workflow task to it for a while (they would replay the whole history).
ALTER TABLE mainspring_runs ADD COLUMN wft_sticky TEXT;
-- The worker that scheduled the activity (and keeps its run in memory): it claims its
-- own fresh activities before others' (their results then decide the run's next step
-- in the same commit).
ALTER TABLE mainspring_activities ADD COLUMN sticky TEXT;
