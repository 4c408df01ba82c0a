-- Limit counters hold running totals (issue 15): each row is what its scope
-- counted up to and including its minute, so a window is the scope's newest
-- row minus its newest row before the window (two primary-key searches)
-- instead of a sum over every busy minute in it (up to 1,440 rows for a
-- 24-hour window, 43,200 for 30 days). storage/limits.go reads and writes
-- them; this turns the per-minute amounts into running totals in place.
CREATE TEMP TABLE usage_running AS
	SELECT scope, minute,
		SUM(amount_minor) OVER (PARTITION BY scope ORDER BY minute ROWS UNBOUNDED PRECEDING) AS amount_minor,
		SUM(count) OVER (PARTITION BY scope ORDER BY minute ROWS UNBOUNDED PRECEDING) AS count
	FROM usage_counters;
UPDATE usage_counters SET amount_minor = r.amount_minor, count = r.count
	FROM usage_running r WHERE usage_counters.scope = r.scope AND usage_counters.minute = r.minute;
DROP TABLE usage_running;
