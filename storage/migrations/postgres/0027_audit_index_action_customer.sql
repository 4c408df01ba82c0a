-- SQLite only (its audit_index now also keys each record by its action's
-- customer, and its actions table lost the index by customer). PostgreSQL
-- indexes the audit table itself and keeps actions_customer, which its
-- lineage queries search (storage/lineage.go).
SELECT 1;
