package admin

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/mandatehq/mandate/internal/browsertest"
	"github.com/mandatehq/mandate/storage"
)

// newBrowser starts headless Chromium for one test (internal/browsertest).
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	return browsertest.Start(t, 90*time.Second)
}

func must[T any](t *testing.T, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

// navStatus runs steps that load a page and returns the page's HTTP status.
func navStatus(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) int64 {
	t.Helper()
	resp, err := chromedp.RunResponse(ctx, steps...)
	if err != nil {
		t.Fatalf("loading a page: %v", err)
	}
	return resp.Status
}

// TestBrowserApproval drives the admin page in real headless Chromium the
// way a supervisor would: a logged-out visit goes to the login page; after
// signing in, the refund the agent asked for through the real guard is in
// the queue with its hostile reason shown as text, not run; a form stripped
// of its CSRF token is refused; approving executes the refund once and the
// order's refunded amount changes in the store.
func TestBrowserApproval(t *testing.T) {
	s := newSite(t)
	ctx := newBrowser(t)
	xss := `Late delivery <script>window.pwned=1</script><img src=x onerror="window.pwned=1">`
	id := s.pendingRefund(t, "150.00", xss)
	pwned := func() string {
		t.Helper()
		return must[string](t, "typeof window.pwned")(chromedp.Run(ctx, chromedp.Evaluate[string]("typeof window.pwned")))
	}

	// Logged out: redirected to the login page.
	if err := chromedp.Do(ctx, chromedp.Navigate(s.srv.URL+"/"), chromedp.WaitVisible(chromedp.ID("signin"))); err != nil {
		t.Fatal(err)
	}
	if loc := must[string](t, "location")(chromedp.Run(ctx, chromedp.Location())); loc != s.srv.URL+"/login?next=%2F" {
		t.Fatalf("logged-out visit ended at %s, want the login page", loc)
	}

	// Sign in.
	resp := navStatus(t, ctx,
		chromedp.SendKeys(chromedp.ID("name"), "alice"),
		chromedp.SendKeys(chromedp.ID("password"), testPassword),
		chromedp.Click(chromedp.ID("signin")),
	)
	if resp != 200 {
		t.Fatalf("after signing in: HTTP %d", resp)
	}
	card := chromedp.CSS("#" + id)
	if err := chromedp.Do(ctx, chromedp.WaitVisible(card)); err != nil {
		t.Fatalf("the pending refund is not in the queue: %v", err)
	}
	text := must[string](t, "card text")(chromedp.Run(ctx, chromedp.TextContent(card)))
	for _, want := range []string{"Refund 150.00 USD on order ord_1002", "Ada Lovelace", "demo-agent", "require_approval"} {
		if !strings.Contains(text, want) {
			t.Fatalf("queue card lacks %q:\n%s", want, text)
		}
	}
	reason := must[string](t, "reason")(chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS("#"+id+" .reason"))))
	if reason != xss {
		t.Fatalf("reason shows as %q, want the agent's text verbatim %q", reason, xss)
	}
	injected := must[int](t, "count injected nodes")(chromedp.Run(ctx, chromedp.Evaluate[int](
		`document.querySelectorAll("main script, main img").length`)))
	if injected != 0 {
		t.Fatalf("the reason created %d script or img elements", injected)
	}
	if got := pwned(); got != "undefined" {
		t.Fatalf("window.pwned is %s: the agent's text ran", got)
	}

	// A form without its CSRF token is refused.
	approve := chromedp.CSS("#" + id + ` form[action$="/approve"] button`)
	if err := chromedp.Do(ctx, chromedp.SetAttributeValue(chromedp.CSS("#"+id+` form[action$="/approve"] input[name=csrf]`), "name", "not-csrf")); err != nil {
		t.Fatal(err)
	}
	if resp := navStatus(t, ctx, chromedp.Click(approve)); resp != 403 {
		t.Fatalf("approving without the CSRF token: HTTP %d, want 403", resp)
	}
	if st := s.status(t, id); st != storage.StatusPending {
		t.Fatalf("after the refused form the action is %s, want pending", st)
	}

	// Approve for real.
	if err := chromedp.Do(ctx, chromedp.Navigate(s.srv.URL+"/"), chromedp.WaitVisible(approve),
		chromedp.SendKeys(chromedp.CSS("#"+id+` form[action$="/approve"] input[name=comment]`), "goodwill, approved")); err != nil {
		t.Fatal(err)
	}
	if resp := navStatus(t, ctx, chromedp.Click(approve)); resp != 200 {
		t.Fatalf("approving: HTTP %d", resp)
	}
	if loc := must[string](t, "location")(chromedp.Run(ctx, chromedp.Location())); loc != s.srv.URL+"/actions/"+id {
		t.Fatalf("after approving the page is %s, want the action's page", loc)
	}
	for sel, want := range map[string]string{"#status": "executed", "#decided-by": "alice", "#order-refunded": "150.00 USD"} {
		if got := must[string](t, sel)(chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))); got != want {
			t.Fatalf("%s shows %q, want %q", sel, got, want)
		}
	}
	if got := pwned(); got != "undefined" {
		t.Fatalf("window.pwned is %s on the action page", got)
	}
	o, err := s.st.Order(context.Background(), "ord_1002")
	if err != nil {
		t.Fatal(err)
	}
	if o.Refunded.String() != "150.00" {
		t.Fatalf("ord_1002 refunded %s in the store, want 150.00", o.Refunded)
	}
	if st := s.status(t, id); st != storage.StatusExecuted {
		t.Fatalf("action is %s, want executed", st)
	}
}
