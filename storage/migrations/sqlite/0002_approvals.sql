-- Human approval: who decided a pending action, when, and what they said.
-- The decision itself is also an audit record (phase 'approval').
ALTER TABLE actions ADD COLUMN approver   TEXT NOT NULL DEFAULT '';
ALTER TABLE actions ADD COLUMN comment    TEXT NOT NULL DEFAULT '';
ALTER TABLE actions ADD COLUMN decided_at TEXT NOT NULL DEFAULT '';
CREATE INDEX actions_expires_at ON actions (status, expires_at);

-- People who log in to the admin web page to approve actions. Their names
-- are identities in policy.csv (g, alice, supervisor); the password is a
-- bcrypt hash.
CREATE TABLE users (
	name          TEXT PRIMARY KEY,
	password_hash TEXT NOT NULL,
	created_at    TEXT NOT NULL
);

-- Admin web sessions, in the database so that any admin process sharing it
-- honours them. The cookie holds a random token; only its SHA-256 is stored.
CREATE TABLE sessions (
	token_hash TEXT PRIMARY KEY,
	user       TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
	csrf       TEXT NOT NULL,
	created_at TEXT NOT NULL,
	expires_at TEXT NOT NULL
);
