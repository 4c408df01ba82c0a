-- Customers, orders, refunds and the record of idempotent operations.
-- Money is INTEGER minor units with its currency; times are RFC 3339 UTC text.
-- The CHECK constraints are a last line of defence: the Go code refuses bad
-- changes first with messages an agent can act on.

CREATE TABLE customers (
	id               TEXT PRIMARY KEY,
	name             TEXT NOT NULL CHECK (name <> ''),
	email            TEXT NOT NULL UNIQUE COLLATE NOCASE CHECK (email <> ''),
	phone            TEXT NOT NULL DEFAULT '',
	shipping_address TEXT NOT NULL DEFAULT '',
	created_at       TEXT NOT NULL
);

CREATE TABLE orders (
	id            TEXT PRIMARY KEY,
	customer_id   TEXT NOT NULL REFERENCES customers (id),
	status        TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'shipped', 'delivered', 'cancelled')),
	currency      TEXT NOT NULL,
	total         INTEGER NOT NULL CHECK (total >= 0),
	refunded      INTEGER NOT NULL DEFAULT 0 CHECK (refunded >= 0 AND refunded <= total),
	cancel_reason TEXT NOT NULL DEFAULT '',
	cancelled_at  TEXT,
	created_at    TEXT NOT NULL
);

CREATE INDEX orders_customer_id ON orders (customer_id);

CREATE TABLE refunds (
	id              TEXT PRIMARY KEY,
	order_id        TEXT NOT NULL REFERENCES orders (id),
	amount          INTEGER NOT NULL CHECK (amount > 0),
	currency        TEXT NOT NULL,
	reason          TEXT NOT NULL DEFAULT '',
	idempotency_key TEXT NOT NULL UNIQUE CHECK (idempotency_key <> ''),
	created_at      TEXT NOT NULL
);

CREATE INDEX refunds_order_id ON refunds (order_id);

-- operations records each idempotent cancel or account update: a repeat with
-- the same key and digest returns result; a different digest is refused.
CREATE TABLE operations (
	idempotency_key TEXT PRIMARY KEY CHECK (idempotency_key <> ''),
	kind            TEXT NOT NULL,
	digest          TEXT NOT NULL,
	result          TEXT NOT NULL,
	created_at      TEXT NOT NULL
);
