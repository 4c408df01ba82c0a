-- PostgreSQL twin of sqlite/0020_usage_running_totals.sql: limit counters
-- as running totals in a new table, each row what its scope counted up to
-- and including its minute; usage_counters is dropped so that a process of
-- an older version fails rather than adding per-minute amounts to it.
CREATE TABLE usage_totals (
	scope        BYTEA  NOT NULL,
	minute       BIGINT NOT NULL,
	amount_minor BIGINT NOT NULL DEFAULT 0,
	count        BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (scope, minute)
);
INSERT INTO usage_totals (scope, minute, amount_minor, count)
	SELECT scope, minute,
		SUM(amount_minor) OVER (PARTITION BY scope ORDER BY minute ROWS UNBOUNDED PRECEDING),
		SUM(count) OVER (PARTITION BY scope ORDER BY minute ROWS UNBOUNDED PRECEDING)
	FROM usage_counters;
DROP TABLE usage_counters;
