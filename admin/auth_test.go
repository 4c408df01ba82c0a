package admin

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"golang.org/x/crypto/bcrypt"
)

// clock is a movable time, so that backoff and session timeouts are tested
// by moving it, never by waiting.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// withClock makes the site's database and server run on a movable clock.
func (s *site) withClock() *clock {
	clk := &clock{t: time.Now().UTC()}
	s.deps.Now = clk.Now
	s.deps.DB.Now = clk.Now
	return clk
}

// setPolicy makes policy.csv the shipped one edited by edit the live policy.
func (s *site) setPolicy(t *testing.T, edit func(string) string) {
	t.Helper()
	p, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel},
		policy.Source{Name: "policy.csv", Data: []byte(edit(string(mandate.DefaultPolicy)))})
	if err != nil {
		t.Fatal(err)
	}
	// As the admin's reload does: recorded as live, then swapped in.
	if err := s.deps.DB.RecordPolicy(context.Background(), &storage.PolicyLoad{Version: p.Version, Command: "test reload"}); err != nil {
		t.Fatal(err)
	}
	s.deps.Policy.Swap(p)
}

// tryLogin posts the login form once and returns the response and page.
func (s *site) tryLogin(t *testing.T, c *http.Client, name, password string) (*http.Response, string) {
	t.Helper()
	_, body := get(t, c, s.srv.URL+"/login")
	m := csrfField.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("login page has no CSRF field:\n%s", body)
	}
	return post(t, c, s.srv.URL+"/login", url.Values{"csrf": {m[1]}, "name": {name}, "password": {password}, "next": {"/"}})
}

func TestLoginBackoffOverHTTP(t *testing.T) {
	s := newSite(t)
	clk := s.withClock()
	c := browser(t)
	codes := map[int]int{}
	for i := 0; i < 300; i++ {
		if i > 0 && i%50 == 0 {
			clk.Add(20 * time.Minute) // the guesser waits out the backoff, five times
		}
		resp, _ := s.tryLogin(t, c, "alice", "not the password at all")
		codes[resp.StatusCode]++
		if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	if codes[http.StatusTooManyRequests] < 290 || codes[http.StatusSeeOther] != 0 {
		t.Fatalf("300 wrong passwords answered %v; want nearly all 429", codes)
	}
	resp, body := s.tryLogin(t, c, "alice", testPassword)
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, "too many failed sign-ins") {
		t.Fatalf("the right password during the backoff: %s", resp.Status)
	}
	clk.Add(16 * time.Minute)
	if resp, _ := s.tryLogin(t, c, "alice", testPassword); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the right password after the backoff: %s", resp.Status)
	}
	// The queue warns about the account under attack.
	_, body = get(t, c, s.srv.URL+"/")
	if !strings.Contains(body, "failed sign-ins on the account &#34;alice&#34;") {
		t.Fatalf("queue lacks the failed sign-in warning:\n%s", body)
	}
}

func TestSessionEnds(t *testing.T) {
	tests := []struct {
		name string
		end  func(t *testing.T, s *site, clk *clock)
		want int // status of GET / afterwards
	}{
		{"user removed", func(t *testing.T, s *site, _ *clock) {
			if err := s.deps.DB.RemoveUser(context.Background(), "alice"); err != nil {
				t.Fatal(err)
			}
		}, http.StatusSeeOther},
		{"sessions revoked", func(t *testing.T, s *site, _ *clock) {
			if n, err := s.deps.DB.RevokeSessions(context.Background(), "alice"); err != nil || n != 1 {
				t.Fatalf("revoked %d, %v", n, err)
			}
		}, http.StatusSeeOther},
		{"approver role removed from the policy", func(t *testing.T, s *site, _ *clock) {
			s.setPolicy(t, func(p string) string { return strings.Replace(p, "g, alice, supervisor\n", "", 1) })
		}, http.StatusForbidden},
		{"idle for 31 minutes", func(t *testing.T, s *site, clk *clock) { clk.Add(31 * time.Minute) }, http.StatusSeeOther},
		{"busy but past the absolute limit", func(t *testing.T, s *site, clk *clock) {
			c := browser(t)
			c.Jar = s.jar
			for i := 0; i < 17; i++ { // every 29 minutes for 8 h 13 min
				clk.Add(29 * time.Minute)
				if i < 16 {
					if resp, _ := get(t, c, s.srv.URL+"/"); resp.StatusCode != http.StatusOK {
						t.Fatalf("active session refused after %d min: %s", (i+1)*29, resp.Status)
					}
				}
			}
		}, http.StatusSeeOther},
		{"signed in again elsewhere", func(t *testing.T, s *site, _ *clock) {
			if resp, _ := s.tryLogin(t, browser(t), "alice", testPassword); resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("second login: %s", resp.Status)
			}
		}, http.StatusSeeOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSite(t)
			clk := s.withClock()
			c := browser(t)
			s.jar = c.Jar
			s.login(t, c, "alice")
			tt.end(t, s, clk)
			resp, _ := get(t, c, s.srv.URL+"/")
			if resp.StatusCode != tt.want {
				t.Fatalf("GET / afterwards: %s, want %d", resp.Status, tt.want)
			}
			// Refused at once and for good: the session is gone even if
			// the role comes back.
			s.setPolicy(t, func(p string) string { return p })
			if resp, _ := get(t, c, s.srv.URL+"/"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
				t.Fatalf("GET / once more: %s to %q, want the login page", resp.Status, resp.Header.Get("Location"))
			}
		})
	}
}

