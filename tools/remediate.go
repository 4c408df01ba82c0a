package tools

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/mcp"
)

// Remediation: putting back what a misbehaving agent changed. Plan reads
// the audit trail (each executed action's recorded before and after,
// storage.Changes) and the system of record, and says, for every change the
// agent made in a window, whether it can be reverted. Apply carries out the
// reverts, each an ordinary update_account action by the person applying
// it, through the same guard as every agent call: decided by the policy
// (revert_update_account, see revertTool), recorded before and after, and
// executed with the idempotency key "revert:<action id>". A person's runs
// are therefore idempotent, and storage.ClaimRevert makes two people's
// runs exclusive, so each change is reverted at most once however often
// and wherever --apply runs.

// revertKey marks, in a context only Apply makes, that the call is a
// person's revert of an agent's action (a revertCall). Tool arguments
// never carry it, so no agent can make its call a revert.
type revertKey struct{}

// revertCall is a person's revert: the action it reverts, and the value it
// puts back, as the trail recorded it read from the system of record.
type revertCall struct {
	actionID, restore string
}

func withRevert(ctx context.Context, actionID, restore string) context.Context {
	return context.WithValue(ctx, revertKey{}, revertCall{actionID: actionID, restore: restore})
}

// reverter is implemented by the arguments of a tool a revert calls
// (update_account's): validateRevert checks them with the value put back
// judged as the system of record's, not as an agent's input.
type reverter interface{ validateRevert(restore string) error }

// bindCall is bind for a call in ctx. A person's revert is read as strictly
// as any call, but the value it puts back is the one the system of record
// held before the agent changed it, which may predate or differ from the
// rules for what agents send (a phone number stored as "+1 202 555 0143"
// is not E.164). Remediation puts customers back as they were, so that
// value is restored exactly; the system of record still checks it.
func bindCall[A any](ctx context.Context, raw any, a *A, names []string) error {
	rc, isRevert := ctx.Value(revertKey{}).(revertCall)
	r, ok := any(a).(reverter)
	if !isRevert || rc.actionID == "" || !ok {
		return bind(raw, a, names)
	}
	if err := decodeArgs(raw, a, names); err != nil {
		return err
	}
	return r.validateRevert(rc.restore)
}

// RevertAttr is the fact recorded with a revert's attempt: the id of the
// action it reverts.
const RevertAttr = "reverts"

// RevertKeyPrefix begins the idempotency key of a revert:
// "revert:act_…:CLAIM", where CLAIM names the claim it was made under
// (storage.ClaimRevert), so a revert that ended without changing anything
// is tried again under a new claim. Versions before had "revert:act_…".
const RevertKeyPrefix = "revert:"

// revertIdempotencyKey is the idempotency key of the revert of action id
// made under claim c: the same for every run of the person holding it.
func revertIdempotencyKey(id string, c storage.RevertClaim) string {
	claim := strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, c.At)
	return RevertKeyPrefix + id + ":" + claim
}

// revertedID is the action a revert's idempotency key names.
func revertedID(key string) string {
	id, _, _ := strings.Cut(strings.TrimPrefix(key, RevertKeyPrefix), ":")
	return id
}

// revertTool is the policy tool that decides a call of tool name: the
// name itself, or for a revert of an update_account,
// revert_update_account, whose attributes then also record which action
// it reverts.
func revertTool(ctx context.Context, name string, attrs map[string]any) string {
	rc, _ := ctx.Value(revertKey{}).(revertCall)
	id := rc.actionID
	if id == "" || name != "update_account" {
		return name
	}
	if attrs != nil {
		attrs[RevertAttr] = id
	}
	return "revert_" + name
}

// RecordedPolicyTool is the policy tool an attempt record was decided as,
// from its tool and recorded facts: revert_update_account for a person's
// revert (its facts carry RevertAttr, which only revertTool sets), else
// the tool. For policy replay and explain, which decide past calls again.
func RecordedPolicyTool(tool string, attrs map[string]any) string {
	if _, ok := attrs[RevertAttr]; ok && tool == "update_account" {
		return "revert_" + tool
	}
	return tool
}

