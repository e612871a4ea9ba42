-- Mainspring schema version 6 (SQLite): workers say they are alive. Each Worker
-- writes a row when it starts, marks it every few seconds while it serves, and again
-- when it stops (`mainspring workers`; describe says when no live worker serves a
-- queued activity). Older code neither reads nor writes this table, and newer code
-- keeps it small: code of schema version 3 runs on it as before.
-- compatible: 3
CREATE TABLE IF NOT EXISTS mainspring_workers (
    instance    TEXT PRIMARY KEY,
    identity    TEXT NOT NULL,
    task_queue  TEXT NOT NULL,
    workflows   TEXT NOT NULL,
    activities  TEXT NOT NULL,
    started_at  REAL NOT NULL,
    seen_at     REAL NOT NULL,
    stopped_at  REAL
);
