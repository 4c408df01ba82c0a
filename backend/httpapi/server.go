package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
)

// Server serves the contract in front of any backend value. It is the
// reference implementation: `mandate store serve` runs it over the embedded
// store, and the contract checks run against it.
type Server struct {
	Backend backend.Backend
	// Token, when set, is the bearer token every request must carry. It is
	// compared in constant time.
	Token string
	// Logger receives one line per refused or failed request, without
	// personal data; nil discards.
	Logger *slog.Logger
	// Timeout bounds each call to the backend; zero means 10 seconds.
	Timeout time.Duration

	mu       sync.Mutex
	inFlight map[string]int // idempotency keys of the changes being made
}

// Handler returns the contract's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /orders/{id}", s.getOrder)
	mux.HandleFunc("POST /orders/{id}/refunds", s.postRefund)
	mux.HandleFunc("POST /orders/{id}/cancel", s.postCancel)
	mux.HandleFunc("GET /customers/{id}", s.getCustomer)
	mux.HandleFunc("GET /customers", s.findCustomers)
	mux.HandleFunc("PATCH /customers/{id}", s.patchCustomer)
	mux.HandleFunc("GET /operations/{key}", s.getOperation)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, mandate.Errorf(mandate.ENOTFOUND, "no such route: %s %s", r.Method, r.URL.Path))
	})
	return s.auth(mux)
}

