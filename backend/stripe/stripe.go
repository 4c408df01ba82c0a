// Package stripe makes refunds in Stripe, and reads the money facts the
// rules test from Stripe, for deployments whose payments live there. It
// satisfies backend.Payments; Orders wraps an orders backend so that an
// order's total, refunded amount and currency are what Stripe says.
//
// Every refund carries the action id as Stripe's Idempotency-Key and as
// metadata.mandate_action_id. Stripe forgets idempotency keys after 24
// hours, so reconciliation never replays the key: RefundByKey finds the
// refund by its metadata.
package stripe

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	stripego "github.com/stripe/stripe-go/v82"
)

// APIVersion is the Stripe API version every request is pinned to (sent as
// Stripe-Version by stripe-go); a new version is a deliberate upgrade of
// the stripe-go dependency, never a change on Stripe's side.
const APIVersion = stripego.APIVersion

// Metadata keys set on every refund.
const (
	MetaActionID = "mandate_action_id"
	MetaOrderID  = "mandate_order_id"
	MetaAgent    = "mandate_agent"
)

var _ backend.Payments = (*Payments)(nil)

// Config configures the adapter.
type Config struct {
	SecretKey string
	// APIURL is Stripe's API root; empty means https://api.stripe.com. Tests
	// point it at stripe-mock.
	APIURL string
	// Timeout bounds each attempt; zero means 10 seconds.
	Timeout time.Duration
	// Retries is how many times a failed call is tried again when Stripe
	// says it may be (429, 5xx, Stripe-Should-Retry: true) or the network
	// failed; zero means 3, negative none.
	Retries int
	// Lookback is how far back RefundByKey searches refunds; zero means 7
	// days. Recovery runs within minutes of a crash, so a week is ample.
	Lookback time.Duration
	// Backoff is the first wait between retries, doubled each time; zero
	// means 500ms.
	Backoff time.Duration
}

// Payments refunds on the PaymentIntent an order was paid with.
type Payments struct {
	sc     *stripego.Client
	orders backend.Orders
	cfg    Config
}

// New returns Stripe payments; orders supply each order's PaymentIntent
// (payment_ref).
func New(cfg Config, orders backend.Orders) *Payments {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Retries == 0 {
		cfg.Retries = 3
	}
	if cfg.Lookback <= 0 {
		cfg.Lookback = 7 * 24 * time.Hour
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 500 * time.Millisecond
	}
	bc := &stripego.BackendConfig{
		// Retries are ours: stripe-go ignores Stripe-Should-Retry on errors
		// with a body and sleeps without watching the context.
		MaxNetworkRetries: stripego.Int64(0),
		// headerTap also turns a redirect into an error: Stripe's API never
		// redirects, and one (a proxy, a wrong api_url) is neither followed
		// with the secret key nor read as an answer.
		HTTPClient:    &http.Client{Transport: &headerTap{next: http.DefaultTransport}},
		LeveledLogger: &stripego.LeveledLogger{Level: stripego.LevelNull},
	}
	if cfg.APIURL != "" {
		bc.URL = stripego.String(cfg.APIURL)
	}
	sc := stripego.NewClient(cfg.SecretKey, stripego.WithBackends(stripego.NewBackendsWithConfig(bc)))
	return &Payments{sc: sc, orders: orders, cfg: cfg}
}

