package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
)

// AgentAuthTool marks, in the audit trail, a request to the MCP endpoint
// refused before it reached any tool: no key, a wrong, revoked or expired
// key, or a key for a name the live policy no longer treats as an agent.
const AgentAuthTool = "mcp_auth"

// Refusal reasons, as recorded and logged.
const (
	ReasonNoCredentials = "no bearer credentials"
	ReasonBadKey        = "unknown or wrong API key"
	ReasonRevoked       = "API key revoked"
	ReasonExpired       = "API key expired"
	ReasonNotAgent      = "key identity is not an agent in the live policy"
	ReasonUnavailable   = "credentials could not be checked"
)

// Agents turns an HTTP request's bearer API key into the agent identity it
// proves, or a refusal. The key is looked up in the database on every
// request (no cache), so a key revoked by any process is refused by every
// server at once, and the identity must still be an agent of the live
// policy. Failed attempts are audited, at most AuditPerMinute records per
// address (and GlobalAuditPerMinute overall) each minute, so a flood of
// bad keys cannot fill the trail. A genuine credential refused (a real
// key revoked or expired, a real key or token for a name that is not an
// agent) has its own budget of AuditPerMinute per credential, outside the
// others: a flood of junk cannot hide the use of a stolen key. Those
// budgets together are capped too (CredentialAuditPerMinute), since
// whoever can get tokens from the issuer can mint credentials by the
// thousand. What the limits left out is counted in one record per minute.
type Agents struct {
	DB     *storage.DB
	Policy *policy.Engine
	Logger *slog.Logger
	// Now is the clock; tests fix it. Nil is time.Now.
	Now func() time.Time
	// AuditPerMinute and GlobalAuditPerMinute bound refusal records
	// (defaults 10 and 100); CredentialAuditPerMinute bounds those of
	// genuine credentials, all of them together (default 1000).
	AuditPerMinute, GlobalAuditPerMinute, CredentialAuditPerMinute int
	// OnRefuse, when set, is called with the reason of every refused
	// request (audited or not), for metrics.
	OnRefuse func(reason string)

	// A process-local limit on audit volume, not on decisions (which are
	// the database's): a Go mutex is the right tool here.
	mu         sync.Mutex
	window     time.Time
	perAddr    map[string]int // also "cred:<credential>" for genuine ones
	total      int
	credTotal  int // records of genuine credentials, all together
	suppressed int
	lastUsed   map[string]time.Time
}

// Principal is who a request proved to be.
type Principal struct {
	Agent string // the policy identity
	KeyID string // the API key's id, if the credential was one
	// Credential names the credential used, for the audit trail, never
	// its secret: key:<id> for an API key; jwt:<jti>, jwt-client:<client
	// id> or jwt-sub:<subject> for an OAuth access token.
	Credential string
}

// AgentError is a refusal of a request's credentials; Reason says why, for
// the log and the audit trail. Clients get only a generic 401.
type AgentError struct {
	Reason string
	// Scope, when set, is the scope a valid access token lacked: the
	// answer is 403 insufficient_scope rather than 401.
	Scope string
}

func (e *AgentError) Error() string { return "unauthorized: " + e.Reason }

func (a *Agents) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Agents) logger() *slog.Logger {
	if a.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Logger
}

// IsAgent reports whether the live policy treats name as an agent: an
// identity that may use at least one tool. toolNames is every tool.
func IsAgent(p *policy.Policy, name string, toolNames []string) bool {
	if mandate.NameProblem(name) != "" || !p.IsIdentity(name) {
		return false
	}
	for _, t := range toolNames {
		if p.CanEverUse(name, t) {
			return true
		}
	}
	return false
}

// Authenticate checks the Authorization header of r against the keys in
// the database and the live policy. tools lists every tool name (to tell
// an agent identity from an approver). A refusal is audited (rate-limited)
// before it is returned; an error that is not an *AgentError means the
// database could not be read: the request is refused all the same.
func (a *Agents) Authenticate(r *http.Request, tools []string) (Principal, error) {
	ctx := r.Context()
	addr := r.RemoteAddr
	h := r.Header.Get("Authorization")
	scheme, key, _ := strings.Cut(h, " ")
	key = strings.TrimSpace(key)
	if h == "" || !strings.EqualFold(scheme, "Bearer") || key == "" {
		return Principal{}, a.refuse(ctx, addr, "", "", ReasonNoCredentials)
	}
	k, err := a.DB.VerifyAPIKey(ctx, key)
	if err != nil {
		if mandate.ErrorCode(err) == mandate.ENOTFOUND {
			return Principal{}, a.refuse(ctx, addr, k.ID, "", ReasonBadKey)
		}
		a.logger().Error("checking an API key failed", "err", err)
		a.counted(ReasonUnavailable)
		return Principal{}, &AgentError{Reason: ReasonUnavailable}
	}
	now := a.now()
	if len(k.Unreadable) > 0 {
		a.logger().Warn("an API key holds a time set by hand that is no time we read: it counts as revoked or expired", "key_id", k.ID, "unreadable", k.Unreadable)
	}
	switch {
	case !k.RevokedAt.IsZero():
		return Principal{}, a.refuse(ctx, addr, k.ID, k.Identity, ReasonRevoked)
	case !k.Active(now):
		return Principal{}, a.refuse(ctx, addr, k.ID, k.Identity, ReasonExpired)
	case !IsAgent(a.Policy.Policy(), k.Identity, tools):
		return Principal{}, a.refuse(ctx, addr, k.ID, k.Identity, ReasonNotAgent)
	}
	a.touch(ctx, k.ID, now)
	return Principal{Agent: k.Identity, KeyID: k.ID, Credential: "key:" + k.ID}, nil
}

