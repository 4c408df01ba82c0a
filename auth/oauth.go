package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/mandatehq/mandate"
)

// Why an OAuth access token was refused, as recorded, logged and counted.
const (
	TokenMalformed         = "malformed"          // not a signed JWT
	TokenAlgNotAllowed     = "alg_not_allowed"    // none, HS*, or not the alg its key announces
	TokenUnknownKey        = "unknown_key"        // no key of the issuer has its kid, even after a refresh
	TokenBadSignature      = "bad_signature"      // the issuer's key does not verify it
	TokenWrongIssuer       = "wrong_issuer"       // iss is not --oauth-issuer
	TokenWrongAudience     = "wrong_audience"     // aud does not name --oauth-audience
	TokenNoExpiry          = "no_expiry"          // no exp: a token valid forever is refused
	TokenExpired           = "expired"            // exp passed (beyond the skew)
	TokenTooLongLived      = "too_long_lived"     // exp further ahead than MaxLifetime: a stolen token would last
	TokenNotYetValid       = "not_yet_valid"      // nbf or iat in the future (beyond the skew)
	TokenNoIdentity        = "no_identity"        // the identity claim is missing or not a string
	TokenUnknownIdentity   = "unknown_identity"   // the identity is not an agent of the live policy
	TokenInsufficientScope = "insufficient_scope" // valid, but lacks --oauth-scope
)

// DefaultMaxTokenLifetime is OAuthConfig.MaxLifetime's default.
const DefaultMaxTokenLifetime = 24 * time.Hour

const (
	// tokenSkew is the clock difference allowed between us and the issuer
	// for exp, nbf and iat.
	tokenSkew = 60 * time.Second
	// jwksMinRefresh bounds how often the key set is fetched: a token
	// with an unknown kid triggers a refresh at most this often, so
	// garbage kids cannot make us hammer the issuer.
	jwksMinRefresh = 10 * time.Second
	// jwksMaxAge is when a cached key set is fetched again on use, so a
	// key the issuer withdrew stops working without a restart.
	jwksMaxAge = 5 * time.Minute
	// maxMetadataBytes bounds the issuer's metadata and key set responses.
	maxMetadataBytes = 1 << 20
	// maxTokenBytes bounds a token worth parsing; real ones are ~1 KiB.
	maxTokenBytes = 16 << 10
)

// tokenAlgs are the only signature algorithms a token may use: asymmetric
// ones. HS* would let anyone holding the issuer's public key (everyone)
// sign tokens if a verifier confused the two; none is no signature.
var tokenAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
}

// OAuthConfig configures Mandate as an OAuth 2.1 resource server.
type OAuthConfig struct {
	// Issuer is the authorization server's issuer URL, exactly as its
	// metadata and its tokens' iss name it.
	Issuer string
	// Audience is this server's resource URL (its /mcp URL, RFC 8707),
	// which a token's aud must contain.
	Audience string
	// IdentityClaim names the claim holding the policy identity
	// (default "sub").
	IdentityClaim string
	// Scope, if set, must be among the token's scopes (scope or scp).
	Scope string
	// MaxLifetime bounds how far ahead a token's exp may be (default
	// DefaultMaxTokenLifetime): an access token is short-lived, and one
	// valid for months, if stolen, is a standing credential.
	MaxLifetime time.Duration
	// HTTPClient fetches the metadata and keys (default: 10 s timeout).
	HTTPClient *http.Client
}

