-- Limit counters hold running totals (issue 15): each row of usage_totals is
-- what its scope counted up to and including its minute, so a window is the
-- scope's newest row minus its newest row before the window (two
-- primary-key searches) instead of a sum over every busy minute in it (up to
-- 1,440 rows for a 24-hour window, 43,200 for 30 days). storage/limits.go
-- reads and writes them.
--
-- A new table rather than new meanings for usage_counters' rows: a process
-- of an older version still running on this database would add a
-- per-minute amount where a running total belongs, making windows negative
-- (it would allow). Without usage_counters its writes fail instead.
CREATE TABLE usage_totals (
	scope        TEXT    NOT NULL,
	minute       INTEGER NOT NULL,
	amount_minor INTEGER NOT NULL DEFAULT 0,
	count        INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (scope, minute)
) WITHOUT ROWID;
INSERT INTO usage_totals (scope, minute, amount_minor, count)
	SELECT scope, minute,
		SUM(amount_minor) OVER (PARTITION BY scope ORDER BY minute ROWS UNBOUNDED PRECEDING),
		SUM(count) OVER (PARTITION BY scope ORDER BY minute ROWS UNBOUNDED PRECEDING)
	FROM usage_counters;
DROP TABLE usage_counters;
