-- Mainspring schema version 5 (PostgreSQL): nothing. SQLite's version 5 adds an index of
-- open runs by time; here every step of an open run would add an entry to it (a step's
-- update of the run's row cannot be HOT), and PostgreSQL lists open runs quickly without.
-- The versions stay the same on both stores.
-- (Nothing changes: code of schema version 3 runs on it as before.)
-- compatible: 3
SELECT 1;
