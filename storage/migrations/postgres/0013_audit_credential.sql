-- PostgreSQL twin of sqlite/0013_audit_credential.sql: the credential a call
-- was made with (key:<id>, jwt:<jti>, …), never the secret.
ALTER TABLE audit ADD COLUMN credential TEXT COLLATE "C" NOT NULL DEFAULT '';
