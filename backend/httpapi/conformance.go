package httpapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
)

// CheckResult is the outcome of one contract check. Err is nil when it
// passed; Skipped says why it did not run.
type CheckResult struct {
	Name    string
	Detail  string
	Err     error
	Skipped string
}

// Conformance runs the contract checks against a service, for
// implementers: `mandate backend check --conformance`. Read-only checks
// need nothing; with OrderID they also read that order and its customer;
// Writes adds idempotency checks that refund 0.01 on OrderID, cancel it and
// rewrite its customer's name with the same value, so name a test order.
type Conformance struct {
	BaseURL string
	Token   string
	HTTP    *http.Client
	OrderID string
	Writes  bool
}

// wire is one raw exchange.
type wire struct {
	status int
	ctype  string
	body   []byte
	header http.Header
}

func (c *Conformance) send(ctx context.Context, method, path, token, key string, body any) (wire, error) {
	notAfter := time.Time{}
	if key != "" {
		notAfter = time.Now().Add(time.Minute) // as Mandate sends every change, with room for skew
	}
	return c.sendBy(ctx, method, path, token, key, notAfter, body)
}

// sendBy is send with the change's Mandate-Not-After deadline.
func (c *Conformance) sendBy(ctx context.Context, method, path, token, key string, notAfter time.Time, body any) (wire, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, rd)
	if err != nil {
		return wire{}, err
	}
	req.Header.Set("Accept", "application/json, application/problem+json")
	req.Header.Set(HeaderContract, ContractVersion)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if key != "" {
		req.Header.Set(HeaderIdempotencyKey, key)
	}
	if !notAfter.IsZero() {
		req.Header.Set(HeaderNotAfter, notAfter.UTC().Format(time.RFC3339Nano))
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return wire{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return wire{status: resp.StatusCode, ctype: ct, body: b, header: resp.Header}, err
}

// expectProblem checks an answer is problem+json with the status and code.
func expectProblem(w wire, status int, code string) error {
	if w.status != status {
		return fmt.Errorf("status %d, want %d", w.status, status)
	}
	if w.ctype != "application/problem+json" {
		return fmt.Errorf("Content-Type %q, want application/problem+json", w.ctype)
	}
	var p Problem
	if err := json.Unmarshal(w.body, &p); err != nil {
		return fmt.Errorf("body is not a problem object: %v", err)
	}
	if p.Code != code || p.Status != status || p.Title == "" {
		return fmt.Errorf("problem has code %q status %d title %q; want code %q, status %d and a title", p.Code, p.Status, p.Title, code, status)
	}
	return nil
}

// expectJSON checks a 2xx JSON answer and decodes it strictly.
func expectJSON(w wire, v any) error {
	if w.status < 200 || w.status > 299 {
		return fmt.Errorf("status %d, want 2xx: %.200s", w.status, w.body)
	}
	if w.ctype != "application/json" {
		return fmt.Errorf("Content-Type %q, want application/json", w.ctype)
	}
	dec := json.NewDecoder(bytes.NewReader(w.body))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("body does not match the schema: %v", err)
	}
	return nil
}

func conformanceKey() string {
	var b [8]byte
	rand.Read(b[:])
	return "mandate-conformance-" + hex.EncodeToString(b[:])
}

