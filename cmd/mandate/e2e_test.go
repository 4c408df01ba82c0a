package main

// End-to-end tests: the real binary, built once in TestMain, driven over
// stdio by mcp-go's client as another process, the way an agent's MCP
// client runs it. Servers run from this directory, which has no model.conf
// or policy.csv, so they use the embedded copies of the repo's files.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate/backend/store"
	"github.com/mandatehq/mandate/internal/pgtest"
	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// bin is the mandate binary TestMain builds; cliBin is the one runMandate
// runs its one-off commands with (see buildAndRun).
var bin, cliBin string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "mandate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin = filepath.Join(dir, "mandate")
	cliBin = bin
	// go test puts its own GOROOT/bin first on PATH, so this is the
	// toolchain that is running the tests. Under -race the servers are built
	// with it too: the build reuses the test's cache, and a race in a server
	// fails the test. The one-off commands runMandate runs (approvals,
	// lineage, audit, store import and the like, several hundred of them)
	// are built without it: under -race each cost about twice the CPU,
	// which on two cores put CI over its 20 minutes (2026-12-02), and
	// their concurrency is the storage and tools packages', whose own
	// tests run under -race in process.
	race := false
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "-race" && s.Value == "true" {
				race = true
			}
		}
	}
	builds := [][]string{{"build", "-o", bin}}
	if race {
		cliBin = filepath.Join(dir, "mandate-cli")
		builds = [][]string{{"build", "-race", "-o", bin}, {"build", "-o", cliBin}}
	}
	for _, args := range builds {
		build := exec.Command("go", append(args, "./cmd/mandate")...)
		build.Dir = filepath.Join("..", "..")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: building mandate:", err)
			return 1
		}
	}
	return pgtest.Main(m) // stops the PostgreSQL cluster if a test started one
}

// The tools as an agent sees them.
var (
	lookupTools = []string{"get_order", "get_customer", "find_customer", "get_action_status"}
	actionTools = []string{"refund_order", "cancel_order", "update_account"}
)

// Wire shapes of the structured results, written out here so that a renamed
// JSON field is a failing test rather than a silent change for agents.
type actionResult struct {
	ActionID string          `json:"action_id"`
	Decision string          `json:"decision"`
	Rule     string          `json:"rule"`
	Status   string          `json:"status"`
	Message  string          `json:"message"`
	Result   json.RawMessage `json:"result"`
}

type errorResult struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

type orderView struct {
	ID         string `json:"id"`
	CustomerID string `json:"customer_id"`
	Status     string `json:"status"`
	Currency   string `json:"currency"`
	Total      string `json:"total"`
	Refunded   string `json:"refunded"`
	Refundable string `json:"refundable"`
}

type customerView struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Email string `json:"email"`
	Phone string `json:"phone"`
}

type actionStatus struct {
	ActionID  string  `json:"action_id"`
	Tool      string  `json:"tool"`
	Status    string  `json:"status"`
	Decision  string  `json:"decision"`
	Rule      string  `json:"rule"`
	ExpiresAt *string `json:"expires_at"`
	Message   string  `json:"message"`
}

// syncBuffer collects a child's stderr for the failure log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// childEnv is the test's environment without MANDATE_* variables, plus env,
// so that only what a test sets configures the child.
func childEnv(env []string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MANDATE_") {
			out = append(out, kv)
		}
	}
	// A race-built binary otherwise sleeps a second at exit.
	out = append(out, "GORACE=atexit_sleep_ms=0")
	return append(out, env...)
}

// startServer spawns `mandate serve` with env and args and initializes an MCP
// session with it at protocol version proto. At cleanup it closes stdin and
// expects the server to exit 0.
func startServer(t *testing.T, proto string, env []string, args ...string) *client.Client {
	t.Helper()
	stderr := &syncBuffer{}
	tr := transport.NewStdioWithOptions(bin, env, append([]string{"serve"}, args...),
		transport.WithCommandFunc(func(ctx context.Context, command string, env, args []string) (*exec.Cmd, error) {
			cmd := exec.CommandContext(ctx, command, args...)
			cmd.Env = childEnv(env)
			cmd.Stderr = stderr // complete once the process has been waited for
			return cmd, nil
		}))
	if err := tr.Start(context.Background()); err != nil {
		t.Fatalf("start mandate serve: %v", err)
	}
	// mcp-go's client probes server/discover for 5 s and then falls back
	// to the 2025-11-25 handshake: a serve slow to start (a race build on a
	// loaded machine) would be tested in the wrong era. It gets the same
	// 15 s as the handshake below.
	c := client.NewClient(tr, client.WithDiscoverTimeout(15*time.Second))
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("mandate serve %v did not exit cleanly when its client hung up: %v", args, err)
		}
		if strings.Contains(stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("mandate serve %v had a data race", args)
		}
		if t.Failed() {
			t.Logf("mandate serve %v stderr:\n%s", args, stderr.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = proto
	init.Params.ClientInfo = mcp.Implementation{Name: "mandate-e2e", Version: "test"}
	res, err := c.Initialize(ctx, init)
	if err != nil {
		t.Fatalf("initialize: %v\nstderr:\n%s", err, stderr.String())
	}
	if res.ServerInfo.Name != "mandate" {
		t.Fatalf("serverInfo.name = %q, want mandate", res.ServerInfo.Name)
	}
	if res.ProtocolVersion != proto {
		t.Fatalf("negotiated protocol %q, want %q", res.ProtocolVersion, proto)
	}
	if res.Capabilities.Tools == nil {
		t.Fatalf("server does not announce the tools capability")
	}
	return c
}

// call sends one tools/call; a JSON-RPC error fails the test, since every
// tool failure must come back as a tool result.
func call(t *testing.T, c *client.Client, tool string, args any) *mcp.CallToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	res, err := c.CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: tool, Arguments: args}})
	if err != nil {
		t.Fatalf("%s(%.200v): JSON-RPC error %v; want a tool result", tool, args, err)
	}
	return res
}

