-- PostgreSQL twin of sqlite/0007_drop_unused_indexes.sql: 0004 never
-- created the indexes here.
SELECT 1;
