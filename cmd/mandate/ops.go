package main

// Operations: the endpoints a service manager and Prometheus use
// (/healthz, /readyz, /metrics), the per-agent concurrency limit, and the
// Host and Origin checks in front of /mcp, /readyz and /metrics. serve.go and servehttp.go wire
// these in; the metrics themselves are in telemetry/.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/telemetry"
)

// BusyTool marks, in the audit trail, an MCP request refused with 429
// because its agent already had --max-concurrent-per-agent requests in
// flight on this process.
const BusyTool = "mcp_busy"

// Defaults and bounds of the operations flags.
const (
	defaultMaxConcurrent = 32
	maxMaxConcurrent     = 10000
	// readyTTL is how long a /readyz answer is reused: probes from a load
	// balancer every second must not become a backend call every second.
	readyTTL = 2 * time.Second
	// readyTimeout bounds one readiness check (database and backends).
	readyTimeout = 3 * time.Second
)

// opsFlags are serve's flags for the operations endpoints and the HTTP
// transport's limits.
type opsFlags struct {
	metricsListen string
	maxConcurrent string
	allowedHosts  hostList
}

// hostList is a repeatable flag of host names.
type hostList []string

func (h *hostList) String() string { return strings.Join(*h, ",") }

// Set adds the comma-separated names in v; check validates them, so that
// a bad name in MANDATE_ALLOWED_HOSTS is refused like one in the flag.
func (h *hostList) Set(v string) error {
	for _, n := range strings.Split(v, ",") {
		if n = strings.ToLower(strings.TrimSpace(n)); n != "" {
			*h = append(*h, n)
		}
	}
	return nil
}

func isIPv6(s string) bool {
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	return err == nil && a.Is6()
}

func (o *opsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&o.metricsListen, "metrics-listen", env("MANDATE_METRICS_LISTEN", ""), "serve /metrics on this HOST:PORT instead of the --http listener, with /healthz and /readyz (which --http keeps answering too); also works with stdio (env MANDATE_METRICS_LISTEN)")
	fs.StringVar(&o.maxConcurrent, "max-concurrent-per-agent", env("MANDATE_MAX_CONCURRENT_PER_AGENT", strconv.Itoa(defaultMaxConcurrent)), "with --http, requests one agent may have in flight on this process; more get 429 (env MANDATE_MAX_CONCURRENT_PER_AGENT)")
	_ = o.allowedHosts.Set(env("MANDATE_ALLOWED_HOSTS", ""))
	fs.Var(&o.allowedHosts, "allowed-host", "with --http, a Host (and Origin) name /mcp answers to; repeatable; when set, any other Host is refused with 403 (env MANDATE_ALLOWED_HOSTS, comma-separated)")
}

// check validates the flags for a serve over HTTP (httpOn) or stdio and
// returns the concurrency limit.
func (o *opsFlags) check(fs *flag.FlagSet, httpOn bool) (int, error) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !httpOn && (set["max-concurrent-per-agent"] || set["allowed-host"]) {
		return 0, usageError{"serve: --max-concurrent-per-agent and --allowed-host apply only with --http"}
	}
	n, err := strconv.Atoi(o.maxConcurrent)
	if err != nil || n < 1 || n > maxMaxConcurrent {
		return 0, usageError{fmt.Sprintf("serve: --max-concurrent-per-agent %q: give a number of requests from 1 to %d (default %d)", o.maxConcurrent, maxMaxConcurrent, defaultMaxConcurrent)}
	}
	for i, h := range o.allowedHosts {
		if strings.ContainsAny(h, "/:@ []") && !isIPv6(h) {
			return 0, usageError{fmt.Sprintf("serve: --allowed-host (or MANDATE_ALLOWED_HOSTS) %q: give a host name or IP address, without scheme or port", h)}
		}
		o.allowedHosts[i] = strings.Trim(h, "[]")
	}
	if o.metricsListen != "" {
		if _, _, err := net.SplitHostPort(o.metricsListen); err != nil {
			return 0, usageError{fmt.Sprintf("serve: --metrics-listen %q: give HOST:PORT, e.g. 127.0.0.1:9090", o.metricsListen)}
		}
	}
	return n, nil
}

