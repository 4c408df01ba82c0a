-- audit_keys: the audit trail's search keys, as the queries in storage
-- read them on both engines. On SQLite they moved off the append into
-- audit_index (see that migration). On PostgreSQL the indexes on audit
-- stay for now (the move was measured on SQLite only), and the view is a
-- plain projection the planner inlines: its expressions are the indexed
-- ones of migration 0014.
CREATE VIEW audit_keys AS
	SELECT seq, time, agent, action_id, phase,
		json_extract(CASE WHEN json_valid(args) THEN args END, '$.customer_id') AS customer_id,
		json_extract(CASE WHEN json_valid(args) THEN args END, '$.order_id') AS order_id
	FROM audit;
