// Package telemetry collects Mandate's Prometheus metrics. The packages
// that do the work (tools, storage, auth, policy, backend) know nothing of
// Prometheus: each offers a narrow hook (tools.Observer, a storage commit
// observer, callbacks on auth refusals and policy reload failures) and
// Metrics implements them; cmd wires them together. Everything is on a
// private registry, so nothing registers globally and tests can build as
// many as they like.
package telemetry

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/mandatehq/mandate/storage"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// State is what Metrics reads at scrape time rather than counting: each
// func may be nil. They should be cheap (one indexed query at most).
type State struct {
	// Pending counts the actions waiting for a person, across every
	// process sharing the database.
	Pending func(ctx context.Context) (int, error)
	// PolicyVersion is the version this process decides under.
	PolicyVersion func() string
	// LivePolicy is the version recorded as live in the database.
	LivePolicy func(ctx context.Context) (string, error)
	// Logger receives scrape-time read failures; nil discards.
	Logger *slog.Logger
}

// Metrics holds every metric of one process.
type Metrics struct {
	reg *prometheus.Registry

	decisions      *prometheus.CounterVec
	toolSeconds    *prometheus.HistogramVec
	backendSeconds *prometheus.HistogramVec
	backendErrors  *prometheus.CounterVec
	commitSeconds  *prometheus.HistogramVec
	batchSize      prometheus.Histogram
	commitFailures prometheus.Counter
	reloadFailures prometheus.Counter
	authFailures   *prometheus.CounterVec
	httpRefused    *prometheus.CounterVec
}

// Latency buckets from 1 ms to 10 s: a guarded call spends a few ms on a
// commit, a backend call up to its timeout (10 s by default).
var secondsBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// New returns the metrics of this process on a fresh registry, with the Go
// runtime and process collectors and the scrape-time readings of st.
func New(st State) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mandate_decisions_total",
		Help: "Tool calls decided and recorded in the audit trail, by tool and policy effect (allow, deny, require_approval).",
	}, []string{"tool", "effect"})
	m.toolSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "mandate_tool_call_duration_seconds",
		Help:    "Time from a tools/call reaching the guard to its answer, by tool.",
		Buckets: secondsBuckets,
	}, []string{"tool"})
	m.backendSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "mandate_backend_call_duration_seconds",
		Help:    "Time of each call to a system of record, by operation (e.g. orders.get, payments.refund).",
		Buckets: secondsBuckets,
	}, []string{"operation"})
	m.backendErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mandate_backend_errors_total",
		Help: "Calls to a system of record that returned an error, by operation and code (not_found and conflict are answers; unavailable, internal, timeout and unauthorized are failures).",
	}, []string{"operation", "code"})
	m.commitSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "mandate_audit_commit_duration_seconds",
		Help:    "Time of each group commit of the audit database, from queueing for the write lock to the commit's return; durable=true when it waited for an fsync.",
		Buckets: secondsBuckets,
	}, []string{"durable"})
	m.batchSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "mandate_audit_commit_batch_size",
		Help:    "Writes that shared one group commit of the audit database.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128},
	})
	m.commitFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "mandate_audit_commit_failures_total",
		Help: "Group commits whose transaction could not begin or commit; their writes were refused.",
	})
	m.reloadFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "mandate_policy_reload_failures_total",
		Help: "Policy file edits that did not go live (did not load or could not be recorded); the last good policy stayed live.",
	})
	m.authFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mandate_auth_failures_total",
		Help: "Requests to /mcp refused for their credentials, by reason.",
	}, []string{"reason"})
	m.httpRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mandate_http_refused_total",
		Help: "Requests to /mcp refused before any tool: reason=concurrency (429, too many in flight for one agent), streams (429 or 503, too many notification streams open), origin or host (403).",
	}, []string{"reason"})
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.decisions, m.toolSeconds, m.backendSeconds, m.backendErrors,
		m.commitSeconds, m.batchSize, m.commitFailures, m.reloadFailures,
		m.authFailures, m.httpRefused, &stateCollector{st: st},
	)
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry is the private registry, for tests that gather directly.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Decision implements tools.Observer.
func (m *Metrics) Decision(tool, effect string) { m.decisions.WithLabelValues(tool, effect).Inc() }

// ToolCall implements tools.Observer.
func (m *Metrics) ToolCall(tool string, d time.Duration) {
	m.toolSeconds.WithLabelValues(tool).Observe(d.Seconds())
}

// Commit is the storage commit observer (storage.WithCommitObserver).
func (m *Metrics) Commit(c storage.CommitStats) {
	if c.Err != nil {
		m.commitFailures.Inc()
		return
	}
	durable := "false"
	if c.Durable {
		durable = "true"
	}
	m.commitSeconds.WithLabelValues(durable).Observe(c.Duration.Seconds())
	m.batchSize.Observe(float64(c.Writes))
}

// PolicyReloadFailed counts a reload that left the last good policy live
// (policy.Watcher.OnFail).
func (m *Metrics) PolicyReloadFailed(error) { m.reloadFailures.Inc() }

// AuthFailure counts a request refused for its credentials
// (auth.Agents.OnRefuse). reason is one of auth's fixed reasons.
func (m *Metrics) AuthFailure(reason string) { m.authFailures.WithLabelValues(reason).Inc() }

// HTTPRefused counts a request refused before authentication or a tool:
// "concurrency", "streams", "origin" or "host".
func (m *Metrics) HTTPRefused(reason string) { m.httpRefused.WithLabelValues(reason).Inc() }

// stateCollector reads the pending approvals and the policy versions at
// scrape time, so they are right across every process sharing the
// database and cost nothing between scrapes.
type stateCollector struct{ st State }

var (
	pendingDesc = prometheus.NewDesc("mandate_pending_approvals",
		"Actions waiting for a person, in the whole database.", nil, nil)
	policyDesc = prometheus.NewDesc("mandate_policy_info",
		"Always 1; version is the policy this process decides under.", []string{"version"}, nil)
	liveDesc = prometheus.NewDesc("mandate_policy_live",
		"1 when this process's policy is the live one recorded in the database, 0 when not (it refuses to act until it loads the live one).", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- pendingDesc
	ch <- policyDesc
	ch <- liveDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	log := c.st.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if c.st.Pending != nil {
		if n, err := c.st.Pending(ctx); err != nil {
			log.Warn("metrics: counting pending approvals failed", "err", err)
		} else {
			ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(n))
		}
	}
	if c.st.PolicyVersion == nil {
		return
	}
	held := c.st.PolicyVersion()
	ch <- prometheus.MustNewConstMetric(policyDesc, prometheus.GaugeValue, 1, held)
	if c.st.LivePolicy != nil {
		if live, err := c.st.LivePolicy(ctx); err != nil {
			log.Warn("metrics: reading the live policy failed", "err", err)
		} else {
			v := 0.0
			if live == held {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(liveDesc, prometheus.GaugeValue, v)
		}
	}
}
