// Package telemetry exports what a running Mandate does to operators'
// observability systems. tracing.go: OpenTelemetry spans for each tool
// call, sent with the standard OTLP/HTTP exporter.
package telemetry

import (
	"context"
	"log/slog"
	"net/url"
	"os"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/mandatehq/mandate"
)

// Span names of a tool call, in the order its steps run: the call, reading
// the facts, the policy decision, appending to the audit trail (the attempt,
// then the outcome) and the call to the system of record.
const (
	SpanToolCall    = "tools/call" // followed by the tool name: "tools/call refund_order"
	SpanFacts       = "mandate.facts"
	SpanDecision    = "mandate.decision"
	SpanAuditAppend = "mandate.audit.append"
	SpanBackendCall = "mandate.backend.call"
)

// Attribute keys a span may carry. Only these exist, and none holds
// customer data: no argument values, no customer or order ids, no facts.
const (
	AttrTool     = "mandate.tool"
	AttrEffect   = "mandate.effect"
	AttrActionID = "mandate.action_id"
	AttrAgent    = "mandate.agent"
	AttrPhase    = "mandate.audit.phase"
	AttrOutcome  = "mandate.outcome"
)

// tracer is the global provider's: a no-op until SetupTracing installs one,
// so spans cost next to nothing when tracing is off.
var tracer = otel.Tracer("github.com/mandatehq/mandate")

// Span is one step being traced. The zero value does nothing.
type Span struct{ s trace.Span }

// Start begins a span named name as a child of the span in ctx (or of the
// remote parent WithTraceparent put there) with attributes as key, value
// pairs from the Attr* keys.
func Start(ctx context.Context, name string, kv ...string) (context.Context, Span) {
	ctx, s := tracer.Start(ctx, name, trace.WithAttributes(attrs(kv)...))
	return ctx, Span{s}
}

// Set adds attributes as key, value pairs from the Attr* keys.
func (s Span) Set(kv ...string) {
	if s.s != nil && s.s.IsRecording() {
		s.s.SetAttributes(attrs(kv)...)
	}
}

// End ends the span; a non-nil err marks it failed with the error's code
// (not its message, which may quote what a customer wrote).
func (s Span) End(err error) {
	if s.s == nil {
		return
	}
	if err != nil {
		code := mandate.ErrorCode(err)
		if code == "" {
			code = "error"
		}
		s.s.SetStatus(codes.Error, code)
	}
	s.s.End()
}

func attrs(kv []string) []attribute.KeyValue {
	out := make([]attribute.KeyValue, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, attribute.String(kv[i], kv[i+1]))
	}
	return out
}

// WithTraceparent makes the W3C trace context traceparent (already
// validated) the remote parent of the spans started from the returned
// context.
func WithTraceparent(ctx context.Context, traceparent string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": traceparent})
}

// EndpointEnv is the standard variable that turns tracing on when no
// --otlp-endpoint is given (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT too).
const EndpointEnv = "OTEL_EXPORTER_OTLP_ENDPOINT"

// Enabled reports whether tracing is configured: an endpoint given, or the
// standard OTLP endpoint variables set.
func Enabled(endpoint string) bool {
	return endpoint != "" || os.Getenv(EndpointEnv) != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// SetupTracing sends spans to the OTLP/HTTP collector at endpoint (a URL
// such as http://127.0.0.1:4318; spans go to its /v1/traces unless the URL
// has a path), or where the standard OTEL_EXPORTER_OTLP_* variables say
// when endpoint is empty. It returns a shutdown that flushes what is
// buffered; call it before exiting. With tracing off it does nothing.
// The SDK's own errors (a collector away) go to log.
// Export failures never affect tool calls: spans are batched and dropped
// if the collector is away.
func SetupTracing(ctx context.Context, endpoint, version string, log *slog.Logger) (shutdown func(context.Context) error, err error) {
	if !Enabled(endpoint) {
		return func(context.Context) error { return nil }, nil
	}
	var opts []otlptracehttp.Option
	if endpoint != "" {
		u, err := url.Parse(endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, mandate.Errorf(mandate.EINVALID, "--otlp-endpoint %q: give a URL such as http://127.0.0.1:4318", mandate.TruncateBytes(endpoint, 200))
		}
		if u.Path == "" || u.Path == "/" {
			u.Path = "/v1/traces"
		}
		opts = append(opts, otlptracehttp.WithEndpointURL(u.String()))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, err
	}
	res := resource.NewSchemaless(semconv.ServiceName("mandate"), semconv.ServiceVersion(version))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(time.Second)), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	// The SDK reports export failures through the standard library's log
	// by default, which would put plain-text lines into JSON logs; send
	// them through Mandate's logger instead.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("OpenTelemetry: could not export spans", "err", err)
	}))
	return tp.Shutdown, nil
}
