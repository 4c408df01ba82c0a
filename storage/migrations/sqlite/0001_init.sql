-- The audit trail: append-only, one row per attempt and per outcome, each
-- chained to the one before by hash so an edit, deletion, insertion or
-- reordering is detectable (mandate audit verify).
CREATE TABLE audit (
	seq            INTEGER PRIMARY KEY,
	time           TEXT    NOT NULL,
	agent          TEXT    NOT NULL,
	tool           TEXT    NOT NULL,
	args           TEXT    NOT NULL,
	attrs          TEXT    NOT NULL,
	decision       TEXT    NOT NULL,
	rule           TEXT    NOT NULL,
	policy_version TEXT    NOT NULL,
	action_id      TEXT    NOT NULL,
	phase          TEXT    NOT NULL CHECK (phase IN ('attempt', 'outcome', 'approval')),
	outcome        TEXT    NOT NULL,
	error          TEXT    NOT NULL,
	duration_us    INTEGER NOT NULL,
	prev_hash      TEXT    NOT NULL,
	hash           TEXT    NOT NULL
);
CREATE INDEX audit_action_id ON audit (action_id);
CREATE INDEX audit_time ON audit (time);

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
	SELECT RAISE(ABORT, 'audit records are append-only');
END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
	SELECT RAISE(ABORT, 'audit records are append-only');
END;

-- Actions: the mutable state of each action tool call, keyed by action_id.
-- status: pending (awaiting a person), executing (backend called, outcome
-- not yet recorded), executed, failed, denied, approved, expired.
CREATE TABLE actions (
	id              TEXT PRIMARY KEY,
	agent           TEXT NOT NULL,
	tool            TEXT NOT NULL,
	args            TEXT NOT NULL,
	args_digest     TEXT NOT NULL,
	decision        TEXT NOT NULL,
	rule            TEXT NOT NULL,
	policy_version  TEXT NOT NULL,
	status          TEXT NOT NULL,
	result          TEXT NOT NULL,
	error           TEXT NOT NULL,
	created_at      TEXT NOT NULL,
	updated_at      TEXT NOT NULL,
	expires_at      TEXT NOT NULL
);
CREATE INDEX actions_status ON actions (status);