// Refund creates a Stripe Refund of exactly req.Amount on the order's
// PaymentIntent, with req.IdempotencyKey as Stripe's Idempotency-Key.
func (p *Payments) Refund(ctx context.Context, req backend.RefundRequest) (backend.Refund, error) {
	if strings.TrimSpace(req.IdempotencyKey) == "" {
		return backend.Refund{}, mandate.Errorf(mandate.EINVALID, "an idempotency key is required")
	}
	if req.Amount.Minor <= 0 {
		return backend.Refund{}, mandate.Errorf(mandate.EINVALID, "refund amount must be greater than zero")
	}
	o, err := p.orders.Order(ctx, req.OrderID)
	if err != nil {
		return backend.Refund{}, err
	}
	if err := p.CheckRefundable(o); err != nil {
		return backend.Refund{}, err
	}
	// Stripe refunds in the PaymentIntent's currency; refuse a mismatch
	// rather than refund the same number of another currency's units.
	pi, err := p.paymentIntent(ctx, o.PaymentRef)
	if err != nil {
		return backend.Refund{}, err
	}
	if cur := strings.ToUpper(string(pi.Currency)); cur != req.Amount.Currency {
		return backend.Refund{}, mandate.Errorf(mandate.EINVALID,
			"refund is in %s but the payment for order %s is in %s", req.Amount.Currency, o.ID, cur)
	}
	amount, err := toStripe(req.Amount)
	if err != nil {
		return backend.Refund{}, err
	}
	params := &stripego.RefundCreateParams{
		PaymentIntent: stripego.String(o.PaymentRef),
		Amount:        stripego.Int64(amount),
		Reason:        stripego.String(string(stripego.RefundReasonRequestedByCustomer)),
	}
	params.AddMetadata(MetaActionID, req.IdempotencyKey)
	params.AddMetadata(MetaOrderID, o.ID)
	if req.Agent != "" {
		params.AddMetadata(MetaAgent, req.Agent)
	}
	params.SetIdempotencyKey(req.IdempotencyKey)
	var r *stripego.Refund
	err = p.retry(ctx, func(ctx context.Context) error {
		var err error
		r, err = p.sc.V1Refunds.Create(ctx, params)
		return err
	})
	if err != nil {
		return backend.Refund{}, mapError(err, "refund on order "+o.ID)
	}
	out, err := p.refund(r, o.ID, req.Reason, req.IdempotencyKey)
	if err == nil && out.Amount != req.Amount {
		return backend.Refund{}, mandate.Errorf(mandate.EUNAVAILABLE, "Stripe answered with refund %s of %s %s, not the %s %s asked", r.ID, out.Amount, out.Amount.Currency, req.Amount, req.Amount.Currency)
	}
	return out, err
}

// refund converts a Stripe refund, refusing one Stripe reports as failed.
func (p *Payments) refund(r *stripego.Refund, orderID, reason, key string) (backend.Refund, error) {
	switch r.Status {
	case stripego.RefundStatusFailed, stripego.RefundStatusCanceled:
		return backend.Refund{}, mandate.Errorf(mandate.ECONFLICT, "Stripe reports refund %s as %s (%s)", r.ID, r.Status, r.FailureReason)
	}
	cur := strings.ToUpper(string(r.Currency))
	if _, ok := mandate.CurrencyExponent(cur); !ok {
		return backend.Refund{}, mandate.Errorf(mandate.EUNAVAILABLE, "Stripe answered with refund %s in unknown currency %q", r.ID, r.Currency)
	}
	minor, err := fromStripe(r.Amount, cur, "refund "+r.ID)
	if err != nil {
		return backend.Refund{}, err
	}
	if orderID == "" {
		orderID = r.Metadata[MetaOrderID]
	}
	// Order stays nil: Stripe knows the payment, not the order it paid for.
	return backend.Refund{ID: r.ID, OrderID: orderID, Amount: mandate.Money{Minor: minor, Currency: cur},
		Reason: reason, IdempotencyKey: key, CreatedAt: time.Unix(r.Created, 0).UTC()}, nil
}

// RefundByKey finds the refund whose metadata.mandate_action_id is key among
// the refunds of the last Lookback, newest first.
func (p *Payments) RefundByKey(ctx context.Context, key string) (backend.Refund, error) {
	if strings.TrimSpace(key) == "" {
		return backend.Refund{}, mandate.Errorf(mandate.EINVALID, "an idempotency key is required")
	}
	params := &stripego.RefundListParams{CreatedRange: &stripego.RangeQueryParams{
		GreaterThanOrEqual: time.Now().Add(-p.cfg.Lookback).Unix()}}
	return p.findRefund(ctx, params, key)
}

