package main

// Compatibility tests with a second, independent MCP client: the official Go
// SDK drives the real binary (built by TestMain in e2e_test.go) over stdio.
// The SDK does not check tool results against their output schemas, so these
// tests do what the official TypeScript SDK's client does, with a real JSON
// Schema validator (draft 2020-12, formats asserted as its Ajv does): a
// tools/list whose schemas a client cannot use, or a result that does not
// match its tool's outputSchema, fails here rather than in an agent's client.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// toolSchemas are one tool's schemas, compiled.
type toolSchemas struct {
	name string
	in   *jsonschema.Schema
	out  *jsonschema.Schema // nil when the tool declares no outputSchema
}

// sdkServer is a mandate serve process with an official-SDK session.
type sdkServer struct {
	session *sdk.ClientSession
	tools   map[string]*toolSchemas
}

// jsonValue turns v into the generic JSON value the validator expects, with
// numbers as json.Number, by a round trip through its encoding.
func jsonValue(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return jsonschema.UnmarshalJSON(bytes.NewReader(b))
}

// checkShape checks what the TypeScript SDK's ToolSchema demands of an
// inputSchema or outputSchema before it accepts a tools/list at all: an
// object schema whose properties are each a schema object (a boolean schema
// such as "result": true is refused) and whose required is a list of names.
func checkShape(which string, schema any) error {
	m, ok := schema.(map[string]any)
	if !ok {
		return fmt.Errorf("%s is %T, want a JSON object", which, schema)
	}
	if m["type"] != "object" {
		return fmt.Errorf(`%s has type %v, want "object"`, which, m["type"])
	}
	if p, present := m["properties"]; present {
		props, ok := p.(map[string]any)
		if !ok {
			return fmt.Errorf("%s.properties is %T, want an object", which, p)
		}
		for name, prop := range props {
			if _, ok := prop.(map[string]any); !ok {
				return fmt.Errorf("%s.properties.%s is %v (%T), want a schema object", which, name, prop, prop)
			}
		}
	}
	if r, present := m["required"]; present {
		req, ok := r.([]any)
		if !ok {
			return fmt.Errorf("%s.required is %T, want a list of names", which, r)
		}
		for _, name := range req {
			if _, ok := name.(string); !ok {
				return fmt.Errorf("%s.required holds %v (%T), want names", which, name, name)
			}
		}
	}
	return nil
}

// compileSchema compiles one schema as draft 2020-12, asserting formats.
func compileSchema(url string, schema any) (*jsonschema.Schema, error) {
	doc, err := jsonValue(schema)
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource(url, doc); err != nil {
		return nil, err
	}
	return c.Compile(url)
}

// compileTool checks and compiles a listed tool's schemas.
func compileTool(tool *sdk.Tool) (*toolSchemas, error) {
	ts := &toolSchemas{name: tool.Name}
	if err := checkShape("inputSchema", tool.InputSchema); err != nil {
		return nil, err
	}
	in, err := compileSchema("mem://"+tool.Name+"/input.json", tool.InputSchema)
	if err != nil {
		return nil, fmt.Errorf("inputSchema: %v", err)
	}
	ts.in = in
	if tool.OutputSchema == nil {
		return ts, nil
	}
	if err := checkShape("outputSchema", tool.OutputSchema); err != nil {
		return nil, err
	}
	if ts.out, err = compileSchema("mem://"+tool.Name+"/output.json", tool.OutputSchema); err != nil {
		return nil, fmt.Errorf("outputSchema: %v", err)
	}
	return ts, nil
}

// checkArgs validates arguments against the tool's inputSchema, as a client
// whose model follows the schema would send them.
func (ts *toolSchemas) checkArgs(args any) error {
	v, err := jsonValue(args)
	if err != nil {
		return err
	}
	return ts.in.Validate(v)
}