// auth refuses a request without the bearer token before anything else
// runs. Both sides are hashed first so the comparison takes the same time
// whatever the token's length. The refusal is logged with the route the mux
// would have chosen: before routing the request has no pattern yet.
func (s *Server) auth(next *http.ServeMux) http.Handler {
	want := sha256.Sum256([]byte(s.Token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.Token != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			sum := sha256.Sum256([]byte(strings.TrimSpace(got)))
			if !ok || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
				_, route := next.Handler(r)
				s.log().Warn("refused a request without a valid bearer token", "method", r.Method, "path", route)
				w.Header().Set("WWW-Authenticate", `Bearer realm="mandate-backend"`)
				writeProblemStatus(w, http.StatusUnauthorized, CodeUnauthorized, "a valid bearer token is required")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// ctx bounds one backend call; the request's own context ends it early if
// the client goes away before a read. Changes run to their end regardless,
// so a client timing out cannot leave a change half made.
func (s *Server) ctx(r *http.Request, change bool) (context.Context, context.CancelFunc) {
	t := s.Timeout
	if t <= 0 {
		t = 10 * time.Second
	}
	ctx := r.Context()
	if change {
		ctx = context.WithoutCancel(ctx)
	}
	return context.WithTimeout(ctx, t)
}

func (s *Server) getOrder(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.ctx(r, false)
	defer cancel()
	o, err := s.Backend.Orders.Order(ctx, r.PathValue("id"))
	s.answer(w, r, http.StatusOK, FromOrder(o), err)
}

func (s *Server) postRefund(w http.ResponseWriter, r *http.Request) {
	key, notAfter, ok := s.key(w, r)
	if !ok {
		return
	}
	defer s.begin(key)()
	var in RefundRequest
	if !s.decode(w, r, &in) {
		return
	}
	amount, err := mandate.ParseMoney(strings.TrimSpace(in.Amount), in.Currency)
	if err != nil {
		s.answer(w, r, 0, nil, err)
		return
	}
	ctx, cancel := s.ctx(r, true)
	defer cancel()
	ref, err := s.Backend.Payments.Refund(ctx, backend.RefundRequest{
		OrderID: r.PathValue("id"), Amount: amount, Reason: in.Reason, IdempotencyKey: key, NotAfter: notAfter})
	s.answer(w, r, http.StatusCreated, FromRefund(ref), err)
}

func (s *Server) postCancel(w http.ResponseWriter, r *http.Request) {
	key, notAfter, ok := s.key(w, r)
	if !ok {
		return
	}
	defer s.begin(key)()
	var in CancelRequest
	if !s.decode(w, r, &in) {
		return
	}
	ctx, cancel := s.ctx(r, true)
	defer cancel()
	o, err := s.Backend.Orders.CancelOrder(ctx, backend.CancelRequest{OrderID: r.PathValue("id"), Reason: in.Reason, IdempotencyKey: key, NotAfter: notAfter})
	s.answer(w, r, http.StatusOK, FromOrder(o), err)
}

func (s *Server) getCustomer(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.ctx(r, false)
	defer cancel()
	c, err := s.Backend.Customers.Customer(ctx, r.PathValue("id"))
	w.Header().Set(HeaderPreconditions, PreconditionExpected) // see patchCustomer
	s.answer(w, r, http.StatusOK, FromCustomer(c), err)
}

func (s *Server) findCustomers(w http.ResponseWriter, r *http.Request) {
	email := strings.TrimSpace(r.URL.Query().Get("email"))
	if email == "" {
		s.answer(w, r, 0, nil, mandate.Errorf(mandate.EINVALID, "query parameter email is required"))
		return
	}
	ctx, cancel := s.ctx(r, false)
	defer cancel()
	c, err := s.Backend.Customers.CustomerByEmail(ctx, email)
	list := CustomerList{Customers: []Customer{}}
	if err == nil {
		list.Customers = append(list.Customers, FromCustomer(c))
	} else if mandate.ErrorCode(err) == mandate.ENOTFOUND {
		err = nil
	}
	s.answer(w, r, http.StatusOK, list, err)
}

func (s *Server) patchCustomer(w http.ResponseWriter, r *http.Request) {
	key, notAfter, ok := s.key(w, r)
	if !ok {
		return
	}
	defer s.begin(key)()
	var in CustomerPatch
	if !s.decode(w, r, &in) {
		return
	}
	expected, hasExpected := in[PatchExpected]
	delete(in, PatchExpected)
	if hasExpected && expected == "" {
		s.answer(w, r, 0, nil, mandate.Errorf(mandate.EINVALID, "%q must not be empty; leave it out for a change without a precondition", PatchExpected))
		return
	}
	if len(in) != 1 {
		s.answer(w, r, 0, nil, mandate.Errorf(mandate.EINVALID,
			"the body must set exactly one of %s", strings.Join(backend.UpdatableFields, ", ")))
		return
	}
	var field, value string
	for k, v := range in {
		field, value = k, v
	}
	if !slices.Contains(backend.UpdatableFields, field) {
		s.answer(w, r, 0, nil, mandate.Errorf(mandate.EINVALID,
			"field %q cannot be changed; use one of %s", mandate.TruncateBytes(field, 40), strings.Join(backend.UpdatableFields, ", ")))
		return
	}
	ctx, cancel := s.ctx(r, true)
	defer cancel()
	// The precondition goes to the backend, whose Customers must check it
	// inside the change (backend.Customers): so this server may say it
	// honours it.
	c, err := s.Backend.Customers.UpdateCustomer(ctx, backend.UpdateRequest{
		CustomerID: r.PathValue("id"), Field: field, Value: value, Expected: expected, IdempotencyKey: key, NotAfter: notAfter})
	w.Header().Set(HeaderPreconditions, PreconditionExpected)
	s.answer(w, r, http.StatusOK, FromCustomer(c), err)
}

// getOperation answers GET /operations/{key}: 404 only when no change with
// key was made and none is being made. A change still in progress (its
// client gave up waiting; this server carries on) is 409, so that Mandate
// does not take a change that is about to happen for one that never will.
// Whether one is in progress is asked before the lookup: one that ends in
// between has committed by then, and the lookup finds it.
func (s *Server) getOperation(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	busy := s.inProgress(key)
	ctx, cancel := s.ctx(r, false)
	defer cancel()
	op, err := s.operation(ctx, key)
	if busy && mandate.ErrorCode(err) == mandate.ENOTFOUND {
		err = mandate.Errorf(mandate.ECONFLICT, "%s", InProgressDetail)
	}
	s.answer(w, r, http.StatusOK, op, err)
}

// begin marks a change with key as in progress, until the returned func is
// called (after the backend call returned, committed or not).
func (s *Server) begin(key string) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inFlight == nil {
		s.inFlight = map[string]int{}
	}
	s.inFlight[key]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.inFlight[key]--; s.inFlight[key] <= 0 {
			delete(s.inFlight, key)
		}
	}
}

func (s *Server) inProgress(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inFlight[key] > 0
}

// operation asks each capability in turn whether it made a change with
// key; the first that did answers, and an error other than not_found
// stops the search.
func (s *Server) operation(ctx context.Context, key string) (Operation, error) {
	op := Operation{IdempotencyKey: key}
	ref, err := s.Backend.Payments.RefundByKey(ctx, key)
	if err == nil {
		op.Kind, op.Refund = KindRefund, ptr(FromRefund(ref))
		return op, nil
	} else if mandate.ErrorCode(err) != mandate.ENOTFOUND {
		return op, err
	}
	o, err := s.Backend.Orders.CancellationByKey(ctx, key)
	if err == nil {
		op.Kind, op.Order = KindCancel, ptr(FromOrder(o))
		return op, nil
	} else if mandate.ErrorCode(err) != mandate.ENOTFOUND {
		return op, err
	}
	c, err := s.Backend.Customers.UpdateByKey(ctx, key)
	if err == nil {
		op.Kind, op.Customer = KindCustomerUpdate, ptr(FromCustomer(c))
		return op, nil
	} else if mandate.ErrorCode(err) != mandate.ENOTFOUND {
		return op, err
	}
	return op, mandate.Errorf(mandate.ENOTFOUND, "no change was made with idempotency key %q", key)
}

func ptr[T any](v T) *T { return &v }

// key reads the Idempotency-Key header every change must carry, and its
// Mandate-Not-After deadline if any. The deadline is not checked here but
// by the backend, in the transaction that would make the change
// (backend.ErrDeadlinePassed): a request that waits for the write lock
// past its deadline must be refused too. A request without one (a client
// older than the header) has none; a malformed one is refused, changing
// nothing, rather than read as none.
func (s *Server) key(w http.ResponseWriter, r *http.Request) (string, time.Time, bool) {
	key := strings.TrimSpace(r.Header.Get(HeaderIdempotencyKey))
	if key == "" || len(key) > 255 {
		s.answer(w, r, 0, nil, mandate.Errorf(mandate.EINVALID, "an Idempotency-Key header of 1 to 255 characters is required"))
		return "", time.Time{}, false
	}
	var notAfter time.Time
	if v := strings.TrimSpace(r.Header.Get(HeaderNotAfter)); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			s.answer(w, r, 0, nil, mandate.Errorf(mandate.EINVALID, "the %s header must be an RFC 3339 time such as 2026-01-02T15:04:05.5Z", HeaderNotAfter))
			return "", time.Time{}, false
		}
		notAfter = t
	}
	return key, notAfter, true
}