// Run runs every check in order and returns each outcome.
func (c *Conformance) Run(ctx context.Context) []CheckResult {
	var out []CheckResult
	check := func(name, detail string, f func() error) {
		out = append(out, CheckResult{Name: name, Detail: detail, Err: f()})
	}
	skip := func(name, why string) { out = append(out, CheckResult{Name: name, Skipped: why}) }
	missing := "/orders/" + conformanceKey()

	if c.Token == "" {
		skip("auth-required", "no token configured; the contract requires bearer authentication")
		skip("auth-wrong-token", "no token configured")
	} else {
		check("auth-required", "a request without a token is refused with 401", func() error {
			w, err := c.send(ctx, http.MethodGet, missing, "", "", nil)
			if err != nil {
				return err
			}
			return expectProblem(w, http.StatusUnauthorized, CodeUnauthorized)
		})
		check("auth-wrong-token", "a request with a wrong token is refused with 401", func() error {
			w, err := c.send(ctx, http.MethodGet, missing, c.Token+"-wrong", "", nil)
			if err != nil {
				return err
			}
			return expectProblem(w, http.StatusUnauthorized, CodeUnauthorized)
		})
	}
	for _, nf := range []struct{ name, path string }{
		{"order-not-found", missing},
		{"customer-not-found", "/customers/" + conformanceKey()},
		{"operation-not-found", "/operations/" + conformanceKey()},
	} {
		check(nf.name, "GET /"+strings.SplitN(nf.path, "/", 3)[1]+"/{unknown} is a 404 not_found problem", func() error {
			w, err := c.send(ctx, http.MethodGet, nf.path, c.Token, "", nil)
			if err != nil {
				return err
			}
			return expectProblem(w, http.StatusNotFound, mandate.ENOTFOUND)
		})
	}
	check("customers-by-email-none", "GET /customers?email= for an unknown address is 200 with no customers", func() error {
		w, err := c.send(ctx, http.MethodGet, "/customers?email="+url.QueryEscape(conformanceKey()+"@example.invalid"), c.Token, "", nil)
		if err != nil {
			return err
		}
		var list CustomerList
		if err := expectJSON(w, &list); err != nil {
			return err
		}
		if list.Customers == nil || len(list.Customers) != 0 {
			return fmt.Errorf("customers = %v, want []", list.Customers)
		}
		return nil
	})
	check("change-needs-key", "POST /orders/{id}/refunds without Idempotency-Key is an invalid problem", func() error {
		w, err := c.send(ctx, http.MethodPost, missing+"/refunds", c.Token, "", RefundRequest{Amount: "0.01", Currency: "USD", Reason: "conformance"})
		if err != nil {
			return err
		}
		if w.status == http.StatusBadRequest {
			return expectProblem(w, http.StatusBadRequest, mandate.EINVALID)
		}
		return expectProblem(w, http.StatusUnprocessableEntity, mandate.EINVALID)
	})

	if c.OrderID == "" {
		skip("order-shape", "no --order given")
		return out
	}
	var order backend.Order
	var customer backend.Customer
	check("order-shape", "GET /orders/"+c.OrderID+" has the Order schema, money as decimal strings", func() error {
		var err error
		order, err = c.readOrder(ctx)
		return err
	})
	if order.ID == "" {
		return out
	}
	check("customer-shape", "GET /customers/"+order.CustomerID+" has the Customer schema", func() error {
		w, err := c.send(ctx, http.MethodGet, "/customers/"+url.PathEscape(order.CustomerID), c.Token, "", nil)
		if err != nil {
			return err
		}
		var cu Customer
		if err := expectJSON(w, &cu); err != nil {
			return err
		}
		if cu.ID != order.CustomerID || cu.Email == "" || cu.CreatedAt.IsZero() {
			return fmt.Errorf("customer %q lacks id, email or created_at", cu.ID)
		}
		customer, err = cu.ToCustomer()
		return err
	})
	if customer.ID != "" {
		check("customers-by-email", "GET /customers?email= finds the order's customer, ignoring case", func() error {
			w, err := c.send(ctx, http.MethodGet, "/customers?email="+url.QueryEscape(strings.ToUpper(customer.Email)), c.Token, "", nil)
			if err != nil {
				return err
			}
			var list CustomerList
			if err := expectJSON(w, &list); err != nil {
				return err
			}
			if len(list.Customers) != 1 || list.Customers[0].ID != customer.ID {
				return fmt.Errorf("found %d customers, want exactly %s", len(list.Customers), customer.ID)
			}
			return nil
		})
	}
	if !c.Writes {
		skip("refund-idempotent", "read-only; add --writes to check idempotency on the order")
		return out
	}
	c.writeChecks(ctx, order, customer, check, skip)
	return out
}

func (c *Conformance) readOrder(ctx context.Context) (backend.Order, error) {
	w, err := c.send(ctx, http.MethodGet, "/orders/"+url.PathEscape(c.OrderID), c.Token, "", nil)
	if err != nil {
		return backend.Order{}, err
	}
	var o Order
	if err := expectJSON(w, &o); err != nil {
		return backend.Order{}, err
	}
	if !slices.Contains(backend.Statuses, o.Status) || o.CreatedAt.IsZero() {
		return backend.Order{}, fmt.Errorf("order status %q or created_at is not in the contract", o.Status)
	}
	return o.ToOrder()
}

// refundOrderMatches checks the optional order a refund of amount reported
// against the order as it was before: the same order, with refunded grown
// by exactly amount and nothing else about its money changed.
func refundOrderMatches(got Order, before backend.Order, amount mandate.Money) error {
	o, err := got.ToOrder()
	if err != nil {
		return fmt.Errorf("the refund's order: %s", mandate.ErrorMessage(err))
	}
	if problem := refundOrderProblem(o, before.ID, amount); problem != "" {
		return fmt.Errorf("the refund's order: %s", problem)
	}
	if o.Total != before.Total || o.Refunded.Minor != before.Refunded.Minor+amount.Minor {
		return fmt.Errorf("the refund's order shows %s refunded of %s %s; before the refund of %s it showed %s of %s, so want %s",
			o.Refunded, o.Total, o.Total.Currency, amount, before.Refunded, before.Total,
			mandate.Money{Minor: before.Refunded.Minor + amount.Minor, Currency: before.Refunded.Currency})
	}
	return nil
}

