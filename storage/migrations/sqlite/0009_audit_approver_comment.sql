-- Audit records say who approved and what they wrote, in their own fields
-- rather than in error. Older records keep empty values, which leaves their
-- hashes unchanged (see hashRecord).
ALTER TABLE audit ADD COLUMN approver TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN comment  TEXT NOT NULL DEFAULT '';
