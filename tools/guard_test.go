package tools_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/rates"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// now is the clock of every test: the demo data's as_of day, so account
// ages (cus_grace is 2 days old) are what the fixtures say.
var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func usd(minor int64) mandate.Money { return mandate.Money{Minor: minor, Currency: "USD"} }
func eur(minor int64) mandate.Money { return mandate.Money{Minor: minor, Currency: "EUR"} }

// orders and customers are the fixtures the fake backend reads: the demo
// data set's orders as the guard needs them, and one in yen.
var orders = map[string]backend.Order{
	"ord_1001": {ID: "ord_1001", CustomerID: "cus_ada", Status: backend.StatusProcessing, Total: usd(12000), Refunded: usd(0), CreatedAt: now.AddDate(0, 0, -5)},
	"ord_1002": {ID: "ord_1002", CustomerID: "cus_ada", Status: backend.StatusDelivered, Total: usd(250000), Refunded: usd(0), CreatedAt: now.AddDate(0, -2, 0)},
	"ord_1003": {ID: "ord_1003", CustomerID: "cus_ada", Status: backend.StatusShipped, Total: usd(8000), Refunded: usd(0), CreatedAt: now.AddDate(0, 0, -7)},
	"ord_1004": {ID: "ord_1004", CustomerID: "cus_ada", Status: backend.StatusPending, Total: usd(4500), Refunded: usd(0), CreatedAt: now.AddDate(0, 0, -1)},
	"ord_1005": {ID: "ord_1005", CustomerID: "cus_grace", Status: backend.StatusProcessing, Total: usd(4000), Refunded: usd(0), CreatedAt: now.AddDate(0, 0, -2)},
	"ord_1006": {ID: "ord_1006", CustomerID: "cus_marie", Status: backend.StatusDelivered, Total: eur(30000), Refunded: eur(25000), CreatedAt: now.AddDate(0, -2, 0)},
	"ord_2001": {ID: "ord_2001", CustomerID: "cus_ada", Status: backend.StatusDelivered, Total: mandate.Money{Minor: 5000, Currency: "JPY"}, Refunded: mandate.Money{Currency: "JPY"}, CreatedAt: now.AddDate(0, -1, 0)},
	"ord_1007": {ID: "ord_1007", CustomerID: "cus_marie", Status: backend.StatusCancelled, Total: eur(6000), Refunded: eur(0), CreatedAt: now.AddDate(0, 0, -15)},
}

var customers = map[string]backend.Customer{
	"cus_ada":   {ID: "cus_ada", Name: "Ada Lovelace", Email: "ada@example.com", Phone: "+441234567890", ShippingAddress: "12 St James's Square, London", CreatedAt: time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)},
	"cus_grace": {ID: "cus_grace", Name: "Grace Hopper", Email: "grace@example.com", Phone: "+1 202 555 0143", ShippingAddress: "1 Navy Yard Drive, Arlington", CreatedAt: now.AddDate(0, 0, -2)},
	"cus_marie": {ID: "cus_marie", Name: "Marie Curie", Email: "marie@example.fr", Phone: "+33 1 42 34 56 78", ShippingAddress: "36 Quai de Béthune, Paris", CreatedAt: time.Date(2023, 5, 14, 8, 15, 0, 0, time.UTC)},
}

// writeMethods are the backend methods that change a system of record.
var writeMethods = []string{"Refund", "CancelOrder", "UpdateCustomer"}

// fakeBackend is every system of record at once. Reads answer from the
// fixtures; writes record that they were called and then run the On* func
// if set, else succeed.
type fakeBackend struct {
	OnRefund func(ctx context.Context, req backend.RefundRequest) (backend.Refund, error)
	OnCancel func(ctx context.Context, req backend.CancelRequest) (backend.Order, error)
	OnUpdate func(ctx context.Context, req backend.UpdateRequest) (backend.Customer, error)

	mu      sync.Mutex
	calls   []string // method names, in call order
	keys    []string // idempotency keys of write calls, in call order
	refunds []backend.RefundRequest
}

var (
	_ backend.Payments  = (*fakeBackend)(nil)
	_ backend.Orders    = (*fakeBackend)(nil)
	_ backend.Customers = (*fakeBackend)(nil)
)

func (f *fakeBackend) record(method, key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, method)
	if key != "" {
		f.keys = append(f.keys, key)
	}
}

// Calls returns the methods called so far.
func (f *fakeBackend) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// Writes returns the write methods called so far.
func (f *fakeBackend) Writes() []string {
	var out []string
	for _, c := range f.Calls() {
		if slices.Contains(writeMethods, c) {
			out = append(out, c)
		}
	}
	return out
}

// Keys returns the idempotency keys the writes carried.
func (f *fakeBackend) Keys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.keys)
}

func (f *fakeBackend) Refund(ctx context.Context, req backend.RefundRequest) (backend.Refund, error) {
	f.record("Refund", req.IdempotencyKey)
	f.mu.Lock()
	f.refunds = append(f.refunds, req)
	f.mu.Unlock()
	if f.OnRefund != nil {
		return f.OnRefund(ctx, req)
	}
	return backend.Refund{ID: "re_" + req.IdempotencyKey, OrderID: req.OrderID, Amount: req.Amount, Reason: req.Reason,
		IdempotencyKey: req.IdempotencyKey, CreatedAt: now}, nil
}

func (f *fakeBackend) RefundByKey(ctx context.Context, key string) (backend.Refund, error) {
	f.record("RefundByKey", "")
	return backend.Refund{}, mandate.Errorf(mandate.ENOTFOUND, "no refund with key %q", key)
}