// decode reads a result's structured content into v.
func decode(t *testing.T, res *mcp.CallToolResult, v any) {
	t.Helper()
	if res.StructuredContent == nil && res.IsError {
		// A plain error carries {error, message} as JSON text only.
		if err := json.Unmarshal([]byte(text(res)), v); err != nil {
			t.Fatalf("error text %q is not JSON: %v", text(res), err)
		}
		return
	}
	if res.StructuredContent == nil {
		t.Fatalf("result has no structured content; text: %s", text(res))
	}
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("structured content %s: %v", b, err)
	}
}

// text joins a result's text content.
func text(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

// getOrder looks an order up and fails the test unless that works.
func getOrder(t *testing.T, c *client.Client, id string) orderView {
	t.Helper()
	res := call(t, c, "get_order", map[string]any{"order_id": id})
	if res.IsError {
		t.Fatalf("get_order %s: isError, %s", id, text(res))
	}
	var o orderView
	decode(t, res, &o)
	return o
}

// rule returns how a decision cites the line of the repo's policy.csv that
// reads exactly line: "policy.csv:N: line".
func rule(t *testing.T, line string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "policy.csv"))
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(l) == line {
			return fmt.Sprintf("policy.csv:%d: %s", i+1, line)
		}
	}
	t.Fatalf("policy.csv has no line %q", line)
	return ""
}

// action is an action call made during TestServe, for the audit check.
type action struct {
	agent, tool, id, decision, rule string
}

