package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
)

// The client satisfies every backend interface, so a deployment can point
// any capability at a service implementing the contract.
var (
	_ backend.Payments  = (*Client)(nil)
	_ backend.Orders    = (*Client)(nil)
	_ backend.Customers = (*Client)(nil)
)

// maxBody bounds what the client reads from a response.
const maxBody = 1 << 20

// Client calls a service that implements the contract.
type Client struct {
	// BaseURL is the service's root, e.g. "https://orders.internal/mandate";
	// the contract's paths are appended to it.
	BaseURL string
	// Token is sent as "Authorization: Bearer Token" when not empty.
	Token string
	// HTTP is the client used; nil means http.DefaultClient. mTLS is
	// configured on its transport.
	HTTP *http.Client
	// Timeout bounds each attempt; zero means 10 seconds. The caller's
	// context bounds the whole call, retries included.
	Timeout time.Duration
	// Retries is how many times a call that is safe to repeat (a GET, or a
	// change carrying its idempotency key) is tried again after a transport
	// failure, a 429 or a 5xx; negative means none.
	Retries int
	// Name names the service in errors ("the orders service").
	Name string
}

// Order implements backend.Orders.
func (c *Client) Order(ctx context.Context, id string) (backend.Order, error) {
	var o Order
	if err := c.do(ctx, http.MethodGet, "/orders/"+url.PathEscape(id), "", nil, &o); err != nil {
		return backend.Order{}, err
	}
	return orderNamed(o, id, "GET /orders/"+url.PathEscape(id))
}

// orderNamed converts o, which the service answered for order id: an
// answer about another order is outside the contract (decided on, its
// facts would be another customer's).
func orderNamed(o Order, id, what string) (backend.Order, error) {
	if o.ID != id {
		return backend.Order{}, badAnswer("%s answered order %q", what, mandate.TruncateBytes(o.ID, 100))
	}
	return o.ToOrder()
}

// customerNamed is orderNamed for a customer.
func customerNamed(cu Customer, id, what string) (backend.Customer, error) {
	if cu.ID != id {
		return backend.Customer{}, badAnswer("%s answered customer %q", what, mandate.TruncateBytes(cu.ID, 100))
	}
	return cu.ToCustomer()
}

// CancelOrder implements backend.Orders.
func (c *Client) CancelOrder(ctx context.Context, req backend.CancelRequest) (backend.Order, error) {
	if err := needKey(req.IdempotencyKey); err != nil {
		return backend.Order{}, err
	}
	var o Order
	if err := c.do(ctx, http.MethodPost, "/orders/"+url.PathEscape(req.OrderID)+"/cancel", req.IdempotencyKey,
		CancelRequest{Reason: req.Reason}, &o); err != nil {
		return backend.Order{}, err
	}
	out, err := orderNamed(o, req.OrderID, "POST /orders/"+url.PathEscape(req.OrderID)+"/cancel")
	if err == nil && out.Status != backend.StatusCancelled {
		// Not "done": whether it was cancelled is not known.
		return backend.Order{}, badAnswer("POST /orders/%s/cancel answered the order with status %q, not cancelled", url.PathEscape(req.OrderID), mandate.TruncateBytes(out.Status, 40))
	}
	return out, err
}

// CancellationByKey implements backend.Orders.
func (c *Client) CancellationByKey(ctx context.Context, key string) (backend.Order, error) {
	op, err := c.operation(ctx, key, KindCancel)
	if err != nil {
		return backend.Order{}, err
	}
	if op.Order == nil {
		return backend.Order{}, badAnswer("operation %q of kind cancel has no order", key)
	}
	return op.Order.ToOrder()
}

// Customer implements backend.Customers.
func (c *Client) Customer(ctx context.Context, id string) (backend.Customer, error) {
	var cu Customer
	if err := c.do(ctx, http.MethodGet, "/customers/"+url.PathEscape(id), "", nil, &cu); err != nil {
		return backend.Customer{}, err
	}
	return customerNamed(cu, id, "GET /customers/"+url.PathEscape(id))
}

// CustomerByEmail implements backend.Customers.
func (c *Client) CustomerByEmail(ctx context.Context, email string) (backend.Customer, error) {
	var list CustomerList
	if err := c.do(ctx, http.MethodGet, "/customers?email="+url.QueryEscape(strings.TrimSpace(email)), "", nil, &list); err != nil {
		return backend.Customer{}, err
	}
	switch len(list.Customers) {
	case 0:
		// The message does not repeat the address: it is personal data.
		return backend.Customer{}, mandate.Errorf(mandate.ENOTFOUND, "no customer with that email")
	case 1:
		return list.Customers[0].ToCustomer()
	}
	return backend.Customer{}, badAnswer("%d customers share one email", len(list.Customers))
}

