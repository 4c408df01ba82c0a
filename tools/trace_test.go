package tools

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
)

func TestCorrelate(t *testing.T) {
	const trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	valid := "00-" + trace + "-" + parent + "-01"
	tests := []struct {
		name         string
		header       string
		meta         map[string]any
		trace, convo string
	}{
		{"meta", "", map[string]any{"traceparent": valid, "io.mandate/conversation": "conv-42"}, trace, "conv-42"},
		{"header", valid, nil, trace, ""},
		{"meta wins over the header", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", map[string]any{"traceparent": valid}, trace, ""},
		{"an invalid meta value does not fall back to the header", valid, map[string]any{"traceparent": "junk"}, "", ""},
		{"a later version with more fields", "", map[string]any{"traceparent": "01-" + trace + "-" + parent + "-01-what-comes-next"}, trace, ""},
		{"version 00 has no more fields", "", map[string]any{"traceparent": valid + "-x"}, "", ""},
		{"version ff is invalid", "", map[string]any{"traceparent": "ff-" + trace + "-" + parent + "-01"}, "", ""},
		{"upper case", "", map[string]any{"traceparent": strings.ToUpper(valid)}, "", ""},
		{"zero trace", "", map[string]any{"traceparent": "00-" + strings.Repeat("0", 32) + "-" + parent + "-01"}, "", ""},
		{"zero parent", "", map[string]any{"traceparent": "00-" + trace + "-" + strings.Repeat("0", 16) + "-01"}, "", ""},
		{"not a string", "", map[string]any{"traceparent": 42, "io.mandate/conversation": 42}, "", ""},
		{"conversation too long", "", map[string]any{"io.mandate/conversation": strings.Repeat("a", MaxConversationID+1)}, "", ""},
		{"conversation at the limit", "", map[string]any{"io.mandate/conversation": strings.Repeat("a", MaxConversationID)}, "", strings.Repeat("a", MaxConversationID)},
		{"conversation with a space", "", map[string]any{"io.mandate/conversation": "conv 42"}, "", ""},
		{"conversation with a bidi override", "", map[string]any{"io.mandate/conversation": "conv\u202e42"}, "", ""},
		{"conversation empty", "", map[string]any{"io.mandate/conversation": ""}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := WithTraceparent(context.Background(), tt.header)
			req := mcp.CallToolRequest{}
			if tt.meta != nil {
				req.Params.Meta = &mcp.Meta{AdditionalFields: tt.meta}
			}
			c, _ := correlate(ctx, req, slog.New(slog.DiscardHandler)).Value(correlationKey{}).(correlation)
			if c.traceID != tt.trace || c.conversation != tt.convo {
				t.Fatalf("trace %q conversation %q, want %q and %q", c.traceID, c.conversation, tt.trace, tt.convo)
			}
		})
	}
}