// touch records the key's last use at most once a minute per key and
// process, so the hot path writes rarely; a failure is only logged.
func (a *Agents) touch(ctx context.Context, id string, now time.Time) {
	a.mu.Lock()
	if a.lastUsed == nil {
		a.lastUsed = map[string]time.Time{}
	}
	last, ok := a.lastUsed[id]
	due := !ok || now.Sub(last) >= time.Minute
	if due {
		if len(a.lastUsed) > 10000 {
			clear(a.lastUsed)
		}
		a.lastUsed[id] = now
	}
	a.mu.Unlock()
	if !due {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := a.DB.TouchAPIKey(ctx, id, now); err != nil {
		a.logger().Warn("recording API key use failed", "key_id", id, "err", err)
	}
}

// refuse audits a refused request unless this address (or everyone) has
// used up this minute's records, and returns the refusal. The record
// holds the key id if the key had our shape, the identity and credential
// if the key was real, the address and the reason; never the key's secret.
func (a *Agents) refuse(ctx context.Context, addr, keyID, identity, reason string) error {
	cred := ""
	if identity != "" {
		cred = "key:" + keyID
	}
	return a.refuseWith(ctx, addr, identity, cred, map[string]string{"key_id": keyID}, &AgentError{Reason: reason})
}

// refuseWith logs and (rate-limited) audits the refusal ae of a request
// from addr, and returns it. identity and credential are set only when
// the credential itself was genuine (a real key, a token signed by the
// issuer); args describe the attempt, with via and address added.
func (a *Agents) refuseWith(ctx context.Context, addr, identity, credential string, args map[string]string, ae *AgentError) error {
	a.logger().Info("refused MCP request", "reason", ae.Reason, "credential", logCredential(credential), "key_id", args["key_id"], "addr", AddrKey(addr))
	a.counted(ae.Reason)
	ctx = context.WithoutCancel(ctx)
	admitted, left := a.admitAudit(AddrKey(addr), credential)
	if left > 0 {
		// The last minute's refusals the limits kept out of the trail,
		// counted in it all the same.
		rec := refusal(a.now(), a.Policy, "", AgentAuthTool, map[string]string{"via": "http", "not_recorded": strconv.Itoa(left)},
			fmt.Sprintf("%d refused requests in the previous minute were not recorded one by one (audit rate limit)", left))
		if err := a.DB.Append(ctx, rec); err != nil {
			a.logger().Error("auditing the count of unrecorded refusals failed", "count", left, "err", err)
		}
	}
	if !admitted {
		return ae
	}
	args["via"], args["address"] = "http", addr
	rec := refusal(a.now(), a.Policy, identity, AgentAuthTool, args, ae.Reason)
	rec.Credential = credential
	if err := a.DB.Append(ctx, rec); err != nil {
		a.logger().Error("auditing a refused MCP request failed", "err", err)
	}
	return ae
}

func (a *Agents) counted(reason string) {
	if a.OnRefuse != nil {
		a.OnRefuse(reason)
	}
}

// admitAudit reports whether one more refusal from addrKey may be
// recorded this minute. A genuine credential (non-empty) is counted
// against its own budget and the cap on all of them, not the address's,
// so no amount of junk from other addresses or this one keeps its refusal
// out of the trail. left is, once per minute, how many refusals the
// previous window did not record.
func (a *Agents) admitAudit(addrKey, credential string) (admitted bool, left int) {
	per, global, creds := a.AuditPerMinute, a.GlobalAuditPerMinute, a.CredentialAuditPerMinute
	if per <= 0 {
		per = 10
	}
	if global <= 0 {
		global = 100
	}
	if creds <= 0 {
		creds = 1000
	}
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if now.Sub(a.window) >= time.Minute || a.perAddr == nil {
		left = a.suppressed
		if left > 0 {
			a.logger().Warn("refused MCP requests not audited one by one (rate limit)", "count", left)
		}
		a.window, a.perAddr, a.total, a.credTotal, a.suppressed = now, map[string]int{}, 0, 0, 0
	}
	if credential != "" {
		k := "cred:" + credential
		if a.perAddr[k] >= per || a.credTotal >= creds {
			a.suppressed++
			return false, left
		}
		a.perAddr[k]++
		a.credTotal++
		return true, left
	}
	if a.perAddr[addrKey] >= per || a.total >= global {
		a.suppressed++
		return false, left
	}
	a.perAddr[addrKey]++
	a.total++
	return true, left
}

// Middleware refuses every request to next without a valid agent key,
// and passes the others on with their Principal (see Middleware).
func (a *Agents) Middleware(next http.Handler, tools []string, resourceMetadata func(r *http.Request) string) http.Handler {
	return Middleware(a, next, tools, resourceMetadata)
}

type principalKey struct{}

// PrincipalFrom returns the Principal Middleware put in ctx, if any.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// logCredential is credential as the log shows it. A token's subject may be
// a person's email address (some issuers' sub), and logs carry no personal
// data: it is shown as a short digest, which still tells one subject's
// refusals from another's; the audit record keeps it whole. Key ids, token
// ids and client ids are shown as they are.
func logCredential(credential string) string {
	subject, ok := strings.CutPrefix(credential, "jwt-sub:")
	if !ok {
		return credential
	}
	sum := sha256.Sum256([]byte(subject))
	return "jwt-sub:sha256:" + hex.EncodeToString(sum[:6])
}
