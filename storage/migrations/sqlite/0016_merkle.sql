-- The Merkle tree over the audit records (issue 14, attest/ and
-- docs/attestation.md). Leaf i is the RFC 6962 leaf hash of record seq i+1;
-- every node that roots a perfect subtree is stored once it is complete, keyed
-- by its level (0 = leaves) and its index within that level, so a root, an
-- inclusion proof or a consistency proof costs O(log n) reads. The nodes are
-- derived from the audit rows and written in the same transaction as each
-- record; storage rebuilds them from the rows when they disagree. They are
-- not a source of truth: signed checkpoints are what make rewriting visible.
CREATE TABLE merkle_nodes (
	level INTEGER NOT NULL,
	idx   INTEGER NOT NULL,
	hash  BLOB    NOT NULL,
	PRIMARY KEY (level, idx)
) WITHOUT ROWID;

-- Signed checkpoints (C2SP tlog-checkpoint notes) of the tree. Several
-- processes may sign the same size with the same key; Ed25519 signatures are
-- deterministic, so they write the same note and the second is ignored.
CREATE TABLE checkpoints (
	origin     TEXT    NOT NULL,
	size       INTEGER NOT NULL,
	root_hash  TEXT    NOT NULL, -- standard base64, as in the note
	note       TEXT    NOT NULL,
	created_at TEXT    NOT NULL,
	PRIMARY KEY (origin, size)
);