// RefusedBeforeRules reports whether an attempt record's rule says the
// guard refused the call before the rules were consulted: no identity,
// facts that could not be loaded, the pending-approval cap, a policy or
// exchange rates that were not live, a suspension, or suspensions that
// could not be read. Its facts say nothing about what the rules would
// decide.
func RefusedBeforeRules(rule string) bool {
	for _, p := range []string{"default deny: facts could not be loaded", "default deny: no identity", PendingCapRule,
		"default deny: " + StalePolicyReason, "default deny: " + StaleRatesReason, "agent suspended: ", "suspensions could not be read"} {
		if strings.HasPrefix(rule, p) {
			return true
		}
	}
	return false
}

// decidedAs is the policy tool that decides a stored action again (an
// approval, recovery): revert_update_account for a person's revert, as the
// guard recorded it (storage.Action.PolicyTool), else the action's tool.
// The row is not chained, so only the one value the guard writes, on the
// one kind of row it writes it on, is believed: a writer of the actions
// table setting policy_tool to get_order on a pending refund must not have
// its approval judged as a lookup, past an emergency deny on refund_order.
func decidedAs(act *storage.Action) string {
	if act.PolicyTool != "" && act.PolicyTool == "revert_"+act.Tool && act.Tool == "update_account" &&
		strings.HasPrefix(act.IdempotencyKey, RevertKeyPrefix) {
		return act.PolicyTool
	}
	return act.Tool
}

// PlanItem is one change an agent made, and what remediation does with it.
type PlanItem struct {
	ActionID   string    `json:"action_id"`
	Time       time.Time `json:"time"`
	Tool       string    `json:"tool"`
	CustomerID string    `json:"customer_id,omitempty"`
	OrderID    string    `json:"order_id,omitempty"`
	Field      string    `json:"field,omitempty"`
	// From is the value the agent set (now current), To the one a revert
	// puts back; for a refund, the amount; for a cancellation, the status.
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
	// Ref is the system of record's reference (a refund id).
	Ref string `json:"ref,omitempty"`
	// Why says why a change is skipped or not reversible.
	Why string `json:"why,omitempty"`
	// Covers lists the agent's earlier changes of the same field that this
	// revert undoes too (it puts back the value before the first of them).
	Covers []string `json:"covers,omitempty"`
}

// Plan is what remediating one agent's window would do.
type Plan struct {
	Agent string    `json:"agent"`
	Since time.Time `json:"since"`
	// Revert lists the account changes nobody has changed since.
	Revert []PlanItem `json:"revert"`
	// Skipped lists the account changes that cannot be reverted, with why.
	Skipped []PlanItem `json:"skipped"`
	// NotReversible lists refunds and cancellations, with their references.
	NotReversible []PlanItem `json:"not_reversible"`
}

// accountChange is one executed update_account outcome in the trail.
type accountChange struct {
	seq            int64
	rec            *storage.Record
	customer       string
	field          string
	before, after  string
	known          bool // before was read from the system of record
	agent          string
	isRevertOf     string // the action this change reverted, if it is a revert
	actionID, time string
}