// TestServe runs one server per identity on shared databases, as two agents'
// MCP clients would, and checks what agents see and what the audit records.
func TestServe(t *testing.T) {
	dir := t.TempDir()
	dbPath, storePath := cliDB(t, filepath.Join(dir, "mandate.db")), filepath.Join(dir, "store.db")
	// demo-agent is named by the environment and speaks the initialize
	// handshake; senior-bot by the flag and the current protocol.
	demo := startServer(t, mcp.LATEST_LEGACY_PROTOCOL_VERSION,
		[]string{"MANDATE_AGENT=demo-agent"}, "--db", dbPath, "--store", storePath)
	senior := startServer(t, mcp.LATEST_PROTOCOL_VERSION, nil,
		"--agent", "senior-bot", "--db", dbPath, "--store", storePath)
	clients := map[string]*client.Client{"demo-agent": demo, "senior-bot": senior}

	t.Run("tools/list", func(t *testing.T) {
		for name, c := range clients {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			res, err := c.ListTools(ctx, mcp.ListToolsRequest{})
			cancel()
			if err != nil {
				t.Fatalf("%s: tools/list: %v", name, err)
			}
			var got []string
			for _, tool := range res.Tools {
				got = append(got, tool.Name)
			}
			want := append(slices.Clone(lookupTools), actionTools...)
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("%s: tools = %v, want exactly %v", name, got, want)
			}
			for _, tool := range res.Tools {
				checkTool(t, tool)
			}
		}
	})

	t.Run("lookups", func(t *testing.T) {
		res := call(t, demo, "get_order", map[string]any{"order_id": "ord_1001"})
		if res.IsError {
			t.Fatalf("get_order: isError, %s", text(res))
		}
		var raw map[string]any
		decode(t, res, &raw)
		decimal := regexp.MustCompile(`^[0-9]+\.[0-9]{2}$`)
		for field, want := range map[string]string{
			"id": "ord_1001", "customer_id": "cus_ada", "status": "processing", "currency": "USD",
			"total": "120.00", "refunded": "0.00",
		} {
			got, ok := raw[field].(string)
			if !ok {
				t.Fatalf("get_order: %s = %#v, want a string", field, raw[field])
			}
			if got != want {
				t.Fatalf("get_order: %s = %q, want %q", field, got, want)
			}
			if (field == "total" || field == "refunded") && !decimal.MatchString(got) {
				t.Fatalf("get_order: %s = %q, want a decimal string like \"120.00\"", field, got)
			}
		}

		res = call(t, demo, "get_customer", map[string]any{"customer_id": "cus_ada"})
		var c customerView
		decode(t, res, &c)
		if res.IsError || c.ID != "cus_ada" || c.Email != "ada@example.com" {
			t.Fatalf("get_customer cus_ada: isError %v, %+v", res.IsError, c)
		}
		res = call(t, senior, "find_customer", map[string]any{"email": "ADA@example.com"})
		decode(t, res, &c)
		if res.IsError || c.ID != "cus_ada" {
			t.Fatalf("find_customer ADA@example.com: isError %v, %+v; want cus_ada", res.IsError, c)
		}
	})

	var actions []action
	t.Run("actions", func(t *testing.T) {
		for _, tt := range []struct {
			name     string
			agent    string
			tool     string
			args     map[string]any
			decision string
			rule     string // the policy.csv line that decides
		}{
			{"small refund", "demo-agent", "refund_order", map[string]any{"order_id": "ord_1001", "amount": "30.00", "reason": "Item arrived scratched"},
				"allow", "p, support_agent, refund_order, amount_base <= 50.00, allow"},
			{"middle refund", "demo-agent", "refund_order", map[string]any{"order_id": "ord_1002", "amount": "150.00", "reason": "Late delivery goodwill"},
				"require_approval", "p, support_agent, refund_order, amount_base > 50.00 && amount_base <= 200.00, require_approval"},
			{"large refund", "demo-agent", "refund_order", map[string]any{"order_id": "ord_1002", "amount": "900.00", "reason": "Customer unhappy"},
				"deny", "p, support_agent, refund_order, amount_base > 200.00, deny"},
			{"300 by a support agent", "demo-agent", "refund_order", map[string]any{"order_id": "ord_1002", "amount": "300.00", "reason": "Late delivery goodwill"},
				"deny", "p, support_agent, refund_order, amount_base > 200.00, deny"},
			{"300 by a senior agent", "senior-bot", "refund_order", map[string]any{"order_id": "ord_1002", "amount": "300.00", "reason": "Late delivery goodwill"},
				"allow", "p, senior_agent, refund_order, amount_base <= 500.00, allow"},
			{"more than refundable", "demo-agent", "refund_order", map[string]any{"order_id": "ord_1001", "amount": "95.00", "reason": "Full refund requested"},
				"deny", "p, *, refund_order, amount > order_refundable, deny"},
			{"cancel pending order", "demo-agent", "cancel_order", map[string]any{"order_id": "ord_1004", "reason": "Customer changed their mind"},
				"allow", "p, support_agent, cancel_order, order_status == 'pending' || order_status == 'processing', allow"},
			{"cancel shipped order", "demo-agent", "cancel_order", map[string]any{"order_id": "ord_1003", "reason": "Customer changed their mind"},
				"deny", "p, support_agent, cancel_order, order_status == 'shipped' || order_status == 'delivered' || order_status == 'cancelled', deny"},
			{"change phone", "demo-agent", "update_account", map[string]any{"customer_id": "cus_ada", "field": "phone", "value": "+441234000000", "reason": "New number"},
				"allow", "p, support_agent, update_account, field == 'phone' || field == 'shipping_address' || field == 'name', allow"},
			{"change email", "demo-agent", "update_account", map[string]any{"customer_id": "cus_ada", "field": "email", "value": "ada.lovelace@example.com", "reason": "Old mailbox closed"},
				"require_approval", "p, support_agent, update_account, field == 'email', require_approval"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				res := call(t, clients[tt.agent], tt.tool, tt.args)
				var got actionResult
				decode(t, res, &got)
				if wantErr := tt.decision == "deny"; res.IsError != wantErr {
					t.Fatalf("isError = %v, want %v; %s", res.IsError, wantErr, text(res))
				}
				if got.Decision != tt.decision {
					t.Fatalf("decision = %q, want %q; %s", got.Decision, tt.decision, got.Message)
				}
				if want := rule(t, tt.rule); !strings.HasSuffix(got.Rule, want) {
					t.Fatalf("rule = %q, want it to cite %q", got.Rule, want)
				}
				if !strings.HasPrefix(got.ActionID, "act_") {
					t.Fatalf("action_id = %q, want act_…", got.ActionID)
				}
				wantStatus := map[string]string{"allow": "executed", "require_approval": "pending", "deny": "denied"}[tt.decision]
				if got.Status != wantStatus {
					t.Fatalf("status = %q, want %q; %s", got.Status, wantStatus, got.Message)
				}
				if tt.decision == "require_approval" && !strings.Contains(text(res), got.ActionID) {
					t.Fatalf("a pending result must give the agent its reference; text: %s", text(res))
				}
				actions = append(actions, action{tt.agent, tt.tool, got.ActionID, got.Decision, got.Rule})
			})
		}
	})

	t.Run("store changed only by allowed actions", func(t *testing.T) {
		for _, tt := range []struct {
			order                        string
			status, refunded, refundable string
		}{
			{"ord_1001", "processing", "30.00", "90.00"},   // 30.00 allowed; 95.00 denied
			{"ord_1002", "delivered", "300.00", "2200.00"}, // only senior-bot's 300.00
			{"ord_1003", "shipped", "0.00", "80.00"},       // cancel denied
			{"ord_1004", "cancelled", "0.00", "45.00"},     // cancel allowed
			{"ord_1005", "processing", "0.00", "40.00"},    // untouched
			{"ord_1006", "delivered", "250.00", "50.00"},   // untouched
			{"ord_1007", "cancelled", "0.00", "60.00"},     // untouched
		} {
			for name, c := range clients {
				o := getOrder(t, c, tt.order)
				if o.Status != tt.status || o.Refunded != tt.refunded || o.Refundable != tt.refundable {
					t.Fatalf("%s sees %s: status %s, refunded %s, refundable %s; want %s, %s, %s",
						name, tt.order, o.Status, o.Refunded, o.Refundable, tt.status, tt.refunded, tt.refundable)
				}
			}
		}
		res := call(t, demo, "get_customer", map[string]any{"customer_id": "cus_ada"})
		var c customerView
		decode(t, res, &c)
		if c.Phone != "+441234000000" {
			t.Fatalf("phone = %q, want the allowed change +441234000000", c.Phone)
		}
		if c.Email != "ada@example.com" {
			t.Fatalf("email = %q: the change awaiting approval must not have happened", c.Email)
		}
	})

	t.Run("get_action_status", func(t *testing.T) {
		byName := func(agent, decision, tool string) action {
			for _, a := range actions {
				if a.agent == agent && a.decision == decision && a.tool == tool {
					return a
				}
			}
			t.Fatalf("no %s %s by %s was recorded", decision, tool, agent)
			return action{}
		}
		pending := byName("demo-agent", "require_approval", "refund_order")
		allowed := byName("demo-agent", "allow", "refund_order")
		denied := byName("demo-agent", "deny", "cancel_order")
		seniors := byName("senior-bot", "allow", "refund_order")
		for _, tt := range []struct {
			name, agent, id string
			status          string // "" for a not_found error
		}{
			{"own pending", "demo-agent", pending.id, "pending"},
			{"own executed", "demo-agent", allowed.id, "executed"},
			{"own denied", "demo-agent", denied.id, "denied"},
			{"senior's own", "senior-bot", seniors.id, "executed"},
			{"another agent's pending", "senior-bot", pending.id, ""},
			{"another agent's executed", "demo-agent", seniors.id, ""},
			{"unknown", "demo-agent", "act_00000000000000000000", ""},
		} {
			t.Run(tt.name, func(t *testing.T) {
				res := call(t, clients[tt.agent], "get_action_status", map[string]any{"action_id": tt.id})
				if tt.status == "" {
					var e errorResult
					decode(t, res, &e)
					if !res.IsError || e.Error != "not_found" {
						t.Fatalf("isError %v, error %q; want not_found. %s", res.IsError, e.Error, text(res))
					}
					return
				}
				var st actionStatus
				decode(t, res, &st)
				if res.IsError || st.ActionID != tt.id || st.Status != tt.status {
					t.Fatalf("isError %v, %+v; want status %s", res.IsError, st, tt.status)
				}
				if st.Message == "" {
					t.Fatalf("status %s has no message for the agent", st.Status)
				}
				if (st.Status == "pending") != (st.ExpiresAt != nil) {
					t.Fatalf("status %s, expires_at %v: only a pending action expires", st.Status, st.ExpiresAt)
				}
			})
		}
	})

	t.Run("bad input", func(t *testing.T) {
		const good = "ord_1001"
		before := getOrder(t, demo, good)
		for _, tt := range []struct {
			name string
			tool string
			args any
			code string // the error code, or the decision of an action
			word string // in the message
		}{
			{"order_id as number", "get_order", map[string]any{"order_id": 1001}, "invalid", "string"},
			{"amount as boolean", "refund_order", map[string]any{"order_id": good, "amount": true, "reason": "x"}, "invalid", "decimal"},
			{"missing argument", "refund_order", map[string]any{"order_id": good, "amount": "1.00"}, "invalid", "required"},
			{"no arguments", "get_customer", nil, "invalid", "required"},
			{"extra argument", "get_order", map[string]any{"order_id": good, "agent": "senior-bot"}, "invalid", "unknown"},
			{"unknown order lookup", "get_order", map[string]any{"order_id": "ord_9999"}, "not_found", "ord_9999"},
			{"unknown order refund", "refund_order", map[string]any{"order_id": "ord_9999", "amount": "1.00", "reason": "x"}, "not_founddeny", "ord_9999"},
			{"unknown customer update", "update_account", map[string]any{"customer_id": "cus_nobody", "field": "phone", "value": "+441234000001", "reason": "New number"}, "not_founddeny", "cus_nobody"},
			{"amount 1.005", "refund_order", map[string]any{"order_id": good, "amount": "1.005", "reason": "x"}, "invalid", "decimal"},
			{"amount 0", "refund_order", map[string]any{"order_id": good, "amount": "0", "reason": "x"}, "invalid", "greater than zero"},
			{"amount -5", "refund_order", map[string]any{"order_id": good, "amount": "-5", "reason": "x"}, "invalid", "greater than zero"},
			{"amount NaN", "refund_order", map[string]any{"order_id": good, "amount": "NaN", "reason": "x"}, "invalid", "decimal"},
			{"amount abc", "refund_order", map[string]any{"order_id": good, "amount": "abc", "reason": "x"}, "invalid", "decimal"},
			{"1 MB reason", "refund_order", map[string]any{"order_id": good, "amount": "1.00", "reason": strings.Repeat("a", 1<<20)}, "invalid", "limit"},
			{"field password", "update_account", map[string]any{"customer_id": "cus_ada", "field": "password", "value": "hunter2", "reason": "x"}, "invalid", "field"},
			{"arguments an array", "get_order", []any{good}, "invalid", "object"},
			{"arguments a string", "get_order", good, "invalid", "object"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				res := call(t, demo, tt.tool, tt.args)
				if !res.IsError {
					t.Fatalf("isError = false, want true; %s", text(res))
				}
				var m struct {
					Error    string `json:"error"`
					Decision string `json:"decision"`
					Message  string `json:"message"`
				}
				decode(t, res, &m)
				// An unknown id is refused (decision deny, audited) with error not_found.
				if code := m.Error + m.Decision; code != tt.code {
					t.Fatalf("error/decision %q, want %q; %s", code, tt.code, m.Message)
				}
				if !strings.Contains(m.Message, tt.word) || !strings.Contains(text(res), tt.word) {
					t.Fatalf("message %q (text %q) does not mention %q", m.Message, text(res), tt.word)
				}
				if len(text(res)) > 2000 {
					t.Fatalf("the error echoes %d bytes back to the agent", len(text(res)))
				}
				if o := getOrder(t, demo, good); o != before {
					t.Fatalf("after bad input %s is %+v, was %+v", good, o, before)
				}
			})
		}
	})

	t.Run("both processes at once", func(t *testing.T) {
		// Two processes appending to one audit chain; the export checks it.
		var wg sync.WaitGroup
		errs := make(chan string, 20)
		for _, c := range clients {
			for range 10 {
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
					defer cancel()
					res, err := c.CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{
						Name: "get_customer", Arguments: map[string]any{"customer_id": "cus_grace"}}})
					if err != nil {
						errs <- err.Error()
					} else if res.IsError {
						errs <- text(res)
					}
				})
			}
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Errorf("concurrent get_customer: %s", e)
		}
	})

	t.Run("audit export", func(t *testing.T) {
		out, errOut, err := runMandate(t, nil, "audit", "export", "--db", dbPath)
		if err != nil {
			t.Fatalf("audit export: %v\nstderr: %s", err, errOut)
		}
		records := checkExport(t, out)
		byAction := map[string][]map[string]json.RawMessage{}
		outcomes := 0
		for _, r := range records {
			id := str(t, r, "action_id")
			byAction[id] = append(byAction[id], r)
			if str(t, r, "phase") == "outcome" {
				outcomes++
			}
		}
		allowed := 0
		for _, a := range actions {
			recs := byAction[a.id]
			var phases []string
			for _, r := range recs {
				phases = append(phases, str(t, r, "phase"))
				for field, want := range map[string]string{"agent": a.agent, "tool": a.tool, "decision": a.decision, "rule": a.rule} {
					if got := str(t, r, field); got != want {
						t.Fatalf("action %s: %s = %q, want %q", a.id, field, got, want)
					}
				}
			}
			want := []string{"attempt"}
			if a.decision == "allow" {
				allowed++
				want = []string{"attempt", "outcome"}
				if got := str(t, recs[1], "outcome"); got != "executed" {
					t.Fatalf("action %s: outcome %q, want executed", a.id, got)
				}
			}
			if !slices.Equal(phases, want) {
				t.Fatalf("%s %s %s: phases %v, want %v", a.agent, a.tool, a.decision, phases, want)
			}
			if a.decision != "allow" && str(t, recs[0], "outcome") == "executed" {
				t.Fatalf("%s %s was %s but recorded as executed", a.agent, a.tool, a.decision)
			}
		}
		if allowed == 0 || outcomes != allowed {
			t.Fatalf("%d outcome records, want exactly one per allowed action (%d)", outcomes, allowed)
		}
		// Every read was audited too, by both processes.
		reads := 0
		for _, r := range records {
			if str(t, r, "tool") == "get_customer" && str(t, r, "outcome") == "read" {
				reads++
			}
		}
		if reads < 20 {
			t.Fatalf("%d get_customer reads audited, want at least the 20 concurrent ones", reads)
		}
	})
}

