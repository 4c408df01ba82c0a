package admin

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/store"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/rates"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
	"golang.org/x/crypto/bcrypt"
)

const testPassword = "correct horse battery"

// site is a running admin server on the real parts: the shipped policy, a
// gateway database and a demo store in temporary files, users alice (a
// supervisor) and demo-agent (the agent itself, to prove it cannot approve
// its own actions here either).
type site struct {
	deps *tools.Deps
	st   *store.Store
	srv  *httptest.Server
	jar  http.CookieJar // the signed-in client's cookies, for tests that need a second client
	path string         // the database file, for tests that tamper with it as a database writer would
}

func newSite(t *testing.T, opts ...storage.Option) *site {
	t.Helper()
	ctx := context.Background()
	pol, err := policy.Load(policy.Source{Name: "model.conf", Data: mandate.DefaultModel}, policy.Source{Name: "policy.csv", Data: mandate.DefaultPolicy})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	db, err := storage.Open(ctx, filepath.Join(dir, "mandate.db"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	// What mandate admin does at start: record its policy and rates as the
	// live ones.
	if err := db.RecordPolicy(ctx, &storage.PolicyLoad{Version: pol.Version, Command: "admin start"}); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordRates(ctx, &storage.RatesLoad{Version: rates.Default().Version, Base: rates.Default().Base, Command: "admin start"}); err != nil {
		t.Fatal(err)
	}
	st, _, err := store.OpenSeeded(ctx, filepath.Join(dir, "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	hash, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice", "demo-agent"} {
		if err := db.AddUser(ctx, u, string(hash)); err != nil {
			t.Fatal(err)
		}
	}
	s := &site{path: filepath.Join(dir, "mandate.db"), st: st, deps: &tools.Deps{Policy: policy.NewEngine(pol), DB: db,
		Backend: backend.Backend{Payments: st, Orders: st, Customers: st}}}
	h, err := New(Config{Deps: s.deps})
	if err != nil {
		t.Fatal(err)
	}
	s.srv = httptest.NewServer(h)
	t.Cleanup(s.srv.Close)
	return s
}

// ask calls an action tool as agent through the real guard, in process,
// and returns the result.
func (s *site) ask(t *testing.T, agent, tool string, args map[string]any) tools.ActionResult {
	t.Helper()
	ctx := context.Background()
	d := *s.deps
	d.Agent = agent
	c, err := client.NewInProcessClient(tools.NewServer(&d, "test"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	if _, err := c.Initialize(ctx, init); err != nil {
		t.Fatal(err)
	}
	res, err := c.CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: tool, Arguments: args}})
	if err != nil {
		t.Fatal(err)
	}
	var out tools.ActionResult
	b, _ := json.Marshal(res.StructuredContent)
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func (s *site) pendingRefund(t *testing.T, amount, reason string) string {
	t.Helper()
	res := s.ask(t, "demo-agent", "refund_order", map[string]any{"order_id": "ord_1002", "amount": amount, "reason": reason})
	if res.Status != storage.StatusPending {
		t.Fatalf("refund: %+v, want pending", res)
	}
	return res.ActionID
}

func (s *site) status(t *testing.T, id string) string {
	t.Helper()
	a, err := s.deps.DB.Action(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return a.Status
}

// browser is an HTTP client with cookies that does not follow redirects,
// so tests see them.
func browser(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([0-9a-f]{64})"`)

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func post(t *testing.T, c *http.Client, u string, form url.Values) (*http.Response, string) {
	t.Helper()
	resp, err := c.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// login signs in as name and returns the session's CSRF token.
func (s *site) login(t *testing.T, c *http.Client, name string) string {
	t.Helper()
	_, body := get(t, c, s.srv.URL+"/login")
	m := csrfField.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("login page has no CSRF field:\n%s", body)
	}
	resp, _ := post(t, c, s.srv.URL+"/login", url.Values{"csrf": {m[1]}, "name": {name}, "password": {testPassword}, "next": {"/"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("login as %s: %s to %q", name, resp.Status, resp.Header.Get("Location"))
	}
	_, body = get(t, c, s.srv.URL+"/")
	m = csrfField.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("queue page has no CSRF field:\n%s", body)
	}
	return m[1]
}

func TestLoggedOutRedirects(t *testing.T) {
	s := newSite(t)
	c := browser(t)
	for _, tt := range []struct{ method, path, want string }{
		{"GET", "/", "/login?next=%2F"},
		{"GET", "/audit?agent=x", "/login?next=%2Faudit%3Fagent%3Dx"},
		{"GET", "/actions/act_1", "/login?next=%2Factions%2Fact_1"},
		{"POST", "/actions/act_1/approve", "/login?next=%2F"},
		{"POST", "/logout", "/login?next=%2F"},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, s.srv.URL+tt.path, strings.NewReader("csrf=x"))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != tt.want {
				t.Fatalf("%s %s: %s to %q, want 303 to %q", tt.method, tt.path, resp.Status, resp.Header.Get("Location"), tt.want)
			}
		})
	}
}

func TestLogin(t *testing.T) {
	s := newSite(t)
	tests := []struct {
		name     string
		user     string
		password string
		csrf     func(real string) string
		wantCode int
	}{
		{"right password", "alice", testPassword, func(r string) string { return r }, http.StatusSeeOther},
		{"wrong password", "alice", "wrong password", func(r string) string { return r }, http.StatusUnauthorized},
		{"unknown user", "mallory", testPassword, func(r string) string { return r }, http.StatusUnauthorized},
		{"no CSRF token", "alice", testPassword, func(string) string { return "" }, http.StatusForbidden},
		{"wrong CSRF token", "alice", testPassword, func(string) string { return strings.Repeat("a", 64) }, http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := browser(t)
			_, body := get(t, c, s.srv.URL+"/login")
			real := csrfField.FindStringSubmatch(body)[1]
			resp, _ := post(t, c, s.srv.URL+"/login", url.Values{"csrf": {tt.csrf(real)}, "name": {tt.user}, "password": {tt.password}})
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("login: %s, want %d", resp.Status, tt.wantCode)
			}
			var session *http.Cookie
			for _, ck := range resp.Cookies() {
				if ck.Name == sessionCookie {
					session = ck
				}
			}
			if (session != nil) != (tt.wantCode == http.StatusSeeOther) {
				t.Fatalf("session cookie = %v, want one only on success", session)
			}
			if session != nil && (!session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.Path != "/") {
				t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/", session)
			}
			resp, _ = get(t, c, s.srv.URL+"/")
			if loggedIn := resp.StatusCode == http.StatusOK; loggedIn != (session != nil) {
				t.Fatalf("GET / after login attempt: %s", resp.Status)
			}
		})
	}
}

func TestOpenRedirectRefused(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"/audit?x=1", "/audit?x=1"}, {"", "/"}, {"//evil.example/", "/"}, {"https://evil.example/", "/"},
		{"/\\evil.example", "/"}, {"audit", "/"},
	} {
		if got := localPath(tt.in); got != tt.want {
			t.Fatalf("localPath(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestQueueAndDecide(t *testing.T) {
	s := newSite(t)
	c := browser(t)
	csrf := s.login(t, c, "alice")
	xss := `<script>window.pwned=1</script><img src=x onerror="window.pwned=1">`
	refund := s.pendingRefund(t, "150.00", "Late delivery "+xss)
	email := s.ask(t, "demo-agent", "update_account", map[string]any{"customer_id": "cus_ada", "field": "email", "value": "ada.new@example.com", "reason": "Old mailbox closed"}).ActionID

	resp, body := get(t, c, s.srv.URL+"/")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("queue: %s", resp.Status)
	}
	for _, want := range []string{refund, email, "Refund 150.00 USD on order ord_1002", "Ada Lovelace", "refundable 2500.00",
		"Late delivery &lt;script&gt;window.pwned=1&lt;/script&gt;&lt;img src=x onerror=&#34;window.pwned=1&#34;&gt;",
		"amount_base &gt; 50.00 &amp;&amp; amount_base &lt;= 200.00", "ada.new@example.com", "left"} {
		if !strings.Contains(body, want) {
			t.Fatalf("queue lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, "<img src=x") {
		t.Fatal("agent text reached the page unescaped")
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Fatalf("Content-Security-Policy = %q", csp)
	}

	tests := []struct {
		name       string
		path       string
		form       url.Values
		wantCode   int
		wantStatus string
	}{
		{"approve without CSRF token", "/actions/" + refund + "/approve", url.Values{"comment": {"ok"}}, http.StatusForbidden, storage.StatusPending},
		{"approve with another token", "/actions/" + refund + "/approve", url.Values{"csrf": {strings.Repeat("0", 64)}}, http.StatusForbidden, storage.StatusPending},
		{"deny without comment", "/actions/" + email + "/deny", url.Values{"csrf": {csrf}}, http.StatusBadRequest, storage.StatusPending},
		{"approve", "/actions/" + refund + "/approve", url.Values{"csrf": {csrf}, "comment": {"goodwill"}}, http.StatusSeeOther, storage.StatusExecuted},
		{"approve twice", "/actions/" + refund + "/approve", url.Values{"csrf": {csrf}}, http.StatusConflict, storage.StatusExecuted},
		{"deny", "/actions/" + email + "/deny", url.Values{"csrf": {csrf}, "comment": {"call the customer first"}}, http.StatusSeeOther, storage.StatusDenied},
		{"unknown action", "/actions/act_nope/approve", url.Values{"csrf": {csrf}}, http.StatusNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := post(t, c, s.srv.URL+tt.path, tt.form)
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("POST %s: %s, want %d\n%s", tt.path, resp.Status, tt.wantCode, body)
			}
			if tt.wantStatus != "" {
				id := strings.Split(tt.path, "/")[2]
				if got := s.status(t, id); got != tt.wantStatus {
					t.Fatalf("%s is %s, want %s", id, got, tt.wantStatus)
				}
			}
		})
	}
	o, err := s.st.Order(context.Background(), "ord_1002")
	if err != nil {
		t.Fatal(err)
	}
	if o.Refunded.String() != "150.00" {
		t.Fatalf("ord_1002 refunded %s, want 150.00", o.Refunded)
	}
	_, body = get(t, c, s.srv.URL+"/actions/"+refund)
	for _, want := range []string{`id="status">executed`, `id="decided-by">alice`, "goodwill", `id="order-refunded">150.00 USD`,
		"attempt", "approval", "outcome"} {
		if !strings.Contains(body, want) {
			t.Fatalf("action page lacks %q:\n%s", want, body)
		}
	}
	if _, body := get(t, c, s.srv.URL+"/"); strings.Contains(body, refund) || strings.Contains(body, email) {
		t.Fatal("decided actions are still in the queue")
	}
}

// TestAgentCannotSignIn: the agent's own identity, even with a users row
// and the right password, cannot sign in where its actions are decided,
// and the refusal is audited.
func TestAgentCannotSignIn(t *testing.T) {
	s := newSite(t)
	c := browser(t)
	_, body := get(t, c, s.srv.URL+"/login")
	m := csrfField.FindStringSubmatch(body)
	resp, _ := post(t, c, s.srv.URL+"/login", url.Values{"csrf": {m[1]}, "name": {"demo-agent"}, "password": {testPassword}, "next": {"/"}})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("agent login: %s, want 401", resp.Status)
	}
	n := 0
	s.deps.DB.Records(context.Background(), storage.Filter{Tool: "admin_login"}, func(r *storage.Record) error {
		if r.Agent == "demo-agent" && r.Outcome == "refused" {
			n++
		}
		return nil
	})
	if n != 1 {
		t.Fatalf("%d audit records of the agent's refused sign-in, want 1", n)
	}
}

