-- Limit counters: what was allowed per scope per minute. A rolling window
-- sums the minutes in it (sparse: only minutes with activity have a row), so
-- checking a limit costs the same however busy an agent is. Debited when an
-- action is recorded as executing, credited back if it fails.
CREATE TABLE usage_counters (
	scope        TEXT    NOT NULL,
	minute       INTEGER NOT NULL,
	amount_minor INTEGER NOT NULL DEFAULT 0,
	count        INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (scope, minute)
) WITHOUT ROWID;
