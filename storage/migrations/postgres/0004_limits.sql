-- PostgreSQL twin of sqlite/0004_limits.sql (its indexes are dropped again
-- by 0007 and are never created here).
ALTER TABLE actions ADD COLUMN customer_id TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE actions ADD COLUMN amount_minor BIGINT NOT NULL DEFAULT 0;
ALTER TABLE actions ADD COLUMN currency TEXT COLLATE "C" NOT NULL DEFAULT '';
