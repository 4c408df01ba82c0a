package tools_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/mcp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ from the tools as they are")

// goldenPath is where a tool's schema, as agents see it, is kept.
func goldenPath(name string) string { return filepath.Join("testdata", name+".golden.json") }

// TestToolSchemasGolden compares each tool, exactly as tools/list sends it
// (name, title, description, input and output schemas, annotations), with
// its golden file, so every change to what agents see is a visible diff.
// Run `go test ./tools -run TestToolSchemasGolden -update` to accept one.
func TestToolSchemasGolden(t *testing.T) {
	h := newHarness(t, shippedPolicy(t), nil)
	for _, name := range h.names {
		t.Run(name, func(t *testing.T) {
			got, err := json.MarshalIndent(h.tools[name].Tool, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := goldenPath(name)
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s changed; if that is intended, run with -update and review the diff\n%s", path, firstDiff(want, got))
			}
		})
	}

	// A golden file for a tool that no longer exists is stale.
	files, err := filepath.Glob(goldenPath("*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".golden.json")
		if _, ok := h.tools[name]; !ok {
			if *update {
				os.Remove(f)
				continue
			}
			t.Errorf("%s is the golden file of no registered tool", f)
		}
	}
}

// firstDiff shows the first line where want and got differ, with context.
func firstDiff(want, got []byte) string {
	w, g := strings.Split(string(want), "\n"), strings.Split(string(got), "\n")
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return "line " + strconv.Itoa(i+1) + ":\n- " + wl + "\n+ " + gl
		}
	}
	return "(no line differs)"
}

// TestToolSchemasAreComplete checks what the goldens cannot: rules every
// tool's schema must follow, whatever its wording.
func TestToolSchemasAreComplete(t *testing.T) {
	t.Parallel()
	h := newHarness(t, shippedPolicy(t), nil)
	for _, name := range h.names {
		t.Run(name, func(t *testing.T) {
			tool := h.tools[name].Tool
			if tool.Description == "" || tool.Annotations.Title == "" {
				t.Fatalf("description %q title %q: both are needed", tool.Description, tool.Annotations.Title)
			}
			// mcp-go defaults to destructive, open-world hints: each tool
			// must set all four itself.
			a := tool.Annotations
			if a.ReadOnlyHint == nil || a.DestructiveHint == nil || a.IdempotentHint == nil || a.OpenWorldHint == nil {
				t.Fatalf("annotations %+v: all four hints must be set", a)
			}
			if tool.InputSchema.Type != "object" || tool.OutputSchema.Type != "object" {
				t.Fatalf("input schema type %q, output schema type %q, want object and object", tool.InputSchema.Type, tool.OutputSchema.Type)
			}
			for _, r := range tool.InputSchema.Required {
				if _, ok := tool.InputSchema.Properties[r]; !ok {
					t.Fatalf("required argument %s is not a property", r)
				}
			}
			for arg, p := range tool.InputSchema.Properties {
				prop, _ := p.(map[string]any)
				if prop["type"] != "string" || prop["description"] == nil {
					t.Fatalf("argument %s: %v, want a described string", arg, prop)
				}
				if prop["maxLength"] == nil && prop["enum"] == nil {
					t.Fatalf("argument %s has neither maxLength nor enum: unbounded input", arg)
				}
			}
			// The TypeScript SDK (1.32) refuses a whole tools/list whose
			// schemas use a boolean subschema such as "result": true.
			var bools []string
			for _, sch := range []any{tool.InputSchema, tool.OutputSchema} {
				bools = append(bools, booleanSubschemas(t, sch)...)
			}
			if len(bools) > 0 {
				t.Fatalf("boolean subschemas at %v: the TypeScript SDK rejects tools/list over them", bools)
			}
		})
	}
}

// booleanSubschemas lists where a schema uses true or false as a subschema
// (a property or items), by JSON path.
func booleanSubschemas(t testing.TB, schema any) []string {
	t.Helper()
	b, err := json.Marshal(schema)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	var out []string
	var walk func(v any, path string)
	walk = func(v any, path string) {
		m, ok := v.(map[string]any)
		if !ok {
			return
		}
		if props, ok := m["properties"].(map[string]any); ok {
			for _, k := range slices.Sorted(maps.Keys(props)) {
				if _, isBool := props[k].(bool); isBool {
					out = append(out, path+"/properties/"+k)
				}
				walk(props[k], path+"/properties/"+k)
			}
		}
		if _, isBool := m["items"].(bool); isBool {
			out = append(out, path+"/items")
		}
		walk(m["items"], path+"/items")
	}
	walk(v, "")
	return out
}