// lateRefund sends a refund whose deadline passed an hour ago (more than
// any clock skew) under a new key, and checks it is refused as
// deadline_passed with nothing made: a service that ignores the header
// would make it, and could then make a change Mandate's recovery has
// already recorded as not done.
func (c *Conformance) lateRefund(ctx context.Context, path string, body RefundRequest) error {
	before, err := c.readOrder(ctx)
	if err != nil {
		return err
	}
	key := conformanceKey()
	w, err := c.sendBy(ctx, http.MethodPost, path, c.Token, key, time.Now().Add(-time.Hour), body)
	if err != nil {
		return err
	}
	if err := expectProblem(w, http.StatusConflict, CodeDeadlinePassed); err != nil {
		return fmt.Errorf("%w (a service that ignores %s makes changes after Mandate has recorded them not done)", err, HeaderNotAfter)
	}
	after, err := c.readOrder(ctx)
	if err != nil {
		return err
	}
	if after.Refunded != before.Refunded {
		return fmt.Errorf("refused, yet refunded went from %s to %s", before.Refunded, after.Refunded)
	}
	w, err = c.send(ctx, http.MethodGet, "/operations/"+url.PathEscape(key), c.Token, "", nil)
	if err != nil {
		return err
	}
	if err := expectProblem(w, http.StatusNotFound, mandate.ENOTFOUND); err != nil {
		return fmt.Errorf("GET /operations/{key} of the refused refund: %w", err)
	}
	return nil
}

