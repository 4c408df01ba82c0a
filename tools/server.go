// Package tools is what agents see: the MCP tools, their schemas and
// results. Every tool is a small file declaring a spec; guard.go is the one
// path from a tools/call to the policy, the audit trail and the backend.
package tools

import (
	"context"
	"log/slog"
	"time"

	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/rates"
	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// Deps is everything the tools need, built once in cmd.
type Deps struct {
	// Agent is the identity a stdio or in-process server acts as, from its
	// configuration (--agent). Transports that authenticate each request
	// (HTTP) leave it empty and put the identity in the context instead.
	Agent   string
	Policy  *policy.Engine
	DB      *storage.DB
	Backend backend.Backend
	Logger  *slog.Logger
	// Rates convert money into the base currency that money limits are
	// written in; nil means the shipped rates (mandate.DefaultRates).
	Rates *rates.Live
	// Now is the clock; tests fix it.
	Now func() time.Time
	// ApprovalTTL is how long a pending action waits for a person.
	ApprovalTTL time.Duration
	// BackendTimeout bounds each call to a system of record.
	BackendTimeout time.Duration
	// ClockSkew is how far apart the clocks of the processes sharing the
	// database and of the systems of record may be. Every change an action
	// sends carries a deadline no later than execute's budget after the
	// action was recorded as executing, which the system of record must
	// refuse to act after (backend.ErrDeadlinePassed); Recover believes
	// "nothing was done" only once that deadline is ClockSkew past, by its
	// own clock. `mandate serve` sets it to --recover-after minus twice
	// --backend-timeout.
	ClockSkew time.Duration
	// ModelFile and PolicyFile name where Policy was read from, for the
	// message that refuses to act under a policy that is not the live one.
	ModelFile, PolicyFile string
	// MaxPending is how many actions one agent may have waiting for a
	// person; 0 means DefaultMaxPending (pendingcap.go).
	MaxPending int
	// InputClosed, when set, reports whether the client closed its input
	// (stdio EOF). A request context that ends after that was ended by the
	// server draining its input, not by the client cancelling the call.
	InputClosed func() bool
	// Observer, when set, is told each decision and call duration for
	// metrics (observer.go); nil observes nothing.
	Observer Observer
}

// explicitCancelOnly returns a context that is cancelled when ctx is,
// unless ctx ended because the client closed its input: over stdio, mcp-go
// cancels every request when stdin reaches EOF, and a script that pipes its
// calls and closes stdin has cancelled nothing. Only notifications/cancelled
// (or anything else that ends ctx while the input is open) cancels the call.
func (d *Deps) explicitCancelOnly(ctx context.Context) (context.Context, func()) {
	if d.InputClosed == nil {
		return ctx, func() {}
	}
	c, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		if !d.InputClosed() {
			cancel()
		}
	})
	return c, func() { stop(); cancel() }
}

// setDefaults fills in what was left zero: the real clock, a 24 h approval
// window, a 10 s backend timeout, and a logger that discards.
func (d *Deps) setDefaults() {
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
	if d.Rates == nil {
		d.Rates = rates.NewLive(rates.Default())
	}
}

// all is the flat list of every tool, in the order tools/list shows them.
func all() []entry {
	return []entry{
		getOrder(), getCustomer(), findCustomer(), getActionStatus(),
		refundOrder(), cancelOrder(), updateAccount(),
	}
}

// lookup returns the tool named name.
func lookup(name string) (entry, bool) {
	for _, e := range all() {
		if e.name() == name {
			return e, true
		}
	}
	return nil, false
}

// ServerTools returns every tool wrapped by the guard, ready to register.
func ServerTools(d *Deps) []server.ServerTool {
	d.setDefaults()
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
	hooks := &server.Hooks{}
	hooks.AddAfterListTools(func(ctx context.Context, _ any, _ *mcp.ListToolsRequest, res *mcp.ListToolsResult) {
		res.Tools = visible(d, d.identity(ctx), res.Tools)
	})
	opts = append(opts, server.WithHooks(hooks))
	s := server.NewMCPServer("mandate", version, opts...)
	s.AddTools(ServerTools(d)...)
	return s
}

// visible keeps the tools agent can ever get allow or require_approval on
// (policy.Offered), so an agent is not offered what it may never do. Listing is a courtesy,
// not the check: a call to a hidden tool still goes through the guard,
// which refuses and audits it.
func visible(d *Deps, agent string, all []mcp.Tool) []mcp.Tool {
	p := d.Policy.Policy()
	out := make([]mcp.Tool, 0, len(all))
	for _, t := range all {
		if p.Offered(agent, t.Name) {
			out = append(out, t)
		}
	}
	return out
}

const instructions = `Mandate publishes customer-service tools. Every action (refund_order, cancel_order, update_account) is checked against the operator's rules before it happens and recorded in an audit trail. An action result has a decision: "allow" (it was done), "deny" (it was refused; do not retry, tell the customer a person must handle it), or "require_approval" (a person must approve it; give the customer the action_id as a reference and check back with get_action_status). Money amounts are decimal strings in the order's currency, e.g. "30.00".`
