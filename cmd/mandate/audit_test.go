package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/rates"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// auditEnv is a gateway database filled by the real guard: the shipped
// policy, the embedded store with its demo data, and a clock the test sets.
type auditEnv struct {
	dbPath string
	db     *storage.DB
	tools  map[string]server.ServerTool

	mu  sync.Mutex
	now time.Time
}

func (e *auditEnv) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.now = e.now.Add(time.Millisecond)
	return e.now
}

func (e *auditEnv) setClock(t time.Time) { e.mu.Lock(); e.now = t; e.mu.Unlock() }

func newAuditEnv(t *testing.T) *auditEnv {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	model, err := os.ReadFile("../../model.conf")
	if err != nil {
		t.Fatal(err)
	}
	rules, err := os.ReadFile("../../policy.csv")
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Load(policy.Source{Name: "model.conf", Data: model}, policy.Source{Name: "policy.csv", Data: rules})
	if err != nil {
		t.Fatal(err)
	}
	e := &auditEnv{dbPath: filepath.Join(dir, "mandate.db"), now: time.Now(), tools: map[string]server.ServerTool{}}
	if e.db, err = storage.Open(ctx, e.dbPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.db.Close() })
	e.db.Now = e.clock
	st, be, _, err := openStore(ctx, filepath.Join(dir, "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	// As a server does before deciding: its policy and rates are the live ones.
	if err := e.db.RecordPolicy(ctx, &storage.PolicyLoad{Version: pol.Version, Command: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := e.db.RecordRates(ctx, ratesLoad(rates.Default(), "test", "")); err != nil {
		t.Fatal(err)
	}
	for _, st := range tools.ServerTools(&tools.Deps{Policy: policy.NewEngine(pol), DB: e.db, Backend: be, Now: e.clock}) {
		e.tools[st.Tool.Name] = st
	}
	return e
}

// auditCall is one tool call and what the guard answered.
type auditCall struct {
	agent, tool string
	args        map[string]any
	actionID    string
	decision    string
}

// call runs a tool through the guard as agent and returns its action id
// and decision (empty for reads, which return no action).
func (e *auditEnv) call(t *testing.T, c *auditCall) {
	t.Helper()
	st, ok := e.tools[c.tool]
	if !ok {
		t.Fatalf("no tool %s", c.tool)
	}
	ctx := tools.WithAgent(context.Background(), c.agent)
	res, err := st.Handler(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: c.tool, Arguments: c.args}})
	if err != nil {
		t.Fatalf("%s %s: %v", c.agent, c.tool, err)
	}
	b, _ := json.Marshal(res.StructuredContent)
	var out struct {
		ActionID string `json:"action_id"`
		Decision string `json:"decision"`
	}
	_ = json.Unmarshal(b, &out)
	c.actionID, c.decision = out.ActionID, out.Decision
	// An action's outcome is written behind its answer: commit it before
	// the test reads the file through other handles, as a server does by
	// the time anyone else looks (within milliseconds).
	e.db.Settle(ctx)
}

// auditScript is the session every test below starts from: three days ago
// a refund and a phone change; an hour ago an email change that needs
// approval, a refused refund, a senior agent's refund and two lookups.
func auditScript(t *testing.T, e *auditEnv) (old, recent []*auditCall) {
	t.Helper()
	old = []*auditCall{
		{agent: "demo-agent", tool: "get_order", args: map[string]any{"order_id": "ord_1001"}},
		{agent: "demo-agent", tool: "refund_order", args: map[string]any{"order_id": "ord_1001", "amount": "30.00", "reason": "Item arrived scratched"}},
		{agent: "demo-agent", tool: "update_account", args: map[string]any{"customer_id": "cus_ada", "field": "phone", "value": "+441234000000", "reason": "New number"}},
	}
	recent = []*auditCall{
		{agent: "demo-agent", tool: "update_account", args: map[string]any{"customer_id": "cus_ada", "field": "email", "value": "ada.lovelace@example.com", "reason": "Old mailbox closed"}},
		{agent: "demo-agent", tool: "refund_order", args: map[string]any{"order_id": "ord_1002", "amount": "900.00", "reason": "Customer unhappy"}},
		{agent: "senior-bot", tool: "refund_order", args: map[string]any{"order_id": "ord_1002", "amount": "300.00", "reason": "Late delivery goodwill"}},
		{agent: "demo-agent", tool: "find_customer", args: map[string]any{"email": "grace@example.com"}},
		{agent: "demo-agent", tool: "get_customer", args: map[string]any{"customer_id": "cus_ada"}},
	}
	e.setClock(time.Now().Add(-72 * time.Hour))
	for _, c := range old {
		e.call(t, c)
	}
	e.setClock(time.Now().Add(-time.Hour))
	for _, c := range recent {
		e.call(t, c)
	}
	return old, recent
}

// runAuditCmd runs `mandate audit args…` in-process.
func runAuditCmd(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	err = run(ctx, append([]string{"audit"}, args...), strings.NewReader(""), &out, &errOut)
	return out.String(), errOut.String(), err
}

// auditExportRecord is one line of the JSON Lines export.
type auditExportRecord struct {
	Seq           int64           `json:"seq"`
	Time          time.Time       `json:"time"`
	Agent         string          `json:"agent"`
	Tool          string          `json:"tool"`
	Args          json.RawMessage `json:"args"`
	Decision      string          `json:"decision"`
	Rule          string          `json:"rule"`
	PolicyVersion string          `json:"policy_version"`
	ActionID      string          `json:"action_id"`
	Phase         string          `json:"phase"`
	Outcome       string          `json:"outcome"`
	Error         string          `json:"error"`
	Duration      int64           `json:"duration"`
	Hash          string          `json:"hash"`
}

func exportJSONL(t *testing.T, dbPath string, args ...string) []auditExportRecord {
	t.Helper()
	out, errOut, err := runAuditCmd(context.Background(), append([]string{"export", "--db", dbPath}, args...)...)
	if err != nil {
		t.Fatalf("audit export %v: %v\n%s", args, err, errOut)
	}
	var recs []auditExportRecord
	for i, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if line == "" {
			continue
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal([]byte(line), &fields); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", i+1, err, line)
		}
		for _, f := range []string{"seq", "time", "agent", "tool", "args", "decision", "rule", "policy_version", "action_id", "phase", "outcome", "error", "duration"} {
			if _, ok := fields[f]; !ok {
				t.Fatalf("line %d has no %s: %s", i+1, f, line)
			}
		}
		var r auditExportRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		recs = append(recs, r)
	}
	return recs
}

