package main

// The per-agent concurrency limit and the Host and Origin checks in front
// of /mcp (see ops.go for how they are wired).

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auth"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/telemetry"
)

// agentLimiter bounds the requests one agent has in flight on this
// process. Per process by design: a fleet-wide bound on what agents do is
// the policy's rate and money limits, which every process enforces in the
// database; this one protects the process (goroutines, backend
// connections) from one agent crowding out the others.
type agentLimiter struct {
	max     int
	db      *storage.DB
	engine  *policy.Engine
	metrics *telemetry.Metrics // nil counts nothing
	log     *slog.Logger
	now     func() time.Time

	// Process-local counters, not a decision shared across processes, so
	// a Go mutex is right here.
	mu       sync.Mutex
	inFlight map[string]int
	streams  map[string]int // open notification streams per agent
	open     int            // and on this process
	window   time.Time
	audited  map[string]int
	total    int
	dropped  int

	// Stream caps; 0 means maxStreamsPerAgent, maxStreams.
	streamsPerAgent, streamsTotal int
}

// Caps on open notification streams (2025-11-25 GETs and 2026-07-28
// subscriptions/listen). A stream runs no tool, but holds a connection
// and a goroutine for as long as the client likes and re-authenticates
// every streamRecheck; a client needs one. Per agent, so that one key
// cannot open them without end; per process, so that many agents
// together cannot either.
const (
	maxStreamsPerAgent = 4
	maxStreams         = 1000
)

// Refusals audited per agent, and overall, each minute; the rest are only
// counted (metrics, log), so a flood cannot fill the trail.
const (
	busyAuditPerAgent = 10
	busyAuditGlobal   = 100
)

// middleware refuses with 429 and Retry-After: 1 a request whose agent
// (from auth's Principal) already has max requests in flight. It must run
// after authentication. A notification stream (isStream) is counted
// against the stream caps instead: at most maxStreamsPerAgent open per
// agent (429 past that) and maxStreams on this process (503). A GET stream
// is not counted as a request in flight: it stays open for the whole
// connection by design and runs no tool, so counting it would let an
// agent's idle streams use up its slots for calls. A subscriptions/listen
// is a POST and counts as both.
func (l *agentLimiter) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := auth.PrincipalFrom(r.Context())
		if isStream(r) {
			switch l.acquireStream(p.Agent) {
			case streamsAgentFull:
				l.refuse(r, p, "streams", fmt.Sprintf("too many notification streams open for this agent on this server (limit %d)", l.perAgent()), l.perAgent())
				http.Error(w, fmt.Sprintf("too many notification streams open for this agent (at most %d at once); close one first", l.perAgent()), http.StatusTooManyRequests)
				return
			case streamsServerFull:
				l.refuse(r, p, "streams", fmt.Sprintf("too many notification streams open on this server (limit %d)", l.serverStreams()), l.serverStreams())
				w.Header().Set("Retry-After", "60")
				http.Error(w, "too many notification streams open on this server; retry later", http.StatusServiceUnavailable)
				return
			}
			defer l.releaseStream(p.Agent)
			if r.Method == http.MethodGet {
				next.ServeHTTP(w, r)
				return
			}
		}
		if !l.acquire(p.Agent) {
			l.refuse(r, p, "concurrency", fmt.Sprintf("too many requests in flight for this agent on this server (limit %d)", l.max), l.max)
			w.Header().Set("Retry-After", "1")
			http.Error(w, fmt.Sprintf("too many requests in flight for this agent (at most %d at once); retry after a second", l.max), http.StatusTooManyRequests)
			return
		}
		defer l.release(p.Agent)
		next.ServeHTTP(w, r)
	})
}

// Answers of acquireStream.
const (
	streamsOK = iota
	streamsAgentFull
	streamsServerFull
)

func (l *agentLimiter) perAgent() int {
	if l.streamsPerAgent > 0 {
		return l.streamsPerAgent
	}
	return maxStreamsPerAgent
}

func (l *agentLimiter) serverStreams() int {
	if l.streamsTotal > 0 {
		return l.streamsTotal
	}
	return maxStreams
}

func (l *agentLimiter) acquireStream(agent string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.streams == nil {
		l.streams = map[string]int{}
	}
	switch {
	case l.streams[agent] >= l.perAgent():
		return streamsAgentFull
	case l.open >= l.serverStreams():
		return streamsServerFull
	}
	l.streams[agent]++
	l.open++
	return streamsOK
}

func (l *agentLimiter) releaseStream(agent string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.streams[agent]--; l.streams[agent] <= 0 {
		delete(l.streams, agent)
	}
}

func (l *agentLimiter) acquire(agent string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inFlight == nil {
		l.inFlight = map[string]int{}
	}
	if l.inFlight[agent] >= l.max {
		return false
	}
	l.inFlight[agent]++
	return true
}

func (l *agentLimiter) release(agent string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inFlight[agent]--; l.inFlight[agent] <= 0 {
		delete(l.inFlight, agent)
	}
}