// UpdateCustomer implements backend.Customers.
func (c *Client) UpdateCustomer(ctx context.Context, req backend.UpdateRequest) (backend.Customer, error) {
	if err := needKey(req.IdempotencyKey); err != nil {
		return backend.Customer{}, err
	}
	body := CustomerPatch{req.Field: req.Value}
	if req.Expected != "" {
		if err := c.checksExpected(ctx, req.CustomerID); err != nil {
			return backend.Customer{}, err
		}
		body[PatchExpected] = req.Expected
	}
	var cu Customer
	if err := c.do(ctx, http.MethodPatch, "/customers/"+url.PathEscape(req.CustomerID), req.IdempotencyKey,
		body, &cu); err != nil {
		return backend.Customer{}, err
	}
	return customerNamed(cu, req.CustomerID, "PATCH /customers/"+url.PathEscape(req.CustomerID))
}

// checksExpected asks the service, by reading the customer, whether it
// says it checks a PATCH's precondition (HeaderPreconditions), and refuses
// the change, unsent, when it does not: a service of the contract without
// preconditions might set the field and ignore the rest, overwriting the
// value the precondition protects. The refusal is a conflict, which says
// nothing was done, so the action fails cleanly rather than waiting for
// reconciliation. It is asked before every such change, not remembered,
// so a service rolled back to an older version is not trusted on the
// word of the newer one.
func (c *Client) checksExpected(ctx context.Context, id string) error {
	var cu Customer
	h, err := c.doHeader(ctx, http.MethodGet, "/customers/"+url.PathEscape(id), "", nil, &cu)
	if err != nil {
		return err
	}
	if ChecksExpected(h) {
		return nil
	}
	return mandate.Errorf(mandate.ECONFLICT, "%s does not say it checks a change's expected value (its GET /customers/{id} has no %s: %s header), so a change that must not overwrite a newer value was not sent",
		c.name(), HeaderPreconditions, PreconditionExpected)
}

// UpdateByKey implements backend.Customers.
func (c *Client) UpdateByKey(ctx context.Context, key string) (backend.Customer, error) {
	op, err := c.operation(ctx, key, KindCustomerUpdate)
	if err != nil {
		return backend.Customer{}, err
	}
	if op.Customer == nil {
		return backend.Customer{}, badAnswer("operation %q of kind customer_update has no customer", key)
	}
	return op.Customer.ToCustomer()
}

// Refund implements backend.Payments.
func (c *Client) Refund(ctx context.Context, req backend.RefundRequest) (backend.Refund, error) {
	if err := needKey(req.IdempotencyKey); err != nil {
		return backend.Refund{}, err
	}
	var r Refund
	if err := c.do(ctx, http.MethodPost, "/orders/"+url.PathEscape(req.OrderID)+"/refunds", req.IdempotencyKey,
		RefundRequest{Amount: req.Amount.String(), Currency: req.Amount.Currency, Reason: req.Reason}, &r); err != nil {
		return backend.Refund{}, err
	}
	out, err := r.ToRefund()
	if err != nil {
		return out, err
	}
	if out.OrderID != req.OrderID || out.Amount != req.Amount {
		return backend.Refund{}, badAnswer("refund %s is of %s %s on %s, not what was asked", out.ID, out.Amount, out.Amount.Currency, out.OrderID)
	}
	return out, nil
}

// RefundByKey implements backend.Payments.
func (c *Client) RefundByKey(ctx context.Context, key string) (backend.Refund, error) {
	op, err := c.operation(ctx, key, KindRefund)
	if err != nil {
		return backend.Refund{}, err
	}
	if op.Refund == nil {
		return backend.Refund{}, badAnswer("operation %q of kind refund has no refund", key)
	}
	r, err := op.Refund.ToRefund()
	r.Order = nil // a lookup later is not the refund's transaction: the order may have changed since
	return r, err
}

