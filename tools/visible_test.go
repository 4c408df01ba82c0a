package tools_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
)

// TestToolsListPerIdentity: an agent is offered only the tools its roles
// could ever be allowed, but a call to a hidden tool still reaches the
// guard, which refuses and audits it.
func TestToolsListPerIdentity(t *testing.T) {
	ctx := context.Background()
	pol, err := policy.Load(policy.Source{Name: "model.conf", Data: []byte(testModel(t))}, policy.Source{Name: "policy.csv", Data: []byte(`
p, reader, get_order, true, allow
p, reader, refund_order, amount <= 1.00, deny
p, asker, cancel_order, true, require_approval
g, r1, reader
g, a1, asker
`)})
	if err != nil {
		t.Fatal(err)
	}
	db, err := storage.Open(ctx, filepath.Join(t.TempDir(), "mandate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, tc := range []struct {
		agent string
		want  []string
	}{
		{"r1", []string{"get_order"}},
		{"a1", []string{"cancel_order"}},
		{"stranger", nil},
	} {
		t.Run(tc.agent, func(t *testing.T) {
			d := &tools.Deps{Agent: tc.agent, Policy: policy.NewEngine(pol), DB: db}
			c, err := client.NewInProcessClient(tools.NewServer(d, "test"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Start(ctx); err != nil {
				t.Fatal(err)
			}
			init := mcp.InitializeRequest{}
			init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
			if _, err := c.Initialize(ctx, init); err != nil {
				t.Fatal(err)
			}
			list, err := c.ListTools(ctx, mcp.ListToolsRequest{})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, tool := range list.Tools {
				got = append(got, tool.Name)
			}
			if len(got) != len(tc.want) || (len(got) > 0 && got[0] != tc.want[0]) {
				t.Fatalf("tools/list = %v, want %v", got, tc.want)
			}
			// A hidden tool is still callable only as far as the guard says.
			res, err := c.CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "get_customer", Arguments: map[string]any{"customer_id": "cus_ada"}}})
			if err != nil {
				t.Fatal(err)
			}
			if !res.IsError {
				t.Fatalf("hidden get_customer was not refused: %+v", res)
			}
			var n int
			if err := db.Records(ctx, storage.Filter{Agent: tc.agent, Tool: "get_customer", Decision: policy.Deny}, func(*storage.Record) error { n++; return nil }); err != nil {
				t.Fatal(err)
			}
			if n != 1 {
				t.Fatalf("%d deny records for the hidden call, want 1", n)
			}
		})
	}
}

func testModel(t *testing.T) string {
	t.Helper()
	b, err := readRepoFile("model.conf")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
