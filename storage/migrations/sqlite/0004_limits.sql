-- Limits over time are counted from the actions themselves: what each
-- agent and customer had allowed within a rolling window. The columns hold
-- the facts a limit needs; the indexes keep the count cheap inside the
-- write transaction that also records the attempt.
ALTER TABLE actions ADD COLUMN customer_id TEXT NOT NULL DEFAULT '';
ALTER TABLE actions ADD COLUMN amount_minor INTEGER NOT NULL DEFAULT 0;
ALTER TABLE actions ADD COLUMN currency TEXT NOT NULL DEFAULT '';
CREATE INDEX actions_agent_tool_created ON actions (agent, tool, created_at);
CREATE INDEX actions_customer_tool_created ON actions (customer_id, tool, created_at);