func (c *Conformance) writeChecks(ctx context.Context, order backend.Order, customer backend.Customer,
	check func(name, detail string, f func() error), skip func(name, why string)) {
	cent := mandate.Money{Minor: 1, Currency: order.Total.Currency} // the smallest amount there is
	key := conformanceKey()
	path := "/orders/" + url.PathEscape(order.ID) + "/refunds"
	body := RefundRequest{Amount: cent.String(), Currency: cent.Currency, Reason: "mandate conformance check"}
	if order.Refundable().Minor < 2*cent.Minor {
		skip("refund-idempotent", "the order has nothing left to refund")
	} else {
		var first Refund
		check("refund-idempotent", "the same refund twice with one key refunds once and returns the same refund", func() error {
			for i := range 2 {
				w, err := c.send(ctx, http.MethodPost, path, c.Token, key, body)
				if err != nil {
					return err
				}
				var r Refund
				if err := expectJSON(w, &r); err != nil {
					return fmt.Errorf("attempt %d: %w", i+1, err)
				}
				if i == 0 {
					first = r
				} else if r.ID != first.ID {
					return fmt.Errorf("the repeat made refund %s after %s", r.ID, first.ID)
				}
			}
			after, err := c.readOrder(ctx)
			if err != nil {
				return err
			}
			if got := after.Refunded.Minor - order.Refunded.Minor; got != cent.Minor {
				return fmt.Errorf("refunded grew by %d minor units, want %d", got, cent.Minor)
			}
			return nil
		})
		switch {
		case first.ID == "":
			skip("refund-order", "no refund was made")
		case first.Order == nil:
			skip("refund-order", "the service does not report the order with a refund (optional)")
		default:
			check("refund-order", "the order a refund reports is the refunded order, with the refund added", func() error {
				return refundOrderMatches(*first.Order, order, cent)
			})
		}
		check("refund-key-conflict", "the same key with another amount is a 409 conflict", func() error {
			other := body
			other.Amount = mandate.Money{Minor: 2 * cent.Minor, Currency: cent.Currency}.String()
			w, err := c.send(ctx, http.MethodPost, path, c.Token, key, other)
			if err != nil {
				return err
			}
			return expectProblem(w, http.StatusConflict, mandate.ECONFLICT)
		})
		check("refund-late-repeat", "the same refund again with its key, past its deadline, returns the refund made", func() error {
			w, err := c.sendBy(ctx, http.MethodPost, path, c.Token, key, time.Now().Add(-time.Hour), body)
			if err != nil {
				return err
			}
			var r Refund
			if err := expectJSON(w, &r); err != nil {
				return err
			}
			if r.ID != first.ID {
				return fmt.Errorf("the late repeat answered refund %q, want %s", r.ID, first.ID)
			}
			return nil
		})
		check("refund-deadline", "a refund past its "+HeaderNotAfter+" is a 409 deadline_passed and changes nothing", func() error {
			return c.lateRefund(ctx, path, body)
		})
		check("operation-refund", "GET /operations/{key} returns the refund made with it", func() error {
			w, err := c.send(ctx, http.MethodGet, "/operations/"+url.PathEscape(key), c.Token, "", nil)
			if err != nil {
				return err
			}
			var op Operation
			if err := expectJSON(w, &op); err != nil {
				return err
			}
			if op.Kind != KindRefund || op.Refund == nil || op.Refund.ID != first.ID {
				return fmt.Errorf("operation kind %q, refund %v; want refund %s", op.Kind, op.Refund, first.ID)
			}
			return nil
		})
	}
	if customer.ID != "" {
		ukey := conformanceKey()
		check("update-idempotent", "PATCH /customers/{id} twice with one key answers the same; another body is a conflict", func() error {
			patch := CustomerPatch{backend.FieldName: customer.Name}
			for i := range 2 {
				w, err := c.send(ctx, http.MethodPatch, "/customers/"+url.PathEscape(customer.ID), c.Token, ukey, patch)
				if err != nil {
					return err
				}
				var cu Customer
				if err := expectJSON(w, &cu); err != nil {
					return fmt.Errorf("attempt %d: %w", i+1, err)
				}
			}
			w, err := c.send(ctx, http.MethodPatch, "/customers/"+url.PathEscape(customer.ID), c.Token, ukey, CustomerPatch{backend.FieldName: customer.Name + " (changed)"})
			if err != nil {
				return err
			}
			return expectProblem(w, http.StatusConflict, mandate.ECONFLICT)
		})
		c.preconditionCheck(ctx, customer, check, skip)
	}
	if order.Status != backend.StatusPending && order.Status != backend.StatusProcessing {
		skip("cancel-idempotent", "the order is "+order.Status+", not cancellable")
		return
	}
	ckey := conformanceKey()
	check("cancel-idempotent", "the same cancel twice with one key answers the same; a new key on the cancelled order is a conflict", func() error {
		for i := range 2 {
			w, err := c.send(ctx, http.MethodPost, "/orders/"+url.PathEscape(order.ID)+"/cancel", c.Token, ckey, CancelRequest{Reason: "mandate conformance check"})
			if err != nil {
				return err
			}
			var o Order
			if err := expectJSON(w, &o); err != nil {
				return fmt.Errorf("attempt %d: %w", i+1, err)
			}
			if o.Status != backend.StatusCancelled {
				return fmt.Errorf("attempt %d: status %q, want cancelled", i+1, o.Status)
			}
		}
		w, err := c.send(ctx, http.MethodPost, "/orders/"+url.PathEscape(order.ID)+"/cancel", c.Token, conformanceKey(), CancelRequest{Reason: "again"})
		if err != nil {
			return err
		}
		return expectProblem(w, http.StatusConflict, mandate.ECONFLICT)
	})
}

// preconditionCheck checks, on a service that says it checks a PATCH's
// "expected" (HeaderPreconditions), that a stale one is a 409 of type
// ProblemChangedSince. The PATCH sets the name it already has, so a
// service that ignores "expected" changes nothing visible either.
func (c *Conformance) preconditionCheck(ctx context.Context, customer backend.Customer,
	check func(name, detail string, f func() error), skip func(name, why string)) {
	path := "/customers/" + url.PathEscape(customer.ID)
	w, err := c.send(ctx, http.MethodGet, path, c.Token, "", nil)
	if err == nil && !ChecksExpected(w.header) {
		skip("update-precondition", "GET /customers/{id} has no "+HeaderPreconditions+": "+PreconditionExpected+" header: remediation sends this service no reverts")
		return
	}
	check("update-precondition", "PATCH /customers/{id} with a stale \"expected\" is a 409 changed_since problem", func() error {
		if err != nil {
			return err
		}
		w, err := c.send(ctx, http.MethodPatch, path, c.Token, conformanceKey(),
			CustomerPatch{backend.FieldName: customer.Name, PatchExpected: customer.Name + " (not the name)"})
		if err != nil {
			return err
		}
		if err := expectProblem(w, http.StatusConflict, mandate.ECONFLICT); err != nil {
			return err
		}
		var p Problem
		if json.Unmarshal(w.body, &p); p.Type != ProblemChangedSince {
			return fmt.Errorf("problem type %q, want %q", p.Type, ProblemChangedSince)
		}
		return nil
	})
}
