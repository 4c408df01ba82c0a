-- PostgreSQL twin of sqlite/0002_approvals.sql.
ALTER TABLE actions ADD COLUMN approver   TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE actions ADD COLUMN comment    TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE actions ADD COLUMN decided_at TEXT COLLATE "C" NOT NULL DEFAULT '';
CREATE INDEX actions_expires_at ON actions (status, expires_at);

CREATE TABLE users (
	name          TEXT COLLATE "C" PRIMARY KEY,
	password_hash TEXT COLLATE "C" NOT NULL,
	created_at    TEXT COLLATE "C" NOT NULL
);

-- "user" is a reserved word in PostgreSQL; storage's SQL says user and the
-- rewriting in storage/postgres.go (rebind) quotes it.
CREATE TABLE sessions (
	token_hash TEXT COLLATE "C" PRIMARY KEY,
	"user"     TEXT COLLATE "C" NOT NULL REFERENCES users (name) ON DELETE CASCADE,
	csrf       TEXT COLLATE "C" NOT NULL,
	created_at TEXT COLLATE "C" NOT NULL,
	expires_at TEXT COLLATE "C" NOT NULL
);