func TestRoleRemovalIsAudited(t *testing.T) {
	s := newSite(t)
	c := browser(t)
	s.login(t, c, "alice")
	s.setPolicy(t, func(p string) string { return strings.Replace(p, "g, alice, supervisor\n", "", 1) })
	get(t, c, s.srv.URL+"/")
	n := 0
	s.deps.DB.Records(context.Background(), storage.Filter{Tool: "admin_access"}, func(r *storage.Record) error {
		if r.Agent == "alice" && r.Decision == policy.Deny {
			n++
		}
		return nil
	})
	if n != 1 {
		t.Fatalf("%d audit records of alice's refused session, want 1", n)
	}
}

// TestStaleServerRefusesSignInAndPages: roles are read from the policy, so
// an admin server whose policy is not the live one (another process made
// live a policy without alice's g line; this one has not loaded it) shows
// nothing and signs nobody in: 503, audited for a signed-in user, and no
// password is checked. Once it holds the live policy, alice is refused
// by her role as usual.
func TestStaleServerRefusesSignInAndPages(t *testing.T) {
	s := newSite(t)
	id := s.pendingRefund(t, "150.00", "late")
	c := browser(t)
	s.login(t, c, "alice")
	if resp, body := get(t, c, s.srv.URL+"/actions/"+id); resp.StatusCode != http.StatusOK || !strings.Contains(body, "Ada Lovelace") {
		t.Fatalf("control: the action page under the live policy: %s, customer shown %v", resp.Status, strings.Contains(body, "Ada Lovelace"))
	}
	text := strings.Replace(string(mandate.DefaultPolicy), "g, alice, supervisor\n", "", 1)
	live, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel}, policy.Source{Name: "policy.csv", Data: []byte(text)})
	if err != nil {
		t.Fatal(err)
	}
	// Recorded as live by another process; this server's engine is not swapped.
	if err := s.deps.DB.RecordPolicy(context.Background(), &storage.PolicyLoad{Version: live.Version, Command: "admin reload"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(tools.SuspensionRefresh) // the server's view of the live version may be that old

	for _, path := range []string{"/", "/actions/" + id, "/audit"} {
		resp, body := get(t, c, s.srv.URL+path)
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "rules are not the live ones") || strings.Contains(body, "Ada Lovelace") {
			t.Fatalf("alice GET %s on a server whose policy is not live: %s\n%s\nwant 503 and nothing shown", path, resp.Status, body)
		}
	}
	c2 := browser(t)
	if resp, body := s.tryLogin(t, c2, "alice", testPassword); resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "rules are not the live ones") {
		t.Fatalf("alice signing in on a server whose policy is not live: %s\n%s\nwant 503", resp.Status, body)
	}
	u, _ := url.Parse(s.srv.URL)
	for _, ck := range c2.Jar.Cookies(u) {
		if ck.Name == sessionCookie {
			t.Fatal("a session was created by a server whose policy is not live")
		}
	}
	var refusals, failures int
	s.deps.DB.Records(context.Background(), storage.Filter{}, func(r *storage.Record) error {
		if r.Tool == "admin_access" && r.Agent == "alice" && r.Outcome == "refused" && strings.HasPrefix(r.Error, "stale policy: ") && strings.Contains(r.Error, live.Version) {
			refusals++
		}
		if r.Tool == "admin_login" {
			failures++
		}
		return nil
	})
	if refusals != 3 || failures != 0 {
		t.Fatalf("%d audited stale-policy refusals of alice's requests and %d sign-in records; want 3, and none for the sign-in (no password was checked)", refusals, failures)
	}

	// This server reloads the live policy: alice's role is gone.
	s.deps.Policy.Swap(live)
	if resp, _ := get(t, c, s.srv.URL+"/"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("alice GET / under the live policy without her role: %s, want 403", resp.Status)
	}
}