// checkTool checks what an agent learns about a tool before calling it.
func checkTool(t *testing.T, tool mcp.Tool) {
	t.Helper()
	a := tool.Annotations
	if a.ReadOnlyHint == nil || a.DestructiveHint == nil || a.IdempotentHint == nil || a.OpenWorldHint == nil {
		t.Fatalf("%s: annotations %+v: all four hints must be set", tool.Name, a)
	}
	lookup := slices.Contains(lookupTools, tool.Name)
	if *a.ReadOnlyHint != lookup {
		t.Fatalf("%s: readOnlyHint = %v, want %v", tool.Name, *a.ReadOnlyHint, lookup)
	}
	if *a.DestructiveHint != !lookup {
		t.Fatalf("%s: destructiveHint = %v, want %v", tool.Name, *a.DestructiveHint, !lookup)
	}
	if tool.Description == "" {
		t.Fatalf("%s: no description", tool.Name)
	}
	in := tool.InputSchema
	// get_action_status takes exactly one of action_id and idempotency_key,
	// which a schema without oneOf cannot require.
	if in.Type != "object" || len(in.Properties) == 0 || (len(in.Required) == 0 && tool.Name != "get_action_status") {
		t.Fatalf("%s: input schema %+v: want an object with required properties", tool.Name, in)
	}
	for name, p := range in.Properties {
		prop, _ := p.(map[string]any)
		if d, _ := prop["description"].(string); d == "" {
			t.Fatalf("%s: argument %s has no description", tool.Name, name)
		}
	}
	if tool.OutputSchema.Type != "object" || len(tool.OutputSchema.Properties) == 0 {
		t.Fatalf("%s: output schema %+v: want an object with properties", tool.Name, tool.OutputSchema)
	}
}

