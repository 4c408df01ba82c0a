package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	exstorage "github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// testOP is a real OpenID provider (zitadel/oidc's op package) on
// 127.0.0.1, issuing client-credentials JWT access tokens. Its storage is
// zitadel's example storage with the parts a resource server test needs
// replaced: service clients that each say whose tokens they get, for
// which audience and how long, and a signing key the test can rotate.
// The same storage is served under two issuer URLs, so both sign with the
// same key and only iss tells their tokens apart.
type testOP struct {
	*exstorage.Storage
	mu      sync.Mutex
	key     opKey
	clients map[string]*ccClient
}

// opKey is the provider's RSA signing key; as op.Key it is the public half.
type opKey struct {
	id  string
	key *rsa.PrivateKey
}

func (k opKey) ID() string                                  { return k.id }
func (k opKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k opKey) Algorithm() jose.SignatureAlgorithm          { return jose.RS256 }
func (k opKey) Use() string                                 { return "sig" }

// opSigning is the key as op.SigningKey: the private half.
type opSigning struct{ opKey }

func (k opSigning) Key() any { return k.key }

// opPublic is the key as op.Key: the public half, published at /keys.
type opPublic struct{ opKey }

func (k opPublic) Key() any { return &k.key.PublicKey }

func newOPKey(t *testing.T, id string) opKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return opKey{id, k}
}

// ccClient is a service client of the provider (client credentials).
type ccClient struct {
	id, secret, subject, audience string
	ttl                           time.Duration // negative: tokens born expired
}

func (c *ccClient) GetID() string                       { return c.id }
func (c *ccClient) RedirectURIs() []string              { return nil }
func (c *ccClient) PostLogoutRedirectURIs() []string    { return nil }
func (c *ccClient) ApplicationType() op.ApplicationType { return op.ApplicationTypeWeb }
func (c *ccClient) AuthMethod() oidc.AuthMethod         { return oidc.AuthMethodBasic }
func (c *ccClient) ResponseTypes() []oidc.ResponseType  { return nil }
func (c *ccClient) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeClientCredentials}
}
func (c *ccClient) LoginURL(string) string               { return "" }
func (c *ccClient) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeJWT }
func (c *ccClient) IDTokenLifetime() time.Duration       { return time.Hour }
func (c *ccClient) DevMode() bool                        { return false }
func (c *ccClient) IsScopeAllowed(string) bool           { return true }
func (c *ccClient) IDTokenUserinfoClaimsAssertion() bool { return false }
func (c *ccClient) ClockSkew() time.Duration             { return 0 }
func (c *ccClient) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *ccClient) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

// ccRequest is a client-credentials token request of client.
type ccRequest struct {
	client *ccClient
	scopes []string
}

func (r *ccRequest) GetSubject() string    { return r.client.subject }
func (r *ccRequest) GetAudience() []string { return []string{r.client.audience} }
func (r *ccRequest) GetScopes() []string   { return r.scopes }

func (p *testOP) ClientCredentials(_ context.Context, id, secret string) (op.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.clients[id]
	if !ok || c.secret != secret {
		return nil, errors.New("wrong client or secret")
	}
	return c, nil
}

func (p *testOP) ClientCredentialsTokenRequest(_ context.Context, id string, scopes []string) (op.TokenRequest, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.clients[id]
	if !ok {
		return nil, errors.New("wrong client")
	}
	return &ccRequest{client: c, scopes: scopes}, nil
}

func (p *testOP) CreateAccessToken(_ context.Context, r op.TokenRequest) (string, time.Time, error) {
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	return "at-" + base64.RawURLEncoding.EncodeToString(id), time.Now().Add(r.(*ccRequest).client.ttl), nil
}

// GetPrivateClaimsFromScopes puts the granted scopes in the token (RFC 9068).
func (p *testOP) GetPrivateClaimsFromScopes(_ context.Context, _, _ string, scopes []string) (map[string]any, error) {
	return map[string]any{"scope": strings.Join(scopes, " ")}, nil
}

func (p *testOP) SigningKey(context.Context) (op.SigningKey, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return opSigning{p.key}, nil
}

func (p *testOP) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (p *testOP) KeySet(context.Context) ([]op.Key, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return []op.Key{opPublic{p.key}}, nil
}

// rotate replaces the signing key: the old one is no longer published.
func (p *testOP) rotate(k opKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.key = k
}

func (p *testOP) signingKey() opKey {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.key
}

