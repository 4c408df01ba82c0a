-- PostgreSQL twin of sqlite/0019_audit_args_ids.sql: the customer and order
-- an audit record's arguments name, as plain columns instead of expression
-- indexes, filled by appendRecord; not hashed, checked by `audit verify`.
ALTER TABLE audit ADD COLUMN args_customer_id TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN args_order_id    TEXT COLLATE "C" NOT NULL DEFAULT '';

-- Fill them for the records already there: the one update of audit rows
-- Mandate ever makes, of two columns that only repeat the arguments. Run
-- by the owner (migrations are), inside the migration's transaction.
ALTER TABLE audit DISABLE TRIGGER audit_no_update;
UPDATE audit SET
	args_customer_id = COALESCE(json_extract(CASE WHEN json_valid(args) THEN args END, '$.customer_id'), ''),
	args_order_id    = COALESCE(json_extract(CASE WHEN json_valid(args) THEN args END, '$.order_id'), '')
WHERE json_valid(args);
ALTER TABLE audit ENABLE TRIGGER audit_no_update;

DROP INDEX audit_args_customer;
DROP INDEX audit_args_order;
CREATE INDEX audit_args_customer_id ON audit (args_customer_id) WHERE args_customer_id != '';
CREATE INDEX audit_args_order_id ON audit (args_order_id) WHERE args_order_id != '';