func auditSeqs(recs []auditExportRecord) []int64 {
	var s []int64
	for _, r := range recs {
		s = append(s, r.Seq)
	}
	return s
}

func TestAuditVerify(t *testing.T) {
	tests := []struct {
		name     string
		tamper   []string // run after dropping the append-only triggers
		seq      int64
		category string
	}{
		{"intact", nil, 0, ""},
		{"edited amount", []string{`UPDATE audit SET args = replace(args, '30.00', '3.00') WHERE seq = 3`}, 3, "edited"},
		{"edited decision", []string{`UPDATE audit SET decision = 'allow' WHERE seq = 7`}, 7, "edited"},
		{"deleted", []string{`DELETE FROM audit WHERE seq = 5`}, 5, "deleted"},
		{"swapped", []string{`UPDATE audit SET seq = -2 WHERE seq = 2`, `UPDATE audit SET seq = 2 WHERE seq = 6`, `UPDATE audit SET seq = 6 WHERE seq = -2`}, 2, "reordered"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newAuditEnv(t)
			auditScript(t, e)
			all := exportJSONL(t, e.dbPath)
			if len(all) < 8 {
				t.Fatalf("%d records, want the whole script's", len(all))
			}
			ctx := context.Background()
			out, _, err := runAuditCmd(ctx, "verify", "--db", e.dbPath)
			want := fmt.Sprintf("unanchored: %d records, head %s\n", len(all), all[len(all)-1].Hash)
			if err != nil || !strings.HasPrefix(out, want) {
				t.Fatalf("verify before tampering = %q, %v; want %q", out, err, want)
			}
			if tt.tamper == nil {
				return
			}
			raw, err := sql.Open("sqlite", storage.DSN(e.dbPath))
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			for _, s := range append([]string{`DROP TRIGGER audit_no_update`, `DROP TRIGGER audit_no_delete`}, tt.tamper...) {
				if _, err := raw.Exec(s); err != nil {
					t.Fatalf("%s: %v", s, err)
				}
			}
			out, _, err = runAuditCmd(ctx, "verify", "--db", e.dbPath)
			var ue usageError
			if err == nil || errors.As(err, &ue) {
				t.Fatalf("verify after tampering: err = %v, want a failure (exit status 1)", err)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("record %d", tt.seq)) {
				t.Fatalf("verify error %q does not name record %d", err, tt.seq)
			}
			prefix := fmt.Sprintf("broken: record %d: %s: ", tt.seq, tt.category)
			if !strings.HasPrefix(out, prefix) {
				t.Fatalf("verify printed %q, want it to start %q", out, prefix)
			}
			if want := fmt.Sprintf("the %d records before it are intact", tt.seq-1); !strings.Contains(out, want) {
				t.Fatalf("verify printed %q, want %q", out, want)
			}
		})
	}
}