// serve runs a provider for p's storage at a new 127.0.0.1 address and
// returns its issuer URL.
func (p *testOP) serve(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + ln.Addr().String()
	prov, err := op.NewProvider(&op.Config{CryptoKey: sha256.Sum256([]byte(issuer)), CodeMethodS256: true}, p, op.StaticIssuer(issuer), op.WithAllowInsecure())
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: prov, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return issuer
}

// token gets an access token for client from the provider at issuer, by
// the client-credentials grant, as an agent's OAuth library would.
func (p *testOP) token(t *testing.T, issuer, client string, scopes ...string) string {
	t.Helper()
	var disc struct {
		TokenEndpoint string `json:"token_endpoint"`
	}
	res, err := http.Get(issuer + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(res.Body).Decode(&disc)
	res.Body.Close()
	if err != nil || disc.TokenEndpoint == "" {
		t.Fatalf("provider discovery: %v %+v", err, disc)
	}
	p.mu.Lock()
	secret := p.clients[client].secret
	p.mu.Unlock()
	// By hand rather than with golang.org/x/oauth2: a token born expired
	// comes with an expires_in that library rejects.
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {strings.Join(scopes, " ")}}
	req, err := http.NewRequest("POST", disc.TokenEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(client, secret)
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	if err := json.NewDecoder(res.Body).Decode(&tok); err != nil || res.StatusCode != 200 || tok.AccessToken == "" || !strings.EqualFold(tok.TokenType, "bearer") {
		t.Fatalf("client credentials for %s: %d %v %+v", client, res.StatusCode, err, tok)
	}
	return tok.AccessToken
}

// tokenClaims reads a token's claims without verifying it (the test's
// own view of what the provider issued).
func tokenClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := parsed.UnsafeClaimsWithoutVerification(&c); err != nil {
		t.Fatal(err)
	}
	return c
}

