package admin

import (
	"context"
	"database/sql"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/mandatehq/mandate/auth"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"golang.org/x/crypto/bcrypt"
)

// TestRefusedDecisionsAreAudited: a signed-in user's approve or deny
// refused for want of the role (an auditor) or of the session's CSRF token
// (a forged or stale form) is an audit record in the action's lineage.
// When that record cannot be written the answer is 503, not a quiet 403;
// either way the action is untouched.
func TestRefusedDecisionsAreAudited(t *testing.T) {
	tests := []struct {
		name   string
		user   string
		verb   string // approve or deny
		csrf   bool   // the form carries the session's token
		broken bool   // the audit trail refuses new records
		want   int
		reason string // in the refusal record
	}{
		{"auditor approves", "carol", "approve", true, false, http.StatusForbidden, "carol is an auditor and may not POST /actions/{id}/approve; it needs an approver"},
		{"auditor denies", "carol", "deny", true, false, http.StatusForbidden, "carol is an auditor and may not POST /actions/{id}/deny"},
		{"approver without the CSRF token", "alice", "approve", false, false, http.StatusForbidden, "without the session's CSRF token"},
		{"auditor without the CSRF token", "carol", "deny", false, false, http.StatusForbidden, "without the session's CSRF token"},
		{"auditor approves, trail unwritable", "carol", "approve", true, true, http.StatusServiceUnavailable, ""},
		{"no CSRF token, trail unwritable", "alice", "deny", false, true, http.StatusServiceUnavailable, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSite(t)
			s.setPolicy(t, func(p string) string { return p + "g, carol, auditor\n" })
			hash, _ := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
			if err := s.deps.DB.AddUser(context.Background(), "carol", string(hash)); err != nil {
				t.Fatal(err)
			}
			id := s.pendingRefund(t, "150.00", "late")
			c := browser(t)
			if resp, _ := s.tryLogin(t, c, tt.user, testPassword); resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("login as %s: %s", tt.user, resp.Status)
			}
			_, body := get(t, c, s.srv.URL+"/audit")
			m := csrfField.FindStringSubmatch(body)
			if m == nil {
				t.Fatalf("audit page has no CSRF field:\n%s", body)
			}
			form := url.Values{"comment": {"call the customer first"}}
			if tt.csrf {
				form.Set("csrf", m[1])
			}
			if tt.broken {
				breakAudit(t, s.path)
			}
			if resp, body := post(t, c, s.srv.URL+"/actions/"+id+"/"+tt.verb, form); resp.StatusCode != tt.want {
				t.Fatalf("POST %s as %s: %s, want %d\n%s", tt.verb, tt.user, resp.Status, tt.want, body)
			}
			if got := s.status(t, id); got != storage.StatusPending {
				t.Fatalf("the refused %s left the action %s", tt.verb, got)
			}
			var recs []*storage.Record
			err := s.deps.DB.Records(context.Background(), storage.Filter{Tool: auth.AccessTool}, func(r *storage.Record) error {
				recs = append(recs, r)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if tt.broken {
				if len(recs) != 0 {
					t.Fatalf("records written past the broken trail: %+v", recs)
				}
				return
			}
			if len(recs) != 1 {
				t.Fatalf("%d refusal records, want 1: %+v", len(recs), recs)
			}
			r := recs[0]
			if r.Agent != tt.user || r.Approver != tt.user || r.ActionID != id || r.Decision != policy.Deny ||
				r.Outcome != "refused" || !strings.Contains(r.Error, tt.reason) || !strings.Contains(string(r.Args), `"via":"web"`) {
				t.Fatalf("refusal record %+v (args %s), want %s refused in %s's lineage saying %q", r, r.Args, tt.user, id, tt.reason)
			}
		})
	}
}

// breakAudit makes the audit trail refuse every new record the way a full
// disk would, while the database stays open and readable.
func breakAudit(t *testing.T, path string) {
	t.Helper()
	raw, err := sql.Open("sqlite", storage.DSN(path))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(`CREATE TRIGGER audit_full BEFORE INSERT ON audit
		BEGIN SELECT RAISE(ABORT, 'simulated: database or disk is full'); END`); err != nil {
		t.Fatal(err)
	}
}
