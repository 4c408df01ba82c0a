-- shown_customer: the customer whose data a lookup's answer showed
-- (find_customer's match, get_order's order's customer, get_action_status's
-- action's customer), so a customer's lineage finds the records through
-- which an agent saw them without naming them in the arguments. Hashed
-- only when set, so older records keep their hashes.
ALTER TABLE audit ADD COLUMN shown_customer TEXT NOT NULL DEFAULT '';

-- audit_keys.customer_id is now the customer shown, else the one the
-- arguments name (storage/lineage.go argsCustomer). Every audit_index row
-- so far is of a record without shown_customer, so it is unchanged.
DROP VIEW audit_keys;
CREATE VIEW audit_keys AS
	SELECT seq, time, agent, action_id, phase, customer_id, order_id FROM audit_index
	UNION ALL
	SELECT seq, time, agent, action_id, phase,
		COALESCE(NULLIF(shown_customer, ''), json_extract(CASE WHEN json_valid(args) THEN args END, '$.customer_id')),
		json_extract(CASE WHEN json_valid(args) THEN args END, '$.order_id')
	FROM audit WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM audit_index);
