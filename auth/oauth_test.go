package auth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/mandatehq/mandate/storage"
)

const testAudience = "https://mandate.example.com/mcp"

// testIssuer is an authorization server's discovery and JWKS endpoints on
// 127.0.0.1, with keys the test can rotate; it counts key set fetches.
type testIssuer struct {
	srv      *httptest.Server
	url      string
	mu       sync.Mutex
	public   []jose.JSONWebKey
	fetches  atomic.Int64
	oidcOnly bool   // serve only /.well-known/openid-configuration
	metaIss  string // the issuer the metadata names ("" = url)
}

func newTestIssuer(t *testing.T) *testIssuer {
	t.Helper()
	is := &testIssuer{}
	mux := http.NewServeMux()
	meta := func(w http.ResponseWriter, r *http.Request) {
		iss := is.metaIss
		if iss == "" {
			iss = is.url
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": iss, "jwks_uri": is.url + "/keys"})
	}
	mux.HandleFunc("GET /.well-known/openid-configuration", meta)
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", func(w http.ResponseWriter, r *http.Request) {
		if is.oidcOnly {
			http.NotFound(w, r)
			return
		}
		meta(w, r)
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		is.fetches.Add(1)
		is.mu.Lock()
		defer is.mu.Unlock()
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: is.public})
	})
	is.srv = httptest.NewServer(mux)
	is.url = is.srv.URL
	t.Cleanup(is.srv.Close)
	return is
}

// signer is a private key and how tokens are signed with it.
type signer struct {
	kid string
	alg jose.SignatureAlgorithm
	key any
}

func rsaSigner(t *testing.T, kid string) signer {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid, jose.RS256, k}
}

// publish makes s's public key (announcing alg, "" for none) the
// issuer's, alone when replace is set.
func (is *testIssuer) publish(s signer, alg string, replace bool) {
	priv := jose.JSONWebKey{Key: s.key, KeyID: s.kid, Algorithm: alg, Use: "sig"}
	pub := priv.Public()
	is.mu.Lock()
	defer is.mu.Unlock()
	if replace {
		is.public = nil
	}
	is.public = append(is.public, pub)
}

