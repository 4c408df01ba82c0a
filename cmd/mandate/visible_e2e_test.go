package main

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
)

// TestToolsListHidesAlwaysDenied: a tool that a deny which always holds
// refuses is not offered, over stdio to the configured agent and over HTTP
// to each credential's identity; a deny whose condition may not hold
// leaves the tool listed, and a hidden tool is still refused by the guard.
func TestToolsListHidesAlwaysDenied(t *testing.T) {
	t.Parallel()
	f := newHTTPFiles(t) // shipped policy plus lookup-bot as an order_reader
	extra := "p, *, find_customer, true, deny\n" +
		"p, *, refund_order, amount > 1000000.00, deny\n" +
		"p, order_reader, get_action_status, true, deny\n"
	pf, err := os.OpenFile(f.policy, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pf.WriteString(extra); err != nil {
		t.Fatal(err)
	}
	pf.Close()

	demoWant := []string{"cancel_order", "get_action_status", "get_customer", "get_order", "refund_order", "update_account"}
	t.Run("stdio", func(t *testing.T) {
		c := startServer(t, mcp.LATEST_PROTOCOL_VERSION, nil, "--agent", "demo-agent", "--db", f.db, "--store", f.store, "--policy", f.policy)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		res, err := c.ListTools(ctx, mcp.ListToolsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, tool := range res.Tools {
			got = append(got, tool.Name)
		}
		slices.Sort(got)
		if !slices.Equal(got, demoWant) {
			t.Fatalf("tools/list over stdio = %v, want %v", got, demoWant)
		}
		if r := call(t, c, "find_customer", map[string]any{"email": "ada@example.com"}); !r.IsError {
			t.Fatalf("hidden find_customer was answered: %s", text(r))
		}
	})
	t.Run("http", func(t *testing.T) {
		demo, lookup := f.key(t, "demo-agent"), f.key(t, "lookup-bot")
		base := startHTTP(t, f)
		dc := connectMCPGo(t, base, "2026-07-28", map[string]string{"Authorization": "Bearer " + demo})
		lc := connectMCPGo(t, base, "2026-07-28", map[string]string{"Authorization": "Bearer " + lookup})
		if got := dc.tools(t); !slices.Equal(got, demoWant) {
			t.Fatalf("demo-agent's tools/list = %v, want %v", got, demoWant)
		}
		if got, want := lc.tools(t), []string{"get_order"}; !slices.Equal(got, want) {
			t.Fatalf("lookup-bot's tools/list = %v, want %v", got, want)
		}
	})
}
