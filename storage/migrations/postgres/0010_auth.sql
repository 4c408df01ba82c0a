-- PostgreSQL twin of sqlite/0010_auth.sql.
ALTER TABLE sessions ADD COLUMN last_seen TEXT COLLATE "C" NOT NULL DEFAULT '';
CREATE INDEX sessions_user ON sessions ("user");

CREATE TABLE approver_tokens (
	token_hash TEXT COLLATE "C" PRIMARY KEY,
	"user"     TEXT COLLATE "C" NOT NULL UNIQUE REFERENCES users (name) ON DELETE CASCADE,
	created_at TEXT COLLATE "C" NOT NULL
);

CREATE TABLE login_throttle (
	key           TEXT COLLATE "C" PRIMARY KEY,
	failures      BIGINT NOT NULL,
	blocked_until TEXT COLLATE "C" NOT NULL,
	updated_at    TEXT COLLATE "C" NOT NULL
);

CREATE TABLE login_failures (
	time    TEXT COLLATE "C" NOT NULL,
	"user"  TEXT COLLATE "C" NOT NULL,
	address TEXT COLLATE "C" NOT NULL
);
CREATE INDEX login_failures_time ON login_failures (time);
