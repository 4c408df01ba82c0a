-- Approver credentials and login abuse (issue 8).
--
-- Sessions get an idle timeout: last_seen moves on every request, and a
-- session unused for longer than the admin's idle limit is dead even before
-- its absolute expires_at.
ALTER TABLE sessions ADD COLUMN last_seen TEXT NOT NULL DEFAULT '';
CREATE INDEX sessions_user ON sessions (user);

-- Per-approver tokens for the approvals CLI. Only the SHA-256 of the token
-- is stored (tokens are 256 random bits, so a slow hash adds nothing); one
-- token per user, replaced when a new one is made, gone with the user.
CREATE TABLE approver_tokens (
	token_hash TEXT PRIMARY KEY,
	user       TEXT NOT NULL UNIQUE REFERENCES users (name) ON DELETE CASCADE,
	created_at TEXT NOT NULL
);

-- Backoff after failed logins, in the database because several admin
-- processes (and the CLI) share it: a guesser who moves to another process
-- meets the same wait. key is "user:NAME" or "addr:ADDRESS".
CREATE TABLE login_throttle (
	key           TEXT PRIMARY KEY,
	failures      INTEGER NOT NULL,
	blocked_until TEXT NOT NULL,
	updated_at    TEXT NOT NULL
);

-- Each failed login, kept for a week so the queue can warn about an account
-- under attack. The audit trail holds the same events for good.
CREATE TABLE login_failures (
	time    TEXT NOT NULL,
	user    TEXT NOT NULL,
	address TEXT NOT NULL
);
CREATE INDEX login_failures_time ON login_failures (time);
