-- API keys for agents calling `mandate serve --http` (issue 11).
--
-- A key is mk_<id>_<secret>: id is visible (lists, logs, the audit trail),
-- secret is 256 random bits of which only the SHA-256 is stored. A slow
-- password hash adds nothing against guessing a 256-bit secret, and a fast
-- one keeps the per-request check cheap. identity is the Casbin subject the
-- key proves. Times are storage's fixed-width RFC 3339 text; '' is never
-- (expires_at), not revoked (revoked_at), never used (last_used_at).
CREATE TABLE api_keys (
	id           TEXT PRIMARY KEY,
	secret_hash  TEXT NOT NULL,
	identity     TEXT NOT NULL,
	created_at   TEXT NOT NULL,
	expires_at   TEXT NOT NULL DEFAULT '',
	revoked_at   TEXT NOT NULL DEFAULT '',
	last_used_at TEXT NOT NULL DEFAULT ''
);
