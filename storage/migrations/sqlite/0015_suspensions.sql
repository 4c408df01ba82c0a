-- The kill switch (issue 13): agents suspended by a person, and the
-- history of every suspension.
--
-- A row is one suspension: who suspended which agent, when, why and how
-- far (actions_only 1: lookups still answered), and, once lifted, who
-- resumed it and when. Rows are never deleted, so the history is kept; the
-- audit trail records the same events in its chain. At most one suspension
-- per agent is active (resumed_at = ''), which the partial unique index
-- enforces and the guard's per-call lookup uses: every action reads it
-- inside the transaction that records its attempt.
CREATE TABLE suspensions (
	id           INTEGER PRIMARY KEY AUTOINCREMENT,
	agent        TEXT NOT NULL,
	actions_only INTEGER NOT NULL DEFAULT 0,
	reason       TEXT NOT NULL,
	suspended_by TEXT NOT NULL,
	suspended_at TEXT NOT NULL,
	resumed_by   TEXT NOT NULL DEFAULT '',
	resumed_at   TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX suspensions_active ON suspensions (agent) WHERE resumed_at = '';

-- Remediation: which reverts were started for which action, so that a
-- change is reverted at most once whoever runs `mandate remediate --apply`
-- and however often (the revert's idempotency key makes one person's runs
-- idempotent; this claim makes two people's runs exclusive).
CREATE TABLE reverts (
	action_id  TEXT PRIMARY KEY,
	revert_by  TEXT NOT NULL,
	claimed_at TEXT NOT NULL
);
