package admin

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/mandatehq/mandate/storage"
)

// TestKillSwitchPage: a supervisor suspends an agent from the page (the
// form needs its CSRF token), the agent is refused at once, the page lists
// it, and the resume button lifts it; both acts are audited as hers.
func TestKillSwitchPage(t *testing.T) {
	ctx := context.Background()
	s := newSite(t)
	c := browser(t)
	csrf := s.login(t, c, "alice")
	_, body := get(t, c, s.srv.URL+"/agents")
	if !strings.Contains(body, "No agent is suspended") || !strings.Contains(body, `<option value="demo-agent">`) {
		t.Fatalf("agents page before:\n%s", body)
	}
	form := url.Values{"agent": {"demo-agent"}, "reason": {"looping on refunds"}}
	if resp, _ := post(t, c, s.srv.URL+"/agents/suspend", form); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("suspend without CSRF: %s, want 403", resp.Status)
	}
	if a, _ := s.deps.DB.ActiveSuspension(ctx, "demo-agent"); a != nil {
		t.Fatalf("suspended without a CSRF token: %+v", a)
	}
	form.Set("csrf", csrf)
	if resp, _ := post(t, c, s.srv.URL+"/agents/suspend", form); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("suspend: %s, want a redirect", resp.Status)
	}
	if res := s.ask(t, "demo-agent", "refund_order", map[string]any{"order_id": "ord_1001", "amount": "1.00", "reason": "x"}); res.Decision != "deny" || !strings.Contains(res.Message, "suspended") {
		t.Fatalf("refund by the suspended agent: %+v", res)
	}
	_, body = get(t, c, s.srv.URL+"/agents")
	if !strings.Contains(body, `id="suspended-demo-agent"`) || !strings.Contains(body, "looping on refunds") {
		t.Fatalf("agents page does not list the suspension:\n%s", body)
	}
	if resp, body := post(t, c, s.srv.URL+"/agents/suspend", form); resp.StatusCode != http.StatusConflict || !strings.Contains(body, "already suspended") {
		t.Fatalf("suspending again: %s\n%s", resp.Status, body)
	}
	if resp, _ := post(t, c, s.srv.URL+"/agents/demo-agent/resume", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("resume: %s, want a redirect", resp.Status)
	}
	if a, _ := s.deps.DB.ActiveSuspension(ctx, "demo-agent"); a != nil {
		t.Fatalf("still suspended after resume: %+v", a)
	}
	for _, tool := range []string{"suspend_agent", "resume_agent"} {
		n := 0
		err := s.deps.DB.Records(ctx, storage.Filter{Tool: tool, Agent: "alice", Decision: "allow"}, func(*storage.Record) error { n++; return nil })
		if err != nil || n != 1 {
			t.Fatalf("%s records by alice = %d, %v; want 1", tool, n, err)
		}
	}
}
