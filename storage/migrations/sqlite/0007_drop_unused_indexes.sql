-- Limits are counted from usage_counters (0005), so these indexes on
-- actions only slow every insert down.
DROP INDEX IF EXISTS actions_agent_tool_created;
DROP INDEX IF EXISTS actions_customer_tool_created;