// PlanRemediation says what remediating agent's changes since since (of
// customer only, if not "") would do, from the audit trail and the system
// of record as they are now.
func PlanRemediation(ctx context.Context, d *Deps, agent string, since time.Time, customer string) (*Plan, error) {
	d = withDefaults(d)
	p := &Plan{Agent: agent, Since: since, Revert: []PlanItem{}, Skipped: []PlanItem{}, NotReversible: []PlanItem{}}
	// Every executed account change since the window opened, by anyone, in
	// chain order: the agent's are the candidates, everyone's are what
	// "changed again since" is judged on.
	byKey := map[string][]*accountChange{}
	var mine []*accountChange
	err := d.DB.Records(ctx, storage.Filter{Since: since}, func(r *storage.Record) error {
		if r.Phase != storage.PhaseOutcome || r.Outcome != storage.StatusExecuted {
			return nil
		}
		ch, err := storage.ParseChanges(r.Changes)
		if err != nil {
			return mandate.Errorf(mandate.EUNAVAILABLE, "record %d: its changes cannot be read: %v", r.Seq, err)
		}
		switch r.Tool {
		case "update_account":
		case "refund_order", "cancel_order":
			if r.Agent == agent && (customer == "" || ch != nil && ch.CustomerID == customer) {
				p.NotReversible = append(p.NotReversible, irreversible(r, ch))
			}
			return nil
		default:
			return nil
		}
		c := &accountChange{seq: r.Seq, rec: r, agent: r.Agent, actionID: r.ActionID, time: r.Time.UTC().Format(time.RFC3339)}
		var args updateArgs
		_ = json.Unmarshal(r.Args, &args)
		c.customer, c.field = args.CustomerID, args.Field
		if ch != nil && len(ch.Fields) == 1 {
			c.customer, c.field = ch.CustomerID, ch.Fields[0].Field
			c.after, _ = storage.ChangeText(ch.Fields[0].After)
			c.before, c.known = storage.ChangeText(ch.Fields[0].Before)
			c.known = c.known && ch.Source == storage.ChangesReadBeforeCall
		}
		if c.after == "" {
			c.after = args.Value
		}
		key := c.customer + "\x00" + c.field
		byKey[key] = append(byKey[key], c)
		if r.Agent == agent && (customer == "" || c.customer == customer) {
			mine = append(mine, c)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, list := range byKey {
		for _, c := range list {
			// A revert as the guard recorded it, not any change whose agent
			// chose a revert: key. The agent's own too: remediating a
			// person who ran a remediation must not plan to undo it.
			if act, err := d.DB.Action(ctx, c.actionID); err == nil && decidedAs(act) != act.Tool {
				c.isRevertOf = revertedID(act.IdempotencyKey)
			}
		}
	}
	covered := map[string]string{} // an earlier change of the agent -> the revert that covers it
	// A change a partial revert made current again -> the change after
	// that revert, if any.
	resumed := map[string]*accountChange{}
	for i := len(mine) - 1; i >= 0; i-- {
		c := mine[i]
		if by, ok := covered[c.actionID]; ok {
			p.Skipped = append(p.Skipped, c.item(fmt.Sprintf("undone by the revert of %s, a later change of the same field by %s", by, agent)))
			continue
		}
		if c.isRevertOf != "" {
			p.Skipped = append(p.Skipped, c.item(fmt.Sprintf("a remediation: the revert of %s; to undo it, look at that change's agent", c.isRevertOf)))
			continue
		}
		list := byKey[c.customer+"\x00"+c.field]
		// The run of this agent's changes of the field that ends with c,
		// and the first change after c, if any.
		first, next := c, (*accountChange)(nil)
		for j, o := range list {
			if o == c {
				for k := j - 1; k >= 0 && list[k].agent == agent; k-- {
					first = list[k]
				}
				if j+1 < len(list) {
					next = list[j+1]
				}
				break
			}
		}
		if after, ok := resumed[c.actionID]; ok {
			next = after // its value was current again after a revert: see below
		}
		if next != nil && next.isRevertOf == c.actionID && next.after != first.before {
			// A revert that put back the agent's own earlier value (a plan
			// over a narrower window, whose run began later): the changes
			// it undid are skipped, and the change that set that value is
			// planned as current again, back to the value before the run.
			if q := lastSetting(list, first, c, next.after); q != nil {
				p.Skipped = append(p.Skipped, c.item(fmt.Sprintf("reverted by %s (%s) at %s, to %s's own earlier value", next.actionID, next.agent, next.time, agent)))
				for _, o := range list {
					if o.seq > q.seq && o.seq < c.seq {
						covered[o.actionID] = c.actionID
					}
				}
				resumed[q.actionID] = nil
				for j, o := range list {
					if o == next && j+1 < len(list) {
						resumed[q.actionID] = list[j+1]
					}
				}
				continue
			}
		}
		var covers []string
		for _, o := range list {
			if o.seq >= first.seq && o.seq < c.seq {
				covers = append(covers, o.actionID)
				covered[o.actionID] = c.actionID
			}
		}
		it := c.item("")
		it.To, it.Covers = first.before, covers
		switch {
		case next != nil && next.isRevertOf != "" && (next.isRevertOf == c.actionID):
			it.Why = fmt.Sprintf("already reverted by %s (%s) at %s", next.actionID, next.agent, next.time)
		case next != nil:
			it.Why = fmt.Sprintf("changed again since by %s in %s at %s", next.agent, next.actionID, next.time)
		case !first.known:
			it.Why = "the value before the change is not known (its outcome was reconciled after a restart), so there is nothing to put back"
		case first.before == "":
			it.Why = "the field was empty before the change, and Mandate does not clear fields"
		default:
			if err := restorable(first.before); err != nil {
				it.Why = "the previous value of the " + fieldLabel(c.field) + " cannot be put back: " + mandate.ErrorMessage(err)
				break
			}
			cur, err := currentValue(ctx, d, c.customer, c.field)
			switch {
			case err != nil:
				it.Why = "the current value could not be read from the system of record: " + mandate.ErrorMessage(err)
			case cur != c.after:
				it.Why = "the system of record holds another value than the agent set: it was changed outside Mandate"
			case cur == first.before:
				it.Why = "the system of record already holds the previous value"
			}
		}
		if it.Why != "" {
			p.Skipped = append(p.Skipped, it)
			continue
		}
		p.Revert = append(p.Revert, it)
	}
	for _, l := range [][]PlanItem{p.Revert, p.Skipped, p.NotReversible} {
		sort.Slice(l, func(i, j int) bool { return l[i].Time.Before(l[j].Time) })
	}
	return p, nil
}

func (c *accountChange) item(why string) PlanItem {
	return PlanItem{ActionID: c.actionID, Time: c.rec.Time, Tool: "update_account", CustomerID: c.customer, Field: c.field,
		From: c.after, To: c.before, Why: why}
}

// lastSetting is the latest change in list from first up to (not
// including) c that set value, or nil.
func lastSetting(list []*accountChange, first, c *accountChange, value string) *accountChange {
	var q *accountChange
	for _, o := range list {
		if o.seq >= first.seq && o.seq < c.seq && o.after == value {
			q = o
		}
	}
	return q
}

// irreversible lists a refund or cancellation with its references.
func irreversible(r *storage.Record, ch *storage.Changes) PlanItem {
	it := PlanItem{ActionID: r.ActionID, Time: r.Time, Tool: r.Tool, Why: "not reversible by Mandate: handle it in the system of record"}
	var args struct {
		OrderID string `json:"order_id"`
		Amount  string `json:"amount"`
	}
	_ = json.Unmarshal(r.Args, &args)
	it.OrderID = args.OrderID
	if ch != nil {
		it.CustomerID, it.OrderID, it.Ref = ch.CustomerID, ch.OrderID, ch.RefundID
		for _, f := range ch.Fields {
			if f.Field == "status" {
				it.From, _ = storage.ChangeText(f.After)
				it.To, _ = storage.ChangeText(f.Before)
			}
		}
	}
	if r.Tool == "refund_order" {
		it.From = args.Amount // refunded, in the order's currency
	}
	return it
}

func currentValue(ctx context.Context, d *Deps, customer, field string) (string, error) {
	bctx, cancel := context.WithTimeout(ctx, d.BackendTimeout)
	defer cancel()
	c, err := d.Backend.Customers.Customer(bctx, customer)
	if err != nil {
		return "", err
	}
	switch field {
	case backend.FieldEmail:
		return c.Email, nil
	case backend.FieldPhone:
		return c.Phone, nil
	case backend.FieldName:
		return c.Name, nil
	case backend.FieldShippingAddress:
		return c.ShippingAddress, nil
	}
	return "", mandate.Errorf(mandate.EINVALID, "unknown field %q", field)
}

// RevertResult is what Apply did with one planned revert.
type RevertResult struct {
	PlanItem
	// Status: "reverted", "in progress" (a concurrent run is carrying out
	// the same revert), "pending" (a person must approve the revert),
	// "skipped" (another person holds it, or the field was changed since
	// the plan: Why says which) or "failed".
	Status   string `json:"status"`
	RevertID string `json:"revert_action_id,omitempty"`
	Message  string `json:"message"`
	// changed: the revert was recorded as not made because the field was
	// changed since (RevertChangedSince).
	changed bool
}

// ApplyRemediation carries out p's reverts as the person by: each an
// update_account action by by, through the guard, decided by the policy
// (revert_update_account), with the reason naming the action it reverts and
// the idempotency key RevertKeyPrefix + its id.
func ApplyRemediation(ctx context.Context, d *Deps, by string, p *Plan) []RevertResult {
	d = withDefaults(d)
	handler := updateAccount().serverTool(d).Handler
	var out []RevertResult
	for _, it := range p.Revert {
		r := RevertResult{PlanItem: it}
		claim, err := d.DB.ClaimRevert(ctx, it.ActionID, by)
		switch {
		case err != nil:
			r.Status, r.Message = "failed", mandate.ErrorMessage(err)
		case claim.By != by:
			r.Status, r.Message = "skipped", claim.By+" is reverting it (or did): only one person reverts a change"
		default:
			r = revertOne(ctx, d, handler, by, p.Agent, it, revertIdempotencyKey(it.ActionID, claim))
			if r.Status == "failed" || r.changed {
				// Nothing was changed (refused by the rules, denied by a
				// person, failed, or changed since): the claim is given
				// back, so the next run, by anyone, tries again under a
				// new key rather than being answered with this failure.
				if err := d.DB.ReleaseRevert(ctx, it.ActionID, claim); err != nil {
					r.Message += " (the claim on this revert could not be given back: " + mandate.ErrorMessage(err) + ")"
				}
			}
		}
		out = append(out, r)
	}
	return out
}

func revertOne(ctx context.Context, d *Deps, handler func(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error), by, agent string, it PlanItem, key string) RevertResult {
	r := RevertResult{PlanItem: it}
	reason := fmt.Sprintf("Remediation by %s: revert of %s, the change of %s on %s by %s at %s", by, it.ActionID, fieldLabel(it.Field), it.CustomerID, agent, it.Time.UTC().Format(time.RFC3339))
	args := map[string]any{"customer_id": it.CustomerID, "field": it.Field, "value": it.To, "reason": reason, "idempotency_key": key}
	// Another run of this person's, under the same claim and so the same
	// key, may have made (or be making) this revert: it is reported from
	// its action, not asked for again. A retry through the guard would be
	// answered only if the rules let the person use get_action_status
	// (guardReplay, meant for agents), and the revert, made once, would be
	// reported failed and its claim given back.
	made := func() (ActionResult, bool) {
		act, err := d.DB.ActionByKey(ctx, by, key)
		if err != nil {
			return ActionResult{}, false
		}
		return ActionResult{ActionID: act.ID, Status: act.Status, Message: "made by another run of " + by + "'s under the same claim"}, true
	}
	ar, done := made()
	if !done {
		res, err := handler(WithAgent(withRevert(ctx, it.ActionID, it.To), by), mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "update_account", Arguments: args}})
		if err != nil {
			r.Status, r.Message = "failed", err.Error()
			return r
		}
		b, _ := json.Marshal(res.StructuredContent)
		if res.StructuredContent == nil || json.Unmarshal(b, &ar) != nil || ar.ActionID == "" {
			if ar, done = made(); !done { // the other run won the race for the key
				r.Status, r.Message = "failed", resultMessage(res)
				return r
			}
		}
	}
	r.RevertID, r.Message = ar.ActionID, ar.Message
	switch ar.Status {
	case storage.StatusExecuted:
		r.Status = "reverted"
	case storage.StatusExecuting, storage.StatusApproved:
		r.Status = "in progress" // a concurrent run holds it: it happens once
	case storage.StatusPending:
		r.Status = "pending"
	case storage.StatusFailed:
		r.Status = "failed"
		if act, err := d.DB.Action(ctx, ar.ActionID); err == nil && strings.HasPrefix(act.Error, RevertChangedSince) {
			// Not made, and recorded so: the customer's newer value stays.
			r.Status, r.Why, r.changed = "skipped", "the customer changed it since", true
		}
	default:
		r.Status = "failed"
	}
	return r
}

// resultMessage is the message of an error result: its JSON's message,
// else its text.
func resultMessage(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	var e ErrorResult
	if json.Unmarshal([]byte(b.String()), &e) == nil && e.Message != "" {
		return e.Message
	}
	return b.String()
}
