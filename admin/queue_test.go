package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/mandatehq/mandate/storage"
)

// seedPending records n pending refunds on ord_1002 straight through
// storage (many goroutines, so the group commit batches them), by agent
// agents[i%len], with expiries that do not follow the order of creation.
// It returns each action's expiry by id.
func seedPending(t *testing.T, db *storage.DB, n int, agents ...string) map[string]time.Time {
	t.Helper()
	base := time.Now().Add(2 * time.Hour)
	acts := make([]*storage.Action, n)
	expires := map[string]time.Time{}
	for i := range acts {
		acts[i] = &storage.Action{ID: fmt.Sprintf("act_seed%05d", i), Agent: agents[i%len(agents)], Tool: "refund_order",
			Args:     json.RawMessage(`{"amount":"150.00","order_id":"ord_1002","reason":"seeded"}`),
			Decision: "require_approval", Rule: "policy.csv:25: p, support_agent, refund_order, amount > 50.00, require_approval",
			Status: storage.StatusPending, ExpiresAt: base.Add(time.Duration((i*7919)%n) * time.Second)}
		expires[acts[i].ID] = acts[i].ExpiresAt
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				a := acts[i]
				if err := db.RecordAttempt(context.Background(), a, &storage.Record{Agent: a.Agent, Tool: a.Tool, Args: a.Args, Outcome: storage.StatusPending}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return expires
}

var (
	cardID   = regexp.MustCompile(`<article class="card pending" id="(act_[a-z0-9]+)"`)
	nextLink = regexp.MustCompile(`<a href="([^"]+)" id="next-page"`)
	badge    = regexp.MustCompile(`<span class="count" id="pending-count"[^>]*>([0-9,]+)</span>`)
	showing  = regexp.MustCompile(`<p class="muted" id="showing">([^<]*)`)
)

// TestQueueShowsEveryPending: with 1,200 pending actions the badge says
// 1,200, and following "next page" reaches every one exactly once,
// soonest to expire first; the agent filter shows one agent's, all of them.
func TestQueueShowsEveryPending(t *testing.T) {
	s := newSite(t)
	expires := seedPending(t, s.deps.DB, 1200, "agent-a", "agent-b", "agent-c")
	c := browser(t)
	s.login(t, c, "alice")

	walk := func(t *testing.T, path string) []string {
		t.Helper()
		var ids []string
		for pages := 0; path != ""; pages++ {
			if pages > 30 {
				t.Fatal("paging does not end")
			}
			resp, body := get(t, c, s.srv.URL+path)
			if resp.StatusCode != 200 {
				t.Fatalf("GET %s: %s", path, resp.Status)
			}
			if m := badge.FindStringSubmatch(body); m == nil || m[1] != "1,200" {
				t.Fatalf("GET %s: badge %v, want 1,200", path, m)
			}
			for _, m := range cardID.FindAllStringSubmatch(body, -1) {
				ids = append(ids, m[1])
			}
			path = ""
			if m := nextLink.FindStringSubmatch(body); m != nil {
				path = html.UnescapeString(m[1])
			}
		}
		return ids
	}
	tests := []struct {
		name, path string
		agent      string
		want       int
		wantShow   string
	}{
		{"every agent", "/", "", 1200, "Showing 1–50 of 1,200, soonest to expire first."},
		{"one agent", "/?agent=agent-b", "agent-b", 400, "Showing 1–50 of 400 from agent-b, soonest to expire first."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, first := get(t, c, s.srv.URL+tt.path)
			if m := showing.FindStringSubmatch(first); m == nil || m[1] != tt.wantShow {
				t.Fatalf("first page says %v, want %q", m, tt.wantShow)
			}
			ids := walk(t, tt.path)
			seen := map[string]bool{}
			for _, id := range ids {
				if seen[id] {
					t.Fatalf("%s shown twice", id)
				}
				seen[id] = true
				if _, ok := expires[id]; !ok {
					t.Fatalf("unknown card %s", id)
				}
				if tt.agent != "" && fmt.Sprintf("agent-%c", "abc"[mustIndex(t, id)%3]) != tt.agent {
					t.Fatalf("%s is not %s's", id, tt.agent)
				}
			}
			if len(ids) != tt.want {
				t.Fatalf("reached %d actions by paging, want %d", len(ids), tt.want)
			}
			if !sort.SliceIsSorted(ids, func(i, j int) bool { return expires[ids[i]].Before(expires[ids[j]]) }) {
				t.Fatal("the queue is not soonest to expire first")
			}
		})
	}
}

func mustIndex(t *testing.T, id string) int {
	var i int
	if _, err := fmt.Sscanf(id, "act_seed%05d", &i); err != nil {
		t.Fatalf("id %s: %v", id, err)
	}
	return i
}

// hostileReason reads as "…is OK refund 75.00. Please approve." when the
// right-to-left override (U+202E) acts, and sends CSI (U+009B, the C1
// control) to a terminal.
const hostileReason = "Customer is OK \u202e.evorppa esaelP .00.57 dnufer\u202c \u009b31m and a zero\u200bwidth space"

// TestHiddenCharactersShownEscaped: the queue, the action page and the
// audit page show bidi, C1 and zero-width characters escaped, never raw,
// and mark the text as holding hidden characters.
func TestHiddenCharactersShownEscaped(t *testing.T) {
	s := newSite(t)
	id := s.pendingRefund(t, "150.00", hostileReason)
	c := browser(t)
	s.login(t, c, "alice")
	for _, path := range []string{"/", "/actions/" + id, "/audit"} {
		_, body := get(t, c, s.srv.URL+path)
		for _, raw := range []string{"\u202e", "\u202c", "\u009b", "\u200b"} {
			if strings.Contains(body, raw) {
				t.Fatalf("%s: the page holds U+%04X raw", path, []rune(raw)[0])
			}
		}
		for _, want := range []string{"⟨U+202E⟩", "⟨U+202C⟩", "⟨U+009B⟩", "⟨U+200B⟩", `<span class="hidden-badge">hidden characters</span>`} {
			if want == "⟨U+200B⟩" && path == "/audit" {
				continue // the audit table cuts arguments before it
			}
			if !strings.Contains(body, want) {
				t.Fatalf("%s: the page lacks %q", path, want)
			}
		}
	}
	// Text without hidden characters is not marked.
	plain := s.pendingRefund(t, "120.00", "Late delivery, the parcel arrived torn")
	_, body := get(t, c, s.srv.URL+"/actions/"+plain)
	if strings.Contains(body, "hidden-badge") {
		t.Fatal("a plain reason is marked as hiding characters")
	}
}

// TestBrowserHiddenCharacters renders the hostile reason in real Chromium:
// what a person reads is the escaped text, in order, under a visible
// warning.
func TestBrowserHiddenCharacters(t *testing.T) {
	s := newSite(t)
	ctx := newBrowser(t)
	id := s.pendingRefund(t, "150.00", hostileReason)
	if err := chromedp.Do(ctx, chromedp.Navigate(s.srv.URL+"/"), chromedp.WaitVisible(chromedp.ID("signin"))); err != nil {
		t.Fatal(err)
	}
	if resp := navStatus(t, ctx,
		chromedp.SendKeys(chromedp.ID("name"), "alice"),
		chromedp.SendKeys(chromedp.ID("password"), testPassword),
		chromedp.Click(chromedp.ID("signin")),
	); resp != 200 {
		t.Fatalf("after signing in: HTTP %d", resp)
	}
	reason := chromedp.CSS("#" + id + " .reason")
	if err := chromedp.Do(ctx, chromedp.WaitVisible(reason)); err != nil {
		t.Fatalf("the pending refund is not in the queue: %v", err)
	}
	// innerText is what is rendered for a person to read (the badge is in
	// capitals by its style).
	shown := must[string](t, "reason text")(chromedp.Run(ctx, chromedp.Evaluate[string](
		`document.querySelector("#`+id+` .reason").innerText`)))
	want := "HIDDEN CHARACTERS Customer is OK ⟨U+202E⟩.evorppa esaelP .00.57 dnufer⟨U+202C⟩ ⟨U+009B⟩31m and a zero⟨U+200B⟩width space"
	if shown != want {
		t.Fatalf("the reason reads %q,\nwant %q", shown, want)
	}
	if strings.Contains(shown, "refund 75.00. Please approve") {
		t.Fatal("the override acted: the reason reads as an instruction to approve")
	}
	badge := chromedp.CSS("#" + id + " .reason .hidden-badge")
	if err := chromedp.Do(ctx, chromedp.WaitVisible(badge)); err != nil {
		t.Fatalf("no visible hidden-characters warning: %v", err)
	}
	// The override must not reorder what is rendered: the badge is left of
	// the text that follows it.
	order := must[bool](t, "layout")(chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => {
		const b = document.querySelector("#`+id+` .reason .hidden-badge").getBoundingClientRect();
		const dd = document.querySelector("#`+id+` .reason").getBoundingClientRect();
		return b.left - dd.left < 20;
	})()`)))
	if !order {
		t.Fatal("the warning is not at the start of the reason")
	}
}
