-- PostgreSQL twin of sqlite/0016_merkle.sql: the Merkle tree over the audit
-- records (derived from the audit rows, written in the same transaction as
-- each record) and signed checkpoints of it.
CREATE TABLE merkle_nodes (
	level BIGINT NOT NULL,
	idx   BIGINT NOT NULL,
	hash  BYTEA  NOT NULL,
	PRIMARY KEY (level, idx)
);

CREATE TABLE checkpoints (
	origin     TEXT COLLATE "C" NOT NULL,
	size       BIGINT NOT NULL,
	root_hash  TEXT COLLATE "C" NOT NULL, -- standard base64, as in the note
	note       TEXT COLLATE "C" NOT NULL,
	created_at TEXT COLLATE "C" NOT NULL,
	PRIMARY KEY (origin, size)
);
