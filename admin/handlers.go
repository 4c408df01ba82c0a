package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auth"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
)

var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05")
	},
	"isAction": func(tool string) bool { return policy.Tools[tool].Action },
	"args":     argsText,
	// ruleRef is the file:line of a rule's text, or the text when it has none
	// (a default deny).
	"ruleRef": func(rule string) string {
		if ref, _, ok := strings.Cut(rule, ": p, "); ok {
			return ref
		}
		return rule
	},
	"date": func(t time.Time) string { return t.UTC().Format("2006-01-02") },
	// short cuts text to n characters (runes, never bytes), hidden
	// characters made visible.
	"short": func(s string, n int) string { return mandate.Visible(mandate.Truncate(s, n), false) },
	// vis is text for an attribute (a title): hidden characters escaped.
	"vis": func(s string) string { return mandate.Visible(s, false) },
	// text and textShort show agent- or customer-supplied text in an
	// element as it is: see shown.
	"text":      func(s string) template.HTML { return shown(s, true, 0) },
	"textShort": func(s string, n int) template.HTML { return shown(s, false, n) },
	"thousands": thousands,
}

// shown is text that an agent or a customer supplied, for an element's
// content: HTML-escaped, with bidi, C1 and other invisible characters escaped as
// ⟨U+202E⟩ (mandate.Visible), and when it held any, marked with a visible
// warning, because text that hides characters is trying to mislead the
// person reading it. Newlines are kept when keepLines; n > 0 cuts it to n
// characters. (The style sheet isolates the cells such text sits in, so
// right-to-left letters cannot reorder what is around them.)
func shown(s string, keepLines bool, n int) template.HTML {
	hidden := mandate.HasHidden(s, keepLines)
	if n > 0 {
		s = mandate.Truncate(s, n) // before escaping, so no escape is cut in half
	}
	v := mandate.Visible(s, keepLines)
	if !hidden {
		return template.HTML(template.HTMLEscapeString(v))
	}
	return template.HTML(`<span class="supplied suspicious" title="This text holds invisible or control characters, shown as ⟨U+…⟩: it may not say what it seems to.">` +
		`<span class="hidden-badge">hidden characters</span> ` + template.HTMLEscapeString(v) + `</span>`)
}

// thousands formats a count for people: 1,216.
func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// item is one action as a person reviewing it needs to see it: what the
// agent wanted and why, on whose account, and why it was escalated.
type item struct {
	*storage.Action
	Approval storage.Approval
	Args     map[string]string
	What     string
	Reason   string
	Amount   string
	Field    string
	Value    string
	TimeLeft string
	Urgent   bool
	Order    *tools.OrderView
	Customer *tools.CustomerView
	// Missing says what context could not be read from the store.
	Missing string
	// Held is the suspension of the agent that holds this pending action:
	// approving it is refused until the agent is resumed (denying works),
	// so the page says so rather than offer an Approve that fails.
	Held *storage.Suspension
}

