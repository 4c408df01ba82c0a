-- When an action's limits were debited, if not when it was recorded: the
-- moment a person approved it (storage/approvals.go countedAt). A failed
-- outcome or a denial at claim gives the limits back in that minute, and
-- the cross-check expects them there. Empty for actions allowed outright
-- and for those approved before this column existed, which were debited
-- when they were recorded, so nothing needs moving on upgrade.
ALTER TABLE actions ADD COLUMN counted_at TEXT NOT NULL DEFAULT '';
