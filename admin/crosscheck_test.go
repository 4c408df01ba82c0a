package admin

import (
	"database/sql"
	"net/http"
	"strings"
	"testing"

	"github.com/mandatehq/mandate/storage"
)

// TestPagesShowRewrittenActions: an executed refund whose row a database
// writer rewrote as "denied by bob" is flagged on its action page, above
// the rewritten status, and the audit page shows the cross-check's verdict
// next to the chain's.
func TestPagesShowRewrittenActions(t *testing.T) {
	s := newSite(t)
	c := browser(t)
	s.login(t, c, "alice")
	res := s.ask(t, "demo-agent", "refund_order", map[string]any{"order_id": "ord_1001", "amount": "5.00", "reason": "late"})
	if res.Status != storage.StatusExecuted {
		t.Fatalf("refund: %+v, want executed", res)
	}
	section := func(body, id, end string) string {
		t.Helper()
		i := strings.Index(body, `id="`+id+`"`)
		if i < 0 {
			return ""
		}
		return body[i : i+strings.Index(body[i:], end)]
	}
	page := func(path string) string {
		t.Helper()
		resp, body := get(t, c, s.srv.URL+path)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s", path, resp.Status)
		}
		return body
	}
	if v := section(page("/audit"), "crosscheck", "</div>"); !strings.Contains(v, "Actions agree with the trail: 1 actions") {
		t.Fatalf("cross-check verdict before the rewrite: %q", v)
	}
	if v := section(page("/actions/"+res.ActionID), "disagree", "</div>"); v != "" {
		t.Fatalf("action page flags an untouched action: %q", v)
	}

	raw, err := sql.Open("sqlite", storage.DSN(s.path))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`UPDATE actions SET status = 'denied', approver = 'bob' WHERE id = ?`, res.ActionID); err != nil {
		t.Fatal(err)
	}
	raw.Close()

	v := section(page("/audit"), "crosscheck", "</div>")
	for _, want := range []string{"Actions table DISAGREES with the trail (2 of 1 actions", "status: table “denied”, trail “executed”", "approver: table “bob”, trail “”", `href="/actions/` + res.ActionID} {
		if !strings.Contains(v, want) {
			t.Fatalf("cross-check verdict after the rewrite: %q, want %q", v, want)
		}
	}
	body := page("/actions/" + res.ActionID)
	v = section(body, "disagree", "</div>")
	if !strings.Contains(v, "status: table “denied”, trail “executed”") || !strings.Contains(v, "approver: table “bob”") {
		t.Fatalf("action page after the rewrite: %q", v)
	}
	if strings.Index(body, `id="disagree"`) > strings.Index(body, "What the agent asked for") {
		t.Fatal("the warning is not above the rewritten row")
	}
}
