package tools

import (
	"context"
	"log/slog"
	"regexp"

	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/telemetry"
	"github.com/mark3labs/mcp-go/mcp"
)

// Correlation: a client may say which trace and which conversation a tool
// call belongs to, in the request's _meta:
//
//	"_meta": {"traceparent": "00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>",
//	          "io.mandate/conversation": "conv-42"}
//
// Over HTTP the traceparent header does the same; _meta wins, since it is
// per call. The trace-id and the conversation id are recorded on the call's
// attempt and outcome records, and the trace is the parent of the call's
// OpenTelemetry spans. A value that is not valid is ignored (and logged
// without its text): correlation is a convenience, never a reason to refuse.

// MetaTraceparent and MetaConversation are the _meta keys read. The
// conversation key is namespaced, as MCP asks of custom _meta keys.
const (
	MetaTraceparent  = "traceparent"
	MetaConversation = "io.mandate/conversation"
)

// MaxConversationID bounds a conversation id, in bytes.
const MaxConversationID = 128

// traceparentRE is a W3C traceparent: version, trace-id, parent-id, flags,
// lowercase hex; a later version may append fields after a dash.
var traceparentRE = regexp.MustCompile(`^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$`)

// correlation is what a call carries for tracing and the audit trail.
type correlation struct {
	traceparent, traceID, conversation string
}

type correlationKey struct{}

// WithTraceparent records the HTTP traceparent header of a request in ctx,
// for the tool calls it carries (servehttp.go's context function).
func WithTraceparent(ctx context.Context, header string) context.Context {
	if header == "" {
		return ctx
	}
	return context.WithValue(ctx, correlationKey{}, correlation{traceparent: header})
}

// parseTraceparent returns the trace-id of a valid traceparent.
func parseTraceparent(s string) (traceID string, ok bool) {
	m := traceparentRE.FindStringSubmatch(s)
	if m == nil || m[1] == "ff" || (m[1] == "00" && m[5] != "") ||
		m[2] == "00000000000000000000000000000000" || m[3] == "0000000000000000" {
		return "", false
	}
	return m[2], true
}

// validConversation accepts 1 to MaxConversationID visible ASCII
// characters: an id, not text, so nothing in it can mislead a reader of the
// trail or a terminal.
func validConversation(s string) bool {
	if s == "" || len(s) > MaxConversationID {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// correlate reads the call's trace context and conversation id from its
// _meta (or the HTTP header in ctx), and returns ctx carrying them, with
// the trace as the remote parent of the call's spans.
func correlate(ctx context.Context, req mcp.CallToolRequest, log *slog.Logger) context.Context {
	c, _ := ctx.Value(correlationKey{}).(correlation)
	header := c.traceparent
	c = correlation{}
	var meta map[string]any
	if req.Params.Meta != nil {
		meta = req.Params.Meta.AdditionalFields
	}
	tp, fromMeta := meta[MetaTraceparent].(string)
	if !fromMeta {
		tp = header
	}
	if _, present := meta[MetaTraceparent]; present || tp != "" {
		if id, ok := parseTraceparent(tp); ok {
			c.traceparent, c.traceID = tp, id
		} else {
			log.Info("ignored an invalid traceparent", "from_meta", fromMeta, "bytes", len(tp))
		}
	}
	if v, present := meta[MetaConversation]; present {
		if s, ok := v.(string); ok && validConversation(s) {
			c.conversation = s
		} else {
			log.Info("ignored an invalid conversation id: give 1 to 128 visible ASCII characters", "key", MetaConversation)
		}
	}
	ctx = context.WithValue(ctx, correlationKey{}, c)
	return telemetry.WithTraceparent(ctx, c.traceparent)
}

// stamp puts the call's trace and conversation ids on rec. An outcome
// recorded without them in ctx (an action a person approved later, or one
// Recover reconciled) takes those of the action's attempt, so every record
// of the action can be found by the trace that asked for it.
func stamp(ctx context.Context, d *Deps, actionID string, rec *storage.Record) {
	if c, ok := ctx.Value(correlationKey{}).(correlation); ok {
		// The agent's own call, with or without ids.
		rec.TraceID, rec.ConversationID = c.traceID, c.conversation
		return
	}
	if actionID != "" {
		rec.TraceID, rec.ConversationID, _ = d.DB.Correlation(ctx, actionID)
	}
}