// operation reads GET /operations/{key}. Only the contract's 404 says
// nothing was done with key (not_found, from do): recovery believes it,
// records the action failed and gives its limits back. A 200 that does not
// name this key and this kind of change is outside the contract, so
// whether anything was done is not known: unavailable, and the action stays
// executing for a person or a later pass. (Mandate never spends one action
// id on two kinds of change, so another kind is no answer either.)
func (c *Client) operation(ctx context.Context, key, kind string) (Operation, error) {
	if err := needKey(key); err != nil {
		return Operation{}, err
	}
	var op Operation
	if err := c.do(ctx, http.MethodGet, "/operations/"+url.PathEscape(key), "", nil, &op); mandate.ErrorCode(err) == mandate.ECONFLICT {
		// The contract's answer while a change with key is still being
		// made: whether it happens is not known yet. Unavailable, never
		// not_found, so the caller asks again later.
		return Operation{}, fmt.Errorf("%w: %w", mandate.Errorf(mandate.EUNAVAILABLE,
			"%s is still carrying out a change with idempotency key %q", c.name(), key), err)
	} else if err != nil {
		return Operation{}, err
	}
	if op.Kind != kind || op.IdempotencyKey != key {
		return Operation{}, badAnswer("GET /operations/%s answered kind %q and idempotency_key %q, not a %s with that key (a 404 says nothing was done)",
			url.PathEscape(key), op.Kind, op.IdempotencyKey, strings.ReplaceAll(kind, "_", " "))
	}
	return op, nil
}

func needKey(key string) error {
	if strings.TrimSpace(key) == "" {
		return mandate.Errorf(mandate.EINVALID, "an idempotency key is required")
	}
	return nil
}

func (c *Client) name() string {
	if c.Name != "" {
		return c.Name
	}
	return "the backend service"
}

// do sends one contract call and decodes a 2xx answer into out. Every call
// this client makes is safe to repeat: reads by nature, changes because
// they carry their idempotency key, which the contract requires the service
// to honour. So transport failures, 429 and 5xx are retried, with backoff,
// within the caller's deadline.
func (c *Client) do(ctx context.Context, method, path, key string, in, out any) error {
	_, err := c.doHeader(ctx, method, path, key, in, out)
	return err
}

