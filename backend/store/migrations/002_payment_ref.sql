-- payment_ref is the payment an order was paid with in the payments system
-- (a Stripe PaymentIntent id, pi_...), so refunds can be made there. Empty
-- for orders whose payments stay in this store.
ALTER TABLE orders ADD COLUMN payment_ref TEXT NOT NULL DEFAULT '';