// Check reports a configuration mistake, in words for the operator.
func (c OAuthConfig) Check() error {
	if err := checkServerURL("--oauth-issuer", c.Issuer); err != nil {
		return err
	}
	if c.Audience == "" {
		return fmt.Errorf("--oauth-issuer needs --oauth-audience: this server's /mcp URL as clients reach it (e.g. https://mandate.example.com/mcp), which tokens must name in aud")
	}
	if u, err := url.Parse(c.Audience); err != nil || !u.IsAbs() || u.Host == "" || u.Fragment != "" {
		return fmt.Errorf("--oauth-audience %q: give this server's absolute /mcp URL, e.g. https://mandate.example.com/mcp", c.Audience)
	}
	if c.IdentityClaim == "" || !scopeToken(c.IdentityClaim) {
		return fmt.Errorf("--identity-claim %q: give the name of a token claim, e.g. sub", c.IdentityClaim)
	}
	if c.Scope != "" && !scopeToken(c.Scope) {
		return fmt.Errorf("--oauth-scope %q: give one scope, without spaces or quotes", c.Scope)
	}
	if c.MaxLifetime < 0 {
		return fmt.Errorf("--oauth-max-lifetime %s: give a positive duration, e.g. 24h", c.MaxLifetime)
	}
	return nil
}

// scopeToken reports whether s is printable ASCII without spaces, quotes
// or backslashes (RFC 6749's scope-token), so it is safe in a challenge.
func scopeToken(s string) bool {
	for _, r := range s {
		if r < 0x21 || r > 0x7e || r == '"' || r == '\\' {
			return false
		}
	}
	return true
}

// checkServerURL requires an https URL, or http on a loopback host (an
// issuer on the same machine, as in tests): keys fetched over plain HTTP
// from the network could be anyone's.
func checkServerURL(flag, s string) error {
	u, err := url.Parse(s)
	if err != nil || !u.IsAbs() || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%s %q: give the authorization server's issuer URL, e.g. https://auth.example.com", flag, s)
	}
	if u.Scheme == "https" {
		return nil
	}
	if ip := net.ParseIP(u.Hostname()); u.Scheme == "http" && (u.Hostname() == "localhost" || ip != nil && ip.IsLoopback()) {
		return nil
	}
	return fmt.Errorf("%s %q: must be https (plain http only on localhost), or anyone on the network could hand us signing keys", flag, s)
}

// OAuth accepts JWT access tokens from one authorization server, as an
// OAuth 2.1 resource server: signed with a key from the issuer's JWKS in
// an asymmetric algorithm that key announces, iss exactly the issuer, aud
// naming this server, within exp/nbf (with tokenSkew), naming an agent of
// the live policy in IdentityClaim, and holding Scope if set. Refusals are
// audited through Agents (same trail, same rate limit as API keys).
type OAuth struct {
	OAuthConfig
	// Agents supplies the live policy, the audit trail, the logger, the
	// clock and the refusal rate limit, shared with API keys.
	Agents *Agents

	jwksURI string
	client  *http.Client

	fetch   sync.Mutex // one key set fetch at a time
	mu      sync.Mutex // guards the fields below
	keys    []jose.JSONWebKey
	fetched time.Time // when keys were fetched
	tried   time.Time // the last fetch attempt
}

// NewOAuth checks cfg, discovers the issuer's metadata (RFC 8414, then
// OpenID Connect discovery) and fetches its keys, so a wrong issuer stops
// the server at start instead of refusing every token later.
func NewOAuth(ctx context.Context, cfg OAuthConfig, agents *Agents) (*OAuth, error) {
	if cfg.IdentityClaim == "" {
		cfg.IdentityClaim = "sub"
	}
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.MaxLifetime == 0 {
		cfg.MaxLifetime = DefaultMaxTokenLifetime
	}
	o := &OAuth{OAuthConfig: cfg, Agents: agents, client: cfg.HTTPClient}
	if o.client == nil {
		o.client = &http.Client{Timeout: 10 * time.Second, CheckRedirect: noDowngrade}
	}
	var errs []error
	for _, u := range metadataURLs(cfg.Issuer) {
		var meta struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		found, err := o.getJSON(ctx, u, &meta)
		if !found {
			errs = append(errs, err)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("oauth: the issuer's metadata at %s: %w", u, err)
		}
		if meta.Issuer != cfg.Issuer {
			// RFC 8414 §3.3: metadata for another issuer must not be used.
			return nil, fmt.Errorf("oauth: the metadata at %s names issuer %q, not --oauth-issuer %q: give the issuer exactly as the server names it", u, meta.Issuer, cfg.Issuer)
		}
		if err := checkServerURL("jwks_uri", meta.JWKSURI); err != nil {
			return nil, fmt.Errorf("oauth: the metadata at %s: %w", u, err)
		}
		o.jwksURI = meta.JWKSURI
		break
	}
	if o.jwksURI == "" {
		return nil, fmt.Errorf("oauth: no authorization server metadata for issuer %s: %w", cfg.Issuer, errors.Join(errs...))
	}
	if err := o.refresh(ctx); err != nil {
		return nil, err
	}
	return o, nil
}

