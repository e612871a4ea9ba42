-- Mainspring schema version 3 (PostgreSQL): queued activities by schedule-to-close deadline.
-- The maintenance pass times out queued activities whose deadline has passed and wakes
-- for the next one; without this index both read every queued activity.
CREATE INDEX IF NOT EXISTS mainspring_activities_deadline ON mainspring_activities (deadline)
    WHERE lease_owner IS NULL AND deadline IS NOT NULL;