// exportFields are the fields of every line of `mandate audit export`.
var exportFields = []string{"seq", "time", "agent", "tool", "args", "decision", "rule",
	"policy_version", "action_id", "phase", "outcome", "error", "duration"}

// checkExport parses the JSON Lines export and checks each line's shape and
// that the lines form one unbroken sequence.
func checkExport(t *testing.T, out string) []map[string]json.RawMessage {
	t.Helper()
	var records []map[string]json.RawMessage
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		var r map[string]json.RawMessage
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %d is not a JSON object: %v: %.200s", len(records)+1, err, sc.Text())
		}
		for _, f := range exportFields {
			if _, ok := r[f]; !ok {
				t.Fatalf("line %d has no %s: %.300s", len(records)+1, f, sc.Text())
			}
		}
		var args map[string]any
		if err := json.Unmarshal(r["args"], &args); err != nil || args == nil {
			t.Fatalf("line %d: args %s is not an object", len(records)+1, r["args"])
		}
		var seq, duration int64
		if err := json.Unmarshal(r["seq"], &seq); err != nil || seq != int64(len(records)+1) {
			t.Fatalf("line %d: seq %s, want %d", len(records)+1, r["seq"], len(records)+1)
		}
		if err := json.Unmarshal(r["duration"], &duration); err != nil || duration < 0 {
			t.Fatalf("line %d: duration %s is not a count of microseconds", seq, r["duration"])
		}
		if _, err := time.Parse(time.RFC3339Nano, str(t, r, "time")); err != nil {
			t.Fatalf("line %d: time: %v", seq, err)
		}
		// Key and approver management records (by mandate) are no decision,
		// so they name no policy version.
		admin := slices.Contains([]string{storage.KeyCreateTool, storage.KeyRevokeTool, storage.UserAddTool, storage.UserRemoveTool}, str(t, r, "tool"))
		if (str(t, r, "policy_version") == "" && !admin) || str(t, r, "agent") == "" {
			t.Fatalf("line %d: no agent or policy_version", seq)
		}
		if prev, ok := r["prev_hash"]; ok && len(records) > 0 {
			if last := records[len(records)-1]["hash"]; string(prev) != string(last) {
				t.Fatalf("line %d: prev_hash %s does not chain to the hash %s before it", seq, prev, last)
			}
		}
		records = append(records, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(records) == 0 {
		t.Fatal("the export is empty")
	}
	return records
}

