package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/mandatehq/mandate/storage"
)

// RequestAuthenticator turns an HTTP request's credentials into the Principal
// they prove, or a refusal (an *AgentError; any other error means the
// credentials could not be checked, and the request is refused all the
// same). tools lists every tool name, to tell an agent identity from an
// approver. API keys (Agents), OAuth access tokens (OAuth) and both at
// once (Bearer) satisfy it, so the transport knows nothing of either.
type RequestAuthenticator interface {
	Authenticate(r *http.Request, tools []string) (Principal, error)
}

var (
	_ RequestAuthenticator = (*Agents)(nil)
	_ RequestAuthenticator = (*OAuth)(nil)
	_ RequestAuthenticator = (*Bearer)(nil)
)

// Bearer accepts the credentials this server is configured for: API keys
// always, OAuth access tokens when an issuer is configured. A bearer
// token's shape picks which checks it: one starting with mk_ is an API
// key, anything else a JWT (or, without OAuth, a wrong API key).
type Bearer struct {
	Keys  *Agents
	OAuth *OAuth // nil: no authorization server, API keys only
}

// Authenticate implements RequestAuthenticator.
func (b *Bearer) Authenticate(r *http.Request, tools []string) (Principal, error) {
	if tok, ok := bearerToken(r); ok && b.OAuth != nil && !strings.HasPrefix(tok, storage.APIKeyPrefix) {
		return b.OAuth.Authenticate(r, tools)
	}
	return b.Keys.Authenticate(r, tools)
}

// ProtectedResource is the RFC 9728 metadata of the resource at resource
// (this server's /mcp URL as the client reached it): which authorization
// servers issue tokens for it, and the scopes it asks for. With OAuth the
// resource is the configured audience instead: the operator's public URL
// (behind a proxy the request's own may differ), which clients then ask
// tokens for (RFC 8707) and which tokens must name.
func (b *Bearer) ProtectedResource(resource string) map[string]any {
	m := map[string]any{
		"resource":                 resource,
		"bearer_methods_supported": []string{"header"},
		"resource_name":            "Mandate",
	}
	if b.OAuth != nil {
		m["resource"] = b.OAuth.Audience
		m["authorization_servers"] = []string{b.OAuth.Issuer}
		m["scopes_supported"] = b.OAuth.scopes()
	}
	return m
}

// bearerToken is the token of an "Authorization: Bearer …" header.
func bearerToken(r *http.Request) (string, bool) {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	tok = strings.TrimSpace(tok)
	return tok, strings.EqualFold(scheme, "Bearer") && tok != ""
}

// Middleware refuses every request to next that a does not authenticate:
// 401 with a WWW-Authenticate challenge naming resourceMetadata (the URL
// of the RFC 9728 document for r), 403 with an insufficient_scope
// challenge when a valid token lacks the scope, 503 when the credentials
// could not be checked. Otherwise it passes the request on with the
// Principal in its context (PrincipalFrom).
func Middleware(a RequestAuthenticator, next http.Handler, tools []string, resourceMetadata func(r *http.Request) string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := a.Authenticate(r, tools)
		if err != nil {
			var ae *AgentError
			if !errors.As(err, &ae) {
				ae = &AgentError{Reason: ReasonUnavailable}
			}
			switch {
			case ae.Reason == ReasonUnavailable:
				// Our failure, not the client's: 503 so it retries.
				http.Error(w, "credentials could not be checked; try again later", http.StatusServiceUnavailable)
			case ae.Scope != "":
				// RFC 6750 §3.1: the token is good but does not allow this.
				w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer error="insufficient_scope", scope=%q, resource_metadata=%q`, ae.Scope, resourceMetadata(r)))
				http.Error(w, "forbidden: the access token lacks the scope "+ae.Scope, http.StatusForbidden)
			default:
				w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer resource_metadata=%q`, resourceMetadata(r)))
				http.Error(w, "unauthorized: send Authorization: Bearer with a valid Mandate API key (mk_…) or access token", http.StatusUnauthorized)
			}
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}
