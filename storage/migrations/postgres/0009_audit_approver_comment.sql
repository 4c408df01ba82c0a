-- PostgreSQL twin of sqlite/0009_audit_approver_comment.sql.
ALTER TABLE audit ADD COLUMN approver TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN comment  TEXT COLLATE "C" NOT NULL DEFAULT '';
