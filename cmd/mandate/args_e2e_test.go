package main

// Strict arguments, not_found and cancellation over the real binary, with
// JSON-RPC written by hand: duplicate keys and number text cannot be
// expressed through a Go client's map, and a cancel must race a real call.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate/storage"
)

// rawServer is `mandate serve` spoken to line by line.
type rawServer struct {
	t      *testing.T
	stdin  io.WriteCloser
	mu     sync.Mutex
	byID   map[string]chan json.RawMessage
	nextID int
}

// startRaw spawns `mandate serve` for agent on the given databases and
// initializes a session with it.
func startRaw(t *testing.T, agent, dbPath, storePath string, args ...string) *rawServer {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--agent", agent, "--db", dbPath, "--store", storePath}, args...)...)
	cmd.Env = childEnv(nil)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &rawServer{t: t, stdin: stdin, byID: map[string]chan json.RawMessage{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			var m struct {
				ID json.RawMessage `json:"id"`
			}
			if json.Unmarshal(sc.Bytes(), &m) != nil || len(m.ID) == 0 {
				continue // a notification
			}
			s.reply(string(m.ID)) <- append(json.RawMessage(nil), sc.Bytes()...)
		}
	}()
	t.Cleanup(func() {
		stdin.Close()
		<-done
		if err := cmd.Wait(); err != nil {
			t.Errorf("mandate serve did not exit cleanly: %v", err)
		}
		if t.Failed() {
			t.Logf("mandate serve stderr:\n%s", stderr.String())
		}
	})
	s.request(`"initialize"`, `{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"test"}}`)
	s.send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	return s
}

func (s *rawServer) reply(id string) chan json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.byID[id]
	if !ok {
		ch = make(chan json.RawMessage, 1)
		s.byID[id] = ch
	}
	return ch
}

func (s *rawServer) send(line string) {
	s.t.Helper()
	if _, err := io.WriteString(s.stdin, line+"\n"); err != nil {
		s.t.Fatalf("write to server: %v", err)
	}
}

// start sends a request and returns its id, without waiting.
func (s *rawServer) start(method, params string) string {
	s.mu.Lock()
	s.nextID++
	id := fmt.Sprint(s.nextID)
	s.mu.Unlock()
	s.send(`{"jsonrpc":"2.0","id":` + id + `,"method":` + method + `,"params":` + params + `}`)
	return id
}

// wait returns the response to id.
func (s *rawServer) wait(id string) json.RawMessage {
	s.t.Helper()
	select {
	case r := <-s.reply(id):
		return r
	case <-time.After(20 * time.Second):
		s.t.Fatalf("no response to request %s", id)
		return nil
	}
}

func (s *rawServer) request(method, params string) json.RawMessage {
	s.t.Helper()
	return s.wait(s.start(method, params))
}

// rawResult is a tools/call response's result.
type rawResult struct {
	IsError bool `json:"isError"`
	Content []struct {
		Text string `json:"text"`
	} `json:"content"`
	Structured json.RawMessage `json:"structuredContent"`
}

// callRaw sends tools/call with arguments written as raw JSON text.
func (s *rawServer) callRaw(tool, args string) rawResult {
	s.t.Helper()
	return s.result(s.wait(s.start(`"tools/call"`, `{"name":"`+tool+`","arguments":`+args+`}`)))
}

