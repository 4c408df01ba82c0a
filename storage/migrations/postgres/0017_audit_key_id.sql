-- PostgreSQL twin of sqlite/0017_audit_key_id.sql: the audit key whose
-- HMAC-SHA-256 is the record's hash, '' for a plain SHA-256 hash.
ALTER TABLE audit ADD COLUMN key_id TEXT COLLATE "C" NOT NULL DEFAULT '';