func (s signer) sign(t *testing.T, claims map[string]any) string {
	t.Helper()
	sg, err := jose.NewSigner(jose.SigningKey{Algorithm: s.alg, Key: s.key}, (&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", s.kid))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(sg).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func newTestOAuth(t *testing.T, is *testIssuer, scope string) (*OAuth, *clock, *storage.DB) {
	t.Helper()
	a, clk, db := newAgents(t)
	o, err := NewOAuth(context.Background(), OAuthConfig{Issuer: is.url, Audience: testAudience, Scope: scope}, a)
	if err != nil {
		t.Fatal(err)
	}
	return o, clk, db
}

// TestOAuthAuthenticate: each way a token can be wrong is refused with its
// own reason and audited, without the token; a good one proves its
// subject with its jti as the credential. A refusal names the credential
// only once the signature is good and the token is for this resource.
func TestOAuthAuthenticate(t *testing.T) {
	is := newTestIssuer(t)
	good := rsaSigner(t, "k1")
	is.publish(good, "RS256", true)
	o, clk, db := newTestOAuth(t, is, "mandate")
	now := clk.Now()
	claims := func(change func(c map[string]any)) map[string]any {
		c := map[string]any{"iss": is.url, "aud": []string{"other", testAudience}, "sub": "demo-agent", "exp": now.Add(5 * time.Minute).Unix(),
			"iat": now.Unix(), "nbf": now.Unix(), "jti": "tok-1", "client_id": "c1", "scope": "openid mandate"}
		if change != nil {
			change(c)
		}
		return c
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pubDER, _ := x509.MarshalPKIXPublicKey(&good.key.(*rsa.PrivateKey).PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	b64 := base64.RawURLEncoding.EncodeToString
	payload, _ := json.Marshal(claims(nil))

	tests := []struct {
		name, token, reason, cred, scope string
	}{
		{"valid", good.sign(t, claims(nil)), "", "jwt:tok-1", ""},
		{"valid, aud a string", good.sign(t, claims(func(c map[string]any) { c["aud"] = testAudience })), "", "jwt:tok-1", ""},
		{"scope in scp", good.sign(t, claims(func(c map[string]any) { delete(c, "scope"); c["scp"] = []string{"mandate"} })), "", "jwt:tok-1", ""},
		{"no jti: client", good.sign(t, claims(func(c map[string]any) { delete(c, "jti") })), "", "jwt-client:c1", ""},
		{"no jti or client_id: azp", good.sign(t, claims(func(c map[string]any) { delete(c, "jti"); delete(c, "client_id"); c["azp"] = "c2" })), "", "jwt-client:c2", ""},
		{"only sub", good.sign(t, claims(func(c map[string]any) { delete(c, "jti"); delete(c, "client_id") })), "", "jwt-sub:demo-agent", ""},
		{"wrong audience", good.sign(t, claims(func(c map[string]any) { c["aud"] = "https://other.example.com/mcp" })), TokenWrongAudience, "", ""},
		{"no audience", good.sign(t, claims(func(c map[string]any) { delete(c, "aud") })), TokenWrongAudience, "", ""},
		{"wrong issuer", good.sign(t, claims(func(c map[string]any) { c["iss"] = is.url + "/" })), TokenWrongIssuer, "", ""},
		{"expired", good.sign(t, claims(func(c map[string]any) { c["exp"] = now.Add(-61 * time.Second).Unix() })), TokenExpired, "jwt:tok-1", ""},
		{"expired within skew", good.sign(t, claims(func(c map[string]any) { c["exp"] = now.Add(-59 * time.Second).Unix() })), "", "jwt:tok-1", ""},
		{"no exp", good.sign(t, claims(func(c map[string]any) { delete(c, "exp") })), TokenNoExpiry, "jwt:tok-1", ""},
		{"valid for a year", good.sign(t, claims(func(c map[string]any) { c["exp"] = now.Add(365 * 24 * time.Hour).Unix() })), TokenTooLongLived, "jwt:tok-1", ""},
		{"valid for a day", good.sign(t, claims(func(c map[string]any) { c["exp"] = now.Add(24 * time.Hour).Unix() })), "", "jwt:tok-1", ""},
		{"not yet valid", good.sign(t, claims(func(c map[string]any) { c["nbf"] = now.Add(2 * time.Minute).Unix() })), TokenNotYetValid, "jwt:tok-1", ""},
		{"alg none", b64([]byte(`{"alg":"none","kid":"k1"}`)) + "." + b64(payload) + ".", TokenAlgNotAllowed, "", ""},
		{"HS256 with the public key", signer{"k1", jose.HS256, pubPEM}.sign(t, claims(nil)), TokenAlgNotAllowed, "", ""},
		{"another key, same kid", rsaSigner(t, "k1").sign(t, claims(nil)), TokenBadSignature, "", ""},
		{"another key, unknown kid", rsaSigner(t, "k9").sign(t, claims(nil)), TokenUnknownKey, "", ""},
		{"another alg than the key announces", signer{"k1", jose.PS256, good.key}.sign(t, claims(nil)), TokenAlgNotAllowed, "", ""},
		{"EC key under the RSA kid", signer{"k1", jose.ES256, ec}.sign(t, claims(nil)), TokenAlgNotAllowed, "", ""},
		{"garbage", "not.a.jwt", TokenMalformed, "", ""},
		{"no identity", good.sign(t, claims(func(c map[string]any) { delete(c, "sub") })), TokenNoIdentity, "jwt:tok-1", ""},
		{"unknown identity", good.sign(t, claims(func(c map[string]any) { c["sub"] = "nobody" })), TokenUnknownIdentity, "jwt:tok-1", ""},
		{"an approver is no agent", good.sign(t, claims(func(c map[string]any) { c["sub"] = "alice" })), TokenUnknownIdentity, "jwt:tok-1", ""},
		{"insufficient scope", good.sign(t, claims(func(c map[string]any) { c["scope"] = "openid mandate:read" })), TokenInsufficientScope, "jwt:tok-1", "mandate"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := "10.0.0." + string(rune('0'+i%10)) + ":1" // stay under the per-address audit limit
			p, err := o.Authenticate(bearer(tt.token, addr), toolNames)
			if tt.reason == "" {
				if err != nil || p.Agent != "demo-agent" || p.Credential != tt.cred || p.KeyID != "" {
					t.Fatalf("got %+v %v, want demo-agent with %s", p, err, tt.cred)
				}
				return
			}
			var ae *AgentError
			if !errors.As(err, &ae) || ae.Reason != tt.reason || ae.Scope != tt.scope {
				t.Fatalf("got %+v %v, want refusal %s (scope %q)", p, err, tt.reason, tt.scope)
			}
			recs := mcpAuthRecords(t, db)
			r := recs[len(recs)-1]
			if r.Error != tt.reason || r.Credential != tt.cred || strings.Contains(string(r.Args)+r.Error, tt.token[max(len(tt.token)-20, 0):]) {
				t.Fatalf("audit record %+v, want reason %s, credential %q, and not the token", r, tt.reason, tt.cred)
			}
		})
	}
	if _, err := db.Verify(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestOAuthAuditFloodNotForUs: tokens the issuer signed for another
// resource (or naming another issuer) are no credential of ours: any
// client of the issuer can mint them by the hundred, each with its own
// jti, so they count against the address's budget like junk, not each
// against a budget of its own.
func TestOAuthAuditFloodNotForUs(t *testing.T) {
	is := newTestIssuer(t)
	good := rsaSigner(t, "k1")
	is.publish(good, "RS256", true)
	o, clk, db := newTestOAuth(t, is, "")
	now := clk.Now()
	for i := range 300 {
		c := map[string]any{"iss": is.url, "aud": "https://other-service.example.com", "sub": "demo-agent",
			"exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix(), "jti": fmt.Sprintf("j%d", i)}
		if i%2 == 1 {
			c["iss"], c["aud"] = is.url+"/other-realm", testAudience
		}
		if _, err := o.Authenticate(bearer(good.sign(t, c), "203.0.113.9:1234"), toolNames); err == nil {
			t.Fatal("accepted a token not for us")
		}
	}
	if n := len(mcpAuthRecords(t, db)); n != 10 {
		t.Fatalf("300 tokens for another resource from one address: %d records, want the address's 10", n)
	}
}

// TestOAuthAuditCredentialCap: tokens for this resource refused after
// their signature (here a name that is not an agent), each with its own
// jti, from many addresses: each has its own budget, but all of them
// together stop at CredentialAuditPerMinute a minute, and the rest is
// counted in the next minute's record.
func TestOAuthAuditCredentialCap(t *testing.T) {
	is := newTestIssuer(t)
	good := rsaSigner(t, "k1")
	is.publish(good, "RS256", true)
	o, clk, db := newTestOAuth(t, is, "")
	o.Agents.CredentialAuditPerMinute = 20
	now := clk.Now()
	for i := range 50 {
		tok := good.sign(t, map[string]any{"iss": is.url, "aud": testAudience, "sub": "nobody",
			"exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix(), "jti": fmt.Sprintf("j%d", i)})
		addr := fmt.Sprintf("10.%d.0.1:1", i) // a budget per address would admit every one
		if _, err := o.Authenticate(bearer(tok, addr), toolNames); err == nil {
			t.Fatal("accepted")
		}
	}
	recs := mcpAuthRecords(t, db)
	if len(recs) != 20 || recs[19].Credential != "jwt:j19" {
		t.Fatalf("50 distinct tokens: %d records, want the cap of 20", len(recs))
	}
	clk.Add(time.Minute)
	_, _ = o.Authenticate(bearer("junk", "10.0.0.1:1"), toolNames)
	recs = mcpAuthRecords(t, db)
	if len(recs) != 22 || !strings.Contains(string(recs[20].Args), `"not_recorded":"30"`) {
		t.Fatalf("next minute: %d records, want the count of the 30 left out first", len(recs))
	}
}

// TestOAuthKeyRotation: a token under a new kid makes us fetch the keys
// again, at most once per jwksMinRefresh however many unknown kids
// arrive; a withdrawn key stops working once the cache is jwksMaxAge old.
func TestOAuthKeyRotation(t *testing.T) {
	is := newTestIssuer(t)
	k1, k2, k3 := rsaSigner(t, "k1"), rsaSigner(t, "k2"), rsaSigner(t, "k3")
	is.publish(k1, "", true) // announcing no alg: the key type decides
	o, clk, _ := newTestOAuth(t, is, "")
	claims := func() map[string]any {
		return map[string]any{"iss": is.url, "aud": testAudience, "sub": "demo-agent", "exp": clk.Now().Add(time.Minute).Unix()}
	}
	check := func(s signer, want string) {
		t.Helper()
		_, err := o.Authenticate(bearer(s.sign(t, claims()), "10.0.0.1:1"), toolNames)
		var ae *AgentError
		if errors.As(err, &ae) && ae.Reason == want || err == nil && want == "" {
			return
		}
		t.Fatalf("token by %s: %v, want %q", s.kid, err, want)
	}
	check(k1, "")
	if n := is.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches at start, want 1", n)
	}
	is.publish(k2, "RS256", false)
	check(k2, TokenUnknownKey) // within 10 s of the last fetch: no refetch
	clk.Add(jwksMinRefresh)
	check(k2, "") // rotated: fetched again
	for range 20 {
		check(rsaSigner(t, "garbage"), TokenUnknownKey)
	}
	if n := is.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches after a flood of unknown kids, want 2", n)
	}
	clk.Add(jwksMinRefresh)
	check(rsaSigner(t, "garbage"), TokenUnknownKey)
	if n := is.fetches.Load(); n != 3 {
		t.Fatalf("%d fetches 10 s later, want 3", n)
	}
	// k1 withdrawn, k3 added: k1 works until the cache is old; then the
	// next use refreshes it in the background.
	is.publish(k2, "RS256", true)
	is.publish(k3, "RS256", false)
	check(k1, "")
	clk.Add(jwksMaxAge + time.Second)
	check(k1, "") // answered from the cache, which is refreshed meanwhile
	waitKeys(t, o, "k2", "k3")
	check(k1, TokenUnknownKey)
	check(k3, "")
	// The issuer down: the keys we have keep working.
	is.srv.Config.Handler = http.NotFoundHandler()
	clk.Add(jwksMaxAge + time.Second)
	check(k2, "")
	o.fetch.Lock() // waits for the background refresh, which failed
	o.mu.Lock()
	o.fetch.Unlock()
	n := len(o.keys)
	o.mu.Unlock()
	if n != 2 {
		t.Fatalf("a failed refresh left %d keys, want the 2 we had", n)
	}
	clk.Add(jwksMinRefresh)
	_, err := o.Authenticate(bearer(rsaSigner(t, "k4").sign(t, claims()), "10.0.0.1:1"), toolNames)
	var ae *AgentError
	if !errors.As(err, &ae) || ae.Reason != ReasonUnavailable {
		t.Fatalf("unknown kid with the issuer down: %v, want unavailable", err)
	}
}

// waitKeys waits until o's cached key set is exactly kids, as a
// background refresh leaves it.
func waitKeys(t *testing.T, o *OAuth, kids ...string) {
	t.Helper()
	for range 500 {
		o.mu.Lock()
		var got []string
		for _, k := range o.keys {
			got = append(got, k.KeyID)
		}
		o.mu.Unlock()
		if strings.Join(got, ",") == strings.Join(kids, ",") {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the key set was not refreshed to %v", kids)
}

// TestNewOAuth: discovery falls back to OpenID Connect's metadata; a
// metadata issuer that differs from the flag, and bad flags, stop it.
func TestNewOAuth(t *testing.T) {
	is := newTestIssuer(t)
	is.publish(rsaSigner(t, "k1"), "RS256", true)
	a, _, _ := newAgents(t)
	is.oidcOnly = true
	if _, err := NewOAuth(context.Background(), OAuthConfig{Issuer: is.url, Audience: testAudience}, a); err != nil {
		t.Fatalf("OpenID Connect discovery only: %v", err)
	}
	is.oidcOnly = false
	is.metaIss = "https://evil.example.com"
	if _, err := NewOAuth(context.Background(), OAuthConfig{Issuer: is.url, Audience: testAudience}, a); err == nil || !strings.Contains(err.Error(), "names issuer") {
		t.Fatalf("metadata for another issuer: %v", err)
	}
	for _, tt := range []struct {
		cfg  OAuthConfig
		want string
	}{
		{OAuthConfig{Issuer: "http://auth.example.com", Audience: testAudience}, "must be https"},
		{OAuthConfig{Issuer: "auth.example.com", Audience: testAudience}, "issuer URL"},
		{OAuthConfig{Issuer: "https://auth.example.com"}, "needs --oauth-audience"},
		{OAuthConfig{Issuer: "https://auth.example.com", Audience: "mcp"}, "absolute"},
		{OAuthConfig{Issuer: "https://auth.example.com", Audience: testAudience, Scope: `a b`}, "one scope"},
		{OAuthConfig{Issuer: "https://auth.example.com", Audience: testAudience, IdentityClaim: `a"b`}, "--identity-claim"},
	} {
		if _, err := NewOAuth(context.Background(), tt.cfg, a); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v, want %q", tt.cfg, err, tt.want)
		}
	}
}

// TestBearerMiddleware: with both credentials on, an mk_ token is checked
// as an API key and any other as a JWT; a token lacking the scope gets
// 403 with the insufficient_scope challenge, others 401; the metadata
// names the issuer.
func TestBearerMiddleware(t *testing.T) {
	is := newTestIssuer(t)
	s := rsaSigner(t, "k1")
	is.publish(s, "RS256", true)
	o, clk, db := newTestOAuth(t, is, "mandate")
	key, k, err := db.CreateAPIKey(context.Background(), "senior-bot", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	b := &Bearer{Keys: o.Agents, OAuth: o}
	var got Principal
	h := Middleware(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got, _ = PrincipalFrom(r.Context()) }), toolNames,
		func(*http.Request) string { return "https://m/.well-known/oauth-protected-resource" })
	tok := func(scope string) string {
		return s.sign(t, map[string]any{"iss": is.url, "aud": testAudience, "sub": "demo-agent", "exp": clk.Now().Add(time.Minute).Unix(), "jti": "j", "scope": scope})
	}
	for _, tt := range []struct {
		authz, challenge, cred string
		code                   int
	}{
		{"Bearer " + key, "", "key:" + k.ID, 200},
		{"Bearer " + tok("mandate"), "", "jwt:j", 200},
		{"Bearer " + tok("other"), `Bearer error="insufficient_scope", scope="mandate", resource_metadata="https://m/.well-known/oauth-protected-resource"`, "", 403},
		{"Bearer mk_" + tok("mandate"), `Bearer resource_metadata="https://m/.well-known/oauth-protected-resource"`, "", 401},
		{"", `Bearer resource_metadata="https://m/.well-known/oauth-protected-resource"`, "", 401},
	} {
		got = Principal{}
		w := httptest.NewRecorder()
		r := bearer("", "10.0.0.1:1")
		if tt.authz != "" {
			r.Header.Set("Authorization", tt.authz)
		}
		h.ServeHTTP(w, r)
		if w.Code != tt.code || w.Header().Get("WWW-Authenticate") != tt.challenge || got.Credential != tt.cred {
			t.Errorf("%.30s: %d %q %+v, want %d %q %s", tt.authz, w.Code, w.Header().Get("WWW-Authenticate"), got, tt.code, tt.challenge, tt.cred)
		}
	}
	m := b.ProtectedResource("https://m/mcp")
	if as, _ := m["authorization_servers"].([]string); len(as) != 1 || as[0] != is.url || m["resource"] != testAudience {
		t.Fatalf("metadata %v", m)
	}
	if m := (&Bearer{Keys: o.Agents}).ProtectedResource("x"); m["authorization_servers"] != nil || m["resource"] != "x" {
		t.Fatalf("metadata without OAuth: %v", m)
	}
}

// TestOAuthRefusalLogHasNoSubject: a token whose only name for itself is
// its subject, here an email address as some issuers write sub, is
// refused with the subject whole in the audit record (which is where it
// belongs) and only as a digest in the log, which carries no personal data.
func TestOAuthRefusalLogHasNoSubject(t *testing.T) {
	is := newTestIssuer(t)
	good := rsaSigner(t, "k1")
	is.publish(good, "RS256", true)
	a, clk, db := newAgents(t)
	var logged bytes.Buffer
	a.Logger = slog.New(slog.NewTextHandler(&logged, nil))
	o, err := NewOAuth(context.Background(), OAuthConfig{Issuer: is.url, Audience: testAudience}, a)
	if err != nil {
		t.Fatal(err)
	}
	now := clk.Now()
	token := good.sign(t, map[string]any{"iss": is.url, "aud": testAudience, "sub": "ada.lovelace@example.com",
		"exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix()})
	_, err = o.Authenticate(bearer(token, "10.0.1.1:1"), toolNames)
	var ae *AgentError
	if !errors.As(err, &ae) || ae.Reason != TokenUnknownIdentity {
		t.Fatalf("got %v, want refusal %s", err, TokenUnknownIdentity)
	}
	recs := mcpAuthRecords(t, db)
	if r := recs[len(recs)-1]; r.Credential != "jwt-sub:ada.lovelace@example.com" {
		t.Fatalf("audit record's credential %q, want the subject whole", r.Credential)
	}
	if strings.Contains(logged.String(), "ada.lovelace") || !strings.Contains(logged.String(), "credential=jwt-sub:sha256:") {
		t.Fatalf("log %q: want the subject only as a digest", logged.String())
	}
}