func TestAuditorSeesOnlyTheAuditTrail(t *testing.T) {
	s := newSite(t)
	s.setPolicy(t, func(p string) string { return p + "g, carol, auditor\n" })
	hash, _ := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	if err := s.deps.DB.AddUser(context.Background(), "carol", string(hash)); err != nil {
		t.Fatal(err)
	}
	id := s.pendingRefund(t, "150.00", "late")
	c := browser(t)
	resp, _ := s.tryLogin(t, c, "carol", testPassword)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/audit" {
		t.Fatalf("auditor login: %s to %q, want 303 to /audit", resp.Status, resp.Header.Get("Location"))
	}
	resp, body := get(t, c, s.srv.URL+"/audit")
	if resp.StatusCode != http.StatusOK || strings.Contains(body, `href="/" class`) || strings.Contains(body, `>Approvals</a>`) {
		t.Fatalf("audit page for an auditor: %s\n%s", resp.Status, body)
	}
	csrf := csrfField.FindStringSubmatch(body)[1]
	for _, tt := range []struct{ method, path string }{
		{"GET", "/actions/" + id},
		{"POST", "/actions/" + id + "/approve"},
	} {
		var resp *http.Response
		if tt.method == "GET" {
			resp, _ = get(t, c, s.srv.URL+tt.path)
		} else {
			resp, _ = post(t, c, s.srv.URL+tt.path, url.Values{"csrf": {csrf}})
		}
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("auditor %s %s: %s, want 403", tt.method, tt.path, resp.Status)
		}
	}
	if resp, _ := get(t, c, s.srv.URL+"/"); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/audit" {
		t.Fatalf("auditor GET /: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	if s.status(t, id) != storage.StatusPending {
		t.Fatal("an auditor's POST changed the action")
	}
}

func TestHostHeaderAndAssets(t *testing.T) {
	s := newSite(t)
	for _, tt := range []struct {
		host, path string
		want       int
	}{
		{"", "/login", http.StatusOK}, // the test server's own 127.0.0.1:PORT
		{"localhost:8080", "/login", http.StatusOK},
		{"evil.example", "/login", http.StatusMisdirectedRequest},
		{"rebind.attacker.test:8080", "/", http.StatusMisdirectedRequest},
		{"127.0.0.1.evil.example", "/login", http.StatusMisdirectedRequest},
		{"", "/static/", http.StatusNotFound},
		{"", "/static/style.css", http.StatusOK},
		{"", "/favicon.ico", http.StatusOK},
	} {
		req, _ := http.NewRequest("GET", s.srv.URL+tt.path, nil)
		if tt.host != "" {
			req.Host = tt.host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Fatalf("GET %s with Host %q: %s, want %d", tt.path, tt.host, resp.Status, tt.want)
		}
		if tt.path == "/favicon.ico" && resp.Header.Get("Content-Type") != "image/x-icon" && resp.Header.Get("Content-Type") != "image/vnd.microsoft.icon" {
			t.Fatalf("favicon Content-Type %q", resp.Header.Get("Content-Type"))
		}
	}
}

func TestSecureCookieOverTLS(t *testing.T) {
	s := newSite(t)
	h, err := New(Config{Deps: s.deps, Secure: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := newTLSServer(t, h)
	c := browser(t)
	c.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	_, body := get(t, c, srv+"/login")
	m := csrfField.FindStringSubmatch(body)
	resp, _ := post(t, c, srv+"/login", url.Values{"csrf": {m[1]}, "name": {"alice"}, "password": {testPassword}})
	if resp.Header.Get("Strict-Transport-Security") == "" {
		t.Fatal("no Strict-Transport-Security header over TLS")
	}
	var found bool
	for _, ck := range resp.Cookies() {
		if ck.Name == sessionCookie {
			found = true
			if !ck.Secure {
				t.Fatalf("session cookie over TLS is not Secure: %+v", ck)
			}
		}
	}
	if !found {
		t.Fatalf("no session cookie: %s", resp.Status)
	}
}

func newTLSServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestClientAddrBehindTrustedProxy(t *testing.T) {
	s := &Server{cfg: Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}
	tests := []struct {
		remote, xff, want string
	}{
		{"203.0.113.5:1234", "198.51.100.1", "203.0.113.5:1234"}, // not a proxy: the header is the client's own word
		{"10.0.0.2:1234", "198.51.100.1", "198.51.100.1"},
		{"10.0.0.2:1234", "6.6.6.6, 198.51.100.1, 10.0.0.9", "198.51.100.1"}, // the leftmost entry is the client's to forge
		{"10.0.0.2:1234", "", "10.0.0.2"},
		{"10.0.0.2:1234", "not-an-ip", "10.0.0.2"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tt.remote
		if tt.xff != "" {
			r.Header.Set("X-Forwarded-For", tt.xff)
		}
		if got := s.clientAddr(r); got != tt.want {
			t.Fatalf("clientAddr(%s, XFF %q) = %q, want %q", tt.remote, tt.xff, got, tt.want)
		}
	}
}