// str reads a string field of an exported record.
func str(t *testing.T, r map[string]json.RawMessage, field string) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(r[field], &s); err != nil {
		t.Fatalf("%s = %s: want a string", field, r[field])
	}
	return s
}

// runMandate runs the binary to completion with no MANDATE_* variables but
// those in env, and returns its stdout and stderr.
func runMandate(t *testing.T, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, cliBin, args...)
	cmd.Env = childEnv(env)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("mandate %v did not finish: %v", args, ctx.Err())
	}
	if strings.Contains(errOut.String(), "WARNING: DATA RACE") {
		t.Errorf("mandate %v had a data race:\n%s", args, errOut.String())
	}
	return out.String(), errOut.String(), err
}

func TestServeStartupErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.csv")
	policy := "# a broken rule on line 3\n\np, support_agent, refund_order, amount <=, allow\ng, demo-agent, support_agent\n"
	if err := os.WriteFile(bad, []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	files := []string{"--db", filepath.Join(dir, "mandate.db"), "--store", filepath.Join(dir, "store.db")}
	for _, tt := range []struct {
		name string
		env  []string
		args []string
		want []string // in stderr
	}{
		{"no identity", nil, nil, []string{"MANDATE_AGENT", "--agent"}},
		{"empty MANDATE_AGENT", []string{"MANDATE_AGENT="}, nil, []string{"MANDATE_AGENT"}},
		{"unknown identity by flag", nil, []string{"--agent", "intruder"}, []string{`"intruder"`, "not in the policy"}},
		{"unknown identity by env", []string{"MANDATE_AGENT=intruder"}, nil, []string{`"intruder"`}},
		{"broken policy", []string{"MANDATE_AGENT=demo-agent"}, []string{"--policy", bad}, []string{bad + ":3:"}},
		{"missing policy file", []string{"MANDATE_AGENT=demo-agent"}, []string{"--policy", filepath.Join(dir, "nope.csv")}, []string{"nope.csv"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append(append([]string{"serve"}, files...), tt.args...)
			stdout, stderr, err := runMandate(t, tt.env, args...)
			if err == nil {
				t.Fatalf("mandate serve exited 0; stderr: %s", stderr)
			}
			if _, ok := err.(*exec.ExitError); !ok {
				t.Fatalf("mandate serve: %v", err)
			}
			if stdout != "" {
				t.Fatalf("stdout is for JSON-RPC only, got %q", stdout)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Fatalf("stderr %q does not mention %q", stderr, w)
				}
			}
		})
	}
}