// newMetrics builds this process's metrics, reading the pending approvals
// and the live policy from db at scrape time.
func newMetrics(db func() *storage.DB, engine *policy.Engine, log *slog.Logger) *telemetry.Metrics {
	return telemetry.New(telemetry.State{
		Pending: func(ctx context.Context) (int, error) {
			return db().CountActions(ctx, storage.ActionFilter{Status: storage.StatusPending})
		},
		PolicyVersion: func() string { return engine.Policy().Version },
		LivePolicy: func(ctx context.Context) (string, error) {
			live, err := db().LivePolicy(ctx)
			if err != nil || live == nil {
				return "", err
			}
			return live.Version, nil
		},
		Logger: log,
	})
}

// opsHandlers adds /healthz, /readyz and, when metrics is set, /metrics to
// mux. None needs credentials: they carry no secrets and no personal data.
// /readyz and /metrics go behind guarded, the Host and Origin checks, so a
// web page cannot read them by DNS rebinding (a readiness check also costs
// a database write and backend calls). /healthz does not: it says only
// "ok", and a liveness probe must get it whatever Host it sends.
func opsHandlers(mux *http.ServeMux, ready *readiness, metrics http.Handler, guarded func(http.Handler) http.Handler) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	if ready != nil {
		mux.Handle("GET /readyz", guarded(ready))
	}
	if metrics != nil {
		mux.Handle("GET /metrics", guarded(metrics))
	}
}

// serveOps serves the operations endpoints alone on ln (--metrics-listen)
// until ctx is done, with the Host and Origin checks of hostGuard but no
// --allowed-host names: on a loopback address only loopback names.
func serveOps(ctx context.Context, ln net.Listener, ready *readiness, metrics http.Handler, log *slog.Logger) {
	mux := http.NewServeMux()
	g := &hostGuard{listenHost: listenIP(ln.Addr()), noAllowList: true, log: log}
	opsHandlers(mux, ready, metrics, g.middleware)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: readHeaderTimeout, IdleTimeout: idleTimeout,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		log.Error("metrics listener stopped", "err", err)
	}
}

// listenMetrics opens the --metrics-listen address. Metrics carry no
// secrets and no personal data (tool names, counts, policy versions), so
// any address is allowed, plain HTTP; a non-loopback one is warned about,
// since it tells anyone who can reach it how busy the service is.
func listenMetrics(ctx context.Context, addr string, log *slog.Logger) (net.Listener, error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("serve: --metrics-listen %s: %w", addr, err)
	}
	if !loopback(addr) {
		log.Warn("serving /metrics on a non-loopback address without authentication: restrict who can reach it", "metrics_listen", addr)
	}
	log.Info("serving metrics", "addr", ln.Addr().String(), "path", "/metrics")
	return ln, nil
}

// readiness answers /readyz: 200 when this process can do its job right
// now, 503 naming the failing checks otherwise. Checked: the audit
// database takes a write (a write that takes the lock and rolls back,
// recording nothing), the policy this process holds is the live one, and
// every system of record answers (what `mandate backend check` asks,
// without a known order). The answer is reused for readyTTL, and one
// check runs at a time, so probes cannot hammer the backends.
type readiness struct {
	db      *storage.DB
	engine  *policy.Engine
	backend func(ctx context.Context) []probe // nil: nothing to check
	log     *slog.Logger

	mu   sync.Mutex // one check at a time; guards the cached answer
	at   time.Time
	last readyAnswer
}

type readyAnswer struct {
	Status string        `json:"status"` // "ready" or "unready"
	Failed []readyFailed `json:"failed,omitempty"`
}

// readyFailed names a failed check with a short reason safe to show to
// anyone who can reach the port: no URLs, paths or error texts (the log
// has those).
type readyFailed struct {
	Check  string `json:"check"` // database, policy, backend
	Reason string `json:"reason"`
}

func (rd *readiness) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ans := rd.answer(r.Context())
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if ans.Status != "ready" {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(ans)
}