func TestAuditExportFormats(t *testing.T) {
	e := newAuditEnv(t)
	auditScript(t, e)
	all := exportJSONL(t, e.dbPath)
	if len(all) == 0 {
		t.Fatal("no records")
	}
	ctx := context.Background()

	t.Run("csv", func(t *testing.T) {
		out, _, err := runAuditCmd(ctx, "export", "--db", e.dbPath, "--format", "csv")
		if err != nil {
			t.Fatal(err)
		}
		rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
		if err != nil {
			t.Fatalf("csv does not parse: %v", err)
		}
		if len(rows) != len(all)+1 {
			t.Fatalf("%d csv rows, want a header and %d records", len(rows), len(all))
		}
		col := map[string]int{}
		for i, name := range rows[0] {
			col[name] = i
		}
		for _, name := range []string{"seq", "time", "agent", "tool", "args", "decision", "rule", "policy_version", "action_id", "phase", "outcome", "error", "duration", "hash"} {
			if _, ok := col[name]; !ok {
				t.Fatalf("csv header %v has no %s", rows[0], name)
			}
		}
		for i, row := range rows[1:] {
			r := all[i]
			got := []string{row[col["seq"]], row[col["agent"]], row[col["tool"]], row[col["args"]], row[col["rule"]], row[col["hash"]], row[col["duration"]]}
			want := []string{strconv.FormatInt(r.Seq, 10), r.Agent, r.Tool, string(r.Args), r.Rule, r.Hash, strconv.FormatInt(r.Duration, 10)}
			if !slices.Equal(got, want) {
				t.Fatalf("csv row %d = %q, want %q", i+1, got, want)
			}
			if ts, err := time.Parse(time.RFC3339Nano, row[col["time"]]); err != nil || !ts.Equal(r.Time) {
				t.Fatalf("csv row %d time %q, want %s", i+1, row[col["time"]], r.Time)
			}
		}
	})

	t.Run("ocsf", func(t *testing.T) {
		out, _, err := runAuditCmd(ctx, "export", "--db", e.dbPath, "--format", "ocsf")
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != len(all) {
			t.Fatalf("%d OCSF events, want %d", len(lines), len(all))
		}
		activity := map[string]int{"get_order": 2, "get_customer": 2, "find_customer": 2, "refund_order": 1, "update_account": 3}
		statuses := map[int]bool{}
		for i, line := range lines {
			var ev struct {
				ActivityID  int    `json:"activity_id"`
				CategoryUID int    `json:"category_uid"`
				ClassUID    int    `json:"class_uid"`
				TypeUID     int    `json:"type_uid"`
				Time        int64  `json:"time"`
				SeverityID  *int   `json:"severity_id"`
				StatusID    int    `json:"status_id"`
				Status      string `json:"status"`
				Actor       struct {
					User struct{ Name string } `json:"user"`
				} `json:"actor"`
				API struct {
					Operation string `json:"operation"`
				} `json:"api"`
				Metadata struct {
					Version string `json:"version"`
					Product struct {
						Name    string `json:"name"`
						Version string `json:"version"`
					} `json:"product"`
				} `json:"metadata"`
				Unmapped struct {
					Rule          string `json:"rule"`
					PolicyVersion string `json:"policy_version"`
					ActionID      string `json:"action_id"`
					Hash          string `json:"hash"`
				} `json:"unmapped"`
			}
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				t.Fatalf("event %d is not JSON: %v", i+1, err)
			}
			r := all[i]
			if ev.ClassUID != 6003 || ev.CategoryUID != 6 || ev.TypeUID != 6003*100+ev.ActivityID || ev.SeverityID == nil {
				t.Fatalf("event %d: class %d category %d type %d severity %v, want an API Activity event", i+1, ev.ClassUID, ev.CategoryUID, ev.TypeUID, ev.SeverityID)
			}
			if want := activity[r.Tool]; ev.ActivityID != want {
				t.Fatalf("event %d (%s): activity_id %d, want %d", i+1, r.Tool, ev.ActivityID, want)
			}
			if ev.Time != r.Time.UnixMilli() || ev.Actor.User.Name != r.Agent || ev.API.Operation != r.Tool {
				t.Fatalf("event %d: time %d actor %q operation %q, want %d %q %q", i+1, ev.Time, ev.Actor.User.Name, ev.API.Operation, r.Time.UnixMilli(), r.Agent, r.Tool)
			}
			if !strings.HasPrefix(ev.Metadata.Version, "1.") || ev.Metadata.Product.Name != "Mandate" || ev.Metadata.Product.Version != version {
				t.Fatalf("event %d: metadata %+v", i+1, ev.Metadata)
			}
			u := ev.Unmapped
			if u.Rule != r.Rule || u.PolicyVersion != r.PolicyVersion || u.ActionID != r.ActionID || u.Hash != r.Hash {
				t.Fatalf("event %d: unmapped %+v, want the record's rule, policy version, action id and hash", i+1, u)
			}
			wantStatus := map[string]int{"executed": 1, "read": 1, "refused": 2, "not_found": 2, "pending": 99, "": 99}[r.Outcome]
			if ev.StatusID != wantStatus || ev.Status == "" {
				t.Fatalf("event %d (decision %s, outcome %q): status %d %q, want %d", i+1, r.Decision, r.Outcome, ev.StatusID, ev.Status, wantStatus)
			}
			statuses[ev.StatusID] = true
		}
		if !statuses[1] || !statuses[2] || !statuses[99] {
			t.Fatalf("statuses %v: the script has successes, failures and pending actions", statuses)
		}
	})
}

