// Package notify tells people that an action is waiting for them: a
// webhook posted when an agent's call ends pending approval, in a JSON body
// that Slack's incoming webhooks accept ({"text": …}) and that other
// receivers can read field by field.
//
// Posting never holds up the agent: the call's result is returned first,
// and a background worker posts and retries with backoff. A notification
// that still fails after its retries is logged and dropped; the pending
// action itself is durable in the database and visible on the admin page
// whatever happens to the notification.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// Message is the webhook's JSON body. Text is what Slack shows; the other
// fields are for receivers that route or link.
type Message struct {
	Text      string    `json:"text"`
	ActionID  string    `json:"action_id"`
	Agent     string    `json:"agent"`
	Tool      string    `json:"tool"`
	Rule      string    `json:"rule"`
	ExpiresAt time.Time `json:"expires_at"`
	URL       string    `json:"url,omitempty"`
}

// Webhook posts Messages to URL from a background worker.
type Webhook struct {
	URL string
	// DB is where the worker reads the pending action.
	DB *storage.DB
	// AdminURL, when set, is the admin page's base URL; messages link to
	// the action there.
	AdminURL string
	Client   *http.Client
	Logger   *slog.Logger
	// Attempts is how many times one message is tried; Backoff is the wait
	// before the second try, doubling after each failure.
	Attempts int
	Backoff  time.Duration

	queue chan string
	wg    sync.WaitGroup
	stop  context.CancelFunc
	drain chan struct{} // closed by Close: deliver what is queued, then stop
	once  sync.Once     // Close's work

	mu   sync.Mutex
	sent map[string]bool // action ids already queued (recent ones)
	ids  []string        // sent's keys, oldest first
}

// remember bounds how many action ids Pending remembers, so that a retry of
// a pending action (the same idempotency key answers "already asked for")
// notifies nobody again.
const remember = 4096

// drainFor is how long Close keeps delivering the messages still queued
// (a piped stdio session ends the moment its input does).
const drainFor = 5 * time.Second

// queueSize bounds messages waiting to be posted; beyond it new ones are
// dropped (and logged) rather than held in memory or blocking a call.
const queueSize = 256

// Start starts the worker. Close stops it.
func (w *Webhook) Start(ctx context.Context) {
	if w.Client == nil {
		// No redirect is followed: a 307 would post the message again to
		// wherever the receiver points, an internal address included.
		w.Client = &http.Client{Timeout: 10 * time.Second, CheckRedirect: mandate.RefuseRedirects}
	}
	if w.Logger == nil {
		w.Logger = slog.New(slog.DiscardHandler)
	}
	if w.Attempts <= 0 {
		w.Attempts = 5
	}
	if w.Backoff <= 0 {
		w.Backoff = time.Second
	}
	w.queue = make(chan string, queueSize)
	w.drain = make(chan struct{})
	ctx, w.stop = context.WithCancel(ctx)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		notify := func(id string) {
			if ctx.Err() != nil {
				w.Logger.Warn("notification abandoned: the server stopped first", "action_id", id)
				return
			}
			a, err := w.DB.Action(ctx, id)
			if err != nil {
				w.Logger.Error("notification: action not readable", "action_id", id, "err", err)
				return
			}
			// Once for every process sharing the database: a retry that
			// reached another replica, or this one after a restart, is
			// not posted again. A claim that cannot be written posts
			// anyway: a second message beats none.
			claimed, err := w.DB.ClaimNotification(ctx, id)
			if err != nil {
				w.Logger.Warn("notification: claim not recorded; posting anyway", "action_id", id, "err", err)
			} else if !claimed {
				w.Logger.Debug("notification: already sent for this action", "action_id", id)
				return
			}
			if !w.deliver(ctx, w.message(a)) && claimed {
				// Nobody was told: the claim is given back, so a retry of
				// the action, here or on another replica, posts again.
				if err := w.DB.ReleaseNotification(context.WithoutCancel(ctx), id); err != nil {
					w.Logger.Warn("notification: claim not given back", "action_id", id, "err", err)
				}
			}
		}
		for {
			select {
			case <-ctx.Done():
				return
			case id := <-w.queue:
				notify(id)
			case <-w.drain:
				for {
					select {
					case id := <-w.queue:
						notify(id)
					default:
						return
					}
				}
			}
		}
	}()
}

// Close delivers the messages still queued, for at most drainFor (each
// one given up then is logged), and stops the worker.
func (w *Webhook) Close() {
	if w.stop == nil {
		return
	}
	w.once.Do(func() {
		close(w.drain)
		done := make(chan struct{})
		go func() { w.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(drainFor):
			w.stop()
			<-done
		}
		w.stop()
	})
}