func (rd *readiness) answer(ctx context.Context) readyAnswer {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	if !rd.at.IsZero() && time.Since(rd.at) < readyTTL {
		return rd.last
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readyTimeout)
	defer cancel()
	ans := readyAnswer{Status: "ready"}
	fail := func(check, reason string, attrs ...any) {
		ans.Status = "unready"
		ans.Failed = append(ans.Failed, readyFailed{check, reason})
		if rd.last.Status == "ready" || rd.at.IsZero() {
			rd.log.Warn("not ready", append([]any{"check", check, "reason", reason}, attrs...)...)
		}
	}
	if err := rd.db.ProbeWrite(ctx); err != nil {
		fail("database", "the audit database cannot be written", "err", err)
	}
	held := rd.engine.Policy()
	if live, err := rd.db.LivePolicy(ctx); err != nil {
		fail("policy", "the live policy cannot be read", "err", err)
	} else if held == nil || live == nil || live.Version != held.Version {
		lv := ""
		if live != nil {
			lv = live.Version
		}
		fail("policy", "this process does not hold the live policy", "live", lv)
	}
	if rd.backend != nil {
		for _, p := range rd.backend(ctx) {
			if p.ok {
				continue
			}
			reason := "check failed"
			switch {
			case p.reachable == "NO":
				reason = "not reachable"
			case p.authorized == "NO":
				reason = "credentials refused"
			}
			fail("backend", p.capability+": "+reason, "system", p.system, "detail", p.note)
		}
	}
	if ans.Status == "ready" && rd.last.Status == "unready" {
		rd.log.Info("ready again")
	}
	rd.at, rd.last = time.Now(), ans
	return ans
}

// backendProbe returns the readiness check of the systems of record: the
// probes of `mandate backend check` without a known order (a lookup of an
// order that does not exist must answer not_found). be must be the
// unwrapped backend, so probes do not count as calls in the metrics.
func backendProbe(backendFile, storePath string, be backend.Backend, getenv func(string) string) (func(context.Context) []probe, error) {
	cfg := &backend.Config{}
	if backendFile != "" {
		var err error
		if cfg, err = backend.LoadConfig(backendFile, getenv); err != nil {
			return nil, err
		}
	} else {
		s := backend.Source{Kind: backend.KindStore, Store: &backend.StoreSource{}}
		cfg.Orders, cfg.Customers, cfg.Payments = s, s, s
	}
	return func(ctx context.Context) []probe {
		return checkCapabilities(ctx, cfg, be, storePath, "")
	}, nil
}

// httpOps is what ops.go and opsguard.go add to the HTTP transport
// (servehttp.go). A nil *httpOps adds only /healthz.
type httpOps struct {
	ready   *readiness
	metrics http.Handler // nil when /metrics is on --metrics-listen
	limiter *agentLimiter
	guard   *hostGuard
}

// guarded puts the Host and Origin checks in front of h.
func (o *httpOps) guarded(h http.Handler) http.Handler {
	if o == nil || o.guard == nil {
		return h
	}
	return o.guard.middleware(h)
}

// limited puts the per-agent concurrency limit in front of h, which must
// be behind authentication.
func (o *httpOps) limited(h http.Handler) http.Handler {
	if o == nil || o.limiter == nil {
		return h
	}
	return o.limiter.middleware(h)
}

// ownHostCheck reports whether the Host check is ours alone: with
// --allowed-host, loopback connections may carry the listed names, which
// mcp-go's own check would refuse.
func (o *httpOps) ownHostCheck() bool {
	return o != nil && o.guard != nil && len(o.guard.allowed) > 0
}

// handlers adds the operations endpoints to mux.
func (o *httpOps) handlers(mux *http.ServeMux) {
	if o == nil {
		opsHandlers(mux, nil, nil, nil)
		return
	}
	opsHandlers(mux, o.ready, o.metrics, o.guarded)
}

// listenIP is the IP a listener is bound to, "" for an unspecified one
// (0.0.0.0, ::), which names no host an Origin could be.
func listenIP(a net.Addr) string {
	h := hostOnly(a.String())
	if ip, err := netip.ParseAddr(h); err != nil || ip.IsUnspecified() {
		return ""
	}
	return h
}