func TestAuditExportFilters(t *testing.T) {
	e := newAuditEnv(t)
	old, recent := auditScript(t, e)
	all := exportJSONL(t, e.dbPath)
	cutoff := time.Now().Add(-48 * time.Hour)
	tests := []struct {
		name string
		args []string
		keep func(r auditExportRecord) bool
	}{
		{"agent", []string{"--agent", "senior-bot"}, func(r auditExportRecord) bool { return r.Agent == "senior-bot" }},
		{"tool", []string{"--tool", "update_account"}, func(r auditExportRecord) bool { return r.Tool == "update_account" }},
		{"decision", []string{"--decision", "deny"}, func(r auditExportRecord) bool { return r.Decision == "deny" }},
		{"action", []string{"--action", old[1].actionID}, func(r auditExportRecord) bool { return r.ActionID == old[1].actionID }},
		{"since a duration ago", []string{"--since", "24h"}, func(r auditExportRecord) bool { return r.Time.After(cutoff) }},
		{"since days ago", []string{"--since", "2d"}, func(r auditExportRecord) bool { return r.Time.After(cutoff) }},
		{"until a time", []string{"--until", cutoff.Format(time.RFC3339)}, func(r auditExportRecord) bool { return r.Time.Before(cutoff) }},
		{"since and until", []string{"--since", "100h", "--until", "48h"}, func(r auditExportRecord) bool { return r.Time.Before(cutoff) }},
		{"tool and decision", []string{"--tool", "refund_order", "--decision", "allow"},
			func(r auditExportRecord) bool { return r.Tool == "refund_order" && r.Decision == "allow" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want []int64
			for _, r := range all {
				if tt.keep(r) {
					want = append(want, r.Seq)
				}
			}
			if len(want) == 0 || len(want) == len(all) {
				t.Fatalf("the filter keeps %d of %d records; the script must give it something to select", len(want), len(all))
			}
			if got := auditSeqs(exportJSONL(t, e.dbPath, tt.args...)); !slices.Equal(got, want) {
				t.Fatalf("export %v = seqs %v, want %v", tt.args, got, want)
			}
			for _, format := range []string{"csv", "ocsf"} {
				out, _, err := runAuditCmd(context.Background(), append([]string{"export", "--db", e.dbPath, "--format", format}, tt.args...)...)
				lines := strings.Count(out, "\n")
				if format == "csv" {
					lines-- // the header
				}
				if err != nil || lines != len(want) {
					t.Fatalf("export --format %s %v: %d records, %v; want %d", format, tt.args, lines, err, len(want))
				}
			}
		})
	}
	if recent[0].decision != "require_approval" || recent[1].decision != "deny" || old[1].decision != "allow" {
		t.Fatalf("the shipped policy decided %s, %s, %s; the script expects require_approval, deny, allow",
			recent[0].decision, recent[1].decision, old[1].decision)
	}
}

