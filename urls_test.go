package mandate

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

// TestWithoutURL: a failed request's error names the scheme and host, never
// the path or query, which may carry a token.
func TestWithoutURL(t *testing.T) {
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, "http://127.0.0.1:1/services/T0/B0/SECRET?token=hunter2", nil)
	_, err := http.DefaultClient.Do(req)
	if err == nil || !strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("the premise: net/http's error names the URL: %v", err)
	}
	got := WithoutURL(err).Error()
	if strings.Contains(got, "SECRET") || strings.Contains(got, "hunter2") || !strings.Contains(got, "http://127.0.0.1:1") {
		t.Fatalf("WithoutURL = %q", got)
	}
	if URLHost("https://hooks.slack.com/services/T0/B0/SECRET") != "https://hooks.slack.com" || URLHost("not a url") != "" {
		t.Fatal("URLHost")
	}
}
