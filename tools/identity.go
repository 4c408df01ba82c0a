package tools

import (
	"context"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

type agentKey struct{}

// WithAgent returns a context carrying the identity the transport
// authenticated. Only transports call it: stdio from the server's --agent
// configuration, HTTP from the request's credentials. Tool arguments and
// session ids never name the identity.
func WithAgent(ctx context.Context, agent string) context.Context {
	return context.WithValue(ctx, agentKey{}, agent)
}

// AgentFrom returns the identity in ctx, or "" when the transport set none;
// the guard denies every call without one.
func AgentFrom(ctx context.Context) string {
	s, _ := ctx.Value(agentKey{}).(string)
	return s
}

// FixedIdentity is a server option for in-process transports (the demo,
// tests) that have no transport of their own to authenticate with: every
// call acts as agent, as configured by whoever built the server.
func FixedIdentity(agent string) server.ServerOption {
	return server.WithToolHandlerMiddleware(func(next server.ToolHandlerFunc) server.ToolHandlerFunc {
		return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return next(WithAgent(ctx, agent), req)
		}
	})
}
