-- PostgreSQL twin of sqlite/0006_audit_no_replace.sql: nothing to do.
-- PostgreSQL has no INSERT OR REPLACE; an insert over an existing seq fails
-- on the primary key, and ON CONFLICT DO UPDATE would fire the UPDATE trigger.
SELECT 1;
