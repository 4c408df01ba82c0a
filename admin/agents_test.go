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
	pending := s.ask(t, "demo-agent", "refund_order", map[string]any{"order_id": "ord_1002", "amount": "150.00", "reason": "late"})
	if pending.Status != storage.StatusPending {
		t.Fatalf("150.00 refund: %+v, want pending", pending)
	}
	// held reports whether the queue and the action's page mark the
	// pending action as held, and offer no Approve for it.
	held := func() bool {
		t.Helper()
		_, queue := get(t, c, s.srv.URL+"/")
		_, page := get(t, c, s.srv.URL+"/actions/"+pending.ActionID)
		q := strings.Contains(queue, `id="held-`+pending.ActionID+`"`) && strings.Contains(queue, "Held: agent suspended")
		p := strings.Contains(page, `id="held"`)
		approvable := strings.Contains(queue, "/actions/"+pending.ActionID+"/approve") || strings.Contains(page, "/actions/"+pending.ActionID+"/approve")
		if q != p || q == approvable || !strings.Contains(page, "/actions/"+pending.ActionID+"/deny") {
			t.Fatalf("held in queue %v, on the page %v, approvable %v:\n%s\n%s", q, p, approvable, queue, page)
		}
		return q
	}
	if held() {
		t.Fatal("held before any suspension")
	}
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
	if !held() {
		t.Fatal("the suspended agent's pending action is not marked held")
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
	if held() {
		t.Fatal("still marked held after resume")
	}
	for _, tool := range []string{"suspend_agent", "resume_agent"} {
		n := 0
		err := s.deps.DB.Records(ctx, storage.Filter{Tool: tool, Agent: "alice", Decision: "allow"}, func(*storage.Record) error { n++; return nil })
		if err != nil || n != 1 {
			t.Fatalf("%s records by alice = %d, %v; want 1", tool, n, err)
		}
	}
}