// RefundByKeyOnOrder finds the refund whose metadata.mandate_action_id is
// key among the refunds of the order's PaymentIntent, however old
// (backend.RefundFinder): one short list, where a miss is the usual answer
// after a crash before the refund was sent. Only an order with no payment
// reference now (cleared since the refund?) falls back to the account's
// recent refunds (RefundByKey), a scan that a busy account may not finish.
func (p *Payments) RefundByKeyOnOrder(ctx context.Context, key, orderID string) (backend.Refund, error) {
	if strings.TrimSpace(key) == "" {
		return backend.Refund{}, mandate.Errorf(mandate.EINVALID, "an idempotency key is required")
	}
	o, err := p.orders.Order(ctx, orderID)
	if err != nil {
		// Without the order its payment is unknown: so is the refund.
		return backend.Refund{}, fmt.Errorf("%w: %w", mandate.Errorf(mandate.EUNAVAILABLE, "the refund made with idempotency key %q cannot be looked up: order %s cannot be read", key, orderID), err)
	}
	if o.PaymentRef == "" {
		return p.RefundByKey(ctx, key)
	}
	return p.findRefund(ctx, &stripego.RefundListParams{PaymentIntent: stripego.String(o.PaymentRef)}, key)
}

var _ backend.RefundFinder = (*Payments)(nil)

