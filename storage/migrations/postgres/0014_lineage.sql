-- PostgreSQL twin of sqlite/0014_lineage.sql: action lineage (issue 13).
ALTER TABLE audit ADD COLUMN changes         TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN trace_id        TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN conversation_id TEXT COLLATE "C" NOT NULL DEFAULT '';

-- SQLite's json_valid and json_extract, for the top-level keys storage's
-- queries read ('$.key'), so that lineage.go's SQL and these index
-- expressions are the same text on both engines. Both are IMMUTABLE (they
-- depend on their arguments only) so they may index, and json_valid never
-- raises, so an append of text that is not JSON cannot fail on an index.
CREATE FUNCTION json_valid(t text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
	PERFORM t::jsonb;
	RETURN true;
EXCEPTION WHEN others THEN
	RETURN false;
END
$$;
CREATE FUNCTION json_extract(t text, path text) RETURNS text LANGUAGE sql IMMUTABLE STRICT AS $$
	SELECT (t::jsonb) #>> string_to_array(substr(path, 3), '.')
$$;

CREATE INDEX audit_args_customer ON audit (json_extract(CASE WHEN json_valid(args) THEN args END, '$.customer_id'))
	WHERE json_extract(CASE WHEN json_valid(args) THEN args END, '$.customer_id') IS NOT NULL;
CREATE INDEX audit_args_order ON audit (json_extract(CASE WHEN json_valid(args) THEN args END, '$.order_id'))
	WHERE json_extract(CASE WHEN json_valid(args) THEN args END, '$.order_id') IS NOT NULL;
CREATE INDEX audit_agent_time ON audit (agent, time);
CREATE INDEX audit_trace_id ON audit (trace_id) WHERE trace_id != '';
CREATE INDEX actions_customer ON actions (customer_id) WHERE customer_id != '';
