package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is an OTLP/HTTP trace receiver on loopback: it decodes each
// export with the official OTLP protobuf types and keeps the spans.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []*tracepb.Span
	url   string
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	rcv := &otlpReceiver{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "want POST /v1/traces application/x-protobuf", http.StatusBadRequest)
			return
		}
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		b, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rcv.mu.Lock()
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				rcv.spans = append(rcv.spans, ss.Spans...)
			}
		}
		rcv.mu.Unlock()
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	rcv.url = "http://" + ln.Addr().String()
	return rcv
}

func (r *otlpReceiver) got() []*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*tracepb.Span(nil), r.spans...)
}

// callMeta sends one tools/call with _meta.
func callMeta(t *testing.T, c *client.Client, tool string, args map[string]any, meta map[string]any) actionResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	res, err := c.CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: tool, Arguments: args, Meta: &mcp.Meta{AdditionalFields: meta}}})
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	var out actionResult
	if res.StructuredContent != nil {
		decode(t, res, &out)
	}
	return out
}

func attrString(v *commonpb.AnyValue) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestTraceContextAndSpansE2E(t *testing.T) {
	rcv := newOTLPReceiver(t)
	dir := t.TempDir()
	dbPath, storePath := filepath.Join(dir, "mandate.db"), filepath.Join(dir, "store.db")
	c := startServer(t, "2025-06-18", []string{"MANDATE_AGENT=demo-agent"}, "--db", dbPath, "--store", storePath, "--otlp-endpoint", rcv.url)

	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	traced := callMeta(t, c, "update_account",
		map[string]any{"customer_id": "cus_ada", "field": "phone", "value": "+441234000111", "reason": "asked on a verified call"},
		map[string]any{"traceparent": "00-" + traceID + "-" + parentID + "-01", "io.mandate/conversation": "conv-42"})
	if traced.Status != storage.StatusExecuted {
		t.Fatalf("traced update: %+v", traced)
	}
	refund := callMeta(t, c, "refund_order", map[string]any{"order_id": "ord_1001", "amount": "5.00", "reason": "late"},
		map[string]any{"traceparent": "00-" + traceID + "-" + parentID + "-01"})
	// Invalid values are ignored, never a reason to refuse.
	bad := callMeta(t, c, "update_account",
		map[string]any{"customer_id": "cus_ada", "field": "name", "value": "Ada King", "reason": "married name"},
		map[string]any{"traceparent": "00-" + strings.Repeat("0", 32) + "-" + parentID + "-01", "io.mandate/conversation": "conv\u202e42"})
	if bad.Status != storage.StatusExecuted {
		t.Fatalf("call with invalid correlation: %+v", bad)
	}

	t.Run("records", func(t *testing.T) {
		out, errOut, err := runMandate(t, nil, "audit", "export", "--db", dbPath, "--trace", strings.ToUpper(traceID))
		if err != nil {
			t.Fatalf("%v: %s", err, errOut)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 4 {
			t.Fatalf("export --trace: %d records, want the attempt and outcome of 2 actions:\n%s", len(lines), out)
		}
		for _, l := range lines {
			var r storage.Record
			if err := json.Unmarshal([]byte(l), &r); err != nil {
				t.Fatal(err)
			}
			if r.TraceID != traceID || (r.ActionID != traced.ActionID && r.ActionID != refund.ActionID) {
				t.Fatalf("record %s", l)
			}
			if want := map[string]string{traced.ActionID: "conv-42", refund.ActionID: ""}[r.ActionID]; r.ConversationID != want {
				t.Fatalf("conversation %q, want %q: %s", r.ConversationID, want, l)
			}
		}
		all, _, _ := runMandate(t, nil, "audit", "export", "--db", dbPath, "--action", bad.ActionID)
		if !strings.Contains(all, `"trace_id":""`) || !strings.Contains(all, `"conversation_id":""`) || strings.Contains(all, `"conversation_id":"c`) {
			t.Fatalf("invalid correlation was recorded:\n%s", all)
		}
		lin, _, err := runMandate(t, nil, "lineage", "--customer", "cus_ada", "--trace", traceID, "--db", dbPath)
		if err != nil || strings.Count(lin, "\n") != 4 || !strings.Contains(lin, "conversation conv-42") || strings.Contains(lin, bad.ActionID) {
			t.Fatalf("lineage --trace: %v\n%s", err, lin)
		}
	})

	t.Run("spans", func(t *testing.T) {
		want := []string{"tools/call update_account", "tools/call refund_order", "mandate.facts", "mandate.decision", "mandate.audit.append", "mandate.backend.call"}
		waitFor(t, "spans of every step at the OTLP receiver", func() bool {
			names := map[string]bool{}
			for _, s := range rcv.got() {
				names[s.Name] = true
			}
			for _, n := range want {
				if !names[n] {
					return false
				}
			}
			return true
		})
		spans := rcv.got()
		// The traced call's span is a child of the client's span, in its trace.
		var root *tracepb.Span
		for _, s := range spans {
			if s.Name == "tools/call update_account" && hex.EncodeToString(s.TraceId) == traceID {
				root = s
			}
		}
		if root == nil || hex.EncodeToString(root.ParentSpanId) != parentID {
			t.Fatalf("no tools/call update_account span with trace %s and parent %s: %v", traceID, parentID, spans)
		}
		children := map[string]bool{}
		for _, s := range spans {
			if bytes.Equal(s.ParentSpanId, root.SpanId) {
				children[s.Name] = true
				if !bytes.Equal(s.TraceId, root.TraceId) {
					t.Fatalf("child %s is in another trace", s.Name)
				}
			}
		}
		for _, n := range want[2:] {
			if !children[n] {
				t.Fatalf("the tool call span has children %v; want %s among them", children, n)
			}
		}
		attrs := map[string]string{}
		for _, a := range root.Attributes {
			attrs[a.Key] = attrString(a.Value)
		}
		if !strings.Contains(attrs["mandate.action_id"], traced.ActionID) || !strings.Contains(attrs["mandate.effect"], "allow") || !strings.Contains(attrs["mandate.tool"], "update_account") {
			t.Fatalf("tool call span attributes %v", attrs)
		}
		// No customer personal data anywhere: not the old or new values, not
		// the customer's name, email or phone, not the customer id.
		pii := []string{"Ada", "Lovelace", "ada@example.com", "+441234567890", "441234000111", "Ada King", "cus_ada", "late", "verified"}
		for _, s := range spans {
			for _, a := range s.Attributes {
				for _, p := range pii {
					if strings.Contains(attrString(a.Value), p) || strings.Contains(a.Key, p) {
						t.Fatalf("span %s attribute %s = %s holds %q", s.Name, a.Key, attrString(a.Value), p)
					}
				}
			}
			if s.Status != nil && s.Status.Message != "" {
				for _, p := range pii {
					if strings.Contains(s.Status.Message, p) {
						t.Fatalf("span %s status %q holds %q", s.Name, s.Status.Message, p)
					}
				}
			}
		}
	})
}

// Over HTTP the traceparent header carries the trace; a traceparent in the
// call's _meta wins over it.
func TestTraceparentHeaderHTTP(t *testing.T) {
	f := newHTTPFiles(t)
	key := f.key(t, "demo-agent")
	base := startHTTP(t, f)
	const headerTrace, metaTrace = "0af7651916cd43dd8448eb211c80319c", "4bf92f3577b34da6a3ce929d0e0e4736"
	c := connectMCPGo(t, base, mcp.LATEST_PROTOCOL_VERSION, map[string]string{
		"Authorization": "Bearer " + key, "traceparent": "00-" + headerTrace + "-b7ad6b7169203331-01"}).(mcpGoClient)
	byHeader := callMeta(t, c.c, "update_account", map[string]any{"customer_id": "cus_ada", "field": "phone", "value": "+441234000222", "reason": "verified call"}, nil)
	byMeta := callMeta(t, c.c, "update_account", map[string]any{"customer_id": "cus_ada", "field": "phone", "value": "+441234000333", "reason": "verified call"},
		map[string]any{"traceparent": "00-" + metaTrace + "-00f067aa0ba902b7-01"})
	for trace, id := range map[string]string{headerTrace: byHeader.ActionID, metaTrace: byMeta.ActionID} {
		out, errOut, err := runMandate(t, nil, "audit", "export", "--db", f.db, "--trace", trace)
		if err != nil {
			t.Fatalf("%v: %s", err, errOut)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if id == "" || len(lines) != 2 || !strings.Contains(lines[0], id) || !strings.Contains(lines[1], `"trace_id":"`+trace+`"`) {
			t.Fatalf("export --trace %s: want the attempt and outcome of %s:\n%s", trace, id, out)
		}
	}
}

// TestOTLPErrorsInJSONLogs: with the collector away, the OpenTelemetry
// SDK's export errors reach stderr through Mandate's logger, so with
// --log-format json every stderr line is still a JSON object.
func TestOTLPErrorsInJSONLogs(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() // nothing listens once closed
	ln.Close()
	dir := t.TempDir()
	calls := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}
{"jsonrpc":"2.0","method":"notifications/initialized"}
{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_order","arguments":{"order_id":"ord_1001"}}}
`
	cmd := exec.Command(bin, "serve", "--agent", "demo-agent", "--log-format", "json", "--otlp-endpoint", closed,
		"--db", filepath.Join(dir, "m.db"), "--store", filepath.Join(dir, "s.db"))
	cmd.Env = childEnv(nil)
	cmd.Stdin = strings.NewReader(calls)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("serve: %v\n%s", err, stderr.String())
	}
	sawExport := false
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		var v map[string]any
		if json.Unmarshal([]byte(line), &v) != nil {
			t.Fatalf("a stderr line is not JSON: %q", line)
		}
		sawExport = sawExport || strings.Contains(line, "OpenTelemetry")
	}
	if !sawExport {
		t.Fatalf("no export failure was logged with the collector away:\n%s", stderr.String())
	}
}