func (s *Server) item(ctx context.Context, a *storage.Action) item {
	it := item{Action: a, Args: map[string]string{}}
	var raw map[string]any
	_ = json.Unmarshal(a.Args, &raw)
	for k, v := range raw {
		it.Args[k] = fmt.Sprint(v)
	}
	it.Reason, it.Field, it.Value = it.Args["reason"], it.Args["field"], it.Args["value"]
	be := s.cfg.Deps.Backend
	customerID := it.Args["customer_id"]
	if id := it.Args["order_id"]; id != "" && be.Orders != nil {
		if o, err := be.Orders.Order(ctx, id); err == nil {
			v := tools.OrderView{ID: o.ID, CustomerID: o.CustomerID, Status: o.Status, Currency: o.Total.Currency,
				Total: o.Total.String(), Refunded: o.Refunded.String(), Refundable: o.Refundable().String(), CreatedAt: o.CreatedAt}
			it.Order, customerID = &v, o.CustomerID
		} else {
			it.Missing = "order " + id + ": " + mandate.ErrorMessage(err)
		}
	}
	if customerID != "" && be.Customers != nil {
		if c, err := be.Customers.Customer(ctx, customerID); err == nil {
			it.Customer = &tools.CustomerView{ID: c.ID, Name: c.Name, Email: c.Email, Phone: c.Phone, ShippingAddress: c.ShippingAddress, CreatedAt: c.CreatedAt}
		} else {
			it.Missing = "customer " + customerID + ": " + mandate.ErrorMessage(err)
		}
	}
	switch a.Tool {
	case "refund_order":
		it.Amount = it.Args["amount"]
		if it.Order != nil {
			it.Amount += " " + it.Order.Currency
		}
		it.What = "Refund " + it.Amount + " on order " + it.Args["order_id"]
	case "cancel_order":
		it.What = "Cancel order " + it.Args["order_id"]
	case "update_account":
		it.What = "Change the " + strings.ReplaceAll(it.Field, "_", " ") + " of customer " + customerID
	default:
		it.What = a.Tool
	}
	if a.Status == storage.StatusPending {
		left := a.ExpiresAt.Sub(s.now())
		it.TimeLeft, it.Urgent = remaining(left), left < time.Hour
		held, err := s.cfg.Deps.DB.ActiveSuspension(ctx, a.Agent)
		if err != nil {
			it.Missing = "whether " + a.Agent + " is suspended: " + mandate.ErrorMessage(err)
		}
		it.Held = held
	}
	return it
}

// argsText shows JSON arguments as key=value pairs for a table cell.
func argsText(raw json.RawMessage) string {
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return string(raw)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s=%v", k, m[k])
	}
	return b.String()
}

// remaining formats time left for people: "3 h 12 min", "9 min", "expired".
func remaining(d time.Duration) string {
	switch {
	case d <= 0:
		return "expired"
	case d < time.Minute:
		return "under a minute"
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d.Minutes()))
	}
	return fmt.Sprintf("%d h %d min", int(d.Hours()), int(d.Minutes())%60)
}

type queueData struct {
	Items []item
	// Total is every pending action; Matching those of the agent filter.
	Total, Matching int
	Agents          []storage.AgentCount
	Agent, Order    string
	// From and To are the positions of the first and last item on this
	// page, 1-based; Left is how many come after it.
	From, To, Left int
	// Next and First are links to the next and the first page; "" when
	// there is none.
	Next, First string
	Notice      string
}

// queuePage is how many actions one page of the queue shows: each is a
// card with its context read from the store, so a page stays small.
const queuePage = 50