func TestAuditExportRedact(t *testing.T) {
	e := newAuditEnv(t)
	auditScript(t, e)
	personal := []string{"ada.lovelace@example.com", "+441234000000", "grace@example.com"}
	masked := []string{"a***@example.com", "+44******0000", "g***@example.com"}
	kept := []string{"ord_1001", "30.00", "Item arrived scratched", "cus_ada", `"field":"email"`, "senior-bot"}
	for _, format := range []string{"jsonl", "csv", "ocsf"} {
		t.Run(format, func(t *testing.T) {
			ctx := context.Background()
			plain, _, err := runAuditCmd(ctx, "export", "--db", e.dbPath, "--format", format)
			if err != nil {
				t.Fatal(err)
			}
			redacted, _, err := runAuditCmd(ctx, "export", "--db", e.dbPath, "--format", format, "--redact")
			if err != nil {
				t.Fatal(err)
			}
			if format == "csv" {
				plain, redacted = strings.ReplaceAll(plain, `""`, `"`), strings.ReplaceAll(redacted, `""`, `"`)
			}
			for i, p := range personal {
				if !strings.Contains(plain, p) {
					t.Fatalf("the plain export has no %q: the test would prove nothing", p)
				}
				if strings.Contains(redacted, p) {
					t.Fatalf("the redacted export shows %q", p)
				}
				if !strings.Contains(redacted, masked[i]) {
					t.Fatalf("the redacted export has no %q", masked[i])
				}
			}
			for _, k := range kept {
				if !strings.Contains(redacted, k) {
					t.Fatalf("the redacted export lost %q, which is not personal data", k)
				}
			}
			if strings.Count(plain, "\n") != strings.Count(redacted, "\n") {
				t.Fatalf("redaction changed the number of lines")
			}
		})
	}
}

