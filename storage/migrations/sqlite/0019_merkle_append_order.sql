-- The Merkle tree's nodes keyed in the order they are appended (issue 15).
-- Keyed by (level, idx), the nodes one record completes (its leaf, and one
-- more on average) sit at the ends of different key ranges, one B-tree page
-- each, rewritten in every record's transaction: about 2.6-3.3 pages per
-- record, the largest share of what an attempt writes (TestPagesPerWrite).
-- Keyed by pos, the seq of the record that completes the node, (idx + 1) <<
-- level, every node of one append sits together at the end of the tree:
-- about one page. pos is also the tree's size once the node exists, so
-- MAX(pos) is the stored tree's size and a trim is a key range.
CREATE TABLE merkle_nodes_by_pos (
	pos   INTEGER NOT NULL, -- (idx + 1) << level
	level INTEGER NOT NULL,
	hash  BLOB    NOT NULL,
	PRIMARY KEY (pos, level)
) WITHOUT ROWID;
INSERT INTO merkle_nodes_by_pos (pos, level, hash) SELECT (idx + 1) << level, level, hash FROM merkle_nodes;
DROP TABLE merkle_nodes;
ALTER TABLE merkle_nodes_by_pos RENAME TO merkle_nodes;
