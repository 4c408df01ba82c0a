// Package tools is what agents see: the MCP tools, their schemas and
// results. Every tool is a small file declaring a spec; guard.go is the one
// path from a tools/call to the policy, the audit trail and the backend.
package tools

import (
	"log/slog"
	"time"

	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/server"
)

// Deps is everything the tools need, built once in cmd.
type Deps struct {
	Policy  *policy.Engine
	DB      *storage.DB
	Backend backend.Backend
	Logger  *slog.Logger
	// Now is the clock; tests fix it.
	Now func() time.Time
	// ApprovalTTL is how long a pending action waits for a person.
	ApprovalTTL time.Duration
	// BackendTimeout bounds each call to a system of record.
	BackendTimeout time.Duration
}

// all is the flat list of every tool, in the order tools/list shows them.
func all() []entry {
	return []entry{
		getOrder(), getCustomer(), findCustomer(), getActionStatus(),
		refundOrder(), cancelOrder(), updateAccount(),
	}
}

// ServerTools returns every tool wrapped by the guard, ready to register.
func ServerTools(d *Deps) []server.ServerTool {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.ApprovalTTL == 0 {
		d.ApprovalTTL = 24 * time.Hour
	}
	if d.BackendTimeout == 0 {
		d.BackendTimeout = 10 * time.Second
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	var out []server.ServerTool
	for _, e := range all() {
		out = append(out, e.serverTool(d))
	}
	return out
}

// NewServer returns an MCP server publishing every tool.
func NewServer(d *Deps, version string, opts ...server.ServerOption) *server.MCPServer {
	opts = append([]server.ServerOption{
		server.WithToolCapabilities(true),
		server.WithRecovery(),
		server.WithInstructions(instructions),
	}, opts...)
	s := server.NewMCPServer("mandate", version, opts...)
	s.AddTools(ServerTools(d)...)
	return s
}

const instructions = `Mandate publishes customer-service tools. Every action (refund_order, cancel_order, update_account) is checked against the operator's rules before it happens and recorded in an audit trail. An action result has a decision: "allow" (it was done), "deny" (it was refused; do not retry, tell the customer a person must handle it), or "require_approval" (a person must approve it; give the customer the action_id as a reference and check back with get_action_status). Money amounts are decimal strings in the order's currency, e.g. "30.00".`