// noDowngrade follows at most 3 redirects, and none from https to plain
// http, where anyone on the path could hand us keys.
func noDowngrade(req *http.Request, via []*http.Request) error {
	if len(via) >= 3 {
		return errors.New("too many redirects")
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return errors.New("redirect from https to plain http refused")
	}
	return nil
}

// metadataURLs are where issuer's metadata may be: RFC 8414's well-known
// URL (inserted before the issuer's path), then OpenID Connect's
// (appended to it).
func metadataURLs(issuer string) []string {
	u, _ := url.Parse(issuer)
	path := strings.TrimSuffix(u.Path, "/")
	return []string{
		u.Scheme + "://" + u.Host + "/.well-known/oauth-authorization-server" + path,
		strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration",
	}
}

// getJSON GETs u into v. found is false when the server has no such
// document (or could not be asked), so the caller may try elsewhere.
func (o *OAuth) getJSON(ctx context.Context, u string, v any) (found bool, err error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "application/json")
	res, err := o.client.Do(req)
	if err != nil {
		return false, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return false, fmt.Errorf("GET %s: %s", u, res.Status)
	}
	b, err := io.ReadAll(io.LimitReader(res.Body, maxMetadataBytes+1))
	if err != nil {
		return true, err
	}
	if len(b) > maxMetadataBytes {
		return true, fmt.Errorf("GET %s: more than %d bytes", u, maxMetadataBytes)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return true, fmt.Errorf("GET %s: not JSON: %w", u, err)
	}
	return true, nil
}

// refresh fetches the issuer's key set, unless it was tried less than
// jwksMinRefresh ago. A failure keeps the keys we have.
func (o *OAuth) refresh(ctx context.Context) error {
	o.fetch.Lock()
	defer o.fetch.Unlock()
	return o.refreshLocked(ctx)
}

// refreshLocked is refresh with o.fetch held.
func (o *OAuth) refreshLocked(ctx context.Context) error {
	now := o.Agents.now()
	o.mu.Lock()
	recent := !o.tried.IsZero() && now.Sub(o.tried) < jwksMinRefresh
	if !recent {
		o.tried = now
	}
	o.mu.Unlock()
	if recent {
		return nil
	}
	var set jose.JSONWebKeySet
	if _, err := o.getJSON(ctx, o.jwksURI, &set); err != nil {
		o.Agents.logger().Warn("fetching the OAuth issuer's keys failed", "jwks_uri", o.jwksURI, "err", err)
		return fmt.Errorf("oauth: the issuer's keys at %s: %w", o.jwksURI, err)
	}
	var keys []jose.JSONWebKey
	for _, k := range set.Keys {
		if usable(k) {
			keys = append(keys, k.Public())
		}
	}
	o.mu.Lock()
	o.keys, o.fetched = keys, now
	o.mu.Unlock()
	o.Agents.logger().Info("fetched the OAuth issuer's keys", "jwks_uri", o.jwksURI, "keys", len(keys), "of", len(set.Keys))
	return nil
}

// usable reports whether k can verify tokens: a valid asymmetric key for
// signatures (RSA of at least 2048 bits).
func usable(k jose.JSONWebKey) bool {
	if !k.Valid() || (k.Use != "" && k.Use != "sig") {
		return false
	}
	switch pk := k.Public().Key.(type) {
	case *rsa.PublicKey:
		return pk.N.BitLen() >= 2048
	case *ecdsa.PublicKey, ed25519.PublicKey:
		return true
	}
	return false
}

