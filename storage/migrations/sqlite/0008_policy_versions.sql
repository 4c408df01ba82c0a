-- One live policy. Every process that decides (mandate serve, mandate admin)
-- records here each policy it loads, at start and on every hot reload; the
-- newest load is the live policy. Processes that only act on decisions (the
-- approvals CLI, recovery) refuse to act under any other version.
--
-- policy_texts keeps each distinct model and policy once, by version, since
-- every `mandate serve` an MCP client starts loads the same files again.
CREATE TABLE policy_texts (
	version     TEXT PRIMARY KEY,
	model       TEXT NOT NULL,
	policy      TEXT NOT NULL,
	recorded_at TEXT NOT NULL
);

-- policy_loads: who loaded which version from where, and when.
-- command is the subcommand (serve, admin) and why (start, reload);
-- identity is the agent a serve process acts as, empty for admin.
CREATE TABLE policy_loads (
	seq         INTEGER PRIMARY KEY,
	version     TEXT    NOT NULL REFERENCES policy_texts (version),
	model_file  TEXT    NOT NULL,
	policy_file TEXT    NOT NULL,
	command     TEXT    NOT NULL,
	identity    TEXT    NOT NULL,
	pid         INTEGER NOT NULL,
	host        TEXT    NOT NULL,
	loaded_at   TEXT    NOT NULL
);

CREATE TRIGGER policy_loads_no_update BEFORE UPDATE ON policy_loads
BEGIN
	SELECT RAISE(ABORT, 'policy loads are append-only');
END;
CREATE TRIGGER policy_loads_no_delete BEFORE DELETE ON policy_loads
BEGIN
	SELECT RAISE(ABORT, 'policy loads are append-only');
END;
CREATE TRIGGER policy_texts_no_update BEFORE UPDATE ON policy_texts
BEGIN
	SELECT RAISE(ABORT, 'policy texts are append-only');
END;