// auditBuffer is a bytes.Buffer safe to read while tail writes to it.
type auditBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *auditBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *auditBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls cond until it holds or a few seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestAuditTail(t *testing.T) {
	e := newAuditEnv(t)
	auditScript(t, e)
	all := exportJSONL(t, e.dbPath)
	if len(all) <= 10 {
		t.Fatalf("%d records: the script must write more than tail shows", len(all))
	}

	t.Run("last records", func(t *testing.T) {
		for _, n := range []int{3, 10} {
			out, _, err := runAuditCmd(context.Background(), "tail", "--db", e.dbPath, "--format", "jsonl", "-n", strconv.Itoa(n))
			if err != nil {
				t.Fatal(err)
			}
			var got []int64
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				var r auditExportRecord
				if err := json.Unmarshal([]byte(line), &r); err != nil {
					t.Fatalf("tail line %q: %v", line, err)
				}
				got = append(got, r.Seq)
			}
			if want := auditSeqs(all[len(all)-n:]); !slices.Equal(got, want) {
				t.Fatalf("tail -n %d = seqs %v, want %v", n, got, want)
			}
		}
		out, _, err := runAuditCmd(context.Background(), "tail", "--db", e.dbPath)
		if err != nil || strings.Count(out, "\n") != 10 || !strings.Contains(out, all[len(all)-1].ActionID) {
			t.Fatalf("tail in text = %v\n%s\nwant the last 10 records, one a line", err, out)
		}
	})

	t.Run("follow", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var out auditBuffer
		done := make(chan error, 1)
		go func() {
			done <- run(ctx, []string{"audit", "tail", "-f", "--db", e.dbPath, "--format", "jsonl"}, strings.NewReader(""), &out, &out)
		}()
		waitFor(t, "the last 10 records", func() bool { return strings.Count(out.String(), "\n") >= 10 })
		if strings.Contains(out.String(), `"seq":`+strconv.FormatInt(all[len(all)-11].Seq, 10)+`,`) {
			t.Fatalf("tail printed more than the last 10 records:\n%s", out.String())
		}
		c := &auditCall{agent: "demo-agent", tool: "refund_order", args: map[string]any{"order_id": "ord_1004", "amount": "5.00", "reason": "Late"}}
		e.call(t, c)
		if c.actionID == "" {
			t.Fatal("the refund returned no action id")
		}
		written := exportJSONL(t, e.dbPath, "--action", c.actionID)
		if len(written) == 0 {
			t.Fatal("the refund wrote no audit record")
		}
		waitFor(t, "the new records", func() bool { return strings.Count(out.String(), c.actionID) >= len(written) })
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("tail -f after cancel: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("tail -f did not stop when cancelled")
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != 10+len(written) {
			t.Fatalf("tail -f printed %d lines, want 10 and the %d new records:\n%s", len(lines), len(written), out.String())
		}
	})
}

func TestAuditUsageErrors(t *testing.T) {
	e := newAuditEnv(t)
	tests := []struct {
		name string
		args []string
	}{
		{"no subcommand", nil},
		{"unknown subcommand", []string{"rewrite"}},
		{"unknown format", []string{"export", "--db", e.dbPath, "--format", "xml"}},
		{"unknown decision", []string{"export", "--db", e.dbPath, "--decision", "maybe"}},
		{"unreadable since", []string{"export", "--db", e.dbPath, "--since", "yesterday"}},
		{"negative duration", []string{"export", "--db", e.dbPath, "--until", "-5h"}},
		{"negative count", []string{"tail", "--db", e.dbPath, "-n", "-1"}},
		{"stray argument", []string{"verify", "--db", e.dbPath, "extra"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := runAuditCmd(context.Background(), tt.args...)
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("audit %v: err = %v, want a usage error (exit status 2)", tt.args, err)
			}
			if out != "" {
				t.Fatalf("audit %v printed %q to stdout", tt.args, out)
			}
		})
	}
	_, _, err := runAuditCmd(context.Background(), "verify", "--db", filepath.Join(t.TempDir(), "missing.db"))
	if err == nil || !strings.Contains(err.Error(), "no audit database") {
		t.Fatalf("verify on a missing file: %v, want a clear error", err)
	}
}

// TestAuditExportHelpListsEveryFormat: every format export writes is named
// in its -h, in the audit group's list, in `mandate help` and in the README.
func TestAuditExportHelpListsEveryFormat(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	// exportLine is the first line of text that shows export's --format.
	exportLine := func(text string) string {
		for _, l := range strings.Split(text, "\n") {
			if strings.Contains(l, "audit export") && strings.Contains(l, "--format ") {
				return l
			}
		}
		return ""
	}
	help, _, _ := runInProcess("audit", "export", "-h")
	group, _, _ := runInProcess("audit", "-h")
	top, _, _ := runInProcess("help")
	lines := map[string]string{"audit export -h": exportLine(help), "audit -h": exportLine(group), "mandate help": exportLine(top), "README.md": exportLine(string(readme))}
	for _, format := range []string{"jsonl", "csv", "ocsf", "text"} {
		if _, err := newRecordWriter(format, io.Discard); err != nil {
			t.Fatalf("export does not write %s: %v", format, err)
		}
		for where, text := range lines {
			if !regexp.MustCompile(`--format [a-z|]*\b` + format + `\b`).MatchString(text) {
				t.Errorf("%s does not list --format %s for audit export:\n%s", where, format, text)
			}
		}
		if !strings.Contains(help, format) {
			t.Errorf("the --format help does not describe %s:\n%s", format, help)
		}
	}
}