// refuse counts (as reason), logs and (within the audit budget) records
// a refusal whose cause is why, under the given limit.
func (l *agentLimiter) refuse(r *http.Request, p auth.Principal, reason, why string, limit int) {
	if l.metrics != nil {
		l.metrics.HTTPRefused(reason)
	}
	l.log.Warn("refused MCP request: "+why, "agent", p.Agent, "limit", limit)
	if !l.admitAudit(p.Agent) {
		return
	}
	args, _ := json.Marshal(map[string]string{"via": "http", "address": r.RemoteAddr, "key_id": p.KeyID, "limit": strconv.Itoa(limit)})
	rec := &storage.Record{
		Time: l.now(), Agent: p.Agent, Tool: BusyTool, Args: args, Decision: policy.Deny,
		PolicyVersion: l.engine.Policy().Version, Phase: storage.PhaseAttempt, Outcome: "refused",
		Error: why,
	}
	if err := l.db.Append(context.WithoutCancel(r.Context()), rec); err != nil {
		l.log.Error("auditing a refused MCP request failed", "err", err)
	}
}

func (l *agentLimiter) admitAudit(agent string) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.audited == nil || now.Sub(l.window) >= time.Minute {
		if l.dropped > 0 {
			l.log.Warn("refused MCP requests (429) not audited (rate limit)", "count", l.dropped)
		}
		l.window, l.audited, l.total, l.dropped = now, map[string]int{}, 0, 0
	}
	if l.audited[agent] >= busyAuditPerAgent || l.total >= busyAuditGlobal {
		l.dropped++
		return false
	}
	l.audited[agent]++
	l.total++
	return true
}

// hostGuard refuses, with 403 and before any credential is looked at,
// requests a browser could have been tricked into sending (DNS rebinding,
// cross-site requests):
//   - On a connection to a loopback address, the Host must be a loopback
//     name (localhost, 127.0.0.1, [::1]) or an --allowed-host. mcp-go checks
//     the first part too, inside /mcp; checking here keeps a rebound
//     request from costing a key lookup and an audit record.
//   - Off loopback, with --allowed-host set, the Host must be one of them;
//     without it any Host is accepted (behind a proxy the name is the
//     proxy's business, and a rebound request still needs an API key,
//     which a browser never sends by itself).
//   - Any request with an Origin header (only browsers send one) is refused
//     unless the Origin's host is localhost or a loopback address, the
//     address this server listens on, or an --allowed-host. Agents are not
//     browsers; a browser-based client on another origin must be listed.
type hostGuard struct {
	listenHost  string   // the listener's IP, as bound
	allowed     []string // --allowed-host, lower case
	noAllowList bool     // --allowed-host does not apply here (--metrics-listen)
	metrics     *telemetry.Metrics
	log         *slog.Logger
}

func (g *hostGuard) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if reason, msg := g.refusal(r); reason != "" {
			if g.metrics != nil {
				g.metrics.HTTPRefused(reason)
			}
			// The client's text, which may be as long as the header limit
			// and hold hidden characters: shown cut short and visible.
			shown := func(s string) string { return mandate.TruncateBytes(mandate.Visible(s, false), 256) }
			g.log.Info("refused HTTP request", "reason", reason, "path", shown(r.URL.Path), "host", shown(r.Host), "origin", shown(r.Header.Get("Origin")), "addr", auth.AddrKey(r.RemoteAddr))
			http.Error(w, "Forbidden: "+msg, http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refusal returns why r is refused ("host" or "origin") and a message for
// the client, or "" when it may pass.
func (g *hostGuard) refusal(r *http.Request) (reason, msg string) {
	host := hostOnly(r.Host)
	local := false
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && a != nil {
		local = isLoopbackName(hostOnly(a.String()))
	}
	hint := "; list other names with --allowed-host"
	if g.noAllowList {
		hint = ""
	}
	switch {
	case local && !isLoopbackName(host) && !g.isAllowed(host):
		return "host", "this server answers on localhost only (DNS rebinding protection)" + hint
	case !local && len(g.allowed) > 0 && !g.isAllowed(host):
		return "host", "this server does not answer to that Host name (--allowed-host)"
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return "", ""
	}
	u, err := url.Parse(origin)
	oh := ""
	if err == nil {
		oh = strings.ToLower(u.Hostname())
	}
	if oh != "" && (isLoopbackName(oh) || oh == g.listenHost || g.isAllowed(oh)) {
		return "", ""
	}
	if g.noAllowList {
		return "origin", "requests from web pages on other origins are refused"
	}
	return "origin", "requests from web pages on other origins are refused; list the origin's host with --allowed-host"
}

func (g *hostGuard) isAllowed(host string) bool {
	for _, a := range g.allowed {
		if a == host {
			return true
		}
	}
	return false
}

// hostOnly is the lower-case host of a Host header or host:port address,
// without port or IPv6 brackets.
func hostOnly(hostport string) string {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		h = hostport
	}
	return strings.ToLower(strings.Trim(h, "[]"))
}

// isLoopbackName reports whether host (no port) is localhost or a loopback
// address.
func isLoopbackName(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}
