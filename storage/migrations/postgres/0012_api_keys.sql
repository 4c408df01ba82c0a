-- PostgreSQL twin of sqlite/0012_api_keys.sql.
CREATE TABLE api_keys (
	id           TEXT COLLATE "C" PRIMARY KEY,
	secret_hash  TEXT COLLATE "C" NOT NULL,
	identity     TEXT COLLATE "C" NOT NULL,
	created_at   TEXT COLLATE "C" NOT NULL,
	expires_at   TEXT COLLATE "C" NOT NULL DEFAULT '',
	revoked_at   TEXT COLLATE "C" NOT NULL DEFAULT '',
	last_used_at TEXT COLLATE "C" NOT NULL DEFAULT ''
);