// resolveOutput compiles a tool's outputSchema, as a client would.
func resolveOutput(t testing.TB, tool mcp.Tool) *jsonschema.Resolved {
	t.Helper()
	b, err := json.Marshal(tool.OutputSchema)
	if err != nil {
		t.Fatal(err)
	}
	var s jsonschema.Schema
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	rs, err := s.Resolve(nil)
	if err != nil {
		t.Fatalf("%s outputSchema does not compile: %v", tool.Name, err)
	}
	return rs
}

// TestStructuredContentMatchesOutputSchema: a client validates a result's
// structuredContent against the tool's outputSchema (the TypeScript SDK does
// so even when isError is set, and fails the call with -32602 on a
// mismatch), so every result must pass.
//
// An error that is not an action's decision carries no structured content
// (its JSON is in the text), because clients validate structured content
// against the output schema, which describes success.
func TestStructuredContentMatchesOutputSchema(t *testing.T) {
	t.Parallel()
	h := newHarness(t, shippedPolicy(t), nil)
	ctx := tools.WithAgent(context.Background(), "demo-agent")
	refund := decode(t, h.call(ctx, "refund_order", validArgs["refund_order"]))
	calls := []struct {
		name, tool string
		args       map[string]any
		ctx        context.Context
		plainError bool // an error with its JSON in the text only
	}{
		{"get_order", "get_order", validArgs["get_order"], nil, false},
		{"get_customer", "get_customer", validArgs["get_customer"], nil, false},
		{"find_customer", "find_customer", validArgs["find_customer"], nil, false},
		{"get_action_status", "get_action_status", map[string]any{"action_id": refund.ActionID}, nil, false},
		{"refund allowed", "refund_order", map[string]any{"order_id": "ord_1002", "amount": "10.00", "reason": "x"}, nil, false},
		{"refund pending", "refund_order", map[string]any{"order_id": "ord_1002", "amount": "150.00", "reason": "x"}, nil, false},
		{"refund denied", "refund_order", map[string]any{"order_id": "ord_1002", "amount": "900.00", "reason": "x"}, nil, false},
		{"cancel allowed", "cancel_order", validArgs["cancel_order"], nil, false},
		{"cancel denied", "cancel_order", map[string]any{"order_id": "ord_1003", "reason": "x"}, nil, false},
		{"update allowed", "update_account", validArgs["update_account"], nil, false},
		{"update pending", "update_account", map[string]any{"customer_id": "cus_ada", "field": "email", "value": "ada@example.org", "reason": "Customer lost access to the old address"}, nil, false},
		{"read not found", "get_order", map[string]any{"order_id": "ord_9999"}, nil, true},
		{"read denied", "get_customer", validArgs["get_customer"], tools.WithAgent(context.Background(), "intruder"), true},
		{"invalid amount", "refund_order", map[string]any{"order_id": "ord_1001", "amount": "1.005", "reason": "x"}, nil, true},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			cctx := ctx
			if c.ctx != nil {
				cctx = c.ctx
			}
			res := h.call(cctx, c.tool, c.args)
			if c.plainError {
				var e tools.ErrorResult
				if !res.IsError || res.StructuredContent != nil || json.Unmarshal([]byte(text(res)), &e) != nil || e.Error == "" || e.Message == "" {
					t.Fatalf("want an error with {error, message} JSON text and no structured content; got isError=%v structured=%v text %s",
						res.IsError, res.StructuredContent, text(res))
				}
				return
			}
			if res.StructuredContent == nil {
				t.Fatalf("no structured content: %s", text(res))
			}
			if res.IsError && !policy.Tools[c.tool].Action {
				t.Fatalf("unexpected error: %s", text(res))
			}
			b, err := json.Marshal(res.StructuredContent)
			if err != nil {
				t.Fatal(err)
			}
			var instance any
			if err := json.Unmarshal(b, &instance); err != nil {
				t.Fatal(err)
			}
			err = resolveOutput(t, h.tools[c.tool].Tool).Validate(instance)
			if err != nil {
				t.Fatalf("structuredContent %s does not match the outputSchema: %v", b, err)
			}
		})
	}
}
