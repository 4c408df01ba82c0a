-- An agent may send an idempotency_key with an action: a retry with the
-- same key returns the first result instead of acting again.
ALTER TABLE actions ADD COLUMN idempotency_key TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX actions_agent_idempotency_key ON actions (agent, idempotency_key) WHERE idempotency_key != '';