// decode reads a JSON body strictly: an unknown member is refused rather
// than ignored, since ignoring it could change what the caller meant.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		s.answer(w, r, 0, nil, mandate.Errorf(mandate.EINVALID, "the body is not the expected JSON object: %s", mandate.TruncateBytes(err.Error(), 200)))
		return false
	}
	return true
}

// answer writes v with status, or err as a problem.
func (s *Server) answer(w http.ResponseWriter, r *http.Request, status int, v any, err error) {
	if err != nil {
		code := mandate.ErrorCode(err)
		if code == mandate.EUNAVAILABLE || code == mandate.EINTERNAL {
			s.log().Error("backend call failed", "method", r.Method, "path", routeOf(r), "err", err)
		}
		writeProblem(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// routeOf names the route without ids or query, which may be personal data.
func routeOf(r *http.Request) string {
	if r.Pattern != "" {
		return r.Pattern
	}
	return r.Method
}

// writeProblem writes err as problem+json. Internal errors keep their
// details out of the answer.
func writeProblem(w http.ResponseWriter, err error) {
	code := mandate.ErrorCode(err) // internal for an error without a code
	status, typ := StatusForCode(code), ProblemType+code
	switch {
	case code == mandate.ECONFLICT && errors.Is(err, backend.ErrChangedSince):
		typ = ProblemChangedSince
	case errors.Is(err, backend.ErrDeadlinePassed):
		code = CodeDeadlinePassed // still a 409: clients that know only conflict read it right
		typ = ProblemType + code
	}
	writeProblemType(w, status, typ, code, mandate.ErrorMessage(err))
}

func writeProblemStatus(w http.ResponseWriter, status int, code, detail string) {
	writeProblemType(w, status, ProblemType+code, code, detail)
}

func writeProblemType(w http.ResponseWriter, status int, typ, code, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(Problem{
		Type: typ, Title: http.StatusText(status), Status: status, Detail: detail, Code: code,
	})
}
