-- PostgreSQL twin of sqlite/0005_usage_counters.sql. scope is bytea: its
-- parts are separated by a NUL byte, which PostgreSQL's text cannot hold
-- (storage/postgres.go sends such strings as bytes).
CREATE TABLE usage_counters (
	scope        BYTEA  NOT NULL,
	minute       BIGINT NOT NULL,
	amount_minor BIGINT NOT NULL DEFAULT 0,
	count        BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (scope, minute)
);