func (s *rawServer) result(resp json.RawMessage) rawResult {
	s.t.Helper()
	var r struct {
		Result *rawResult      `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(resp, &r); err != nil || r.Result == nil {
		s.t.Fatalf("response %s is not a tool result", resp)
	}
	return *r.Result
}

// textError reads a result's text as {"error","message"} JSON.
func textError(t *testing.T, r rawResult) errorResult {
	t.Helper()
	if len(r.Content) == 0 {
		t.Fatalf("result has no text content")
	}
	var e errorResult
	if err := json.Unmarshal([]byte(r.Content[0].Text), &e); err != nil {
		t.Fatalf("result text %q is not JSON: %v", r.Content[0].Text, err)
	}
	return e
}

// auditRecords reads the whole audit trail from the database file.
func auditRecords(t *testing.T, dbPath string) []storage.Record {
	t.Helper()
	db, err := storage.Open(context.Background(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var out []storage.Record
	if err := db.Records(context.Background(), storage.Filter{}, func(r *storage.Record) error {
		out = append(out, *r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestStrictArgumentsOverStdio: keys that encoding/json would fold or
// choose between, amounts that a float64 would round, and account values
// that would fail only after approval are refused by the real server
// before anything is recorded; a number amount is recorded canonically;
// an unknown id answers not_found as documented and is audited so.
func TestStrictArgumentsOverStdio(t *testing.T) {
	dir := t.TempDir()
	dbPath, storePath := filepath.Join(dir, "mandate.db"), filepath.Join(dir, "store.db")
	s := startRaw(t, "demo-agent", dbPath, storePath)

	refused := []struct {
		name, tool, args, want string
	}{
		{"folded key", "update_account", `{"customer_id":"cus_ada","cuſtomer_id":"cus_grace","field":"phone","value":"+441234000111","reason":"New number"}`, `unknown argument "cuſtomer_id"`},
		{"upper-case key", "refund_order", `{"ORDER_ID":"ord_1001","amount":"1.00","reason":"x"}`, `unknown argument "ORDER_ID"`},
		{"kelvin sign key", "refund_order", `{"order_id":"ord_1001","amount":"1.00","reason":"x","idempotency_\u212aey":"k1"}`, "unknown argument \"idempotency_\u212aey\""},
		{"duplicate key", "update_account", `{"customer_id":"cus_ada","customer_id":"cus_grace","field":"phone","value":"+441234000111","reason":"New number"}`, `argument "customer_id" appears more than once`},
		{"duplicate escaped key", "refund_order", `{"order_id":"ord_1001","order\u005fid":"ord_1002","amount":"1.00","reason":"x"}`, `argument "order_id" appears more than once`},
		{"float amount", "refund_order", `{"order_id":"ord_1001","amount":30.000000000000001,"reason":"Item arrived scratched"}`, `amount "30.000000000000001" has more than 2 decimal places for USD`},
		{"invalid email", "update_account", `{"customer_id":"cus_ada","field":"email","value":"not-an-email","reason":"Old mailbox closed"}`, "not an email address"},
		{"markup email", "update_account", `{"customer_id":"cus_ada","field":"email","value":"<b>ada</b>@example.com","reason":"Old mailbox closed"}`, "not an email address"},
		{"display-name email", "update_account", `{"customer_id":"cus_ada","field":"email","value":"Ada <ada@example.com>","reason":"Old mailbox closed"}`, "not an email address"},
		{"phone with letters", "update_account", `{"customer_id":"cus_ada","field":"phone","value":"call me maybe","reason":"New number"}`, "E.164"},
		{"phone without plus", "update_account", `{"customer_id":"cus_ada","field":"phone","value":"441234000111","reason":"New number"}`, "E.164"},
		{"bidi in name", "update_account", `{"customer_id":"cus_ada","field":"name","value":"Ada \u202eecalevoL","reason":"Married name"}`, "invisible"},
		{"markup in address", "update_account", `{"customer_id":"cus_ada","field":"shipping_address","value":"<script>x</script>","reason":"Moved"}`, "may not contain"},
		{"no reason", "update_account", `{"customer_id":"cus_ada","field":"phone","value":"+441234000111"}`, "argument reason is required"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			before := len(auditRecords(t, dbPath))
			r := s.callRaw(tt.tool, tt.args)
			e := textError(t, r)
			if !r.IsError || e.Error != "invalid" || !strings.Contains(e.Message, tt.want) {
				t.Fatalf("isError=%v %+v, want invalid mentioning %q", r.IsError, e, tt.want)
			}
			if after := len(auditRecords(t, dbPath)); after != before {
				t.Fatalf("audit grew from %d to %d records for refused input", before, after)
			}
		})
	}
	// Nothing changed in the store either.
	var cus customerView
	if err := json.Unmarshal(s.callRaw("get_customer", `{"customer_id":"cus_ada"}`).Structured, &cus); err != nil {
		t.Fatal(err)
	}
	if cus.Email != "ada@example.com" || cus.Phone == "+441234000111" {
		t.Fatalf("cus_ada is now %+v after refused updates", cus)
	}
	var grace customerView
	if err := json.Unmarshal(s.callRaw("get_customer", `{"customer_id":"cus_grace"}`).Structured, &grace); err != nil {
		t.Fatal(err)
	}
	if grace.Phone == "+441234000111" {
		t.Fatalf("cus_grace's phone changed through a folded or duplicate key")
	}

	t.Run("number amount recorded canonically", func(t *testing.T) {
		r := s.callRaw("refund_order", `{"order_id":"ord_1001","amount":30,"reason":"Item arrived scratched"}`)
		var res actionResult
		if err := json.Unmarshal(r.Structured, &res); err != nil || r.IsError || res.Status != "executed" {
			t.Fatalf("refund of 30: isError=%v %+v, want executed", r.IsError, res)
		}
		for _, rec := range auditRecords(t, dbPath) {
			if rec.ActionID != res.ActionID {
				continue
			}
			var args map[string]any
			if err := json.Unmarshal(rec.Args, &args); err != nil || args["amount"] != "30.00" {
				t.Fatalf("%s record args %s, want amount \"30.00\"", rec.Phase, rec.Args)
			}
		}
	})

	t.Run("not found", func(t *testing.T) {
		for _, c := range []struct{ tool, args, id string }{
			{"refund_order", `{"order_id":"ord_9999","amount":"1.00","reason":"x"}`, "ord_9999"},
			{"cancel_order", `{"order_id":"ord_9999","reason":"x"}`, "ord_9999"},
			{"update_account", `{"customer_id":"cus_nobody","field":"phone","value":"+441234000111","reason":"New number"}`, "cus_nobody"},
		} {
			r := s.callRaw(c.tool, c.args)
			e := textError(t, r)
			if !r.IsError || e.Error != "not_found" || !strings.Contains(e.Message, c.id) {
				t.Fatalf("%s: isError=%v text %q, want {\"error\":\"not_found\",…} naming %s", c.tool, r.IsError, r.Content[0].Text, c.id)
			}
			var res actionResult
			if err := json.Unmarshal([]byte(r.Content[0].Text), &res); err != nil || res.ActionID == "" || res.Decision != "deny" {
				t.Fatalf("%s: %+v, want the audited refusal's action_id and decision deny", c.tool, res)
			}
			// Found by its action: an earlier call's outcome or lookup,
			// written behind its answer, may be committed after it.
			var last storage.Record
			for _, r := range auditRecords(t, dbPath) {
				if r.ActionID == res.ActionID {
					last = r
				}
			}
			if last.ActionID != res.ActionID || last.Decision != "deny" || last.Error != "not_found" {
				t.Fatalf("%s: audit record %+v, want the deny with error not_found", c.tool, last)
			}
		}
	})
}

// TestCancelOverStdio: calls cancelled with notifications/cancelled right
// after they are sent either did nothing (their key finds nothing, the
// store is unchanged) or were carried out and are found by their key.
func TestCancelOverStdio(t *testing.T) {
	dir := t.TempDir()
	dbPath, storePath := filepath.Join(dir, "mandate.db"), filepath.Join(dir, "store.db")
	// Every refund is allowed, so each call is either nothing or executed.
	pol := filepath.Join(dir, "policy.csv")
	if err := os.WriteFile(pol, []byte("p, demo-agent, refund_order, true, allow\np, demo-agent, get_action_status, true, allow\np, demo-agent, get_order, true, allow\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startRaw(t, "demo-agent", dbPath, storePath, "--policy", pol)
	const n = 8
	ids := make([]string, n)
	for i := range n {
		ids[i] = s.start(`"tools/call"`, fmt.Sprintf(`{"name":"refund_order","arguments":{"order_id":"ord_1002","amount":"1.00","reason":"Goodwill","idempotency_key":"cancel-%d"}}`, i))
		s.send(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":` + ids[i] + `,"reason":"user pressed stop"}}`)
	}
	for _, id := range ids {
		s.wait(id) // the server answers even a cancelled call; its answer is not read
	}
	done := 0
	for i := range n {
		r := s.callRaw("get_action_status", fmt.Sprintf(`{"idempotency_key":"cancel-%d"}`, i))
		if r.IsError {
			if e := textError(t, r); e.Error != "not_found" {
				t.Fatalf("cancel-%d: %+v, want not_found or the action", i, e)
			}
			continue
		}
		var st actionStatus
		if err := json.Unmarshal(r.Structured, &st); err != nil || st.Status != "executed" {
			t.Fatalf("cancel-%d: status %+v, want executed (a recorded call runs to its end)", i, st)
		}
		done++
	}
	var o orderView
	if err := json.Unmarshal(s.callRaw("get_order", `{"order_id":"ord_1002"}`).Structured, &o); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%d.00", done); o.Refunded != want {
		t.Fatalf("ord_1002 refunded %s, but %d refunds are recorded", o.Refunded, done)
	}
	t.Logf("%d of %d cancelled calls had been recorded and were carried out", done, n)
}