func TestAuditPage(t *testing.T) {
	s := newSite(t)
	c := browser(t)
	csrf := s.login(t, c, "alice")
	id := s.pendingRefund(t, "150.00", "late")
	s.ask(t, "demo-agent", "refund_order", map[string]any{"order_id": "ord_1001", "amount": "10.00", "reason": "scratch"})
	if resp, _ := post(t, c, s.srv.URL+"/actions/"+id+"/approve", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("approve: %s", resp.Status)
	}
	tests := []struct {
		query     string
		want, not []string
	}{
		{"?", []string{"Hash chain unanchored: 7 records link", "<code>--audit-key FILE</code>", "--since-checkpoint", "ord_1001", "ord_1002"}, []string{"intact"}},
		{"?agent=alice", []string{"1 records", "approval"}, []string{"scratch"}},
		{"?decision=allow&tool=refund_order", []string{"3 records"}, []string{"require_approval</td>"}},
		{"?action=" + id, []string{"3 records"}, nil},
		{"?since=2000-01-01T00:00&until=2000-01-02T00:00", []string{"0 records"}, nil},
		{"?since=yesterday", []string{"since: &#34;yesterday&#34; is not a time"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			resp, body := get(t, c, s.srv.URL+"/audit"+tt.query)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("audit: %s", resp.Status)
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Fatalf("audit%s lacks %q:\n%s", tt.query, w, body)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(body, w) {
					t.Fatalf("audit%s has %q", tt.query, w)
				}
			}
		})
	}
}