func (f *fakeBackend) CancellationByKey(ctx context.Context, key string) (backend.Order, error) {
	f.record("CancellationByKey", "")
	return backend.Order{}, mandate.Errorf(mandate.ENOTFOUND, "no cancellation with key %q", key)
}

func (f *fakeBackend) UpdateByKey(ctx context.Context, key string) (backend.Customer, error) {
	f.record("UpdateByKey", "")
	return backend.Customer{}, mandate.Errorf(mandate.ENOTFOUND, "no update with key %q", key)
}

func (f *fakeBackend) Order(ctx context.Context, id string) (backend.Order, error) {
	f.record("Order", "")
	o, ok := orders[id]
	if !ok {
		return o, mandate.Errorf(mandate.ENOTFOUND, "no order %q", id)
	}
	return o, nil
}

func (f *fakeBackend) CancelOrder(ctx context.Context, req backend.CancelRequest) (backend.Order, error) {
	f.record("CancelOrder", req.IdempotencyKey)
	if f.OnCancel != nil {
		return f.OnCancel(ctx, req)
	}
	o := orders[req.OrderID]
	o.Status = backend.StatusCancelled
	return o, nil
}

func (f *fakeBackend) Customer(ctx context.Context, id string) (backend.Customer, error) {
	f.record("Customer", "")
	c, ok := customers[id]
	if !ok {
		return c, mandate.Errorf(mandate.ENOTFOUND, "no customer %q", id)
	}
	return c, nil
}

func (f *fakeBackend) CustomerByEmail(ctx context.Context, email string) (backend.Customer, error) {
	f.record("CustomerByEmail", "")
	for _, c := range customers {
		if strings.EqualFold(c.Email, email) {
			return c, nil
		}
	}
	return backend.Customer{}, mandate.Errorf(mandate.ENOTFOUND, "no customer with that email")
}

func (f *fakeBackend) UpdateCustomer(ctx context.Context, req backend.UpdateRequest) (backend.Customer, error) {
	f.record("UpdateCustomer", req.IdempotencyKey)
	if f.OnUpdate != nil {
		return f.OnUpdate(ctx, req)
	}
	c := customers[req.CustomerID]
	c.Phone = req.Value
	return c, nil
}

// validArgs are arguments each tool accepts, naming fixtures that exist.
var validArgs = map[string]map[string]any{
	"get_order":         {"order_id": "ord_1001"},
	"get_customer":      {"customer_id": "cus_ada"},
	"find_customer":     {"email": "ada@example.com"},
	"get_action_status": {"action_id": "act_00000000000000000000"},
	"refund_order":      {"order_id": "ord_1001", "amount": "30.00", "reason": "Item arrived scratched"},
	"cancel_order":      {"order_id": "ord_1004", "reason": "Customer changed their mind"},
	"update_account":    {"customer_id": "cus_ada", "field": "phone", "value": "+441234000000", "reason": "Customer's new number, confirmed on the call"},
}

// loadCalls are the backend methods an action tool's guard may call to
// read the facts its rules need, before any decision.
var loadCalls = []string{"Order", "Customer"}

// loadShipped loads the shipped model and policy once: a Policy is
// immutable, so tests share it.
var loadShipped = sync.OnceValues(func() (*policy.Policy, error) {
	return policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel},
		policy.Source{Name: "policy.csv", Data: mandate.DefaultPolicy})
})

func shippedPolicy(t testing.TB) *policy.Policy {
	t.Helper()
	p, err := loadShipped()
	if err != nil {
		t.Fatalf("load shipped policy: %v", err)
	}
	return p
}

func policyFrom(t testing.TB, csv string) *policy.Policy {
	t.Helper()
	p, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel},
		policy.Source{Name: "test.csv", Data: []byte(csv)})
	if err != nil {
		t.Fatalf("load policy %q: %v", csv, err)
	}
	return p
}

// allowAllBut is a policy in which identity tester may use every tool
// except skip ("" skips none).
func allowAllBut(skip string) string {
	var b strings.Builder
	for _, name := range policy.MCPToolNames() {
		if name != skip {
			fmt.Fprintf(&b, "p, tester, %s, true, allow\n", name)
		}
	}
	// tester is known to the policy even when it has no rule at all.
	b.WriteString("g, tester, testers\n")
	return b.String()
}

// allowEveryone is a policy in which every identity it knows (tester) may
// use every tool.
func allowEveryone() string {
	var b strings.Builder
	for _, name := range policy.MCPToolNames() {
		fmt.Fprintf(&b, "p, *, %s, true, allow\n", name)
	}
	b.WriteString("g, tester, testers\n")
	return b.String()
}

// harness is one guarded server over a real audit database file and a
// fake backend.
type harness struct {
	t     testing.TB
	deps  *tools.Deps
	db    *storage.DB
	path  string
	be    *fakeBackend
	tools map[string]server.ServerTool
	names []string // in registration order
}

