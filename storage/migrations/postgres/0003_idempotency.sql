-- PostgreSQL twin of sqlite/0003_idempotency.sql. The unique index is what
-- dedupes a key across replicas: of two inserts with the same key, the
-- second fails with a unique violation (storage.ErrDuplicateKey).
ALTER TABLE actions ADD COLUMN idempotency_key TEXT COLLATE "C" NOT NULL DEFAULT '';
CREATE UNIQUE INDEX actions_agent_idempotency_key ON actions (agent, idempotency_key) WHERE idempotency_key != '';
