package admin

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/mandatehq/mandate/storage"
)

// TestAuditPageKeyed: only a trail keyed with the audit key is called
// intact, and the page says from which record.
func TestAuditPageKeyed(t *testing.T) {
	k, err := storage.NewAuditKey(bytes.Repeat([]byte("k"), 32))
	if err != nil {
		t.Fatal(err)
	}
	s := newSite(t, storage.WithAuditKey(k))
	c := browser(t)
	s.login(t, c, "alice")
	check := func(want, not string) {
		t.Helper()
		resp, body := get(t, c, s.srv.URL+"/audit")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("audit: %s", resp.Status)
		}
		i := strings.Index(body, `id="chain"`)
		if i < 0 {
			t.Fatalf("no chain verdict:\n%s", body)
		}
		verdict := body[i : i+strings.Index(body[i:], "</p>")]
		if !strings.Contains(verdict, want) || strings.Contains(verdict, not) {
			t.Fatalf("chain verdict %q, want %q and not %q", verdict, want, not)
		}
	}
	// The approvers' additions (audited since they exist) are keyed.
	check("Audit trail intact (keyed from seq 1): 2 records", "unanchored")
	s.pendingRefund(t, "150.00", "late")
	check("Audit trail intact (keyed from seq 1): 3 records", "unanchored")
	check("audit key <code>"+k.ID()+"</code>", "BROKEN")
}