// auditLines is the JSON Lines export of f's audit trail.
func auditLines(t *testing.T, f httpFiles) []map[string]any {
	t.Helper()
	out, stderr, err := runMandate(t, nil, "audit", "export", "--db", f.db)
	if err != nil {
		t.Fatalf("audit export: %v\n%s", err, stderr)
	}
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("export line %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	return recs
}

// TestServeHTTPOAuth: `serve --http` as an OAuth resource server of a real
// authorization server in this process. A client-credentials token works
// (tools/list, a refund) next to an API key; wrong audience, wrong issuer,
// expired, alg none, HS256 keyed with the public key, another key, an
// identity the policy does not know each get 401 and an audited refusal
// with its reason, and a token without the scope 403 with a scope
// challenge; the refunds' audit records name jwt:<jti> and key:<id>,
// never a secret; the provider rotates its key and new tokens work
// without restarting Mandate.
func TestServeHTTPOAuth(t *testing.T) {
	t.Parallel()
	const aud = "https://mandate.test/mcp"
	p := &testOP{Storage: exstorage.NewStorage(exstorage.NewUserStore("http://localhost")), key: newOPKey(t, "key-1"), clients: map[string]*ccClient{
		"demo-client":    {id: "demo-client", secret: "s1", subject: "demo-agent", audience: aud, ttl: 5 * time.Minute},
		"other-audience": {id: "other-audience", secret: "s2", subject: "demo-agent", audience: "https://elsewhere.test/mcp", ttl: 5 * time.Minute},
		"expired-client": {id: "expired-client", secret: "s3", subject: "demo-agent", audience: aud, ttl: -5 * time.Minute},
		"stranger":       {id: "stranger", secret: "s4", subject: "nobody", audience: aud, ttl: 5 * time.Minute},
	}}
	issuer, otherIssuer := p.serve(t), p.serve(t)
	f := newHTTPFiles(t)
	apiKey := f.key(t, "demo-agent")
	base, _ := startHTTPProc(t, f, "--oauth-issuer", issuer, "--oauth-audience", aud, "--oauth-scope", "mandate")
	challenge := `Bearer resource_metadata="` + base + `/.well-known/oauth-protected-resource"`

	// RFC 9728 metadata names the authorization server and the scope.
	res, err := http.Get(base + "/.well-known/oauth-protected-resource/mcp")
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Resource             string   `json:"resource"`
		AuthorizationServers []string `json:"authorization_servers"`
		ScopesSupported      []string `json:"scopes_supported"`
	}
	err = json.NewDecoder(res.Body).Decode(&meta)
	res.Body.Close()
	if err != nil || meta.Resource != aud || !slices.Equal(meta.AuthorizationServers, []string{issuer}) || !slices.Equal(meta.ScopesSupported, []string{"mandate"}) {
		t.Fatalf("protected resource metadata %+v %v", meta, err)
	}

	// A valid token and an API key, side by side.
	good := p.token(t, issuer, "demo-client", "mandate")
	jti, _ := tokenClaims(t, good)["jti"].(string)
	if jti == "" {
		t.Fatalf("the provider's token has no jti: %v", tokenClaims(t, good))
	}
	jc := connectMCPGo(t, base, "2025-11-25", map[string]string{"Authorization": "Bearer " + good})
	all := append(slices.Clone(lookupTools), actionTools...)
	slices.Sort(all)
	if got := jc.tools(t); !slices.Equal(got, all) {
		t.Fatalf("tools/list with a token: %v, want %v", got, all)
	}
	if got := jc.call(t, "refund_order", map[string]any{"order_id": "ord_1001", "amount": "5.00", "reason": "Late delivery goodwill"}); got["decision"] != "allow" || got["status"] != "executed" {
		t.Fatalf("refund with a token: %v", got)
	}
	kc := connectMCPGo(t, base, "2025-11-25", map[string]string{"Authorization": "Bearer " + apiKey})
	if got := kc.call(t, "refund_order", map[string]any{"order_id": "ord_1001", "amount": "6.00", "reason": "Late delivery goodwill"}); got["decision"] != "allow" || got["status"] != "executed" {
		t.Fatalf("refund with an API key: %v", got)
	}

	// Forged and misdirected tokens.
	key := p.signingKey()
	pubDER, err := x509.MarshalPKIXPublicKey(&key.key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	goodClaims := tokenClaims(t, good)
	payload, _ := json.Marshal(goodClaims)
	forge := func(alg jose.SignatureAlgorithm, k any) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: k}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", key.id))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.Signed(s).Claims(goodClaims).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	b64 := base64.RawURLEncoding.EncodeToString
	bad := []struct{ name, token, reason string }{
		{"wrong audience", p.token(t, issuer, "other-audience", "mandate"), "wrong_audience"},
		{"wrong issuer", p.token(t, otherIssuer, "demo-client", "mandate"), "wrong_issuer"},
		{"expired", p.token(t, issuer, "expired-client", "mandate"), "expired"},
		{"alg none", b64([]byte(`{"alg":"none","kid":"`+key.id+`"}`)) + "." + b64(payload) + ".", "alg_not_allowed"},
		{"HS256 keyed with the public key", forge(jose.HS256, pubPEM), "alg_not_allowed"},
		{"another key", forge(jose.RS256, newOPKey(t, key.id).key), "bad_signature"},
		{"unknown identity", p.token(t, issuer, "stranger", "mandate"), "unknown_identity"},
	}
	for _, tt := range bad {
		if res := mcpPost(t, base, "Bearer "+tt.token); res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") != challenge {
			t.Fatalf("%s: %d %q, want 401 with %q", tt.name, res.StatusCode, res.Header.Get("WWW-Authenticate"), challenge)
		}
	}
	// Valid, but without the scope: 403 and the scope it needs.
	noScope := p.token(t, issuer, "demo-client", "other")
	res = mcpPost(t, base, "Bearer "+noScope)
	wantScope := `Bearer error="insufficient_scope", scope="mandate", resource_metadata="` + base + `/.well-known/oauth-protected-resource"`
	if res.StatusCode != 403 || res.Header.Get("WWW-Authenticate") != wantScope {
		t.Fatalf("token without the scope: %d %q, want 403 with %q", res.StatusCode, res.Header.Get("WWW-Authenticate"), wantScope)
	}
	bad = append(bad, struct{ name, token, reason string }{"no scope", noScope, "insufficient_scope"})

	// The trail: one refusal per bad token with its reason, nothing
	// reaching the tools for them, the refunds' credentials, no secrets.
	var refusals []string
	creds := map[string]int{}
	apiKeyID := strings.Split(apiKey, "_")[1]
	for _, r := range auditLines(t, f) {
		line, _ := json.Marshal(r)
		for _, secret := range append([]string{apiKey[len(apiKey)-64:], good[strings.LastIndex(good, ".")+1:]}, func() (s []string) {
			for _, b := range bad {
				s = append(s, b.token[strings.LastIndex(b.token[:len(b.token)-1], ".")+1:])
			}
			return s
		}()...) {
			if secret != "" && strings.Contains(string(line), secret) {
				t.Fatalf("an audit record holds a secret or token: %s", line)
			}
		}
		switch r["tool"] {
		case "mcp_auth":
			refusals = append(refusals, r["error"].(string))
		case "refund_order":
			creds[r["credential"].(string)+"/"+r["phase"].(string)]++
		}
	}
	var want []string
	for _, b := range bad {
		want = append(want, b.reason)
	}
	if !slices.Equal(refusals, want) {
		t.Fatalf("audited refusals %v, want %v", refusals, want)
	}
	if len(creds) != 4 || creds["jwt:"+jti+"/attempt"] != 1 || creds["jwt:"+jti+"/outcome"] != 1 ||
		creds["key:"+apiKeyID+"/attempt"] != 1 || creds["key:"+apiKeyID+"/outcome"] != 1 {
		t.Fatalf("refund records by credential and phase: %v, want an attempt and an outcome for jwt:%s and key:%s", creds, jti, apiKeyID)
	}

	// /metrics counts the refusals by reason.
	res, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, b := range bad {
		if want := `mandate_auth_failures_total{reason="` + b.reason + `"}`; !strings.Contains(string(body), want) {
			t.Fatalf("/metrics lacks %s:\n%s", want, body)
		}
	}

	// SIEMs get it as the actor's session credential_uid (OCSF).
	out, stderr, err := runMandate(t, nil, "audit", "export", "--db", f.db, "--tool", "refund_order", "--format", "ocsf")
	if err != nil || !strings.Contains(out, `"session":{"credential_uid":"jwt:`+jti+`"}`) || !strings.Contains(out, `"session":{"credential_uid":"key:`+apiKeyID+`"}`) {
		t.Fatalf("OCSF export lacks the credentials: %v\n%s\n%s", err, out, stderr)
	}

	// The provider rotates its key. Mandate refetches the keys on the new
	// kid (at most every 10 s since its last fetch, so the first tries
	// may be refused), without a restart.
	p.rotate(newOPKey(t, "key-2"))
	fresh := p.token(t, issuer, "demo-client", "mandate")
	start, tries := time.Now(), 1
	for ; mcpPost(t, base, "Bearer "+fresh).StatusCode != 200; tries++ {
		if time.Since(start) > 30*time.Second {
			t.Fatal("a token signed with the rotated key is still refused after 30 s")
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("the rotated key's token was accepted at try %d, after %s", tries, time.Since(start).Round(time.Millisecond))
	jc2 := connectMCPGo(t, base, "2025-11-25", map[string]string{"Authorization": "Bearer " + fresh})
	if got := jc2.tools(t); !slices.Equal(got, all) {
		t.Fatalf("tools/list with the rotated key's token: %v", got)
	}
	// The withdrawn key's tokens are refused now the set was refetched.
	if res := mcpPost(t, base, "Bearer "+good); res.StatusCode != 401 {
		t.Fatalf("a token of the withdrawn key: %d, want 401", res.StatusCode)
	}
}

// TestServeOAuthFlags: OAuth flag mistakes are usage errors (exit 2), and
// an issuer that cannot be reached stops the server at start (exit 1).
func TestServeOAuthFlags(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--agent", "demo-agent", "--oauth-issuer", "https://auth.example.com", "--oauth-audience", "https://m/mcp"}, "only with --http"},
		{[]string{"--http", "127.0.0.1:0", "--oauth-issuer", "https://auth.example.com"}, "needs --oauth-audience"},
		{[]string{"--http", "127.0.0.1:0", "--oauth-audience", "https://m/mcp"}, "need --oauth-issuer"},
		{[]string{"--http", "127.0.0.1:0", "--oauth-issuer", "http://auth.example.com", "--oauth-audience", "https://m/mcp"}, "must be https"},
		{[]string{"--http", "127.0.0.1:0", "--oauth-issuer", "https://auth.example.com", "--oauth-audience", "https://m/mcp", "--oauth-scope", "a b"}, "one scope"},
	} {
		_, stderr, status := runBinary(t, append([]string{"serve"}, tt.args...)...)
		if status != 2 || !strings.Contains(stderr, tt.want) {
			t.Errorf("serve %v: exit %d, %q; want 2 and %q", tt.args, status, stderr, tt.want)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	f := newHTTPFiles(t)
	_, stderr, status := runBinary(t, "serve", "--http", "127.0.0.1:0", "--db", f.db, "--store", f.store, "--policy", f.policy,
		"--oauth-issuer", dead, "--oauth-audience", "https://m/mcp")
	if status != 1 || !strings.Contains(stderr, "no authorization server metadata") {
		t.Fatalf("unreachable issuer: exit %d, %q; want 1 and a clear message", status, stderr)
	}
}