// keysFor returns the cached keys with kid (every key when kid is empty).
// When none has it, it fetches the set again (at most once per
// jwksMinRefresh) and looks again; when the set is older than jwksMaxAge
// it answers from the cache and refreshes it in the background, so a slow
// issuer never holds up requests it need not. An error means the set had
// to be fetched and could not be.
func (o *OAuth) keysFor(ctx context.Context, kid string) ([]jose.JSONWebKey, error) {
	match := func() ([]jose.JSONWebKey, bool) {
		o.mu.Lock()
		defer o.mu.Unlock()
		var out []jose.JSONWebKey
		for _, k := range o.keys {
			if kid == "" || k.KeyID == kid {
				out = append(out, k)
			}
		}
		return out, o.Agents.now().Sub(o.fetched) > jwksMaxAge
	}
	keys, stale := match()
	if len(keys) > 0 {
		if stale && o.fetch.TryLock() {
			go func() {
				defer o.fetch.Unlock()
				_ = o.refreshLocked(context.Background())
			}()
		}
		return keys, nil
	}
	if err := o.refresh(ctx); err != nil {
		return nil, err
	}
	keys, _ = match()
	return keys, nil
}

// algFits reports whether a token signed with alg may be checked with k:
// alg must be the one k announces, or, for a key that announces none,
// one its type and curve make.
func algFits(k jose.JSONWebKey, alg string) bool {
	if k.Algorithm != "" {
		return k.Algorithm == alg
	}
	switch pk := k.Key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		return alg == map[string]string{"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}[pk.Curve.Params().Name]
	case ed25519.PublicKey:
		return alg == string(jose.EdDSA)
	}
	return false
}

// tokenClaims are the claims we read from a verified token.
type tokenClaims struct {
	jwt.Claims
	extra map[string]any // every claim, for the identity claim and scopes
}

// credential names the token in the audit trail: its jti, else the
// client it was issued to, else its subject. Never the token.
func (c *tokenClaims) credential() string {
	str := func(name string) string {
		s, _ := c.extra[name].(string)
		return mandate.Truncate(mandate.Visible(s, false), 128)
	}
	switch {
	case str("jti") != "":
		return "jwt:" + str("jti")
	case str("client_id") != "":
		return "jwt-client:" + str("client_id")
	case str("azp") != "":
		return "jwt-client:" + str("azp")
	case str("sub") != "":
		return "jwt-sub:" + str("sub")
	}
	return "jwt"
}

// hasScope reports whether the token grants scope: in scope, a
// space-separated string (RFC 9068), or scp, a list or string (as some
// issuers write it).
func (c *tokenClaims) hasScope(scope string) bool {
	var all []string
	for _, name := range []string{"scope", "scp"} {
		switch v := c.extra[name].(type) {
		case string:
			all = append(all, strings.Fields(v)...)
		case []any:
			for _, s := range v {
				if s, ok := s.(string); ok {
					all = append(all, s)
				}
			}
		}
	}
	for _, s := range all {
		if s == scope {
			return true
		}
	}
	return false
}

