-- Keyed audit records (storage/mac.go): key_id names the audit key whose
-- HMAC-SHA-256 is the record's hash, or is empty for a plain SHA-256 hash.
-- It is hashed with the record, so it cannot be flipped. Older records keep
-- '' and hash exactly as before.
ALTER TABLE audit ADD COLUMN key_id TEXT NOT NULL DEFAULT '';