func TestLogout(t *testing.T) {
	s := newSite(t)
	c := browser(t)
	csrf := s.login(t, c, "alice")
	if resp, _ := post(t, c, s.srv.URL+"/logout", url.Values{}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("logout without CSRF token: %s, want 403", resp.Status)
	}
	if resp, _ := post(t, c, s.srv.URL+"/logout", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %s", resp.Status)
	}
	if resp, _ := get(t, c, s.srv.URL+"/"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("after logout GET /: %s, want a redirect to login", resp.Status)
	}
}

func TestTimelinePages(t *testing.T) {
	s := newSite(t)
	c := browser(t)
	csrf := s.login(t, c, "alice")
	id := s.pendingRefund(t, "150.00", "late")
	phone := s.ask(t, "demo-agent", "update_account", map[string]any{"customer_id": "cus_ada", "field": "phone", "value": "+441234000111", "reason": "asked on a verified call"})
	other := s.ask(t, "demo-agent", "refund_order", map[string]any{"order_id": "ord_1001", "amount": "10.00", "reason": "scratch"})
	grace := s.ask(t, "demo-agent", "update_account", map[string]any{"customer_id": "cus_grace", "field": "name", "value": "Grace Murray Hopper", "reason": "legal name"})
	// The queue links the pending refund's order and customer to their timelines.
	_, queue := get(t, c, s.srv.URL+"/")
	for _, w := range []string{`href="/orders/ord_1002"`, `href="/customers/cus_ada"`} {
		if !strings.Contains(queue, w) {
			t.Fatalf("queue lacks the link %s", w)
		}
	}
	if resp, _ := post(t, c, s.srv.URL+"/actions/"+id+"/approve", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("approve: %s", resp.Status)
	}
	_, audit := get(t, c, s.srv.URL+"/audit")
	if !strings.Contains(audit, `href="/customers/cus_ada">customer timeline`) || !strings.Contains(audit, `href="/orders/ord_1002">order timeline`) {
		t.Fatalf("audit viewer does not link the timelines")
	}
	tests := []struct {
		path      string
		want, not []string
	}{
		{"/customers/cus_ada", []string{"Timeline of customer", id, phone.ActionID, other.ActionID, "alice (approver)",
			"phone &#34;+441234567890&#34; -&gt; &#34;+441234000111&#34;", "refunded 0.00 USD -&gt; 150.00 USD", "policy "}, []string{grace.ActionID}},
		{"/orders/ord_1002", []string{"Timeline of order", id, "alice (approver)", "refundable 2500.00 USD -&gt; 2350.00 USD"}, []string{phone.ActionID, other.ActionID}},
		{"/customers/cus_grace", []string{grace.ActionID, "name &#34;Grace Hopper&#34; -&gt; &#34;Grace Murray Hopper&#34;"}, []string{id}},
		{"/customers/cus_nobody", []string{"0 records"}, nil},
		{"/customers/cus_ada?trace=nothex", []string{"trace: give a W3C trace-id"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, body := get(t, c, s.srv.URL+tt.path)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: %s", tt.path, resp.Status)
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Fatalf("%s lacks %q:\n%s", tt.path, w, body)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(body, w) {
					t.Fatalf("%s shows %q", tt.path, w)
				}
			}
		})
	}
	t.Run("signed out", func(t *testing.T) {
		resp, _ := get(t, browser(t), s.srv.URL+"/customers/cus_ada")
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("signed out: %s, want a redirect to sign in", resp.Status)
		}
	})
}