// verify checks raw's signature and registered claims. It returns the
// claims once the signature is good (so a refusal of a token for this
// resource can name the credential) and the reason for a refusal, "" when none;
// ReasonUnavailable when the keys could not be fetched.
func (o *OAuth) verify(ctx context.Context, raw string) (*tokenClaims, string) {
	if len(raw) > maxTokenBytes {
		return nil, TokenMalformed
	}
	tok, err := jwt.ParseSigned(raw, tokenAlgs)
	if err != nil {
		var alg *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &alg) {
			return nil, TokenAlgNotAllowed
		}
		return nil, TokenMalformed
	}
	if len(tok.Headers) != 1 {
		return nil, TokenMalformed
	}
	h := tok.Headers[0]
	keys, err := o.keysFor(ctx, h.KeyID)
	if err != nil {
		return nil, ReasonUnavailable
	}
	if len(keys) == 0 {
		return nil, TokenUnknownKey
	}
	c := &tokenClaims{}
	fits, ok := false, false
	for _, k := range keys {
		if !algFits(k, h.Algorithm) {
			continue
		}
		fits = true
		if tok.Claims(k.Key, &c.Claims, &c.extra) == nil {
			ok = true
			break
		}
	}
	switch {
	case !fits:
		return nil, TokenAlgNotAllowed
	case !ok:
		return nil, TokenBadSignature
	}
	// Signed by the issuer's key: the claims are the issuer's word.
	now := o.Agents.now()
	switch {
	case c.Issuer != o.Issuer:
		return c, TokenWrongIssuer
	case !c.Audience.Contains(o.Audience):
		return c, TokenWrongAudience
	case c.Expiry == nil:
		return c, TokenNoExpiry
	}
	switch err := c.ValidateWithLeeway(jwt.Expected{Time: now}, tokenSkew); {
	case errors.Is(err, jwt.ErrExpired):
		return c, TokenExpired
	case err != nil:
		return c, TokenNotYetValid
	}
	if c.Expiry.Time().Sub(now) > o.MaxLifetime+tokenSkew {
		return c, TokenTooLongLived
	}
	return c, ""
}

// Authenticate implements RequestAuthenticator for a bearer JWT.
func (o *OAuth) Authenticate(r *http.Request, tools []string) (Principal, error) {
	ctx, addr := r.Context(), r.RemoteAddr
	raw, ok := bearerToken(r)
	if !ok {
		return Principal{}, o.refuse(ctx, addr, "", "", &AgentError{Reason: ReasonNoCredentials})
	}
	c, reason := o.verify(ctx, raw)
	if reason == ReasonUnavailable {
		o.Agents.counted(ReasonUnavailable)
		return Principal{}, &AgentError{Reason: ReasonUnavailable}
	}
	if c == nil {
		return Principal{}, o.refuse(ctx, addr, "", "", &AgentError{Reason: reason})
	}
	switch reason {
	case TokenWrongIssuer, TokenWrongAudience:
		// Signed by the issuer but not for us: every client of the issuer
		// can mint these, each with its own jti, so they are not named as
		// a credential (with a budget of its own) but counted as junk.
		return Principal{}, o.refuse(ctx, addr, "", "", &AgentError{Reason: reason})
	}
	cred := c.credential()
	if reason != "" {
		return Principal{}, o.refuse(ctx, addr, "", cred, &AgentError{Reason: reason})
	}
	identity, _ := c.extra[o.IdentityClaim].(string)
	switch {
	case identity == "":
		return Principal{}, o.refuse(ctx, addr, "", cred, &AgentError{Reason: TokenNoIdentity})
	case !IsAgent(o.Agents.Policy.Policy(), identity, tools):
		return Principal{}, o.refuse(ctx, addr, identity, cred, &AgentError{Reason: TokenUnknownIdentity})
	case o.Scope != "" && !c.hasScope(o.Scope):
		return Principal{}, o.refuse(ctx, addr, identity, cred, &AgentError{Reason: TokenInsufficientScope, Scope: o.Scope})
	}
	return Principal{Agent: identity, Credential: cred}, nil
}

// refuse audits (rate-limited, with the API keys' refusals) and returns
// ae. identity and cred are set once the issuer's signature proved them
// and the token is for this resource.
func (o *OAuth) refuse(ctx context.Context, addr, identity, cred string, ae *AgentError) error {
	return o.Agents.refuseWith(ctx, addr, identity, cred, map[string]string{"credential_type": "oauth_token"}, ae)
}

// scopes are the scopes this resource asks for, for its metadata.
func (o *OAuth) scopes() []string {
	if o.Scope == "" {
		return []string{}
	}
	return []string{o.Scope}
}
