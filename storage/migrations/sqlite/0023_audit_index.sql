-- The audit trail's search keys move off the append (issue 15). Every
-- index on audit cost each append a B-tree insert and a page in the
-- commit, on the attempt's critical path: with the five below, a durable
-- append took about twice as long as without them. audit_index holds the
-- same keys per record, and the writer fills it for a run of records at a
-- time in the commits nobody waits on (outcomes, lookups: writer.go
-- indexAudit). It always covers a prefix of the trail: every record up to
-- its largest seq.
--
-- Readers search audit_keys, which is audit_index plus the records after
-- its prefix (few: those appended since the last such commit), so nothing
-- is missed while the index catches up. customer_id and order_id are what
-- the old expression indexes held (migration 0014).
CREATE TABLE audit_index (
	seq         INTEGER PRIMARY KEY, -- the audit record's seq
	time        TEXT NOT NULL,
	agent       TEXT NOT NULL,
	action_id   TEXT NOT NULL,
	phase       TEXT NOT NULL,
	customer_id,
	order_id
);
CREATE INDEX audit_index_action_id ON audit_index (action_id);
CREATE INDEX audit_index_time ON audit_index (time);
CREATE INDEX audit_index_agent_time ON audit_index (agent, time);
CREATE INDEX audit_index_customer ON audit_index (customer_id) WHERE customer_id IS NOT NULL;
CREATE INDEX audit_index_order ON audit_index (order_id) WHERE order_id IS NOT NULL;

INSERT INTO audit_index (seq, time, agent, action_id, phase, customer_id, order_id)
	SELECT seq, time, agent, action_id, phase,
		json_extract(CASE WHEN json_valid(args) THEN args END, '$.customer_id'),
		json_extract(CASE WHEN json_valid(args) THEN args END, '$.order_id')
	FROM audit;

DROP INDEX audit_action_id;
DROP INDEX audit_time;
DROP INDEX audit_agent_time;
DROP INDEX audit_args_customer;
DROP INDEX audit_args_order;

CREATE VIEW audit_keys AS
	SELECT seq, time, agent, action_id, phase, customer_id, order_id FROM audit_index
	UNION ALL
	SELECT seq, time, agent, action_id, phase,
		json_extract(CASE WHEN json_valid(args) THEN args END, '$.customer_id'),
		json_extract(CASE WHEN json_valid(args) THEN args END, '$.order_id')
	FROM audit WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM audit_index);