// queue shows the actions waiting for a person, soonest to expire first (or
// newest first), one page at a time, all of them reachable by following
// "next page", with the real count and a filter by agent. Pages are plain
// links: the page runs no script.
func (s *Server) queue(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	if _, err := s.cfg.Deps.DB.ExpirePending(ctx, s.now()); err != nil {
		s.fail(w, err)
		return
	}
	q := r.URL.Query()
	d := queueData{Agent: strings.TrimSpace(q.Get("agent")), Order: q.Get("order")}
	if d.Order != storage.OrderNewest {
		d.Order = storage.OrderExpires
	}
	f := storage.PendingFilter{Agent: d.Agent, Order: d.Order, After: q.Get("after"), Limit: queuePage}
	p, err := s.cfg.Deps.DB.Pending(ctx, f)
	if mandate.ErrorCode(err) == mandate.EINVALID && f.After != "" {
		// A link to a page after an action that is gone: start again.
		d.Notice, f.After = "That page is gone; here is the first one.", ""
		p, err = s.cfg.Deps.DB.Pending(ctx, f)
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	if d.Agents, err = s.cfg.Deps.DB.PendingAgents(ctx); err != nil {
		s.fail(w, err)
		return
	}
	for _, c := range d.Agents {
		d.Total += c.Count
	}
	d.Matching = p.Total
	for _, a := range p.Actions {
		d.Items = append(d.Items, s.item(ctx, a))
	}
	d.From, d.To = p.Before+1, p.Before+len(d.Items)
	d.Left = max(d.Matching-d.To, 0)
	link := func(after string) string {
		v := url.Values{}
		if d.Agent != "" {
			v.Set("agent", d.Agent)
		}
		if d.Order != storage.OrderExpires {
			v.Set("order", d.Order)
		}
		if after != "" {
			v.Set("after", after)
		}
		if len(v) == 0 {
			return "/"
		}
		return "/?" + v.Encode()
	}
	if p.Next != "" {
		d.Next = link(p.Next)
	}
	if f.After != "" {
		d.First = link("")
	}
	s.render(w, http.StatusOK, "queue", page{Title: "Approvals", User: sess.User, CSRF: sess.CSRF, Approver: sess.role == auth.Approver, Nav: "queue", Data: d})
}

type actionData struct {
	Item      item
	Records   []*storage.Record
	CanDecide bool
	Error     string
	// Disagreements are where the action's row contradicts its audit
	// records: a row rewritten by someone with write access to the
	// database, shown above the row so nobody takes it at its word.
	Disagreements []storage.Disagreement
}

func (s *Server) action(w http.ResponseWriter, r *http.Request, sess *session) {
	s.renderAction(w, r, sess, http.StatusOK, "")
}

func (s *Server) renderAction(w http.ResponseWriter, r *http.Request, sess *session, code int, msg string) {
	ctx := r.Context()
	id := r.PathValue("id")
	a, err := s.cfg.Deps.DB.Action(ctx, id)
	if mandate.ErrorCode(err) == mandate.ENOTFOUND {
		http.NotFound(w, r)
		return
	} else if err != nil {
		s.fail(w, err)
		return
	}
	d := actionData{Item: s.item(ctx, a), Error: msg}
	if d.Item.Approval, err = s.cfg.Deps.DB.Approval(ctx, id); err != nil {
		s.fail(w, err)
		return
	}
	err = s.cfg.Deps.DB.Records(ctx, storage.Filter{ActionID: id}, func(rec *storage.Record) error {
		d.Records = append(d.Records, rec)
		return nil
	})
	if err != nil {
		s.fail(w, err)
		return
	}
	if d.Disagreements, err = s.cfg.Deps.DB.CheckAction(ctx, id); err != nil {
		s.fail(w, err)
		return
	}
	d.CanDecide = a.Status == storage.StatusPending && s.now().Before(a.ExpiresAt) && a.Agent != sess.User
	s.render(w, code, "action", page{Title: mandate.Visible(d.Item.What, false), User: sess.User, CSRF: sess.CSRF, Approver: sess.role == auth.Approver, Nav: "queue", Data: d})
}

// decide approves or denies the action in the path as the logged-in user.
func (s *Server) decide(approve bool) func(http.ResponseWriter, *http.Request, *session) {
	return func(w http.ResponseWriter, r *http.Request, sess *session) {
		id := r.PathValue("id")
		comment := strings.TrimSpace(r.PostFormValue("comment"))
		var err error
		if approve {
			_, err = tools.Approve(r.Context(), s.cfg.Deps, id, sess.User, comment)
		} else {
			_, err = tools.Deny(r.Context(), s.cfg.Deps, id, sess.User, comment)
		}
		s.cfg.Logger.Info("decision", "action_id", id, "user", sess.User, "approve", approve, "err", err)
		if err != nil {
			code := http.StatusConflict
			switch mandate.ErrorCode(err) {
			case mandate.ENOTFOUND:
				http.NotFound(w, r)
				return
			case mandate.EDENIED:
				code = http.StatusForbidden
			case mandate.EINVALID:
				code = http.StatusBadRequest
			case mandate.EUNAVAILABLE, mandate.EINTERNAL:
				code = http.StatusServiceUnavailable
			}
			s.renderAction(w, r, sess, code, mandate.ErrorMessage(err))
			return
		}
		http.Redirect(w, r, "/actions/"+url.PathEscape(id), http.StatusSeeOther)
	}
}

type auditData struct {
	Filter     map[string]string
	Records    []*storage.Record
	Truncated  bool
	Tools      []string
	Decisions  []string
	ChainOK    bool
	ChainCount int64
	ChainHead  string
	ChainError string
	// ChainKeyedFrom is the first record keyed with the audit key (0: the
	// trail is unanchored), ChainKeyID that key; ChainUnchecked says why
	// keyed records could not be checked; ServerKeyID is this server's key.
	ChainKeyedFrom int64
	ChainKeyID     string
	ChainUnchecked string
	ServerKeyID    string
	// Cross is the actions table checked against the trail (audit
	// verify's second verdict), shown next to the chain's.
	Cross     storage.CrossCheckResult
	CrossMore int64 // disagreements beyond those listed
	FilterErr string
}

// maxCrossShown bounds the disagreements the audit page lists; audit
// verify prints them all.
const maxCrossShown = 20

// maxAuditRows bounds one page of the audit viewer: the newest matching.
const maxAuditRows = 200

func (s *Server) audit(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	q := r.URL.Query()
	d := auditData{Filter: map[string]string{}, Tools: policy.ToolNames(),
		Decisions: []string{policy.Allow, policy.RequireApproval, policy.Deny}}
	for _, k := range []string{"agent", "tool", "decision", "action", "since", "until"} {
		d.Filter[k] = strings.TrimSpace(q.Get(k))
	}
	f := storage.Filter{Agent: d.Filter["agent"], Tool: d.Filter["tool"], Decision: d.Filter["decision"], ActionID: d.Filter["action"]}
	var err error
	if f.Since, err = parseWhen(d.Filter["since"]); err != nil {
		d.FilterErr = "since: " + err.Error()
	}
	if f.Until, err = parseWhen(d.Filter["until"]); err != nil {
		d.FilterErr = "until: " + err.Error()
	}
	err = s.cfg.Deps.DB.Records(ctx, f, func(rec *storage.Record) error {
		d.Records = append(d.Records, rec)
		if len(d.Records) > maxAuditRows {
			d.Records, d.Truncated = d.Records[1:], true
		}
		return nil
	})
	if err != nil {
		s.fail(w, err)
		return
	}
	// Newest first.
	for i, j := 0, len(d.Records)-1; i < j; i, j = i+1, j-1 {
		d.Records[i], d.Records[j] = d.Records[j], d.Records[i]
	}
	res, err := s.cfg.Deps.DB.Verify(ctx)
	var ce *storage.ChainError
	var ke *storage.KeyError
	d.ServerKeyID = s.cfg.Deps.DB.AuditKeyID()
	switch {
	case err == nil:
		d.ChainOK, d.ChainCount, d.ChainHead = true, res.Count, res.Head
		d.ChainKeyedFrom, d.ChainKeyID = res.KeyedFrom, res.KeyID
	case errors.As(err, &ke):
		d.ChainCount, d.ChainUnchecked = res.Count, ke.Error()
	case errors.As(err, &ce):
		d.ChainCount, d.ChainError = res.Count, ce.Error()
	default:
		s.fail(w, err)
		return
	}
	if d.Cross, err = s.cfg.Deps.DB.CrossCheck(ctx); err != nil {
		s.fail(w, err)
		return
	}
	d.CrossMore = d.Cross.More
	if n := len(d.Cross.Disagreements); n > maxCrossShown {
		d.Cross.Disagreements, d.CrossMore = d.Cross.Disagreements[:maxCrossShown], d.CrossMore+int64(n-maxCrossShown)
	}
	s.render(w, http.StatusOK, "audit", page{Title: "Audit trail", User: sess.User, CSRF: sess.CSRF, Approver: sess.role == auth.Approver, Nav: "audit", Data: d})
}

// parseWhen reads a filter time as the browser's datetime-local input sends
// it (taken as UTC) or as RFC 3339.
func parseWhen(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{"2006-01-02T15:04", "2006-01-02T15:04:05", time.RFC3339, "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time like 2026-03-01T14:00", s)
}

func (s *Server) fail(w http.ResponseWriter, err error) {
	s.cfg.Logger.Error("admin request failed", "err", err)
	http.Error(w, "Something went wrong: "+mandate.ErrorMessage(err), http.StatusServiceUnavailable)
}
