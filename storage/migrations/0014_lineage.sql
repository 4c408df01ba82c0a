-- Action lineage (issue 13): what each executed action changed, and the
-- trace and conversation the call belonged to. Older records keep empty
-- values, which leaves their hashes unchanged (see Record.hashed).
ALTER TABLE audit ADD COLUMN changes         TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN trace_id        TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN conversation_id TEXT NOT NULL DEFAULT '';

-- Lineage per customer, order and agent, and exports per trace, search
-- these instead of scanning the whole trail. The customer and order an
-- audit record names are read from its arguments (update_account,
-- get_customer; refund_order, cancel_order, get_order); the customer of a
-- refund or cancellation is the one its action row holds, read from the
-- system of record when the action was decided. Partial indexes keep the
-- rows that name nothing (most reads) out of them, so every append pays
-- only for what it indexes.
--
-- json_valid guards the expressions: an index expression that raised an
-- error on text that is not JSON would make the append fail, and with it
-- the action. The queries in lineage.go repeat them exactly.
CREATE INDEX audit_args_customer ON audit (json_extract(CASE WHEN json_valid(args) THEN args END, '$.customer_id'))
	WHERE json_extract(CASE WHEN json_valid(args) THEN args END, '$.customer_id') IS NOT NULL;
CREATE INDEX audit_args_order ON audit (json_extract(CASE WHEN json_valid(args) THEN args END, '$.order_id'))
	WHERE json_extract(CASE WHEN json_valid(args) THEN args END, '$.order_id') IS NOT NULL;
CREATE INDEX audit_agent_time ON audit (agent, time);
CREATE INDEX audit_trace_id ON audit (trace_id) WHERE trace_id != '';
CREATE INDEX actions_customer ON actions (customer_id) WHERE customer_id != '';