func TestStoreImport(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	storePath := filepath.Join(dir, "store.db")
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.json", `{"customers": [{"id": "cus_test", "name": "Test Person", "email": "test@example.com", "created_at": "2024-01-02T03:04:05Z"}],
  "orders": [{"id": "ord_t1", "customer_id": "cus_test", "status": "delivered", "currency": "EUR", "total": "19.90", "refunded": "5.00", "created_at": "2024-02-01T10:00:00Z"}]}`)
	bad := write("bad.json", `{"customers": [{"id": "cus_new", "name": "New Person", "email": "new@example.com", "created_at": "2024-01-02T03:04:05Z"}],
  "orders": [{"id": "ord_t2", "customer_id": "cus_test", "status": "pending", "currency": "EUR", "total": "1.00", "created_at": "2024-02-01T10:00:00Z"},
             {"id": "ord_t3", "customer_id": "cus_ghost", "status": "pending", "currency": "EUR", "total": "2.00", "created_at": "2024-02-01T10:00:00Z"}]}`)

	stdout, stderr, err := runMandate(t, nil, "store", "import", "--store", storePath, good)
	if err != nil {
		t.Fatalf("import good file: %v\nstderr: %s", err, stderr)
	}
	if !strings.Contains(stdout, "1 customers and 1 orders") {
		t.Fatalf("import good file: stdout %q does not count 1 customer and 1 order", stdout)
	}

	stdout, stderr, err = runMandate(t, nil, "store", "import", "--store", storePath, bad)
	if err == nil {
		t.Fatalf("import of an order with an unknown customer exited 0; stdout %q", stdout)
	}
	for _, w := range []string{"orders[1]", "ord_t3", "cus_ghost", "nothing"} {
		if !strings.Contains(stderr, w) {
			t.Fatalf("import bad file: stderr %q does not mention %q", stderr, w)
		}
	}

	// A phone number the store would refuse on update is refused on import
	// too, naming the record and the field, and nothing of the file is
	// written.
	badPhone := write("bad-phone.json", `{"customers": [{"id": "cus_ok", "name": "Fine Person", "email": "ok@example.com", "created_at": "2024-01-02T03:04:05Z"},
  {"id": "cus_badphone", "name": "Phone Person", "email": "phone@example.com", "phone": "ask reception", "created_at": "2024-01-02T03:04:05Z"}]}`)
	stdout, stderr, err = runMandate(t, nil, "store", "import", "--store", storePath, badPhone)
	if err == nil {
		t.Fatalf("import of a bad phone number exited 0; stdout %q", stdout)
	}
	for _, w := range []string{"customers[1] (cus_badphone)", "phone is not a phone number", "nothing was written"} {
		if !strings.Contains(stderr, w) {
			t.Fatalf("import bad phone: stderr %q does not mention %q", stderr, w)
		}
	}

	// A refused import into a store that did not exist leaves no empty
	// store behind.
	fresh := filepath.Join(dir, "fresh.db")
	if _, _, err := runMandate(t, nil, "store", "import", "--store", fresh, bad); err == nil {
		t.Fatal("import of the bad file into a new store exited 0")
	}
	if left, _ := filepath.Glob(fresh + "*"); len(left) != 0 {
		t.Fatalf("a refused import left %v", left)
	}
	// Nor the file it was built in, and neither does a good import, which
	// was built beside store.db before being linked into place.
	if left, _ := filepath.Glob(filepath.Join(dir, ".*import*")); len(left) != 0 {
		t.Fatalf("imports left %v behind", left)
	}

	// The imported store serves what the good file held and nothing of the
	// bad ones, not even their valid records.
	c := startServer(t, mcp.LATEST_LEGACY_PROTOCOL_VERSION, nil,
		"--agent", "demo-agent", "--db", filepath.Join(dir, "mandate.db"), "--store", storePath)
	o := getOrder(t, c, "ord_t1")
	if o != (orderView{ID: "ord_t1", CustomerID: "cus_test", Status: "delivered", Currency: "EUR", Total: "19.90", Refunded: "5.00", Refundable: "14.90"}) {
		t.Fatalf("imported ord_t1 = %+v", o)
	}
	for _, tt := range []struct{ tool, arg, id string }{
		{"get_customer", "customer_id", "cus_new"},
		{"get_order", "order_id", "ord_t2"},
		{"get_customer", "customer_id", "cus_ok"},
		{"get_order", "order_id", "ord_1001"}, // an import is not seeded with demo data
	} {
		res := call(t, c, tt.tool, map[string]any{tt.arg: tt.id})
		var e errorResult
		decode(t, res, &e)
		if !res.IsError || e.Error != "not_found" {
			t.Fatalf("%s %s: isError %v, error %q; want not_found", tt.tool, tt.id, res.IsError, e.Error)
		}
	}
}

// TestImportNewLeavesOthersStore: a store another process created at the
// path while a new one was being imported (a serve seeding its demo data)
// is neither overwritten nor removed; the import is refused and says so.
func TestImportNewLeavesOthersStore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "store.db")
	st, err := store.Open(path) // "the other process", done before the link
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Seed(context.Background(), store.DemoData); err != nil {
		t.Fatal(err)
	}
	st.Close()
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte(`{"customers": [{"id": "cus_test", "name": "Test Person", "email": "test@example.com", "created_at": "2024-01-02T03:04:05Z"}]}`)
	if _, err := importNew(context.Background(), path, data); err == nil || !strings.Contains(err.Error(), "created by another process") {
		t.Fatalf("import into a store created meanwhile: err %v, want a refusal naming the race", err)
	}
	after, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(before, after) {
		t.Fatalf("the other process's store was changed or removed (err %v)", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*import*")); len(left) != 0 {
		t.Fatalf("the refused import left %v behind", left)
	}
}

func TestInit(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "policy")
	files := []string{"model.conf", "policy.csv", "rates.csv"}
	same := func() {
		t.Helper()
		for _, f := range files {
			got, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(filepath.Join("..", "..", f))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("init wrote a %s that differs from the repo's", f)
			}
		}
	}

	if _, stderr, err := runMandate(t, nil, "init", "--dir", dir); err != nil {
		t.Fatalf("init: %v\nstderr: %s", err, stderr)
	}
	same()

	// One file edited, one removed: init keeps the edit, writes the missing
	// file back, says which it kept and how to overwrite, and exits 0.
	edited := filepath.Join(dir, "policy.csv")
	if err := os.WriteFile(edited, []byte("# my edits\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "rates.csv")); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := runMandate(t, nil, "init", "--dir", dir)
	if err != nil {
		t.Fatalf("init over some existing files: %v\nstderr: %s", err, stderr)
	}
	for _, want := range []string{"kept " + edited, "--force", "wrote " + filepath.Join(dir, "rates.csv")} {
		if !strings.Contains(stdout, want) {
			t.Fatalf("init output %q does not say %q", stdout, want)
		}
	}
	if b, _ := os.ReadFile(edited); string(b) != "# my edits\n" {
		t.Fatalf("init without --force overwrote policy.csv: %q", b)
	}
	rates, _ := os.ReadFile(filepath.Join("..", "..", "rates.csv"))
	if b, err := os.ReadFile(filepath.Join(dir, "rates.csv")); err != nil || !bytes.Equal(b, rates) {
		t.Fatalf("init did not write the missing rates.csv (err %v)", err)
	}

	if _, stderr, err := runMandate(t, nil, "init", "--dir", dir, "--force"); err != nil {
		t.Fatalf("init --force: %v\nstderr: %s", err, stderr)
	}
	same()
}
