-- PostgreSQL twin of sqlite/0001_init.sql: the same tables and columns.
-- Every text column collates as "C" (byte order), as SQLite's BINARY does,
-- so times stored as fixed-width text order as times and every listing
-- orders alike on both engines, whatever the database's locale.

-- The audit trail: append-only, chained by hash (mandate audit verify).
CREATE TABLE audit (
	seq            BIGINT PRIMARY KEY,
	time           TEXT COLLATE "C" NOT NULL,
	agent          TEXT COLLATE "C" NOT NULL,
	tool           TEXT COLLATE "C" NOT NULL,
	args           TEXT COLLATE "C" NOT NULL,
	attrs          TEXT COLLATE "C" NOT NULL,
	decision       TEXT COLLATE "C" NOT NULL,
	rule           TEXT COLLATE "C" NOT NULL,
	policy_version TEXT COLLATE "C" NOT NULL,
	action_id      TEXT COLLATE "C" NOT NULL,
	phase          TEXT COLLATE "C" NOT NULL CHECK (phase IN ('attempt', 'outcome', 'approval')),
	outcome        TEXT COLLATE "C" NOT NULL,
	error          TEXT COLLATE "C" NOT NULL,
	duration_us    BIGINT NOT NULL,
	prev_hash      TEXT COLLATE "C" NOT NULL,
	hash           TEXT COLLATE "C" NOT NULL
);
CREATE INDEX audit_action_id ON audit (action_id);
CREATE INDEX audit_time ON audit (time);

-- Append-only, whatever the role: a trigger refuses UPDATE, DELETE and
-- TRUNCATE for every role but a superuser who disables it. The role split
-- in docs/scaling.md adds the second line of defence: the role Mandate runs
-- as is granted only SELECT and INSERT on audit, and is not its owner, so
-- it cannot disable the trigger either.
CREATE FUNCTION mandate_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION '% records are append-only', TG_TABLE_NAME;
END
$$;
CREATE TRIGGER audit_no_update BEFORE UPDATE OR DELETE ON audit
	FOR EACH ROW EXECUTE FUNCTION mandate_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
	FOR EACH STATEMENT EXECUTE FUNCTION mandate_append_only();

-- The chain-head lock, one row. Every write transaction of every replica
-- starts by locking it (SELECT … FOR UPDATE, storage/postgres.go), which
-- serializes the writes across replicas as BEGIN IMMEDIATE does on SQLite;
-- the head itself is then read from audit, as on SQLite.
CREATE TABLE chain_head (
	id INTEGER PRIMARY KEY CHECK (id = 1)
);
INSERT INTO chain_head (id) VALUES (1);
CREATE TRIGGER chain_head_no_delete BEFORE DELETE OR TRUNCATE ON chain_head
	FOR EACH STATEMENT EXECUTE FUNCTION mandate_append_only();

-- Actions: the mutable state of each action tool call, keyed by action_id.
CREATE TABLE actions (
	id              TEXT COLLATE "C" PRIMARY KEY,
	agent           TEXT COLLATE "C" NOT NULL,
	tool            TEXT COLLATE "C" NOT NULL,
	args            TEXT COLLATE "C" NOT NULL,
	args_digest     TEXT COLLATE "C" NOT NULL,
	decision        TEXT COLLATE "C" NOT NULL,
	rule            TEXT COLLATE "C" NOT NULL,
	policy_version  TEXT COLLATE "C" NOT NULL,
	status          TEXT COLLATE "C" NOT NULL,
	result          TEXT COLLATE "C" NOT NULL,
	error           TEXT COLLATE "C" NOT NULL,
	created_at      TEXT COLLATE "C" NOT NULL,
	updated_at      TEXT COLLATE "C" NOT NULL,
	expires_at      TEXT COLLATE "C" NOT NULL
);
CREATE INDEX actions_status ON actions (status);
