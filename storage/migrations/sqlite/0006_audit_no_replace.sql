-- INSERT OR REPLACE deletes the old row without firing the DELETE trigger,
-- so a record could be rewritten in place: refuse any insert over an
-- existing seq.
CREATE TRIGGER audit_no_replace BEFORE INSERT ON audit
WHEN EXISTS (SELECT 1 FROM audit WHERE seq = NEW.seq)
BEGIN
	SELECT RAISE(ABORT, 'audit records are append-only');
END;