// findRefund lists the refunds params selects, newest first, for the one
// whose metadata.mandate_action_id is key.
func (p *Payments) findRefund(ctx context.Context, params *stripego.RefundListParams, key string) (backend.Refund, error) {
	params.Limit = stripego.Int64(100)
	var found *stripego.Refund
	err := p.retry(ctx, func(ctx context.Context) error {
		found = nil
		for r, err := range p.sc.V1Refunds.List(ctx, params) {
			if err != nil {
				return err
			}
			if r.Metadata[MetaActionID] == key {
				found = r
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return backend.Refund{}, mapError(err, "refund lookup")
	}
	if found == nil {
		return backend.Refund{}, mandate.Errorf(mandate.ENOTFOUND, "no refund was made with idempotency key %q", key)
	}
	// A refund Stripe failed moved no money: for reconciliation that is
	// "not done".
	if found.Status == stripego.RefundStatusFailed || found.Status == stripego.RefundStatusCanceled {
		return backend.Refund{}, mandate.Errorf(mandate.ENOTFOUND, "the refund made with idempotency key %q %s", key, found.Status)
	}
	return p.refund(found, "", "", key)
}

// paymentIntent reads a PaymentIntent with its latest charge.
func (p *Payments) paymentIntent(ctx context.Context, id string) (*stripego.PaymentIntent, error) {
	params := &stripego.PaymentIntentRetrieveParams{}
	params.AddExpand("latest_charge")
	var pi *stripego.PaymentIntent
	err := p.retry(ctx, func(ctx context.Context) error {
		var err error
		pi, err = p.sc.V1PaymentIntents.Retrieve(ctx, id, params)
		return err
	})
	if err != nil {
		return nil, mapError(err, "payment "+id)
	}
	return pi, nil
}

// stripeScale is how many of Stripe's API units make one minor unit of
// currency as Mandate counts it (ISO 4217 exponents, money.go), for the
// currencies where the two differ. Stripe keeps ISK two-decimal in its API
// for backwards compatibility (an ISK amount of 100 is 1 króna), though ISO
// gives the króna no minor unit: sent as it is, a refund Mandate decided,
// recorded and counted as 5000 ISK would refund 50. Every other currency
// Mandate knows has the same exponent in both.
var stripeScale = map[string]int64{"ISK": 100}

// toStripe is m as an amount in Stripe's API.
func toStripe(m mandate.Money) (int64, error) {
	s := stripeScale[m.Currency]
	if s == 0 {
		return m.Minor, nil
	}
	if m.Minor > math.MaxInt64/s {
		return 0, mandate.Errorf(mandate.EINVALID, "%s %s is more than Stripe can refund", m, m.Currency)
	}
	return m.Minor * s, nil
}

// fromStripe is an amount in Stripe's API, of currency cur, in Mandate's
// minor units. One that is not a whole number of them (what holds it is
// named by what) is refused: Mandate would have to round money.
func fromStripe(amount int64, cur, what string) (int64, error) {
	s := stripeScale[cur]
	if s == 0 {
		return amount, nil
	}
	if amount%s != 0 {
		return 0, mandate.Errorf(mandate.EUNAVAILABLE, "Stripe has %s for %d of its %s units, not a whole number of %s", what, amount, cur, cur)
	}
	return amount / s, nil
}

// CheckRefundable refuses an order Stripe could never refund: one without
// a payment reference.
func (p *Payments) CheckRefundable(o backend.Order) error {
	if o.PaymentRef == "" {
		return mandate.Errorf(mandate.ECONFLICT, "order %s has no payment reference (payment_ref), so Stripe cannot refund it", o.ID)
	}
	return nil
}

var _ backend.RefundChecker = (*Payments)(nil)

// Facts returns o with its total, refunded amount and currency as Stripe
// has them: what was received on its PaymentIntent and what its charge has
// refunded. An order without a payment reference is returned as it is.
func (p *Payments) Facts(ctx context.Context, o backend.Order) (backend.Order, error) {
	if o.PaymentRef == "" {
		return o, nil
	}
	pi, err := p.paymentIntent(ctx, o.PaymentRef)
	if err != nil {
		return backend.Order{}, err
	}
	cur := strings.ToUpper(string(pi.Currency))
	if _, ok := mandate.CurrencyExponent(cur); !ok {
		return backend.Order{}, mandate.Errorf(mandate.EUNAVAILABLE, "Stripe has payment %s in unknown currency %q", pi.ID, pi.Currency)
	}
	var refunded int64
	if pi.LatestCharge != nil {
		refunded = pi.LatestCharge.AmountRefunded
	}
	total, err := fromStripe(pi.AmountReceived, cur, "payment "+pi.ID)
	if err != nil {
		return backend.Order{}, err
	}
	if refunded, err = fromStripe(refunded, cur, "payment "+pi.ID+"'s refunds"); err != nil {
		return backend.Order{}, err
	}
	o.Total = mandate.Money{Minor: total, Currency: cur}
	o.Refunded = mandate.Money{Minor: min(refunded, total), Currency: cur}
	return o, nil
}

// CheckOrder reads an order's payment, for `mandate backend check`.
func (p *Payments) CheckOrder(ctx context.Context, orderID string) (string, error) {
	o, err := p.orders.Order(ctx, orderID)
	if err != nil {
		return "order " + orderID, err
	}
	if o.PaymentRef == "" {
		return "order " + orderID, mandate.Errorf(mandate.ECONFLICT, "order %s has no payment_ref", orderID)
	}
	f, err := p.Facts(ctx, o)
	if err != nil {
		return "payment " + o.PaymentRef, err
	}
	return fmt.Sprintf("payment %s (%s %s received, %s refunded; API %s)", o.PaymentRef, f.Total, f.Total.Currency, f.Refunded, APIVersion), nil
}

// Orders is an orders backend whose orders carry Stripe's money facts, so
// the rules test what the money system says.
type Orders struct {
	backend.Orders
	Payments *Payments
}

// Order reads the order, then its money from Stripe.
func (o Orders) Order(ctx context.Context, id string) (backend.Order, error) {
	ord, err := o.Orders.Order(ctx, id)
	if err != nil {
		return ord, err
	}
	return o.Payments.Facts(ctx, ord)
}

// retry runs call, trying again while Stripe says a retry is safe and the
// context allows, with doubling waits. Every call it wraps is safe to
// repeat: reads, and refunds with their idempotency key, which stays the
// same across attempts.
func (p *Payments) retry(ctx context.Context, call func(context.Context) error) error {
	wait := p.cfg.Backoff
	for attempt := 0; ; attempt++ {
		tap := &tapped{}
		actx, cancel := context.WithTimeout(context.WithValue(ctx, tapKey{}, tap), p.cfg.Timeout)
		err := call(actx)
		cancel()
		if err == nil || attempt >= p.cfg.Retries || ctx.Err() != nil || !retryable(err, tap) {
			return err
		}
		if tap.retryAfter > wait && tap.retryAfter <= 30*time.Second {
			wait = tap.retryAfter
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait *= 2
	}
}

// retryable: a 409 is always retried (below); else Stripe-Should-Retry
// decides when present; else 429, 5xx and network failures are retried,
// other API errors are final.
func retryable(err error, tap *tapped) bool {
	if inProgress(err) {
		return true
	}
	switch tap.shouldRetry {
	case "true":
		return true
	case "false":
		return false
	}
	var se *stripego.Error
	if errors.As(err, &se) {
		return se.HTTPStatusCode == http.StatusTooManyRequests || se.HTTPStatusCode >= 500
	}
	return !errors.Is(err, context.Canceled)
}

type tapKey struct{}

// tapped is what headerTap saw of the last response of one attempt.
type tapped struct {
	shouldRetry string
	retryAfter  time.Duration
}

// headerTap records the Stripe-Should-Retry and Retry-After headers, which
// stripe-go does not keep on its errors.
type headerTap struct{ next http.RoundTripper }

func (h *headerTap) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := h.next.RoundTrip(req)
	if err == nil && resp.StatusCode >= 300 && resp.StatusCode < 400 {
		// Neither followed (the client never sees it) nor an answer:
		// stripe-go would decode a redirect's body as one (anything below
		// 400 is a success to it), and an empty list would read as "no
		// refund".
		resp.Body.Close()
		return nil, fmt.Errorf("the Stripe API answered HTTP %d, a redirect, which Mandate does not follow", resp.StatusCode)
	}
	if t, ok := req.Context().Value(tapKey{}).(*tapped); ok && resp != nil {
		t.shouldRetry = resp.Header.Get("Stripe-Should-Retry")
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
			t.retryAfter = time.Duration(s) * time.Second
		}
	}
	return resp, err
}

// inProgress reports Stripe's 409: another request with the same
// idempotency key is still being carried out (idempotency_error), or a lock
// on the object was not had in time (lock_timeout). Either way the request
// is undecided, not refused, and repeating it with the same key is safe: it
// returns the first request's refund once that is done.
func inProgress(err error) bool {
	var se *stripego.Error
	return errors.As(err, &se) && se.HTTPStatusCode == http.StatusConflict
}

// mapError turns a Stripe failure into a mandate error whose code says
// what happened to the money.
func mapError(err error, what string) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		// Stripe may have acted: unavailable makes the guard reconcile.
		return fmt.Errorf("%w: %w", mandate.Errorf(mandate.EUNAVAILABLE, "Stripe did not answer in time (%s)", what), err)
	}
	var se *stripego.Error
	if !errors.As(err, &se) {
		return fmt.Errorf("%w: %w", mandate.Errorf(mandate.EUNAVAILABLE, "Stripe cannot be reached (%s)", what), err)
	}
	msg := se.Msg
	if msg == "" {
		msg = string(se.Code)
	}
	switch {
	case se.HTTPStatusCode == http.StatusUnauthorized || se.HTTPStatusCode == http.StatusForbidden:
		return fmt.Errorf("%w: %w", mandate.Errorf(mandate.EUNAVAILABLE,
			"Stripe refused Mandate's API key (HTTP %d); check secret_key_env or secret_key_file in the backend file", se.HTTPStatusCode), backend.ErrUnauthorized)
	case se.HTTPStatusCode == http.StatusTooManyRequests || se.HTTPStatusCode >= 500:
		return fmt.Errorf("%w: %w", mandate.Errorf(mandate.EUNAVAILABLE, "Stripe is unavailable (HTTP %d, %s)", se.HTTPStatusCode, what), err)
	case inProgress(err) || se.Type == stripego.ErrorTypeIdempotency:
		// Not a refusal of the refund: a request with this key may still
		// make it (a 409 after the retries ran out), or one already did (the
		// key's first request differs). Unavailable makes the guard leave
		// the action for reconciliation instead of recording that nothing
		// moved.
		return fmt.Errorf("%w: %w", mandate.Errorf(mandate.EUNAVAILABLE,
			"Stripe could not say what became of the request with this idempotency key (HTTP %d, %s): %s", se.HTTPStatusCode, what, msg), err)
	case se.Type == stripego.ErrorTypeCard || se.HTTPStatusCode == http.StatusPaymentRequired:
		return mandate.Errorf(mandate.ECONFLICT, "the card or bank refused the %s: %s", what, msg)
	case se.HTTPStatusCode == http.StatusNotFound || se.Code == stripego.ErrorCodeResourceMissing:
		return mandate.Errorf(mandate.ENOTFOUND, "Stripe: %s", msg)
	}
	// Already refunded, amount too large, a disputed charge, a reused key:
	// Stripe refuses in its current state, and says why.
	return mandate.Errorf(mandate.ECONFLICT, "Stripe refused the %s: %s", what, msg)
}