// Pending queues a notification about the pending action id, once: a retry
// of the same pending action notifies nobody again, in this process or any
// other sharing the database (storage.ClaimNotification). It never blocks:
// the action is read, claimed and the message posted by the worker.
func (w *Webhook) Pending(id string) {
	w.mu.Lock()
	if w.sent[id] {
		w.mu.Unlock()
		return
	}
	if w.sent == nil {
		w.sent = map[string]bool{}
	}
	w.sent[id] = true
	w.ids = append(w.ids, id)
	if len(w.ids) > remember {
		delete(w.sent, w.ids[0])
		w.ids = w.ids[1:]
	}
	w.mu.Unlock()
	select {
	case <-w.drain:
		// Close has begun: the worker may be gone.
		w.Logger.Warn("notification abandoned: the server is stopping", "action_id", id)
		return
	default:
	}
	select {
	case w.queue <- id:
	default:
		w.Logger.Warn("notification queue full; dropped", "action_id", id)
	}
}

// message describes a pending action for people. It names the order or
// customer and the amount, never the new value of an account change.
func (w *Webhook) message(a *storage.Action) Message {
	m := Message{ActionID: a.ID, Agent: a.Agent, Tool: a.Tool, Rule: a.Rule, ExpiresAt: a.ExpiresAt.UTC()}
	if w.AdminURL != "" {
		m.URL = strings.TrimRight(w.AdminURL, "/") + "/actions/" + a.ID
	}
	var args map[string]any
	_ = json.Unmarshal(a.Args, &args)
	var what []string
	for _, k := range []string{"order_id", "customer_id", "amount", "field"} {
		if v, ok := args[k]; ok {
			text := slackText(fmt.Sprint(v))
			if k == "amount" && a.Currency != "" {
				text += " " + a.Currency // the order's currency: 100.00 is not 100.000 KWD
			}
			what = append(what, fmt.Sprintf("%s %s", k, text))
		}
	}
	m.Text = fmt.Sprintf("Approval needed: %s wants %s (%s). Reference %s, expires %s.",
		slackText(a.Agent), a.Tool, strings.Join(what, ", "), a.ID, m.ExpiresAt.Format(time.RFC3339))
	if m.URL != "" {
		m.Text += " Review it: " + m.URL
	}
	return m
}

// slackText makes agent-supplied text inert in a chat message: hidden
// characters shown as ⟨U+202E⟩ (mandate.Visible), and &, < and > escaped as
// Slack requires, so an order id cannot become a link or an @channel.
func slackText(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(mandate.Visible(mandate.Truncate(s, 200), false))
}

// deliver posts m, retrying with doubling backoff on errors and on 429 and
// 5xx answers; a 4xx other than 429 will not improve and is not retried.
// It reports whether the receiver took the message.
func (w *Webhook) deliver(ctx context.Context, m Message) bool {
	body, err := json.Marshal(m)
	if err != nil {
		w.Logger.Error("notification not encodable", "err", err)
		return false
	}
	wait := w.Backoff
	for attempt := 1; ; attempt++ {
		retry, err := w.post(ctx, body)
		if err == nil {
			w.Logger.Debug("notified", "action_id", m.ActionID, "attempt", attempt)
			return true
		}
		if !retry || attempt >= w.Attempts {
			// The URL's path may be a credential (a Slack webhook's is):
			// the error names its host only.
			w.Logger.Warn("notification failed; giving up", "action_id", m.ActionID, "attempts", attempt, "err", mandate.WithoutURL(err))
			return false
		}
		select {
		case <-ctx.Done():
			w.Logger.Warn("notification abandoned: the server stopped first", "action_id", m.ActionID, "attempts", attempt, "err", mandate.WithoutURL(err))
			return false
		case <-time.After(wait):
		}
		wait *= 2
	}
}

func (w *Webhook) post(ctx context.Context, body []byte) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("the notify URL %s… cannot be used", mandate.URLHost(w.URL))
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.Client.Do(req)
	if err != nil {
		return true, err
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return true, fmt.Errorf("webhook answered %s", resp.Status)
	}
	return false, fmt.Errorf("webhook answered %s", resp.Status)
}

// Middleware is an MCP server option that queues a notification whenever a
// tool call ends pending approval; the call's result goes back to the agent
// unchanged and at once.
//
//	tools.NewServer(deps, version, notify.Middleware(hook))
func Middleware(w *Webhook) server.ServerOption {
	return server.WithToolHandlerMiddleware(func(next server.ToolHandlerFunc) server.ToolHandlerFunc {
		return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			res, err := next(ctx, req)
			if err == nil && res != nil {
				switch r := res.StructuredContent.(type) {
				case *tools.ActionResult:
					if r.Status == storage.StatusPending {
						w.Pending(r.ActionID)
					}
				case tools.ActionResult:
					if r.Status == storage.StatusPending {
						w.Pending(r.ActionID)
					}
				}
			}
			return res, err
		}
	})
}
