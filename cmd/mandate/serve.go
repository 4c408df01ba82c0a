package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auth"
	"github.com/mandatehq/mandate/notify"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/rates"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/telemetry"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

func runServe(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (err error) {
	fs := newFlags("serve", "mandate serve --agent NAME [flags]\n       mandate serve --http 127.0.0.1:8080 [--tls-cert F --tls-key F] [flags]", stderr)
	agent := fs.String("agent", env("MANDATE_AGENT", ""), "identity this agent acts as, as named in policy.csv (env MANDATE_AGENT); required for stdio, refused with --http")
	httpAddr := fs.String("http", env("MANDATE_HTTP", ""), "serve MCP Streamable HTTP at /mcp on this HOST:PORT instead of stdio; each request proves its agent with an API key (mandate agent key create) (env MANDATE_HTTP)")
	tlsCert := fs.String("tls-cert", env("MANDATE_TLS_CERT", ""), "with --http, serve HTTPS with this PEM certificate (chain) file (env MANDATE_TLS_CERT); needs --tls-key")
	tlsKey := fs.String("tls-key", env("MANDATE_TLS_KEY", ""), "the PEM private key of --tls-cert (env MANDATE_TLS_KEY)")
	oauthIssuer := fs.String("oauth-issuer", env("MANDATE_OAUTH_ISSUER", ""), "with --http, also accept JWT access tokens from this OAuth authorization server (its issuer URL; keys from its metadata) (env MANDATE_OAUTH_ISSUER)")
	oauthAudience := fs.String("oauth-audience", env("MANDATE_OAUTH_AUDIENCE", ""), "with --oauth-issuer, this server's /mcp URL as clients reach it: tokens must name it in aud (RFC 8707) (env MANDATE_OAUTH_AUDIENCE)")
	identityClaim := fs.String("identity-claim", env("MANDATE_IDENTITY_CLAIM", "sub"), "with --oauth-issuer, the token claim naming the identity in policy.csv (env MANDATE_IDENTITY_CLAIM)")
	oauthScope := fs.String("oauth-scope", env("MANDATE_OAUTH_SCOPE", ""), "with --oauth-issuer, a scope every token must hold; others get 403 insufficient_scope (env MANDATE_OAUTH_SCOPE)")
	oauthMaxLifetime := durationFlag(fs, "oauth-max-lifetime", "MANDATE_OAUTH_MAX_LIFETIME", auth.DefaultMaxTokenLifetime, "with --oauth-issuer, how far ahead a token's exp may be; a token valid longer is refused (too_long_lived) (env MANDATE_OAUTH_MAX_LIFETIME)")
	insecureHTTP := fs.Bool("insecure-http", false, "allow --http without TLS on a non-loopback address: API keys and customer data cross the network readable; only behind a TLS proxy on a trusted network")
	dbPath := fs.String("db", env("MANDATE_DB", "mandate.db"), "Mandate's own database: audit trail and actions; a SQLite file, or a postgres:// URL shared by replicas (env MANDATE_DB)")
	auditKey := auditKeyFlag(fs)
	storePath := fs.String("store", env("MANDATE_STORE", "store.db"), "embedded store; created with the demo data if missing (env MANDATE_STORE)")
	backendFile := fs.String("backend", env("MANDATE_BACKEND", ""), backendFlagHelp)
	ttl := durationFlag(fs, "approval-ttl", "MANDATE_APPROVAL_TTL", 24*time.Hour, "how long a pending action waits for a person (env MANDATE_APPROVAL_TTL)")
	backendTimeout := durationFlag(fs, "backend-timeout", "MANDATE_BACKEND_TIMEOUT", 10*time.Second, "limit on each call to a system of record (env MANDATE_BACKEND_TIMEOUT)")
	recoverAfter := durationFlag(fs, "recover-after", "MANDATE_RECOVER_AFTER", 30*time.Second, "an action left executing this long by a stopped process is reconciled against the backend; must exceed twice --backend-timeout (env MANDATE_RECOVER_AFTER)")
	maxPending := fs.String("max-pending", env("MANDATE_MAX_PENDING", strconv.Itoa(tools.DefaultMaxPending)), fmt.Sprintf("how many actions this agent may have waiting for a person, 1 to %d; beyond that, requests are refused (env MANDATE_MAX_PENDING)", tools.MaxMaxPending))
	notifyURL := fs.String("notify-url", env("MANDATE_NOTIFY_URL", ""), "post a Slack-compatible JSON message here for each new pending action (env MANDATE_NOTIFY_URL)")
	adminURL := fs.String("admin-url", env("MANDATE_ADMIN_PUBLIC_URL", ""), "with --notify-url, the approvals page's URL (what mandate admin --public-url names), e.g. https://approvals.example.com: each message links to its action there (env MANDATE_ADMIN_PUBLIC_URL)")
	level := fs.String("log-level", env("MANDATE_LOG_LEVEL", "info"), "debug, info, warn or error (env MANDATE_LOG_LEVEL)")
	format := fs.String("log-format", env("MANDATE_LOG_FORMAT", "text"), "text or json; logs go to stderr (env MANDATE_LOG_FORMAT)")
	otlpEndpoint := fs.String("otlp-endpoint", "", "send OpenTelemetry spans of each tool call to this OTLP/HTTP collector URL, e.g. http://127.0.0.1:4318 (default: off, unless OTEL_EXPORTER_OTLP_ENDPOINT is set)")
	var pf policyFlags
	pf.register(fs)
	var of opsFlags
	of.register(fs)
	var cf checkpointFlags
	cf.register(fs)
	var xf proxyFlags // --public-url, --trusted-proxy (proxy.go)
	xf.register(fs)
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	maxConcurrent, err := of.check(fs, *httpAddr != "")
	if err != nil {
		return err
	}
	checkpoints, err := cf.load() // a bad key stops serve here (checkpointer.go)
	if err != nil {
		return err
	}
	var httpTLS, httpWarn bool
	if *httpAddr != "" {
		if *agent != "" {
			return usageError{"serve: --agent (or MANDATE_AGENT) cannot be used with --http: over HTTP each request proves its own identity with an API key (`mandate agent key create NAME`); unset one of them"}
		}
		var err error
		if _, httpTLS, httpWarn, err = listenNetwork("serve", "--http", *httpAddr, *tlsCert, *tlsKey, *insecureHTTP, "API keys and customer data"); err != nil {
			return err
		}
	} else if *tlsCert != "" || *tlsKey != "" || *insecureHTTP {
		return usageError{"serve: --tls-cert, --tls-key and --insecure-http apply only with --http"}
	}
	if *notifyURL != "" {
		// Checked now, not at the first pending action; not repeated,
		// since its path may be the webhook's secret.
		if u, err := url.Parse(*notifyURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return usageError{"serve: --notify-url (or MANDATE_NOTIFY_URL) is not an http or https URL with a host, e.g. https://hooks.slack.com/services/…"}
		}
	}
	if *adminURL != "" {
		// Shared with mandate admin through MANDATE_ADMIN_PUBLIC_URL, so
		// set without --notify-url it is simply unused.
		if u, err := url.Parse(*adminURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return usageError{fmt.Sprintf("serve: --admin-url (or MANDATE_ADMIN_PUBLIC_URL) %q is not an http or https URL of the approvals page, e.g. https://approvals.example.com", *adminURL)}
		}
	}
	proxy, err := xf.check(*httpAddr != "")
	if err != nil {
		return err
	}
	oauthCfg, err := oauthConfig(*httpAddr, *oauthIssuer, *oauthAudience, *identityClaim, *oauthScope)
	if oauthCfg != nil {
		oauthCfg.MaxLifetime = *oauthMaxLifetime
	}
	if err != nil {
		return err
	}
	if *agent == "" && *httpAddr == "" {
		return usageError{"serve: no agent identity. Set --agent NAME or MANDATE_AGENT=NAME to an identity in policy.csv, e.g. MANDATE_AGENT=demo-agent"}
	}
	// No "0 = no cap": an agent must never be able to bury the queue.
	capN, err := strconv.Atoi(*maxPending)
	if err != nil || capN < 1 || capN > tools.MaxMaxPending {
		return usageError{fmt.Sprintf("serve: --max-pending %q: give a number of pending actions from 1 to %d (default %d)", *maxPending, tools.MaxMaxPending, tools.DefaultMaxPending)}
	}
	// A live call's backend calls share a budget of two backend timeouts
	// (tools.execBudget) before its outcome is recorded; recovery must
	// wait longer. Approved actions run in admin, approvals and remediate
	// processes, bounded by MANDATE_BACKEND_TIMEOUT (default 10s): warned
	// below when this serve's wait may be too short for theirs.
	if *recoverAfter <= 2**backendTimeout {
		return usageError{fmt.Sprintf("serve: --recover-after (%s) must be longer than twice --backend-timeout (%s), or a live call could be reconciled as not done", *recoverAfter, *backendTimeout)}
	}
	log, err := newLogger(stderr, *level, *format)
	if err != nil {
		return err
	}
	if _, set := os.LookupEnv("MANDATE_BACKEND_TIMEOUT"); !set && *recoverAfter <= 20*time.Second {
		log.Warn("approved actions run by mandate admin, approvals or remediate call the backend for up to 20s (twice MANDATE_BACKEND_TIMEOUT, default 10s), longer than --recover-after: set MANDATE_BACKEND_TIMEOUT for those processes to at most half of it",
			"recover_after", *recoverAfter)
	}
	stopTracing, err := telemetry.SetupTracing(ctx, *otlpEndpoint, version, log) // off unless configured
	if err != nil {
		return usageError{"serve: " + mandate.ErrorMessage(err)}
	}
	defer func() { // flush buffered spans, waiting at most a few seconds for the collector
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
		defer cancel()
		_ = stopTracing(sctx)
	}()
	setServeGC()
	// MANDATE_CPUPROFILE=FILE writes a CPU profile of this serve to
	// FILE.<pid> until it exits: undocumented, off unless set, for
	// `go run ./bench/e2e` and `go tool pprof`.
	if path := os.Getenv("MANDATE_CPUPROFILE"); path != "" {
		if f, err := os.Create(path + "." + strconv.Itoa(os.Getpid())); err == nil && pprof.StartCPUProfile(f) == nil {
			defer f.Close()
			defer pprof.StopCPUProfile()
		}
	}
	pol, err := pf.load()
	if err != nil {
		return err
	}
	// An identity that may use no tool (an approver such as a supervisor)
	// would be served no tools at all: refuse it, as agent key create does.
	if *httpAddr == "" {
		var names []string
		for _, st := range tools.ServerTools(&tools.Deps{}) {
			names = append(names, st.Tool.Name)
		}
		switch {
		case !pol.IsIdentity(*agent):
			return usageError{fmt.Sprintf("serve: identity %q is not in the policy as an identity (a name granted roles with a g line, and nobody's role), so every call would be denied; agents there: %s", *agent, agentNames(pol, names))}
		case !auth.IsAgent(pol, *agent, names):
			return usageError{fmt.Sprintf("serve: %q is not an agent: the policy grants it no tool (it may be an approver, a person who decides), so it would be served no tools; agents there: %s", *agent, agentNames(pol, names))}
		}
	}
	// Metrics when something serves them (--http or --metrics-listen);
	// otherwise every hook stays nil and costs nothing.
	engine := policy.NewEngine(pol)
	var metrics *telemetry.Metrics
	var db *storage.DB
	dbOpts := []storage.Option{storage.AuditKeyFile(*auditKey), storage.WithWriteBehindFailure(func(err error) {
		// An outcome whose record failed stays executing, and recovery
		// reconciles it; a lookup whose record failed was refused.
		log.Error("audit record written behind the answer could not be committed", "err", err)
	})}
	if *httpAddr != "" || of.metricsListen != "" {
		metrics = newMetrics(func() *storage.DB { return db }, engine, log)
		dbOpts = append(dbOpts, storage.WithCommitObserver(metrics.Commit))
		pf.onReloadFail = metrics.PolicyReloadFailed
	}
	db, err = storage.Open(ctx, *dbPath, dbOpts...)
	if err != nil {
		return err
	}
	defer func() {
		// After db.Close (deferred below, so run first) has committed every
		// queued write-behind: one that failed leaves an action executing
		// for recovery, which a clean exit would hide from a supervisor.
		if n := db.BehindFailures(); n > 0 && err == nil {
			err = fmt.Errorf("serve: %d audit record(s) written behind an answer could not be committed (see the log): an action whose outcome is missing stays executing until a server's recovery reconciles it, and a lookup's record stays in its journal for the next serve", n)
		}
	}()
	defer db.Close()
	if err := db.CheckWriteKey(ctx); err != nil { // a keyed trail needs the key to be written
		return err
	}
	// Lookups are recorded in a journal before their data is shown and
	// committed behind it; journals that stopped servers left are imported
	// first (storage/journal.go).
	if err := db.OpenLookupJournal(ctx); err != nil {
		return err
	}
	// Background loops (recovery, reloads, the webhook) stop before the
	// database closes: this cancel is deferred after db.Close, so it runs
	// first when serve returns at the end of stdin.
	ctx, stopBackground := context.WithCancel(ctx)
	defer stopBackground()
	st, be, seeded, err := openBackend(ctx, *backendFile, *storePath, false)
	if err != nil {
		return err
	}
	defer st.Close()
	defer stopBackground() // and before the store closes: recovery may be reading it
	if seeded {
		log.Info("created the embedded store with demo data", "store", *storePath)
	}
	var ready *readiness
	if metrics != nil {
		probe, err := backendProbe(*backendFile, *storePath, be, os.Getenv)
		if err != nil {
			return err
		}
		ready = &readiness{db: db, engine: engine, backend: probe, log: log}
		be = metrics.Backend(be) // after the probe: probes are not calls
	}
	liveRates := rates.NewLive(pf.ratesTable)
	deps := &tools.Deps{Agent: *agent, Policy: engine, DB: db, Backend: be, Logger: log, Rates: liveRates, ApprovalTTL: *ttl, BackendTimeout: *backendTimeout, MaxPending: capN,
		ClockSkew: *recoverAfter - 2**backendTimeout} // the slack the check above keeps positive: see docs/scaling.md
	// A client closing stdin ends mcp-go's request contexts; that is not a
	// cancel (tools.Deps.InputClosed), so a piped script's calls still run.
	// Over HTTP stdin is never read, so this stays false.
	// A client that goes away closes the pipes of stdout and stderr; Go
	// would then kill the process at its next write to either (SIGPIPE),
	// before the outcome of a call in flight is recorded. Ignored, such a
	// write fails with EPIPE instead, and serve finishes what it started.
	// Only here: a command piped into head (audit export | head) still
	// ends quietly on SIGPIPE.
	signal.Ignore(syscall.SIGPIPE)
	in := &eofReader{r: stdin, ctx: ctx, patience: 4**backendTimeout + 10*time.Second, log: log}
	deps.InputClosed = in.closed.Load
	if metrics != nil {
		deps.Observer = metrics
	}
	// tools/list depends on who asks (tools.NewServer filters it per
	// identity), so no cache may share it across credentials.
	opts := []server.ServerOption{server.WithMethodCacheHints(mcp.MethodToolsList, 0, mcp.CacheScopePrivate)}
	if *notifyURL != "" {
		hook := &notify.Webhook{URL: *notifyURL, AdminURL: *adminURL, DB: db, Logger: log}
		// Not ctx: a signal ends ctx before the deferred Close, which
		// delivers what is still queued (for a few seconds) and then stops
		// the worker.
		hook.Start(context.WithoutCancel(ctx))
		defer hook.Close()
		opts = append(opts, notify.Middleware(hook))
	}
	deps.ModelFile, deps.PolicyFile = pf.files()
	s := tools.NewServer(deps, version, opts...)
	// Recorded as the live policy before anything is decided under it,
	// and again on every reload.
	who := *agent
	if *httpAddr != "" {
		who = "http " + *httpAddr
	}
	if err := keepPolicyLive(ctx, db, engine, &pf, "serve", who, log, func(_, _ *policy.Policy) {
		s.SendNotificationToAllClients(mcp.MethodNotificationToolsListChanged, nil)
	}); err != nil {
		return err
	}
	if err := pf.keepRatesLive(ctx, db, liveRates, "serve", who, log); err != nil {
		return err
	}
	go reconcileLoop(ctx, deps, *recoverAfter)
	checkpoints.start(ctx, db, log)
	var metricsHandler http.Handler
	if metrics != nil {
		metricsHandler = metrics.Handler()
	}
	if of.metricsListen != "" {
		mln, err := listenMetrics(ctx, of.metricsListen, log)
		if err != nil {
			return err
		}
		go serveOps(ctx, mln, ready, metricsHandler, log)
		metricsHandler = nil // not on the MCP listener as well
	}
	if *httpAddr != "" {
		agents := &auth.Agents{DB: db, Policy: engine, Logger: log}
		authn := &auth.Bearer{Keys: agents}
		if oauthCfg != nil {
			if authn.OAuth, err = auth.NewOAuth(ctx, *oauthCfg, agents); err != nil {
				return err
			}
		}
		ln, err := listenHTTP(ctx, *httpAddr, httpTLS, *tlsCert, *tlsKey)
		if err != nil {
			return err
		}
		if httpWarn {
			fmt.Fprintf(stderr, "WARNING: serving plain HTTP on %s, which is not loopback (--insecure-http). API keys, customer data and every decision cross the network unencrypted. Put a TLS proxy in front or use --tls-cert/--tls-key.\n", *httpAddr)
			log.Warn("serving plain HTTP on a non-loopback address", "listen", *httpAddr)
		}
		var names []string
		for _, st := range tools.ServerTools(deps) {
			names = append(names, st.Tool.Name)
		}
		agents.OnRefuse = metrics.AuthFailure
		ops := &httpOps{ready: ready, metrics: metricsHandler,
			limiter: &agentLimiter{max: maxConcurrent, db: db, engine: engine, metrics: metrics, log: log, now: time.Now},
			guard:   &hostGuard{listenHost: listenIP(ln.Addr()), allowed: of.allowedHosts, metrics: metrics, log: log}}
		log.Info("serving MCP over Streamable HTTP", "addr", ln.Addr().String(), "path", "/mcp", "tls", httpTLS, "db", storage.Redact(*dbPath), "store", *storePath,
			"policy_version", pol.Version, "base_currency", pf.ratesTable.Base, "rates_version", pf.ratesTable.Version)
		// On loopback, where Host must be a loopback name, the declared
		// public name may pass too (a proxy may keep the Host it got).
		// Off loopback nothing changes: adding it would make the Host check
		// strict and refuse a proxy that sends the upstream address.
		if proxy.host != "" && isLoopbackName(ops.guard.listenHost) {
			ops.guard.allowed = append(ops.guard.allowed, proxy.host)
		}
		return serveHTTP(ctx, ln, httpTLS, s, authn, names, log, ops, proxy, shutdownGraceFor(*backendTimeout))
	}
	log.Info("serving MCP on stdio", "agent", *agent, "db", storage.Redact(*dbPath), "store", *storePath, "policy_version", pol.Version,
		"base_currency", pf.ratesTable.Base, "rates_version", pf.ratesTable.Version)
	stdio := server.NewStdioServer(s)
	stdio.SetErrorLogger(slog.NewLogLogger(log.Handler(), slog.LevelError))
	// mcp-go runs 5 tool calls at once by default. A guarded call spends most
	// of its time waiting for a commit, so more calls in flight share each
	// group commit (storage/writer.go) instead of queueing behind it: 32 lets
	// an agent's 16+ concurrent calls all be in flight and bounds goroutines
	// and store connections. 256 more wait in order; past that, mcp-go handles
	// calls on the reading goroutine, which stops reading stdin: back-pressure.
	server.WithWorkerPoolSize(32)(stdio)
	server.WithQueueSize(256)(stdio)
	// The identity is this server's configuration (Deps.Agent), never a
	// tool argument or the session.
	err = stdio.Listen(ctx, in, newAnswerWriter(ctx, stdout, in))
	if ctx.Err() != nil || err == io.EOF {
		return nil
	}
	return err
}

func knownNames(p *policy.Policy) string {
	var names []string
	for _, n := range p.Names() {
		if p.IsIdentity(n) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// reconcileLoop reconciles actions that a stopped process left executing:
// once at start, then periodically, since another server sharing the
// database may have died at any time.
func reconcileLoop(ctx context.Context, d *tools.Deps, grace time.Duration) {
	tick := time.NewTicker(grace / 2)
	defer tick.Stop()
	for {
		rep, err := tools.Recover(ctx, d, grace)
		if err != nil && ctx.Err() == nil {
			d.Logger.Error("reconciling stopped actions failed", "err", err)
		} else if rep.Executed+rep.NotExecuted+rep.Resumed+rep.Refused+rep.Untrusted > 0 {
			d.Logger.Info("reconciled stopped actions", "done", rep.Executed, "not_done", rep.NotExecuted, "resumed_approved", rep.Resumed,
				"denied_by_live_policy", rep.Refused, "untrusted_rows_left_alone", rep.Untrusted, "unknown", rep.Unknown)
		}
		// Recovery acts only under the live policy (tools.Recover checks it
		// in the transaction that claims each action); a server whose
		// policy was replaced by another process's leaves approved actions
		// to a server that holds the live one.
		if rep.Stale > 0 {
			d.Logger.Warn("approved actions left alone: this server's policy or exchange rates are not the live ones", "actions", rep.Stale)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// eofReader notes when its reader reaches the end of input, before the
// stdio server sees it and cancels the requests in flight, and holds the
// end back until every tools/call read so far has been answered: mcp-go
// ends its workers when the input ends, and a call still waiting in its
// queue (a piped script of more calls than workers) would be dropped
// unanswered and undone. answerWriter, on stdout, notes the answers. The
// wait ends early on a signal (ctx), or once no call has been answered for
// patience (longer than any one call can take: a client id the server
// writes back in another form is never matched), with a warning.
type eofReader struct {
	r        io.Reader
	ctx      context.Context
	patience time.Duration
	log      *slog.Logger
	closed   atomic.Bool
	line     []byte // the input's last line, not yet complete
	lineLen  int    // bytes of the current line read so far, kept or not

	mu       sync.Mutex
	calls    map[string]int // tools/call ids read and not yet answered
	answered chan struct{}  // a tools/call was answered
}

func (e *eofReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	for n = e.cut(p[:n]); n == 0 && err == nil && len(p) > 0; n = e.cut(p[:n]) {
		n, err = e.r.Read(p) // all of it was the dropped part of a long line
	}
	if n == 0 && err == io.EOF && len(bytes.TrimSpace(e.line)) > 0 && len(p) > 0 {
		// The last line has no newline: mcp-go would drop it with the EOF.
		p[0], n, err = '\n', 1, nil
	}
	e.note(p[:n])
	if err == io.EOF {
		e.closed.Store(true)
		e.drain()
	}
	return n, err
}

// maxLine bounds one line of input: far more than any call's arguments,
// so a call with a 1 MB argument still gets its own answer (invalid,
// naming the argument) rather than a parse error without its id, while
// what one line can make mcp-go hold stays tens of megabytes.
const maxLine = 4 << 20

// cut keeps at most maxLine bytes of each input line and drops the rest up
// to its newline: mcp-go reads a line whole, with no limit, and a line of
// 100 MB held over a gigabyte. The kept part, no JSON-RPC message, is
// answered with a parse error, and the server keeps serving. It compacts
// b in place and returns how many bytes it kept.
func (e *eofReader) cut(b []byte) int {
	kept, rest := 0, b
	for len(rest) > 0 {
		seg := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			seg = rest[:i+1]
		}
		rest = rest[len(seg):]
		body, nl := bytes.CutSuffix(seg, []byte{'\n'})
		room := max(maxLine-e.lineLen, 0)
		if len(body) > room {
			if room > 0 || e.lineLen == maxLine {
				e.log.Warn("input line longer than the limit: the rest of it is dropped, and it is answered as a parse error", "limit_bytes", maxLine)
			}
			body = body[:room]
		}
		e.lineLen += len(seg)
		kept += copy(b[kept:], body)
		if nl {
			kept += copy(b[kept:], "\n")
			e.lineLen = 0
		}
	}
	return kept
}

// note counts the tools/call requests in b, a piece of the input.
func (e *eofReader) note(b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			e.line = append(e.line, b...)
			return
		}
		line := b[:i]
		if len(e.line) > 0 {
			line = append(e.line, line...)
			e.line = e.line[:0]
		}
		b = b[i+1:]
		if !bytes.Contains(line, []byte(mcp.MethodToolsCall)) {
			continue // cheap: most lines are not tools/call at all
		}
		var m struct {
			Method string          `json:"method"`
			ID     json.RawMessage `json:"id"`
		}
		if json.Unmarshal(line, &m) != nil || m.Method != string(mcp.MethodToolsCall) || len(m.ID) == 0 || string(m.ID) == "null" {
			continue
		}
		e.mu.Lock()
		if e.calls == nil {
			e.calls, e.answered = map[string]int{}, make(chan struct{}, 1)
		}
		e.calls[requestKey(m.ID)]++
		e.mu.Unlock()
	}
}

// answer notes the response to the request with id.
func (e *eofReader) answer(id []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	k := requestKey(id)
	switch c := e.calls[k]; {
	case c > 1:
		e.calls[k] = c - 1
	case c == 1:
		delete(e.calls, k)
	default:
		return
	}
	select {
	case e.answered <- struct{}{}:
	default:
	}
}

// drain waits until every tools/call read has been answered.
func (e *eofReader) drain() {
	timer := time.NewTimer(e.patience)
	defer timer.Stop()
	for {
		e.mu.Lock()
		left, answered := len(e.calls), e.answered
		e.mu.Unlock()
		if left == 0 {
			return
		}
		select {
		case <-answered:
			timer.Reset(e.patience)
		case <-e.ctx.Done():
			return
		case <-timer.C:
			e.log.Warn("input ended; stopped waiting for tool calls without an answer", "calls", left, "waited", e.patience)
			return
		}
	}
}

// requestKey is id as mcp-go writes it back: it decodes a request's id
// into an any (a number becomes a float64) and marshals that, so an id is
// matched however the client spelled it (spaces, 1.0, escapes).
func requestKey(id []byte) string {
	if plainID(id) {
		return string(id) // what roundTripKey would give
	}
	return roundTripKey(id)
}

// roundTripKey is requestKey the long way, for every id.
func roundTripKey(id []byte) string {
	var v any
	if json.Unmarshal(id, &v) != nil {
		return string(id)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return string(id)
	}
	return string(b)
}

// plainID reports whether id is written back byte for byte: a positive
// integer of at most 15 digits without a leading zero (exact as a
// float64), or a string of ASCII letters, digits, '-' and '_' (nothing to
// escape). Most clients number their requests so; the others take
// requestKey's round trip, twice per call.
func plainID(id []byte) bool {
	if n := len(id); n >= 2 && id[0] == '"' && id[n-1] == '"' {
		for _, c := range id[1 : n-1] {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
		return true
	}
	if len(id) == 0 || len(id) > 15 || id[0] == '0' {
		return false
	}
	for _, c := range id {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// answerWriter is stdout, telling the eofReader of each response written.
// A response is one JSON-RPC message per write, with its id before its
// result (mcp-go's order), so only the first fields are decoded.
//
// A client that stops reading but keeps stdout open fills the pipe, and a
// write blocks until it reads again. Each write therefore runs on a
// goroutine of its own, and once serve is stopping (ctx) a write still
// blocked stdoutGrace later is abandoned: stdout is marked stuck, every
// later write fails at once, and serve can finish (outcomes are recorded
// before their answers are written, and shown lookups are journaled).
type answerWriter struct {
	w     io.Writer
	e     *eofReader
	ctx   context.Context
	stuck *atomic.Bool
}

// stdoutGrace is how long a stopping serve waits for a client to read an
// answer: a client that is reading takes microseconds.
const stdoutGrace = 5 * time.Second

// errStdoutStuck is the write error once the client stopped reading.
var errStdoutStuck = errors.New("stdout: the client stopped reading its answers")

func newAnswerWriter(ctx context.Context, w io.Writer, e *eofReader) answerWriter {
	return answerWriter{w: w, e: e, ctx: ctx, stuck: new(atomic.Bool)}
}

func (a answerWriter) Write(p []byte) (int, error) {
	n, err := a.write(p)
	a.e.mu.Lock()
	waiting := len(a.e.calls) > 0
	a.e.mu.Unlock()
	if waiting {
		if id, ok := responseID(p); ok {
			a.e.answer(id)
		}
	}
	return n, err
}

// write writes p to stdout unless serve is stopping and the client has
// not read for stdoutGrace (answerWriter). An abandoned write keeps its own
// copy of p; mcp-go holds its write lock across each write, so no two run
// at once until one is abandoned, and none runs after.
func (a answerWriter) write(p []byte) (int, error) {
	if a.stuck.Load() {
		return 0, errStdoutStuck
	}
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	b := append([]byte(nil), p...)
	go func() {
		n, err := a.w.Write(b)
		done <- result{n, err}
	}()
	select {
	case r := <-done:
		return r.n, r.err
	case <-a.ctx.Done():
	}
	select {
	case r := <-done:
		return r.n, r.err
	case <-time.After(stdoutGrace):
		a.stuck.Store(true)
		a.e.log.Warn("stopping with an answer unwritten: the client keeps stdout open but stopped reading", "waited", stdoutGrace)
		return 0, errStdoutStuck
	}
}

// responseID returns the id of the JSON-RPC response in p, reading only up
// to it; a request or notification (it has a method) has none.
func responseID(p []byte) ([]byte, bool) {
	dec := json.NewDecoder(bytes.NewReader(p))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, false
	}
	var id json.RawMessage
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return nil, false
		}
		switch key {
		case "method": // a request to the client (its id comes first) or a notification
			return nil, false
		case "result", "error":
			return id, id != nil
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		if key == "id" {
			id = v
		}
	}
	return nil, false
}

// serveGCPercent is the garbage collector's target for `mandate serve`
// unless GOGC is set. Go's default (100) collects whenever the heap has
// doubled, and serve's live heap is small (a few MB) while every call
// allocates: at 100 a refund spent about a tenth of serve's CPU collecting
// garbage and regrowing the stacks each collection shrinks. At 400 the
// heap may grow to five times the live one, about 10 MB more resident
// memory for 6,000 piped refunds (51 → 60 MB), for about 10% less CPU per
// refund and 25% less per get_order (docs/speed.md). GOGC still decides
// when an operator sets it.
const serveGCPercent = 400

func setServeGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(serveGCPercent)
	}
}