// emptyDB is a freshly migrated audit database file. Migrating costs a few
// durable commits; copying the result makes each test's database cheap.
var emptyDB = sync.OnceValues(func() ([]byte, error) {
	dir, err := os.MkdirTemp("", "mandate-tools-test-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "mandate.db")
	db, err := storage.Open(context.Background(), path)
	if err != nil {
		return nil, err
	}
	if err := db.Close(); err != nil {
		return nil, err
	}
	return os.ReadFile(path)
})

// openAuditDB opens a new audit database file in a test's temporary
// directory.
func openAuditDB(t testing.TB) (*storage.DB, string) {
	t.Helper()
	data, err := emptyDB()
	if err != nil {
		t.Fatalf("create audit db: %v", err)
	}
	path := filepath.Join(t.TempDir(), "mandate.db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := storage.Open(context.Background(), path)
	if err != nil {
		t.Fatalf("open audit db: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path
}

// recordLive records pol as the live policy in db, and the shipped rates
// as the live rates, as a server does when it starts: the guard refuses
// actions under any other version of either.
func recordLive(t testing.TB, db *storage.DB, pol *policy.Policy) {
	t.Helper()
	if err := db.RecordPolicy(context.Background(), &storage.PolicyLoad{Version: pol.Version, Command: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordRates(context.Background(), &storage.RatesLoad{Version: rates.Default().Version, Base: rates.Default().Base, Command: "test"}); err != nil {
		t.Fatal(err)
	}
}

func newHarness(t testing.TB, pol *policy.Policy, be *fakeBackend) *harness {
	t.Helper()
	db, path := openAuditDB(t)
	if be == nil {
		be = &fakeBackend{}
	}
	h := &harness{t: t, db: db, path: path, be: be, tools: map[string]server.ServerTool{}}
	h.deps = &tools.Deps{
		Policy:  policy.NewEngine(pol),
		DB:      db,
		Backend: backend.Backend{Payments: be, Orders: be, Customers: be},
		Now:     func() time.Time { return now },
	}
	// As a server does before deciding: its policy and rates are the live ones.
	if err := db.RecordPolicy(context.Background(), &storage.PolicyLoad{Version: pol.Version, Command: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordRates(context.Background(), &storage.RatesLoad{Version: rates.Default().Version, Base: rates.Default().Base, Command: "test"}); err != nil {
		t.Fatal(err)
	}
	for _, st := range tools.ServerTools(h.deps) {
		if _, dup := h.tools[st.Tool.Name]; dup {
			t.Fatalf("tool %s registered twice", st.Tool.Name)
		}
		h.tools[st.Tool.Name] = st
		h.names = append(h.names, st.Tool.Name)
	}
	return h
}

// call runs one tools/call through the registered handler, as the server
// would after its transport set (or did not set) the identity in ctx.
func (h *harness) call(ctx context.Context, name string, args any) *mcp.CallToolResult {
	h.t.Helper()
	st, ok := h.tools[name]
	if !ok {
		h.t.Fatalf("no tool %s registered", name)
	}
	res, err := st.Handler(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: name, Arguments: args}})
	if err != nil {
		h.t.Fatalf("%s: handler returned a Go error (a JSON-RPC error to the client): %v", name, err)
	}
	if res == nil {
		h.t.Fatalf("%s: nil result", name)
	}
	return res
}

func (h *harness) records() []storage.Record {
	h.t.Helper()
	return readRecords(h.t, h.db, storage.Filter{})
}

func readRecords(t testing.TB, db *storage.DB, f storage.Filter) []storage.Record {
	t.Helper()
	var out []storage.Record
	if err := db.Records(context.Background(), f, func(r *storage.Record) error {
		out = append(out, *r)
		return nil
	}); err != nil {
		t.Fatalf("read audit: %v", err)
	}
	return out
}

// outcome is the structured content of any tool result: an ActionResult or
// an ErrorResult.
type outcome struct {
	ActionID string          `json:"action_id"`
	Decision string          `json:"decision"`
	Rule     string          `json:"rule"`
	Status   string          `json:"status"`
	Message  string          `json:"message"`
	Error    string          `json:"error"`
	Result   json.RawMessage `json:"result"`
}

func decode(t testing.TB, res *mcp.CallToolResult) outcome {
	t.Helper()
	if res.StructuredContent == nil && res.IsError {
		// A plain error: {error, message} as JSON text.
		var o outcome
		if err := json.Unmarshal([]byte(text(res)), &o); err != nil {
			t.Fatalf("error text %q is not JSON: %v", text(res), err)
		}
		return o
	}
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatalf("marshal structured content: %v", err)
	}
	var o outcome
	if err := json.Unmarshal(b, &o); err != nil {
		t.Fatalf("structured content %s: %v", b, err)
	}
	return o
}

func text(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

// checkNoWrites fails unless the backend saw no write, and, for a tool whose
// run must not have happened, nothing beyond the reads that load facts.
func checkNoWrites(t testing.TB, name string, be *fakeBackend) {
	t.Helper()
	if w := be.Writes(); len(w) != 0 {
		t.Fatalf("%s: backend writes %v, want none", name, w)
	}
	allowed := []string{}
	if policy.Tools[name].Action {
		allowed = loadCalls
	}
	for _, c := range be.Calls() {
		if !slices.Contains(allowed, c) {
			t.Fatalf("%s: backend %s called (calls %v); a refused %s may call only %v", name, c, be.Calls(), name, allowed)
		}
	}
}

// TestRegisteredToolsAreThePolicyContract proves no tool reaches agents
// outside the policy's contract and none is missing, both from ServerTools
// and from the server's own tools/list; the approval pseudo-tools
// (approve_refund_order...) are decisions for people, never agent tools.
func TestRegisteredToolsAreThePolicyContract(t *testing.T) {
	t.Parallel()
	h := newHarness(t, shippedPolicy(t), nil)
	var want, approvals []string
	for _, name := range policy.ToolNames() {
		if policy.Tools[name].Approval || policy.Tools[name].Admin {
			approvals = append(approvals, name) // people's acts, never agent tools
		} else {
			want = append(want, name)
		}
	}
	if !slices.Equal(want, policy.MCPToolNames()) {
		t.Fatalf("policy.MCPToolNames() = %v, want %v", policy.MCPToolNames(), want)
	}
	got := slices.Sorted(maps.Keys(h.tools))
	if !slices.Equal(got, want) {
		t.Fatalf("ServerTools registers %v, policy.Tools holds the agent tools %v", got, want)
	}
	if len(h.names) != len(want) {
		t.Fatalf("ServerTools returned %d tools for %d names", len(h.names), len(want))
	}
	for _, name := range approvals {
		if _, ok := h.tools[name]; ok {
			t.Fatalf("approval pseudo-tool %s is registered as an agent tool", name)
		}
	}
	for _, name := range h.names {
		ann := h.tools[name].Tool.Annotations
		action := policy.Tools[name].Action
		if ann.ReadOnlyHint == nil || *ann.ReadOnlyHint == action || ann.DestructiveHint == nil || *ann.DestructiveHint != action {
			t.Fatalf("%s: readOnlyHint %v destructiveHint %v, but policy.Tools says action=%v", name, ann.ReadOnlyHint, ann.DestructiveHint, action)
		}
	}

	// tools/list shows an identity the tools it can ever use: senior-bot
	// may use all of them, nobody none; and a tool that is not listed is
	// still refused when called by name.
	ctx := context.Background()
	listed := func(agent string) []string {
		d := *h.deps
		d.Agent = agent
		c := inProcessClient(t, tools.NewServer(&d, "test"))
		list, err := c.ListTools(ctx, mcp.ListToolsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tl := range list.Tools {
			names = append(names, tl.Name)
		}
		slices.Sort(names)
		return names
	}
	if got := listed("senior-bot"); !slices.Equal(got, want) {
		t.Fatalf("tools/list for senior-bot shows %v, policy.Tools holds %v", got, want)
	}
	if got := listed(""); len(got) != 0 {
		t.Fatalf("tools/list without identity shows %v, want nothing", got)
	}

	c := inProcessClient(t, tools.NewServer(h.deps, "test"))
	res, err := c.CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order", Arguments: validArgs["refund_order"]}})
	if err != nil {
		t.Fatal(err)
	}
	if got := decode(t, res); !res.IsError || got.Decision != policy.Deny {
		t.Fatalf("refund through a server without identity: isError=%v decision=%q, want a deny", res.IsError, got.Decision)
	}
	checkNoWrites(t, "refund_order", h.be)
}

func inProcessClient(t testing.TB, s *server.MCPServer) *client.Client {
	t.Helper()
	c, err := client.NewInProcessClient(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx := context.Background()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Initialize(ctx, mcp.InitializeRequest{Params: mcp.InitializeParams{ProtocolVersion: mcp.LATEST_PROTOCOL_VERSION}}); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestValidArgsMatchSchemas keeps the fixtures honest: validArgs names
// exactly the required arguments of each tool's schema, and the only
// optional one is an action's idempotency_key.
func TestValidArgsMatchSchemas(t *testing.T) {
	t.Parallel()
	h := newHarness(t, shippedPolicy(t), nil)
	for _, name := range h.names {
		st := h.tools[name]
		props := slices.Sorted(maps.Keys(st.Tool.InputSchema.Properties))
		args := slices.Sorted(maps.Keys(validArgs[name]))
		required := slices.Sorted(slices.Values(st.Tool.InputSchema.Required))
		optional := []string{}
		if policy.Tools[name].Action {
			optional = []string{"idempotency_key"}
		}
		if name == "get_action_status" {
			// Exactly one of two, which the schema cannot require.
			required, optional = []string{"action_id"}, []string{"idempotency_key"}
			if r := st.Tool.InputSchema.Required; len(r) != 0 {
				t.Errorf("%s: schema requires %v, want nothing", name, r)
			}
		}
		if !slices.Equal(args, required) {
			t.Errorf("%s: schema requires %v, validArgs has %v", name, required, args)
		}
		if want := slices.Sorted(slices.Values(append(slices.Clone(required), optional...))); !slices.Equal(props, want) {
			t.Errorf("%s: schema properties %v, want %v", name, props, want)
		}
	}
}

// argVariants are the argument sets a walk calls each tool with: its valid
// arguments, and for an action the same with an idempotency key, which
// takes the guard through its replay lookup first.
func argVariants(name string) map[string]map[string]any {
	out := map[string]map[string]any{"args": validArgs[name]}
	if policy.Tools[name].Action {
		keyed := maps.Clone(validArgs[name])
		keyed["idempotency_key"] = "key-" + name
		out["args+key"] = keyed
	}
	return out
}

// TestNoRuleMeansDenied walks every registered tool under policies that have
// no rule for it: each call is refused, audited as a deny, and reaches no
// backend write (a read tool reaches the backend not at all).
func TestNoRuleMeansDenied(t *testing.T) {
	t.Parallel()
	policies := map[string]func(tool string) string{
		"no rules at all":         func(string) string { return "g, tester, testers\n" },
		"rules for every other":   allowAllBut,
		"rule for another person": func(tool string) string { return "p, someone_else, " + tool + ", true, allow\ng, tester, testers\n" },
	}
	for pname, src := range policies {
		for _, name := range policy.MCPToolNames() {
			for vname, args := range argVariants(name) {
				t.Run(pname+"/"+name+"/"+vname, func(t *testing.T) {
					t.Parallel()
					pol := policyFrom(t, src(name))
					h := newHarness(t, pol, nil)
					res := h.call(tools.WithAgent(context.Background(), "tester"), name, args)
					got := decode(t, res)
					if !res.IsError {
						t.Fatalf("%s without a rule: not an error: %s", name, text(res))
					}
					checkNoWrites(t, name, h.be)

					recs := h.records()
					if len(recs) != 1 {
						t.Fatalf("%d audit records, want 1: %+v", len(recs), recs)
					}
					r := recs[0]
					if r.Tool != name || r.Agent != "tester" || r.Phase != storage.PhaseAttempt ||
						r.Decision != policy.Deny || r.Outcome != "refused" || r.PolicyVersion != pol.Version {
						t.Fatalf("audit record %+v, want a refused deny attempt of %s by tester under %s", r, name, pol.Version)
					}
					if !strings.HasPrefix(r.Rule, "default deny") {
						t.Fatalf("audit rule %q, want a default deny", r.Rule)
					}
					if policy.Tools[name].Action {
						if got.Decision != policy.Deny || got.Status != storage.StatusDenied || got.ActionID != r.ActionID {
							t.Fatalf("result %+v, want decision deny, status denied, action_id %s", got, r.ActionID)
						}
						act, err := h.db.Action(context.Background(), got.ActionID)
						if err != nil {
							t.Fatal(err)
						}
						if act.Status != storage.StatusDenied {
							t.Fatalf("action status %q, want denied", act.Status)
						}
					} else if got.Error != mandate.EDENIED {
						t.Fatalf("result error %q, want %q", got.Error, mandate.EDENIED)
					}
				})
			}
		}
	}
}

// TestNoIdentityMeansDenied calls every handler directly, as a transport
// that authenticated nobody would: each call is refused and audited.
func TestNoIdentityMeansDenied(t *testing.T) {
	t.Parallel()
	contexts := []struct {
		name     string
		ctx      context.Context
		agent    string
		wantRule string
	}{
		{"background", context.Background(), "", "no identity"},
		{"empty identity", tools.WithAgent(context.Background(), ""), "", "no identity"},
		{"unknown identity", tools.WithAgent(context.Background(), "intruder"), "intruder", "unknown identity"},
	}
	for _, c := range contexts {
		for _, name := range policy.MCPToolNames() {
			for vname, args := range argVariants(name) {
				t.Run(c.name+"/"+name+"/"+vname, func(t *testing.T) {
					t.Parallel()
					// A policy where everything is allowed for everyone the
					// policy knows: only the identity can stop the call.
					h := newHarness(t, policyFrom(t, allowEveryone()), nil)
					res := h.call(c.ctx, name, args)
					if !res.IsError {
						t.Fatalf("not an error: %s", text(res))
					}
					checkNoWrites(t, name, h.be)
					recs := h.records()
					if len(recs) != 1 {
						t.Fatalf("%d audit records, want 1", len(recs))
					}
					r := recs[0]
					if r.Tool != name || r.Agent != c.agent || r.Decision != policy.Deny || r.Phase != storage.PhaseAttempt {
						t.Fatalf("audit record %+v, want a deny attempt of %s by %q", r, name, c.agent)
					}
					if !strings.Contains(r.Rule, c.wantRule) {
						t.Fatalf("audit rule %q, want it to say %q", r.Rule, c.wantRule)
					}
				})
			}
		}
	}
}

// breakAudit makes the audit trail refuse every new record the way a full
// disk would, while the database stays open and readable.
func breakAudit(t testing.TB, path string) *sql.DB {
	t.Helper()
	raw, err := sql.Open("sqlite", storage.DSN(path))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	if _, err := raw.Exec(`CREATE TRIGGER audit_full BEFORE INSERT ON audit
		BEGIN SELECT RAISE(ABORT, 'simulated: database or disk is full'); END`); err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestAuditUnwritableFailsClosed: when the attempt cannot be recorded,
// nothing happens. A control case with a writable trail shows the same call
// does reach the backend.
func TestAuditUnwritableFailsClosed(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"writable", "closed", "full"} {
		for _, name := range policy.MCPToolNames() {
			for vname, args := range argVariants(name) {
				t.Run(mode+"/"+name+"/"+vname, func(t *testing.T) {
					t.Parallel()
					h := newHarness(t, policyFrom(t, allowAllBut("")), nil)
					var raw *sql.DB
					switch mode {
					case "closed":
						if err := h.db.Close(); err != nil {
							t.Fatal(err)
						}
					case "full":
						raw = breakAudit(t, h.path)
					}
					res := h.call(tools.WithAgent(context.Background(), "tester"), name, args)
					got := decode(t, res)
					action := policy.Tools[name].Action

					if mode == "writable" {
						recs := h.records()
						if len(recs) == 0 || recs[0].Decision != policy.Allow {
							t.Fatalf("control: audit %+v, want an allow attempt first", recs)
						}
						if action {
							keys := h.be.Keys()
							if len(keys) != 1 || keys[0] != got.ActionID || got.Status != storage.StatusExecuted {
								t.Fatalf("control: result %+v, backend keys %v; want one write keyed by the action_id", got, keys)
							}
						}
						return
					}

					if !res.IsError || got.Error != mandate.EUNAVAILABLE {
						t.Fatalf("result isError=%v %+v, want an unavailable error", res.IsError, got)
					}
					if strings.Contains(text(res), "simulated") || strings.Contains(text(res), "sql") {
						t.Fatalf("result leaks internals: %s", text(res))
					}
					if !action && mode == "full" {
						// A lookup reads while its record commits, and shows
						// nothing when the commit fails: the read happened,
						// nothing was written and nothing was shown.
						if w := h.be.Writes(); len(w) != 0 {
							t.Fatalf("%s: backend writes %v, want none", name, w)
						}
					} else {
						checkNoWrites(t, name, h.be)
					}
					if raw != nil {
						var n int
						if err := raw.QueryRow(`SELECT (SELECT COUNT(*) FROM audit) + (SELECT COUNT(*) FROM actions)`).Scan(&n); err != nil {
							t.Fatal(err)
						}
						if n != 0 {
							t.Fatalf("%d audit or action rows after a failed attempt, want none (half-recorded)", n)
						}
					}
				})
			}
		}
	}
}

// TestShippedPolicyReachesBackendOnlyOnAllow runs refunds under the shipped
// policy: an allowed one calls the backend exactly once, keyed by the
// action_id, with the attempt recorded before the outcome; every other
// decision leaves the backend untouched.
func TestShippedPolicyReachesBackendOnlyOnAllow(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, agent, order, amount string
		want                       string
		wantMinor                  int64
	}{
		{"support agent small refund", "demo-agent", "ord_1001", "30.00", policy.Allow, 3000},
		{"senior agent larger refund", "senior-bot", "ord_1002", "300.00", policy.Allow, 30000},
		{"support agent middle refund", "demo-agent", "ord_1002", "150.00", policy.RequireApproval, 0},
		{"support agent large refund", "demo-agent", "ord_1002", "900.00", policy.Deny, 0},
		{"more than refundable", "senior-bot", "ord_1006", "60.00", policy.Deny, 0},
		{"new customer", "senior-bot", "ord_1005", "10.00", policy.RequireApproval, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, shippedPolicy(t), nil)
			res := h.call(tools.WithAgent(context.Background(), tt.agent), "refund_order",
				map[string]any{"order_id": tt.order, "amount": tt.amount, "reason": "Late delivery goodwill"})
			got := decode(t, res)
			if got.Decision != tt.want {
				t.Fatalf("decision %q (%s), want %q", got.Decision, got.Message, tt.want)
			}
			recs := readRecords(t, h.db, storage.Filter{ActionID: got.ActionID})
			if len(recs) == 0 || recs[0].Phase != storage.PhaseAttempt || recs[0].Agent != tt.agent {
				t.Fatalf("audit for %s: %+v, want an attempt by %s first", got.ActionID, recs, tt.agent)
			}
			if tt.want != policy.Allow {
				if len(recs) != 1 {
					t.Fatalf("%d audit records for a %s, want 1", len(recs), tt.want)
				}
				checkNoWrites(t, "refund_order", h.be)
				return
			}

			if res.IsError || got.Status != storage.StatusExecuted {
				t.Fatalf("allowed refund: isError=%v status=%q: %s", res.IsError, got.Status, got.Message)
			}
			var view tools.RefundView
			if err := json.Unmarshal(got.Result, &view); err != nil || view.RefundID != "re_"+got.ActionID || view.Amount != tt.amount {
				t.Fatalf("result %s (%v), want the refund of %s made", got.Result, err, tt.amount)
			}
			if w := h.be.Writes(); !slices.Equal(w, []string{"Refund"}) {
				t.Fatalf("backend writes %v, want exactly one Refund", w)
			}
			req := h.be.refunds[0]
			if req.IdempotencyKey != got.ActionID || req.IdempotencyKey == "" {
				t.Fatalf("idempotency key %q, want the action_id %q", req.IdempotencyKey, got.ActionID)
			}
			if req.OrderID != tt.order || req.Amount != usd(tt.wantMinor) {
				t.Fatalf("refund request %+v, want %s on %s", req, tt.amount, tt.order)
			}
			if len(recs) != 2 {
				t.Fatalf("%d audit records for the action, want attempt and outcome: %+v", len(recs), recs)
			}
			att, out := recs[0], recs[1]
			if att.Phase != storage.PhaseAttempt || out.Phase != storage.PhaseOutcome || att.Seq >= out.Seq {
				t.Fatalf("records (%s seq %d, %s seq %d), want attempt then outcome", att.Phase, att.Seq, out.Phase, out.Seq)
			}
			if att.Decision != policy.Allow || out.Decision != policy.Allow || out.Outcome != storage.StatusExecuted || att.Rule != out.Rule {
				t.Fatalf("attempt %+v, outcome %+v, want an allow executed under one rule", att, out)
			}
			if out.PrevHash != att.Hash {
				t.Fatalf("outcome prev_hash %s, want the attempt's hash %s", out.PrevHash, att.Hash)
			}
			var attrs map[string]any
			if err := json.Unmarshal(att.Attrs, &attrs); err != nil {
				t.Fatal(err)
			}
			if attrs["amount"] != float64(tt.wantMinor)/100 {
				t.Fatalf("audited amount %v, want %v", attrs["amount"], float64(tt.wantMinor)/100)
			}
			act, err := h.db.Action(context.Background(), got.ActionID)
			if err != nil {
				t.Fatal(err)
			}
			if act.Status != storage.StatusExecuted || act.Agent != tt.agent || !strings.Contains(string(act.Result), "re_"+got.ActionID) {
				t.Fatalf("action %+v, want executed by %s with the refund in its result", act, tt.agent)
			}
		})
	}
}

// TestAttemptIsDurableBeforeBackendCall: when the backend is called, the
// attempt is already committed, readable from another connection to the
// same file (as another process would see it).
func TestAttemptIsDurableBeforeBackendCall(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"refund_order", "cancel_order", "update_account"} {
		t.Run(name, func(t *testing.T) {
			be := &fakeBackend{}
			h := newHarness(t, policyFrom(t, allowAllBut("")), be)
			var seen []storage.Record
			var status string
			var inspected bool
			inspect := func(ctx context.Context, key string) {
				inspected = true
				other, err := storage.Open(ctx, h.path)
				if err != nil {
					t.Errorf("second open: %v", err)
					return
				}
				defer other.Close()
				seen = readRecords(t, other, storage.Filter{ActionID: key})
				act, err := other.Action(ctx, key)
				if err != nil {
					t.Errorf("action %s not visible to another connection: %v", key, err)
					return
				}
				status = act.Status
			}
			be.OnRefund = func(ctx context.Context, req backend.RefundRequest) (backend.Refund, error) {
				inspect(ctx, req.IdempotencyKey)
				return backend.Refund{ID: "re_1", OrderID: req.OrderID, Amount: req.Amount, CreatedAt: now}, nil
			}
			be.OnCancel = func(ctx context.Context, req backend.CancelRequest) (backend.Order, error) {
				inspect(ctx, req.IdempotencyKey)
				return orders[req.OrderID], nil
			}
			be.OnUpdate = func(ctx context.Context, req backend.UpdateRequest) (backend.Customer, error) {
				inspect(ctx, req.IdempotencyKey)
				return customers[req.CustomerID], nil
			}

			res := h.call(tools.WithAgent(context.Background(), "tester"), name, validArgs[name])
			got := decode(t, res)
			if !inspected {
				t.Fatalf("backend never called: %s", text(res))
			}
			if len(seen) != 1 || seen[0].Phase != storage.PhaseAttempt || seen[0].Decision != policy.Allow || seen[0].ActionID != got.ActionID {
				t.Fatalf("during the backend call another connection saw %+v, want the allow attempt of %s", seen, got.ActionID)
			}
			if status != storage.StatusExecuting {
				t.Fatalf("action status during the call %q, want %q", status, storage.StatusExecuting)
			}
			if after := readRecords(t, h.db, storage.Filter{ActionID: got.ActionID}); len(after) != 2 {
				t.Fatalf("%d records after the call, want attempt and outcome", len(after))
			}
		})
	}
}

// TestBackendFailureIsRecorded: an allowed action whose backend refuses it
// with a code ends failed, in the audit, the action state and the answer.
// One whose backend fails without a code or times out, even when sent again
// with the same key, is not known to have failed: it stays executing with no
// outcome recorded, and the agent is told not to retry. No internals reach
// the answer either way.
func TestBackendFailureIsRecorded(t *testing.T) {
	t.Parallel()
	// The budget for the call and its repeat (2 × timeout) counts from when
	// the attempt was recorded, so the attempt's commit and the read
	// before the call must be short next to the timeout for the repeat to
	// fit: under -race on a loaded machine they took more than 50 ms.
	const timeout = 300 * time.Millisecond
	tests := []struct {
		name     string
		refund   func(ctx context.Context, req backend.RefundRequest) (backend.Refund, error)
		wantErr  string // the error recorded (and shown, unless wantMsg)
		wantMsg  string // what the agent is told, when it differs
		hidden   string // text that must not reach the agent
		deadline bool   // the call must have run under the backend timeout
		unknown  bool   // the outcome is unknown: executing, for recovery
	}{
		{
			name: "refused with a code",
			refund: func(ctx context.Context, req backend.RefundRequest) (backend.Refund, error) {
				return backend.Refund{}, mandate.Errorf(mandate.ECONFLICT, "the payment was disputed; it cannot be refunded")
			},
			wantErr: "the payment was disputed; it cannot be refunded",
		},
		{
			name: "failed without a code",
			refund: func(ctx context.Context, req backend.RefundRequest) (backend.Refund, error) {
				return backend.Refund{}, errors.New("dial tcp 10.9.8.7:443: connection refused")
			},
			wantMsg: "Do not retry",
			hidden:  "10.9.8.7",
			unknown: true,
		},
		{
			name: "blocks beyond the timeout",
			refund: func(ctx context.Context, req backend.RefundRequest) (backend.Refund, error) {
				select {
				case <-ctx.Done():
					return backend.Refund{}, fmt.Errorf("payments.example: POST /refunds: %w", ctx.Err())
				case <-time.After(10 * time.Second):
					return backend.Refund{}, errors.New("the backend timeout was not applied")
				}
			},
			wantMsg:  "Do not retry",
			hidden:   "payments.example",
			deadline: true,
			unknown:  true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := &fakeBackend{}
			var deadline time.Time
			var hasDeadline bool
			be.OnRefund = func(ctx context.Context, req backend.RefundRequest) (backend.Refund, error) {
				deadline, hasDeadline = ctx.Deadline()
				return tt.refund(ctx, req)
			}
			h := newHarness(t, shippedPolicy(t), be)
			h.deps.BackendTimeout = timeout

			start := time.Now()
			res := h.call(tools.WithAgent(context.Background(), "demo-agent"), "refund_order", validArgs["refund_order"])
			took := time.Since(start)
			got := decode(t, res)

			wantStatus := storage.StatusFailed
			if tt.unknown {
				wantStatus = storage.StatusExecuting
			}
			if res.IsError == tt.unknown || got.Decision != policy.Allow || got.Status != wantStatus || got.ActionID == "" {
				t.Fatalf("result isError=%v %+v, want decision allow and status %s", res.IsError, got, wantStatus)
			}
			wantMsg := tt.wantErr
			if tt.wantMsg != "" {
				wantMsg = tt.wantMsg
			}
			if !strings.Contains(got.Message, wantMsg) || !strings.Contains(got.Message, "refund of 30.00 USD on order ord_1001") {
				t.Fatalf("message %q, want it to name the refund and say %q", got.Message, wantMsg)
			}
			if tt.hidden != "" && strings.Contains(text(res)+got.Message, tt.hidden) {
				t.Fatalf("result shows internals %q: %s", tt.hidden, text(res))
			}
			if !hasDeadline || deadline.Before(start) || deadline.Sub(start) > timeout+time.Second {
				t.Fatalf("backend ctx deadline %v (set %v), want within %v", deadline, hasDeadline, timeout)
			}
			if tt.deadline && (took < 2*timeout || took > 5*time.Second) {
				t.Fatalf("call took %v, want the %v timeout to end the call and its repeat", took, timeout)
			}
			act, err := h.db.Action(context.Background(), got.ActionID)
			if err != nil {
				t.Fatal(err)
			}
			recs := readRecords(t, h.db, storage.Filter{ActionID: got.ActionID})
			if tt.unknown {
				// Sent again once with the same key, and still not known.
				if w, k := h.be.Writes(), h.be.Keys(); len(w) != 2 || k[0] != got.ActionID || k[1] != got.ActionID {
					t.Fatalf("backend writes %v with keys %v, want the call and one repeat, both with key %s", w, k, got.ActionID)
				}
				if len(recs) != 1 || recs[0].Phase != storage.PhaseAttempt || act.Status != storage.StatusExecuting {
					t.Fatalf("audit %+v, action %s; want only the attempt, executing", recs, act.Status)
				}
				return
			}
			if w := h.be.Writes(); len(w) != 1 {
				t.Fatalf("backend writes %v, want exactly one attempt", w)
			}

			if len(recs) != 2 || recs[0].Phase != storage.PhaseAttempt || recs[1].Phase != storage.PhaseOutcome {
				t.Fatalf("audit %+v, want attempt then outcome", recs)
			}
			if out := recs[1]; out.Outcome != storage.StatusFailed || out.Error != tt.wantErr {
				t.Fatalf("outcome record outcome=%q error=%q, want failed with %q", out.Outcome, out.Error, tt.wantErr)
			}
			if act.Status != storage.StatusFailed || act.Error != tt.wantErr {
				t.Fatalf("action status=%q error=%q, want failed with %q", act.Status, act.Error, tt.wantErr)
			}
		})
	}
}

// TestOutcomeRecordedWhenAgentHangsUp: the agent's request is cancelled
// while the backend acts; the action happened, so its outcome is recorded.
func TestOutcomeRecordedWhenAgentHangsUp(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(tools.WithAgent(context.Background(), "demo-agent"))
	defer cancel()
	be := &fakeBackend{}
	var backendErr error
	be.OnRefund = func(bctx context.Context, req backend.RefundRequest) (backend.Refund, error) {
		cancel()
		backendErr = bctx.Err()
		return backend.Refund{ID: "re_1", OrderID: req.OrderID, Amount: req.Amount, CreatedAt: now}, nil
	}
	h := newHarness(t, shippedPolicy(t), be)
	got := decode(t, h.call(ctx, "refund_order", validArgs["refund_order"]))
	if backendErr != nil {
		t.Fatalf("the agent hanging up cancelled the backend call: %v", backendErr)
	}
	recs := readRecords(t, h.db, storage.Filter{ActionID: got.ActionID})
	if len(recs) != 2 || recs[1].Outcome != storage.StatusExecuted {
		t.Fatalf("audit %+v, want attempt and an executed outcome", recs)
	}
}

// TestConcurrentCallsKeepTheChain: calls handled in parallel (as stdio's
// worker pool does) each get attempt before outcome, and the audit chain
// stays one unbroken sequence.
func TestConcurrentCallsKeepTheChain(t *testing.T) {
	t.Parallel()
	const n = 12
	h := newHarness(t, policyFrom(t, allowAllBut("")), nil)
	ctx := tools.WithAgent(context.Background(), "tester")
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			st := h.tools["refund_order"]
			res, err := st.Handler(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "refund_order",
				Arguments: map[string]any{"order_id": "ord_1002", "amount": "1.00", "reason": "Goodwill"}}})
			if err != nil || res.IsError {
				t.Errorf("call %d: %v %v", i, err, res)
				return
			}
			got := decode(t, res)
			if got.Status != storage.StatusExecuted {
				t.Errorf("call %d: status %q, want executed", i, got.Status)
			}
			ids[i] = got.ActionID
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	keys := h.be.Keys()
	slices.Sort(keys)
	want := slices.Sorted(slices.Values(ids))
	if !slices.Equal(keys, want) || len(slices.Compact(slices.Clone(keys))) != n {
		t.Fatalf("backend keys %v, want one per action %v", keys, want)
	}
	recs := h.records()
	if len(recs) != 2*n {
		t.Fatalf("%d records, want %d", len(recs), 2*n)
	}
	attemptSeq := map[string]int64{}
	for i, r := range recs {
		if r.Seq != int64(i+1) || (i > 0 && r.PrevHash != recs[i-1].Hash) {
			t.Fatalf("record %d (seq %d) breaks the chain", i, r.Seq)
		}
		switch r.Phase {
		case storage.PhaseAttempt:
			attemptSeq[r.ActionID] = r.Seq
		case storage.PhaseOutcome:
			if s, ok := attemptSeq[r.ActionID]; !ok || s >= r.Seq {
				t.Fatalf("outcome of %s at seq %d before its attempt", r.ActionID, r.Seq)
			}
		}
	}
}
