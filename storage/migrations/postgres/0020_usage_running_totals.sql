-- PostgreSQL twin of sqlite/0020_usage_running_totals.sql: limit counters
-- hold running totals, each row what its scope counted up to and including
-- its minute. UPDATE ... FROM reads the rows as they were before it.
UPDATE usage_counters SET amount_minor = r.amount_minor, count = r.count
	FROM (SELECT scope, minute,
			SUM(amount_minor) OVER (PARTITION BY scope ORDER BY minute ROWS UNBOUNDED PRECEDING) AS amount_minor,
			SUM(count) OVER (PARTITION BY scope ORDER BY minute ROWS UNBOUNDED PRECEDING) AS count
		FROM usage_counters) r
	WHERE usage_counters.scope = r.scope AND usage_counters.minute = r.minute;
