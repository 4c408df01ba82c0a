-- PostgreSQL twin of sqlite/0026_audit_shown_customer.sql: the customer a
-- lookup's answer showed, searched as audit_keys.customer_id (the customer
-- shown, else the one the arguments name), through an index on exactly
-- that expression, which replaces the one on the arguments alone.
ALTER TABLE audit ADD COLUMN shown_customer TEXT COLLATE "C" NOT NULL DEFAULT '';

CREATE OR REPLACE VIEW audit_keys AS
	SELECT seq, time, agent, action_id, phase,
		COALESCE(NULLIF(shown_customer, ''), json_extract(CASE WHEN json_valid(args) THEN args END, '$.customer_id')) AS customer_id,
		json_extract(CASE WHEN json_valid(args) THEN args END, '$.order_id') AS order_id
	FROM audit;

CREATE INDEX audit_customer ON audit ((COALESCE(NULLIF(shown_customer, ''), json_extract(CASE WHEN json_valid(args) THEN args END, '$.customer_id'))))
	WHERE COALESCE(NULLIF(shown_customer, ''), json_extract(CASE WHEN json_valid(args) THEN args END, '$.customer_id')) IS NOT NULL;
DROP INDEX audit_args_customer;