// checkResult does what the TypeScript SDK's callTool does with a result: a
// tool with an outputSchema must return structuredContent unless isError,
// and any structuredContent, of a success or of an error, must be an object
// that validates against the outputSchema.
func (ts *toolSchemas) checkResult(res *sdk.CallToolResult) error {
	if res.StructuredContent == nil {
		if ts.out != nil && !res.IsError {
			return fmt.Errorf("tool %s has an output schema but did not return structured content", ts.name)
		}
		return nil
	}
	v, err := jsonValue(res.StructuredContent)
	if err != nil {
		return err
	}
	if _, ok := v.(map[string]any); !ok {
		return fmt.Errorf("structuredContent is %T, want a JSON object", v)
	}
	if ts.out == nil {
		return nil
	}
	if err := ts.out.Validate(v); err != nil {
		return fmt.Errorf("structured content (isError %v) does not match the tool's output schema: %v", res.IsError, err)
	}
	return nil
}

// connectSDK spawns `mandate serve --agent agent` on the given files and
// connects the official Go SDK to it at protocol version proto (from
// 2026-07-28 the SDK starts with server/discover instead of initialize), then
// lists and compiles every tool. At cleanup it hangs up and expects a clean exit.
func connectSDK(t *testing.T, agent, proto, dbPath, storePath string) *sdkServer {
	t.Helper()
	stderr := &syncBuffer{}
	cmd := exec.Command(bin, "serve", "--agent", agent, "--db", dbPath, "--store", storePath)
	cmd.Env = childEnv(nil)
	cmd.Stderr = stderr
	client := sdk.NewClient(&sdk.Implementation{Name: "mandate-sdk-test", Version: "test"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	session, err := client.Connect(ctx, &sdk.CommandTransport{Command: cmd}, &sdk.ClientSessionOptions{ProtocolVersion: proto})
	if err != nil {
		t.Fatalf("%s: connect: %v\nstderr:\n%s", agent, err, stderr.String())
	}
	t.Cleanup(func() {
		if err := session.Close(); err != nil {
			t.Errorf("mandate serve --agent %s did not exit cleanly when its client hung up: %v", agent, err)
		}
		if strings.Contains(stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("mandate serve --agent %s had a data race", agent)
		}
		if t.Failed() {
			t.Logf("mandate serve --agent %s stderr:\n%s", agent, stderr.String())
		}
	})
	init := session.InitializeResult()
	if init == nil || init.ServerInfo == nil || init.ServerInfo.Name != "mandate" {
		t.Fatalf("%s: initialize result %+v, want serverInfo.name mandate", agent, init)
	}
	if init.ProtocolVersion != proto {
		t.Fatalf("%s: negotiated protocol %q, want %q", agent, init.ProtocolVersion, proto)
	}
	list, err := session.ListTools(ctx, nil)
	if err != nil {
		t.Fatalf("%s: tools/list: %v", agent, err)
	}
	srv := &sdkServer{session: session, tools: map[string]*toolSchemas{}}
	for _, tool := range list.Tools {
		ts, err := compileTool(tool)
		if err != nil {
			t.Errorf("%s: tools/list: tool %s: %v", agent, tool.Name, err)
			continue
		}
		srv.tools[tool.Name] = ts
	}
	if t.Failed() {
		t.FailNow()
	}
	return srv
}

// call validates args against the tool's inputSchema, calls the tool, and
// checks the result against its outputSchema. A JSON-RPC error fails the
// test: every tool failure must come back as a tool result.
func (s *sdkServer) call(t *testing.T, tool string, args map[string]any) *sdk.CallToolResult {
	t.Helper()
	ts := s.tools[tool]
	if ts == nil {
		t.Fatalf("%s is not listed", tool)
	}
	if err := ts.checkArgs(args); err != nil {
		t.Fatalf("%s: the test's arguments %v do not match the inputSchema: %v", tool, args, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	res, err := s.session.CallTool(ctx, &sdk.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("%s(%v): JSON-RPC error %v; want a tool result", tool, args, err)
	}
	if err := ts.checkResult(res); err != nil {
		t.Fatalf("%s(%v): %v\ntext: %s", tool, args, err, sdkText(res))
	}
	return res
}

// sdkText joins a result's text content.
func sdkText(res *sdk.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*sdk.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

// sdkFields reads a result's top-level fields: its structured content, or
// for an error without any, its {error, message} JSON text.
func sdkFields(t *testing.T, res *sdk.CallToolResult) map[string]any {
	t.Helper()
	var b []byte
	if res.StructuredContent != nil {
		var err error
		if b, err = json.Marshal(res.StructuredContent); err != nil {
			t.Fatal(err)
		}
	} else {
		b = []byte(sdkText(res))
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("result %q is not a JSON object: %v", b, err)
	}
	return m
}

// sdkCase is one tools/call and what its result must say.
type sdkCase struct {
	name    string
	agent   string
	tool    string
	args    map[string]any
	isError bool
	want    map[string]string // top-level string fields
	has     []string          // fields that must be present and not null
}

func (tt sdkCase) run(t *testing.T, servers map[string]*sdkServer) map[string]any {
	t.Helper()
	res := servers[tt.agent].call(t, tt.tool, tt.args)
	got := sdkFields(t, res)
	if res.IsError != tt.isError {
		t.Fatalf("isError = %v, want %v; %v", res.IsError, tt.isError, got)
	}
	for k, want := range tt.want {
		if s, _ := got[k].(string); s != want {
			t.Fatalf("%s = %#v, want %q; %v", k, got[k], want, got)
		}
	}
	for _, k := range tt.has {
		if got[k] == nil {
			t.Fatalf("no %s in %v", k, got)
		}
	}
	return got
}

// TestOfficialSDK calls every tool, for success and for errors, from two
// official-SDK sessions on shared databases, and checks every argument sent
// and every result received against the tool's listed schemas.
func TestOfficialSDK(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dbPath, storePath := filepath.Join(dir, "mandate.db"), filepath.Join(dir, "store.db")
	// demo-agent at the SDK's latest protocol (server/discover), senior-bot
	// by the initialize handshake.
	servers := map[string]*sdkServer{
		"demo-agent": connectSDK(t, "demo-agent", sdk.SupportedProtocolVersions()[0], dbPath, storePath),
		"senior-bot": connectSDK(t, "senior-bot", "2025-11-25", dbPath, storePath),
	}

	t.Run("tools/list", func(t *testing.T) {
		want := append(slices.Clone(lookupTools), actionTools...)
		slices.Sort(want)
		for agent, s := range servers {
			var got []string
			for name, ts := range s.tools {
				got = append(got, name)
				if ts.out == nil {
					t.Errorf("%s: %s declares no outputSchema", agent, name)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Fatalf("%s: tools %v, want %v", agent, got, want)
			}
		}
	})

	// ids are the action_ids of the actions below, by case name.
	ids := map[string]string{}
	t.Run("calls", func(t *testing.T) {
		for _, tt := range []sdkCase{
			{name: "get_order", agent: "demo-agent", tool: "get_order", args: map[string]any{"order_id": "ord_1001"},
				want: map[string]string{"id": "ord_1001", "customer_id": "cus_ada", "total": "120.00"}},
			{name: "get_order unknown", agent: "demo-agent", tool: "get_order", args: map[string]any{"order_id": "ord_9999"},
				isError: true, want: map[string]string{"error": "not_found"}},
			{name: "get_customer", agent: "demo-agent", tool: "get_customer", args: map[string]any{"customer_id": "cus_grace"},
				want: map[string]string{"id": "cus_grace"}},
			{name: "get_customer unknown", agent: "demo-agent", tool: "get_customer", args: map[string]any{"customer_id": "cus_nobody"},
				isError: true, want: map[string]string{"error": "not_found"}},
			{name: "find_customer", agent: "senior-bot", tool: "find_customer", args: map[string]any{"email": "ADA@example.com"},
				want: map[string]string{"id": "cus_ada"}},
			{name: "find_customer unknown", agent: "senior-bot", tool: "find_customer", args: map[string]any{"email": "nobody@example.com"},
				isError: true, want: map[string]string{"error": "not_found"}},
			{name: "get_action_status unknown", agent: "demo-agent", tool: "get_action_status", args: map[string]any{"action_id": "act_00000000000000000000"},
				isError: true, want: map[string]string{"error": "not_found"}},

			{name: "refund allowed", agent: "demo-agent", tool: "refund_order", args: map[string]any{"order_id": "ord_1001", "amount": "30.00", "reason": "Item arrived scratched"},
				want: map[string]string{"decision": "allow", "status": "executed"}, has: []string{"result"}},
			{name: "refund to approve", agent: "demo-agent", tool: "refund_order", args: map[string]any{"order_id": "ord_1002", "amount": "150.00", "reason": "Late delivery goodwill"},
				want: map[string]string{"decision": "require_approval", "status": "pending"}},
			{name: "refund left pending", agent: "demo-agent", tool: "refund_order", args: map[string]any{"order_id": "ord_1005", "amount": "10.00", "reason": "Missing item"},
				want: map[string]string{"decision": "require_approval", "status": "pending"}},
			{name: "refund denied", agent: "demo-agent", tool: "refund_order", args: map[string]any{"order_id": "ord_1002", "amount": "900.00", "reason": "Customer unhappy", "idempotency_key": "sdk-deny-1"},
				isError: true, want: map[string]string{"decision": "deny", "status": "denied"}},
			{name: "refund denied, retried", agent: "demo-agent", tool: "refund_order", args: map[string]any{"order_id": "ord_1002", "amount": "900.00", "reason": "Customer unhappy", "idempotency_key": "sdk-deny-1"},
				isError: true, want: map[string]string{"decision": "deny", "status": "denied"}},
			{name: "refund unknown order", agent: "demo-agent", tool: "refund_order", args: map[string]any{"order_id": "ord_9999", "amount": "1.00", "reason": "x"},
				isError: true, want: map[string]string{"decision": "deny", "error": "not_found"}},
			{name: "refund invalid amount", agent: "demo-agent", tool: "refund_order", args: map[string]any{"order_id": "ord_1001", "amount": "1.005", "reason": "x"},
				isError: true, want: map[string]string{"error": "invalid"}},
			{name: "refund zero", agent: "demo-agent", tool: "refund_order", args: map[string]any{"order_id": "ord_1001", "amount": "0", "reason": "x"},
				isError: true, want: map[string]string{"error": "invalid"}},
			{name: "senior refund", agent: "senior-bot", tool: "refund_order", args: map[string]any{"order_id": "ord_1006", "amount": "20.00", "reason": "Damaged box", "idempotency_key": "sdk-senior-1"},
				want: map[string]string{"decision": "allow", "status": "executed"}, has: []string{"result"}},
			{name: "senior refund, retried", agent: "senior-bot", tool: "refund_order", args: map[string]any{"order_id": "ord_1006", "amount": "20.00", "reason": "Damaged box", "idempotency_key": "sdk-senior-1"},
				want: map[string]string{"decision": "allow", "status": "executed"}, has: []string{"result"}},

			{name: "cancel allowed", agent: "demo-agent", tool: "cancel_order", args: map[string]any{"order_id": "ord_1004", "reason": "Customer changed their mind"},
				want: map[string]string{"decision": "allow", "status": "executed"}, has: []string{"result"}},
			{name: "cancel denied", agent: "demo-agent", tool: "cancel_order", args: map[string]any{"order_id": "ord_1003", "reason": "Customer changed their mind"},
				isError: true, want: map[string]string{"decision": "deny", "status": "denied"}},
			{name: "cancel unknown order", agent: "demo-agent", tool: "cancel_order", args: map[string]any{"order_id": "ord_9999", "reason": "x"},
				isError: true, want: map[string]string{"decision": "deny", "error": "not_found"}},

			{name: "update allowed", agent: "demo-agent", tool: "update_account", args: map[string]any{"customer_id": "cus_ada", "field": "phone", "value": "+441234000000", "reason": "New number"},
				want: map[string]string{"decision": "allow", "status": "executed"}, has: []string{"result"}},
			{name: "update to deny", agent: "demo-agent", tool: "update_account", args: map[string]any{"customer_id": "cus_ada", "field": "email", "value": "ada.l@example.com", "reason": "Old mailbox closed"},
				want: map[string]string{"decision": "require_approval", "status": "pending"}},
			{name: "update unknown customer", agent: "demo-agent", tool: "update_account", args: map[string]any{"customer_id": "cus_nobody", "field": "phone", "value": "+441234000001", "reason": "New number"},
				isError: true, want: map[string]string{"decision": "deny", "error": "not_found"}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				got := tt.run(t, servers)
				id, _ := got["action_id"].(string)
				if retry, ok := strings.CutSuffix(tt.name, ", retried"); ok && id != ids[retry] {
					t.Fatalf("a retry with the same key answered action %q, want the first one's %q", id, ids[retry])
				}
				ids[tt.name] = id
			})
		}
	})

	// A person decides two of the pending actions, so their status carries
	// decided_by and comment.
	t.Run("approvals", func(t *testing.T) {
		// Approvers prove who they are: users with passwords, as `mandate
		// admin user add` makes them.
		addUsers(t, dbPath, "alice", "bob")
		for _, args := range [][]string{
			{"approvals", "approve", ids["refund to approve"], "--as", "alice", "--comment", "goodwill"},
			{"approvals", "deny", ids["update to deny"], "--as", "bob", "--comment", "ask the customer to call"},
		} {
			if _, stderr, err := runMandate(t, []string{"MANDATE_ADMIN_PASSWORD=" + cliPassword}, append(args, "--db", dbPath, "--store", storePath)...); err != nil {
				t.Fatalf("%v: %v\nstderr: %s", args, err, stderr)
			}
		}
	})

	t.Run("get_action_status", func(t *testing.T) {
		for _, tt := range []struct {
			agent, of string // of names the case in "calls" that made the action
			sdkCase
		}{
			{"demo-agent", "refund left pending", sdkCase{want: map[string]string{"status": "pending", "decision": "require_approval"}, has: []string{"expires_at", "args"}}},
			{"demo-agent", "refund allowed", sdkCase{want: map[string]string{"status": "executed", "tool": "refund_order"}, has: []string{"result", "args"}}},
			{"demo-agent", "refund denied", sdkCase{want: map[string]string{"status": "denied", "decision": "deny"}}},
			{"demo-agent", "refund to approve", sdkCase{want: map[string]string{"status": "executed", "decided_by": "alice", "comment": "goodwill"}, has: []string{"result"}}},
			{"demo-agent", "update to deny", sdkCase{want: map[string]string{"status": "denied", "decided_by": "bob", "comment": "ask the customer to call"}}},
			{"demo-agent", "cancel allowed", sdkCase{want: map[string]string{"status": "executed", "tool": "cancel_order"}, has: []string{"result"}}},
			{"senior-bot", "senior refund", sdkCase{want: map[string]string{"status": "executed"}, has: []string{"result"}}},
			{"demo-agent", "senior refund", sdkCase{isError: true, want: map[string]string{"error": "not_found"}}},
		} {
			t.Run(tt.agent+" "+tt.of, func(t *testing.T) {
				id := ids[tt.of]
				if id == "" {
					t.Fatalf("case %q made no action", tt.of)
				}
				tt.sdkCase.agent, tt.tool, tt.args = tt.agent, "get_action_status", map[string]any{"action_id": id}
				got := tt.run(t, servers)
				if !tt.isError && got["action_id"] != id {
					t.Fatalf("action_id = %v, want %s", got["action_id"], id)
				}
			})
		}
	})
}

// TestSchemaChecks proves the checks above catch the incompatibilities the
// TypeScript SDK reported, so that a pass of TestOfficialSDK means something.
func TestSchemaChecks(t *testing.T) {
	t.Parallel()
	actionOut := map[string]any{
		"type": "object", "additionalProperties": false,
		"required": []any{"action_id", "decision", "rule", "status", "message"},
		"properties": map[string]any{
			"action_id": map[string]any{"type": "string"},
			"decision":  map[string]any{"type": "string", "enum": []any{"allow", "deny", "require_approval"}},
			"rule":      map[string]any{"type": "string"},
			"status":    map[string]any{"type": "string"},
			"message":   map[string]any{"type": "string"},
			"result":    map[string]any{"type": "object"},
			"error":     map[string]any{"type": "string"},
		},
	}
	in := map[string]any{"type": "object", "required": []any{"order_id"},
		"properties": map[string]any{"order_id": map[string]any{"type": "string", "maxLength": 100}}}
	with := func(prop string, schema any) map[string]any {
		props := map[string]any{}
		for k, v := range actionOut["properties"].(map[string]any) {
			props[k] = v
		}
		props[prop] = schema
		out := map[string]any{}
		for k, v := range actionOut {
			out[k] = v
		}
		out["properties"] = props
		return out
	}
	ok := map[string]any{"action_id": "act_1", "decision": "allow", "rule": "r", "status": "executed", "message": "Done.",
		"result": map[string]any{"refund_id": "re_1", "amount": "30.00"}}
	for _, tt := range []struct {
		name    string
		out     any
		res     *sdk.CallToolResult
		listErr string // in the tools/list error, or "" if the tool must be accepted
		callErr string // in the result error, or "" if the result must be accepted
	}{
		{name: "valid", out: actionOut, res: &sdk.CallToolResult{StructuredContent: ok}},
		{name: "any field as boolean schema", out: with("result", true), listErr: "outputSchema.properties.result is true"},
		{name: "output not an object schema", out: map[string]any{"type": "array"}, listErr: `want "object"`},
		{name: "not a schema", out: map[string]any{"type": "object", "properties": map[string]any{"x": map[string]any{"type": "strin"}}}, listErr: "outputSchema"},
		{name: "json.RawMessage as bytes", out: with("result", map[string]any{"type": "array", "items": map[string]any{"type": "integer"}}),
			res: &sdk.CallToolResult{StructuredContent: ok}, callErr: "/result"},
		{name: "error body against a success schema", out: actionOut,
			res:     &sdk.CallToolResult{IsError: true, StructuredContent: map[string]any{"error": "not_found", "message": "no order"}},
			callErr: "does not match"},
		{name: "error as text only", out: actionOut,
			res: &sdk.CallToolResult{IsError: true, Content: []sdk.Content{&sdk.TextContent{Text: `{"error":"not_found","message":"no order"}`}}}},
		{name: "success without structured content", out: actionOut,
			res: &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "Done."}}}, callErr: "did not return structured content"},
		{name: "structured content not an object", out: actionOut, res: &sdk.CallToolResult{StructuredContent: []any{ok}}, callErr: "want a JSON object"},
		{name: "bad date-time", out: with("result", map[string]any{"type": "object", "properties": map[string]any{"created_at": map[string]any{"type": "string", "format": "date-time"}}}),
			res: &sdk.CallToolResult{StructuredContent: map[string]any{"action_id": "act_1", "decision": "allow", "rule": "r", "status": "executed", "message": "Done.",
				"result": map[string]any{"created_at": "yesterday"}}}, callErr: "date-time"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts, err := compileTool(&sdk.Tool{Name: "refund_order", InputSchema: in, OutputSchema: tt.out})
			if tt.listErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.listErr) {
					t.Fatalf("compileTool: %v, want an error mentioning %q", err, tt.listErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("compileTool: %v", err)
			}
			err = ts.checkResult(tt.res)
			if tt.callErr == "" && err != nil {
				t.Fatalf("checkResult: %v, want none", err)
			}
			if tt.callErr != "" && (err == nil || !strings.Contains(err.Error(), tt.callErr)) {
				t.Fatalf("checkResult: %v, want an error mentioning %q", err, tt.callErr)
			}
		})
	}

	ts, err := compileTool(&sdk.Tool{Name: "get_order", InputSchema: in})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args  map[string]any
		valid bool
	}{
		{map[string]any{"order_id": "ord_1001"}, true},
		{map[string]any{"order_id": 1001}, false},
		{map[string]any{}, false},
		{map[string]any{"order_id": strings.Repeat("x", 101)}, false},
	} {
		if err := ts.checkArgs(tt.args); (err == nil) != tt.valid {
			t.Fatalf("checkArgs(%v): %v, want valid %v", tt.args, err, tt.valid)
		}
	}
}