// doHeader is do that also returns the headers of the answer that ended it.
func (c *Client) doHeader(ctx context.Context, method, path, key string, in, out any) (http.Header, error) {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return nil, err
		}
	}
	retries := c.Retries
	if retries < 0 {
		retries = 0
	}
	var err error
	for attempt := 0; ; attempt++ {
		var retry bool
		var wait time.Duration
		var h http.Header
		retry, wait, h, err = c.once(ctx, method, path, key, body, out)
		if !retry || attempt >= retries || ctx.Err() != nil {
			return h, err
		}
		if wait <= 0 {
			wait = time.Duration(100<<attempt) * time.Millisecond
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}

// once makes one attempt; it reports whether a retry may help and how long
// the service asked to wait (Retry-After).
func (c *Client) once(ctx context.Context, method, path, key string, body []byte, out any) (bool, time.Duration, http.Header, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	// limit is what ends this attempt: the client's timeout or, when
	// sooner, the caller's deadline (--backend-timeout), named in errors.
	limit := timeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < limit {
		limit = max(time.Until(dl), 0)
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, method, strings.TrimRight(c.BaseURL, "/")+path, bytes.NewReader(body))
	if err != nil {
		return false, 0, nil, mandate.Errorf(mandate.EUNAVAILABLE, "%s: bad request URL", c.name())
	}
	req.Header.Set("Accept", "application/json, application/problem+json")
	req.Header.Set(HeaderContract, ContractVersion)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set(HeaderIdempotencyKey, key)
		// The change's deadline is this attempt's: no later than the
		// caller's (execute's budget from when the action was recorded as
		// executing), so every request an action sends is past its
		// deadline once recovery may ask about it (tools.Recover).
		dl, _ := actx.Deadline()
		req.Header.Set(HeaderNotAfter, dl.UTC().Format(time.RFC3339Nano))
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	once := *hc // same transport and its connections
	once.CheckRedirect = mandate.RefuseRedirects
	resp, err := once.Do(req)
	if err != nil {
		// The request may or may not have reached the service: unavailable,
		// which makes the guard ask by idempotency key rather than guess.
		if errors.Is(err, context.DeadlineExceeded) {
			return true, 0, nil, fmt.Errorf("%w: %w", mandate.Errorf(mandate.EUNAVAILABLE, "%s did not answer within %s", c.name(), roundLimit(limit)), err)
		}
		return true, 0, nil, fmt.Errorf("%w: %w", mandate.Errorf(mandate.EUNAVAILABLE, "%s cannot be reached", c.name()), err)
	}
	defer resp.Body.Close()
	buf, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return true, 0, nil, fmt.Errorf("%w: %w", mandate.Errorf(mandate.EUNAVAILABLE, "%s broke off its answer", c.name()), err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if err := json.Unmarshal(buf, out); err != nil {
			return false, 0, resp.Header, badAnswer("%s %s: the body is not the expected JSON", method, pathOnly(path))
		}
		return false, 0, resp.Header, nil
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		// Not followed (mandate.RefuseRedirects): not done by this request.
		return false, 0, resp.Header, mandate.Errorf(mandate.EUNAVAILABLE, "%s answered HTTP %d, a redirect to %q, which Mandate does not follow: put the URL it should use in the backend file",
			c.name(), resp.StatusCode, mandate.TruncateBytes(resp.Header.Get("Location"), 200))
	}
	perr := c.problem(resp, buf)
	retry := resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500
	var wait time.Duration
	if s, err := time.ParseDuration(resp.Header.Get("Retry-After") + "s"); err == nil && s <= 30*time.Second {
		wait = s
	}
	return retry, wait, resp.Header, perr
}

// problem turns an error response into a mandate error: the problem's code
// when it is one the contract defines and agrees with the status, else one
// derived from the status. Detail is kept as the message: the contract
// requires it to be safe to show.
func (c *Client) problem(resp *http.Response, buf []byte) error {
	var p Problem
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if ct == "application/problem+json" || ct == "application/json" {
		_ = json.Unmarshal(buf, &p)
	}
	code := CodeForStatus(resp.StatusCode)
	if p.Code != "" && CodeForStatus(StatusForCode(p.Code)) == code {
		code = p.Code
	}
	detail := strings.TrimSpace(p.Detail)
	if detail == "" {
		detail = strings.TrimSpace(p.Title)
	}
	if p.Code == CodeDeadlinePassed && code == mandate.ECONFLICT {
		return fmt.Errorf("%w: %w", mandate.Errorf(mandate.ECONFLICT,
			"%s refused the change: it arrived after its deadline, so nothing was changed", c.name()), backend.ErrDeadlinePassed)
	}
	switch code {
	case CodeUnauthorized:
		return fmt.Errorf("%w: %w", mandate.Errorf(mandate.EUNAVAILABLE,
			"%s refused Mandate's credentials (HTTP %d); check the token configured in the backend file", c.name(), resp.StatusCode), backend.ErrUnauthorized)
	case mandate.EUNAVAILABLE, mandate.EINTERNAL:
		if detail == "" {
			detail = fmt.Sprintf("HTTP %d", resp.StatusCode)
		}
		return mandate.Errorf(mandate.EUNAVAILABLE, "%s failed: %s", c.name(), mandate.TruncateBytes(detail, 300))
	}
	if detail == "" {
		detail = fmt.Sprintf("%s answered HTTP %d", c.name(), resp.StatusCode)
	}
	if code == mandate.ECONFLICT && p.Type == ProblemChangedSince {
		// A precondition that no longer held (CustomerPatch): nothing was
		// changed, and a remediation reports it as changed since.
		return fmt.Errorf("%w: %w", mandate.Errorf(code, "%s", mandate.TruncateBytes(detail, 500)), backend.ErrChangedSince)
	}
	return mandate.Errorf(code, "%s", mandate.TruncateBytes(detail, 500))
}

// CodeForStatus maps an HTTP status to the contract's code.
func CodeForStatus(status int) string {
	switch {
	case status == http.StatusNotFound:
		return mandate.ENOTFOUND
	case status == http.StatusConflict:
		return mandate.ECONFLICT
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return CodeUnauthorized
	case status == http.StatusBadRequest || status == http.StatusUnprocessableEntity:
		return mandate.EINVALID
	}
	return mandate.EUNAVAILABLE
}

// StatusForCode maps a mandate error code (or unauthorized) to the HTTP
// status the contract gives it.
func StatusForCode(code string) int {
	switch code {
	case mandate.ENOTFOUND:
		return http.StatusNotFound
	case mandate.ECONFLICT:
		return http.StatusConflict
	case mandate.EINVALID:
		return http.StatusUnprocessableEntity
	case CodeUnauthorized:
		return http.StatusUnauthorized
	case mandate.EDENIED:
		return http.StatusForbidden
	case mandate.EUNAVAILABLE:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// roundLimit rounds a time limit for people: 2s, not 1.999873s.
func roundLimit(d time.Duration) time.Duration {
	if d >= 100*time.Millisecond {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

func pathOnly(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return p[:i]
	}
	return p
}
