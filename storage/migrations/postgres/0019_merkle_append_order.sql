-- PostgreSQL twin of sqlite/0019_merkle_append_order.sql: the Merkle tree's
-- nodes keyed by pos = (idx + 1) << level, the seq of the record that
-- completes each node, so the nodes one append writes sit together at the
-- end of the primary key's B-tree.
CREATE TABLE merkle_nodes_by_pos (
	pos   BIGINT NOT NULL,
	level BIGINT NOT NULL,
	hash  BYTEA  NOT NULL,
	PRIMARY KEY (pos, level)
);
INSERT INTO merkle_nodes_by_pos (pos, level, hash) SELECT (idx + 1) << level::int, level, hash FROM merkle_nodes;
DROP TABLE merkle_nodes;
ALTER TABLE merkle_nodes_by_pos RENAME TO merkle_nodes;
