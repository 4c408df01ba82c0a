package tools

import "context"

type agentKey struct{}

// WithAgent returns a context carrying the identity the transport
// authenticated. Only transports call it: stdio from the server's --agent
// configuration, HTTP from the request's credentials. Tool arguments and
// session ids never name the identity.
func WithAgent(ctx context.Context, agent string) context.Context {
	return context.WithValue(ctx, agentKey{}, agent)
}

// AgentFrom returns the identity in ctx, or "" when the transport set none.
func AgentFrom(ctx context.Context) string {
	s, _ := ctx.Value(agentKey{}).(string)
	return s
}

// identity is who a call acts as: the transport's identity in ctx, else the
// identity this server was configured with (Deps.Agent: stdio and in-process
// servers serve exactly one agent). "" means nobody, and the guard denies.
func (d *Deps) identity(ctx context.Context) string {
	if a := AgentFrom(ctx); a != "" {
		return a
	}
	return d.Agent
}

type credentialKey struct{}

// WithCredential returns a context carrying the credential the transport
// verified for this call ("key:<id>", "jwt:<jti>", ...; never a secret),
// so the audit records of the call can name it. stdio sets none.
func WithCredential(ctx context.Context, credential string) context.Context {
	return context.WithValue(ctx, credentialKey{}, credential)
}

// CredentialFrom returns the credential in ctx, or "".
func CredentialFrom(ctx context.Context) string {
	s, _ := ctx.Value(credentialKey{}).(string)
	return s
}

// callCredential is the credential to record on a record written for
// agent's action: ctx's, when ctx is agent's own call. An action a person
// approved later executes in the approver's context, whose credential
// proved someone else, so its outcome names none.
func callCredential(ctx context.Context, agent string) string {
	if AgentFrom(ctx) != agent {
		return ""
	}
	return CredentialFrom(ctx)
}
