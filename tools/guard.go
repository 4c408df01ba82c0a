package tools

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/telemetry"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// spec is what one tool file declares. The guard is the only code that
// turns a spec into a handler, so no tool can skip the permission check or
// the audit record.
type spec[A any] struct {
	tool mcp.Tool
	// load reads from the systems of record everything the rules test about
	// this call and returns it as policy attributes. It may keep what it read
	// in a for run. A failure here is a deny: no facts, no action.
	load func(ctx context.Context, d *Deps, a *A) (map[string]any, error)
	// describe names the call for people: "refund of 30.00 USD on ord_1001".
	describe func(a *A) string
	// run performs the read or the action. key is the idempotency key the
	// backend must honour.
	run func(ctx context.Context, d *Deps, a *A, key string) (any, error)
	// reconcile asks the backend whether the recorded action act (its id
	// is the idempotency key) happened: its result if so, a not_found error
	// if not. Recover asks it after a crash between acting and recording or
	// an unconfirmed call; execute, after an unanswered repeat, trusts only
	// a result found. Actions only.
	reconcile func(ctx context.Context, d *Deps, act *storage.Action) (any, error)
}

// entry is a spec of any argument type, ready to register.
type entry interface {
	serverTool(d *Deps) server.ServerTool
	name() string
	reconciler() func(ctx context.Context, d *Deps, act *storage.Action) (any, error)
	resume(ctx context.Context, d *Deps, act *storage.Action) error
	review(ctx context.Context, d *Deps, act *storage.Action, approver, comment string, approve bool) (*storage.Action, error)
	facts(ctx context.Context, d *Deps, args map[string]any) (map[string]any, error)
}

// bindStored binds the arguments recorded with an action, for carrying out
// or reviewing it later; unreadable arguments are an error with code. They
// were validated when the action was recorded, and their digest is checked
// before they are used, so today's input rules are not applied again: an
// action recorded by an earlier version (an update_account without a
// reason) can still be approved or denied, and the system of record still
// checks every value it stores.
func (s spec[A]) bindStored(act *storage.Action, code string) (A, error) {
	var a A
	if !json.Valid(act.Args) {
		return a, mandate.Errorf(code, "action %s: its stored arguments cannot be read", act.ID)
	}
	if err := decodeArgs(json.RawMessage(act.Args), &a, argNames(s.tool.InputSchema.Properties)); err != nil {
		return a, mandate.Errorf(code, "action %s: its stored arguments cannot be read: %s", act.ID, mandate.ErrorMessage(err))
	}
	return a, nil
}

func (s spec[A]) name() string { return s.tool.Name }

func (s spec[A]) reconciler() func(ctx context.Context, d *Deps, act *storage.Action) (any, error) {
	return s.reconcile
}

func (s spec[A]) serverTool(d *Deps) server.ServerTool {
	return server.ServerTool{Tool: s.tool, Handler: func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return guard(ctx, d, s, req), nil
	}}
}

// guard runs one tool call: bind arguments, load facts, decide, record the
// attempt durably, act only on allow, record the outcome, answer. Any
// failure on the way to acting is a refusal.
func guard[A any](ctx context.Context, d *Deps, s spec[A], req mcp.CallToolRequest) *mcp.CallToolResult {
	// Cancellation (notifications/cancelled) is honoured until the attempt
	// is durably recorded, and not after: a call cancelled before that
	// point records nothing and does nothing; once the attempt is
	// committed, the call runs to its end, bounded by the backend timeout,
	// so no decision is left unrecorded and no action without its outcome.
	// The commit point is inside the storage write (DecideAndRecord), so a
	// cancel racing it is either wholly before or wholly after. A client
	// closing stdin cancels nothing: a piped script's calls run (see
	// Deps.InputClosed). The server waits for calls in flight before it exits.
	ctx, stop := d.explicitCancelOnly(ctx)
	defer stop()
	start := d.Now()
	name := s.tool.Name
	defer d.timeCall(name)()
	agent := d.identity(ctx)
	log := d.Logger.With("tool", name, "agent", agent)
	action := policy.Tools[name].Action
	ctx = correlate(ctx, req, log) // trace context and conversation id from _meta (trace.go)
	ctx, span := telemetry.Start(ctx, telemetry.SpanToolCall+" "+name, telemetry.AttrTool, name, telemetry.AttrAgent, agent)
	defer span.End(nil)

	raw, key, err := splitKey(rawArguments(req.Params), action)
	if err != nil {
		log.Info("invalid arguments", "err", logText(err))
		return errorResult(err)
	}
	var a A
	if err := bindCall(ctx, raw, &a, argNames(s.tool.InputSchema.Properties)); err != nil {
		log.Info("invalid arguments", "err", logText(err))
		return errorResult(err)
	}
	if ctx.Err() != nil {
		return cancelledResult(log)
	}
	// A retry's answer is a read of the agent's own record, like
	// get_action_status: a suspension of lookups refuses it (below, audited
	// as any refused action) rather than answer it.
	if key != "" && lookupSuspended(ctx, d, agent) == 0 {
		// The arguments as the first attempt recorded them: an amount is
		// canonical in the order's currency, which that attempt read; an
		// amount of the same value takes its recorded text.
		argsIn := func(recorded json.RawMessage) []byte {
			b := a
			if c, ok := any(&b).(amountInCurrency); ok {
				c.likeRecorded(recorded) // a different value shows in the digest
			}
			return canonical(b)
		}
		if res, done := replay(ctx, d, agent, name, key, argsIn); done {
			return res
		}
	}

	attrs, loadErr := map[string]any{}, error(nil)
	// An identity no rule could ever let use this tool is refused without
	// reading the facts: the system of record is not asked on its behalf,
	// and its refusal is the same whether the id exists or not (else the
	// tool would be an oracle of which orders and customers exist).
	if s.load != nil && d.Policy.Policy().CanEverUse(agent, revertTool(ctx, name, nil)) {
		fctx, fspan := telemetry.Start(ctx, telemetry.SpanFacts, telemetry.AttrTool, name)
		attrs, loadErr = s.load(fctx, d, &a)
		fspan.End(loadErr)
		if loadErr != nil && mandate.ErrorCode(loadErr) != mandate.ENOTFOUND && mandate.ErrorCode(loadErr) != mandate.EINVALID {
			log.Warn("facts could not be loaded", "err", logText(loadErr))
		}
		if mandate.ErrorCode(loadErr) == mandate.EINVALID {
			// Bad input that needed a fact to judge (an amount with more
			// decimals than the order's currency has): fix and resend.
			log.Info("invalid arguments", "err", logText(loadErr))
			return errorResult(loadErr)
		}
	}
	args := canonical(a)
	if ctx.Err() != nil {
		// Given up before anything was recorded: nothing happens.
		return cancelledResult(log)
	}
	act := &storage.Action{ID: newActionID(), Agent: agent, Tool: name, Args: args, IdempotencyKey: key}
	if sc, ok := any(&a).(scoped); ok {
		act.CustomerID, act.AmountMinor, act.Currency = sc.scope()
	}
	rec := &storage.Record{Agent: agent, Tool: name, Args: args, Credential: callCredential(ctx, agent)}
	stamp(ctx, d, "", rec)
	var dec policy.Decision
	capped, stale, staleRates := false, false, false // staleRates: stale for the exchange rates, not the policy
	var suspension int64                             // the suspension that refused the call, if any
	policyTool := revertTool(ctx, name, attrs)       // a person's revert is decided as revert_update_account
	if policyTool != name {
		act.PolicyTool = policyTool // and so is its approval (redecide)
	}
	// decide runs inside the transaction that records the attempt, with the
	// usage counted there, so limits over time cannot be raced.
	decide := func(u storage.Usage) {
		_, dspan := telemetry.Start(ctx, telemetry.SpanDecision, telemetry.AttrTool, name)
		defer func() { dspan.Set(telemetry.AttrEffect, dec.Effect); dspan.End(nil) }()
		if attrs != nil && act.Currency != "" {
			for k, v := range usageAttrs(u, act.Currency) {
				attrs[k] = v
			}
		}
		held := d.Policy.Policy()
		switch {
		case agent == "":
			dec = policy.Decision{Effect: policy.Deny, Reason: "no identity: the transport authenticated nobody", Version: held.Version}
		case u.Suspended != 0:
			// The kill switch (suspend.go): refused for now, like stale.
			dec = policy.Decision{Effect: policy.Deny, Reason: suspendedReason(agent, u.Suspended), Version: held.Version}
			suspension = u.Suspended
		case u.LivePolicy != held.Version:
			// One live policy: this process holds another version than the
			// newest recorded one (another process loaded an edit this one
			// has not reloaded yet, or other files altogether). Fail closed,
			// for lookups too (their view of it lags by at most
			// SuspensionRefresh, like their view of suspensions).
			dec = policy.Decision{Effect: policy.Deny, Version: held.Version, Reason: staleReason(held.Version, u.LivePolicy)}
			stale = true
		case convertedWith(attrs) != "" && convertedWith(attrs) != u.LiveRates:
			// One live set of exchange rates, checked the same way: the
			// facts were converted into the base currency with rates that
			// are not the newest recorded (limits.go).
			dec = policy.Decision{Effect: policy.Deny, Version: held.Version, Reason: staleRatesReason(convertedWith(attrs), u.LiveRates)}
			stale, staleRates = true, true
		case loadErr != nil:
			dec = policy.Decision{Effect: policy.Deny, Reason: "facts could not be loaded: " + mandate.ErrorMessage(loadErr), Version: held.Version}
		default:
			// held, the version just checked, not whatever is live by now.
			dec = held.Decide(policy.Request{Agent: agent, Tool: policyTool, Attrs: attrs})
		}
		capped = action && overPendingCap(d, agent, u, &dec)
		act.Decision, act.Rule, act.PolicyVersion = dec.Effect, dec.RuleText(), dec.Version
		if capped {
			// Like a rate limit, the refusal is for now: the key stays free
			// for the agent to try again with later.
			act.Rule, act.IdempotencyKey = pendingCapRule(dec), ""
		}
		if stale || suspension != 0 || (agent != "" && loadErr != nil && uncertain(loadErr)) {
			// Refused for now, like the cap: nothing was decided by a
			// rule, so a retry with the key may act once it can be (the
			// facts could not be read: the system of record failed, not
			// an unknown id or a refusal it gave).
			act.IdempotencyKey = ""
		}
		if suspension != 0 {
			act.Rule = dec.Reason
		}
		act.Status = initialStatus(dec.Effect, action)
		if dec.Effect == policy.RequireApproval {
			act.ExpiresAt = d.Now().Add(d.ApprovalTTL)
		}
		rec.Attrs, rec.Decision, rec.Rule, rec.PolicyVersion = canonical(attrs), dec.Effect, act.Rule, dec.Version
		rec.Duration = d.Now().Sub(start)
		switch dec.Effect {
		case policy.Deny:
			rec.Outcome = "refused"
		case policy.RequireApproval:
			rec.Outcome = storage.StatusPending
		}
		if agent != "" && loadErr != nil {
			// Refused for want of facts: the record says why in the code
			// the agent gets (not_found for an unknown id).
			rec.Error = mandate.ErrorCode(loadErr)
			act.Error = rec.Error
		}
	}
	_, aspan := telemetry.Start(ctx, telemetry.SpanAuditAppend, telemetry.AttrPhase, storage.PhaseAttempt)
	if action {
		// DecideAndRecord is the commit point: it refuses with
		// storage.ErrCancelled, recording nothing, if ctx is done when the
		// write begins, and otherwise records regardless of ctx.
		err = d.DB.DecideAndRecord(ctx, act, rec, decide)
		if errors.Is(err, storage.ErrCancelled) {
			return cancelledResult(log)
		}
		if errors.Is(err, storage.ErrDuplicateKey) {
			// A concurrent retry with the same key won the race: answer
			// with its action rather than acting twice.
			if res, done := replay(context.WithoutCancel(ctx), d, agent, name, key, func(json.RawMessage) []byte { return args }); done {
				return res
			}
		}
	} else {
		// A read changes nothing, so it has no action state: one record of
		// who looked at what, and whether the rules let them.
		suspended, live := lookupView(ctx, d, agent, d.Policy.Policy().Version)
		decide(storage.Usage{Suspended: suspended, LivePolicy: live})
		rec.ActionID, rec.Phase = act.ID, storage.PhaseAttempt
		if dec.Effect != policy.Allow {
			// A read is not cancelled once decided: its record is written
			// whole. An allowed one is recorded once read (read.go).
			err = d.DB.Append(context.WithoutCancel(ctx), rec)
		}
	}
	aspan.End(err)
	span.Set(telemetry.AttrEffect, dec.Effect, telemetry.AttrActionID, act.ID)
	// Recorded: from here the call runs to its end whatever the client does.
	ctx = context.WithoutCancel(ctx)
	log = log.With("decision", dec.Effect)
	if err != nil {
		log.Error("audit write failed; refusing", "err", err)
		return auditFailedResult()
	}
	d.observer().Decision(name, dec.Effect)
	log = log.With("action_id", act.ID)

	switch dec.Effect {
	case policy.Allow:
	case policy.RequireApproval:
		log.Info("pending approval", "rule", act.Rule)
		return pendingResult(act, s.describe(&a))
	default:
		log.Info("denied", "rule", mandate.Unquoted(act.Rule), "reason", mandate.Unquoted(dec.Reason))
		if capped {
			return pendingCapResult(act, s.describe(&a))
		}
		if suspension != 0 {
			return suspendedResult(act, s.describe(&a), action, agent, suspension)
		}
		if stale && !action {
			return errorResult(mandate.Errorf(mandate.EUNAVAILABLE, "Not shown: this server's rules are not the live ones (they may have just changed), so nothing was looked up. Ask again in a few seconds; if it is refused again, pass it to a human."))
		}
		if stale {
			what := "rules"
			if staleRates {
				what = "exchange rates"
			}
			res := &ActionResult{ActionID: act.ID, Decision: act.Decision, Rule: act.Rule, Status: act.Status,
				Message: fmt.Sprintf("Not done: this server's %s are not the live ones (they may have just changed), so the %s was refused and nothing was changed. Send the same request again in a few seconds; if it is refused again, tell the customer it cannot be done now and pass it to a human.", what, s.describe(&a))}
			return structuredError(res)
		}
		if !action {
			if loadErr != nil {
				return errorResult(loadErr)
			}
			return errorResult(mandate.Errorf(mandate.EDENIED, "the rules do not allow %s to use %s", agent, name))
		}
		return denyResult(act, s.describe(&a), dec, loadErr)
	}

	if !action {
		return read(ctx, d, s, &a, rec, start, log)
	}
	return execute(ctx, d, s, &a, act, log, true)
}

// execute calls the backend for an allowed action and records the outcome.
// With behind (an agent's own call), the answer does not wait for the
// outcome record, which is queued as a write-behind (storage/behind.go): if
// it is lost, the action stays executing and recovery reconciles it. A
// person's approval or a recovery waits for it, since it reports what the
// record says.
func execute[A any](ctx context.Context, d *Deps, s spec[A], a *A, act *storage.Action, log *slog.Logger, behind bool) *mcp.CallToolResult {
	// Once the backend may act, nobody hanging up may stop the outcome from
	// being recorded; the backend timeout bounds the wait.
	ctx = context.WithoutCancel(ctx)
	cred := callCredential(ctx, act.Agent) // before ctx names the agent
	ctx = WithAgent(ctx, act.Agent)        // who asked, also when a person approved it later
	start := d.Now()
	// Everything execute asks of the backend ends within execBudget of the
	// moment the action was recorded as executing (act.Began, its
	// updated_at), which recovery's grace (--recover-after) must exceed:
	// recovery never asks about an action whose own call may still be on
	// its way, even when the commit before this call took long. With the
	// budget spent already, no call is made and the action fails cleanly.
	began := time.Now() // a real clock: d.Now may be a test's
	if !act.Began.IsZero() {
		began = act.Began
	}
	ectx, cancel := context.WithDeadline(ctx, began.Add(execBudget(d)))
	defer cancel()
	// What the action will change, read just before it (changes.go); no
	// call is made when it cannot be read.
	changes, err := readBefore(ectx, d, a)
	if err == nil {
		err = revertStillDue(ectx, d, act, changes, a) // a person's revert of a value changed since is not sent
	}
	late := ectx.Err() != nil
	if late {
		// Recorded too long ago (a stalled commit or process): recovery
		// may already have reconciled it, so nothing is sent.
		err = mandate.Errorf(mandate.EUNAVAILABLE, "more than %s passed between recording the action and sending it", execBudget(d))
	}
	var out any
	ran := err == nil
	if ran {
		out, err = send(ectx, d, s, a, act)
		if err != nil && uncertain(err) && ectx.Err() == nil {
			// A timeout or a transport failure does not say whether the
			// backend acted, and neither does a lookup by key made now: the
			// first request may still be on its way or being carried out
			// (the reference server finishes a change after its client hangs
			// up), so "not found" would be a guess, and recording it as
			// failed would give the limits back and invite the agent to try
			// again with a new key: money moved twice. Instead the identical
			// request is sent again under the same idempotency key, which the
			// backend must honour: its answer is the first change or the one
			// new one, never a second.
			log.Warn("backend outcome unknown; sending the same request again with the same idempotency key", "err", logText(err))
			out, err = send(ectx, d, s, a, act)
		}
		if err != nil && uncertain(err) && s.reconcile != nil && ectx.Err() == nil {
			// The repeat failed too, before the budget ran out (a connection
			// reset, say): a lookup by key may still find the change. Found
			// is as good as an answer; not found says nothing yet, for the
			// reason above.
			lctx, lcancel := context.WithTimeout(ectx, d.BackendTimeout)
			if found, lerr := s.reconcile(lctx, d, act); lerr == nil {
				out, err = found, nil
			}
			lcancel()
		}
	}
	err = revertRefused(act, changes, err)
	if err != nil && ran && uncertain(err) {
		// Still unknown: leave the action executing, its limits counted, for
		// Recover to ask the backend by key once no call of ours can still
		// arrive, and tell the agent not to retry. Only a coded refusal
		// (below) is recorded as failed.
		log.Warn("backend outcome unknown; left for reconciliation", "err", logText(err))
		res := &ActionResult{ActionID: act.ID, Decision: act.Decision, Rule: act.Rule, Status: storage.StatusExecuting,
			Message: fmt.Sprintf("The %s was sent, but the system of record did not confirm it in time. Do not retry: whether it happened is being checked; look with get_action_status(action_id=%q) in a minute.", s.describe(a), act.ID)}
		return mcp.NewToolResultStructured(res, res.Message)
	}
	rec := &storage.Record{
		Agent: act.Agent, Tool: act.Tool, Args: act.Args, Decision: act.Decision,
		Rule: act.Rule, PolicyVersion: act.PolicyVersion, Duration: d.Now().Sub(start),
		Credential: cred,
	}
	if err != nil {
		act.Status, act.Error = storage.StatusFailed, mandate.ErrorMessage(err)
		rec.Outcome, rec.Error = storage.StatusFailed, act.Error
		log.Warn("backend refused or failed", "err", logText(err))
	} else {
		act.Status, act.Result = storage.StatusExecuted, canonical(out)
		rec.Outcome, rec.Changes = storage.StatusExecuted, changesAfter(ctx, d, a, changes, out)
	}
	stamp(ctx, d, act.ID, rec)
	_, ospan := telemetry.Start(ctx, telemetry.SpanAuditAppend, telemetry.AttrPhase, storage.PhaseOutcome, telemetry.AttrActionID, act.ID, telemetry.AttrOutcome, rec.Outcome)
	// The outcome is recorded even if the agent hung up: the action happened.
	var rerr error
	if behind {
		queued := *act // the writer stamps its copy, never act
		d.DB.RecordOutcomeBehind(ctx, &queued, rec)
	} else {
		rerr = d.DB.RecordOutcome(ctx, act, rec)
	}
	ospan.End(rerr)
	if mandate.ErrorCode(rerr) == mandate.ECONFLICT {
		// Recovery recorded the outcome first: answer from the record, which
		// is what the audit will say.
		if cur, err := d.DB.Action(ctx, act.ID); err == nil {
			log.Warn("outcome was already recorded by recovery", "status", cur.Status)
			return actionResult(cur)
		}
	} else if rerr != nil {
		// The backend acted but the outcome is not recorded; the action stays
		// "executing" and is reconciled against the backend by recovery.
		log.Error("outcome not recorded", "err", rerr)
	}
	if err != nil {
		res := &ActionResult{ActionID: act.ID, Decision: act.Decision, Rule: act.Rule, Status: act.Status,
			Message: fmt.Sprintf("The %s was allowed but the system of record refused it: %s. Nothing was changed.", s.describe(a), act.Error)}
		switch {
		case late:
			res.Message = fmt.Sprintf("The %s was allowed but could not be sent in time (%s), so nothing was changed. You may try again later.", s.describe(a), act.Error)
		case !ran && mandate.ErrorCode(err) == mandate.ECONFLICT:
			res.Message = fmt.Sprintf("The %s was allowed but not sent: %s. Nothing was changed.", s.describe(a), act.Error)
		case !ran && uncertain(err):
			// The values before could not be read: no call was made.
			res.Message = fmt.Sprintf("The %s was allowed but the system of record could not be read, so it was not sent and nothing was changed. You may try again later.", s.describe(a))
		}
		return structuredError(res)
	}
	log.Info("executed")
	res := &ActionResult{ActionID: act.ID, Decision: act.Decision, Rule: act.Rule, Status: act.Status,
		Message: fmt.Sprintf("Done: %s.", s.describe(a)), Result: object(act.Result)}
	return mcp.NewToolResultStructured(res, res.Message+" Reference "+act.ID+".")
}

// send makes the action's backend call once, bounded by the backend timeout
// and by what is left of ctx (execute's budget).
func send[A any](ctx context.Context, d *Deps, s spec[A], a *A, act *storage.Action) (any, error) {
	bctx, cancel := context.WithTimeout(ctx, d.BackendTimeout)
	defer cancel()
	bctx, bspan := telemetry.Start(bctx, telemetry.SpanBackendCall, telemetry.AttrTool, act.Tool, telemetry.AttrActionID, act.ID)
	out, err := s.run(bctx, d, a, act.ID)
	bspan.End(err)
	return out, err
}

// logText is err for the log: what it quotes (an agent's or a service's
// values, which may be personal data) replaced by "…".
func logText(err error) string { return mandate.Unquoted(err.Error()) }

// execBudget bounds all of one execute's backend calls: the read before,
// the call and its one repeat. It is twice the backend timeout, which
// `mandate serve` requires --recover-after to exceed.
func execBudget(d *Deps) time.Duration { return 2 * d.BackendTimeout }

// StalePolicyReason begins the reason of an action refused because the
// server's policy was not the live one; `policy replay` skips such records.
const StalePolicyReason = "not the live policy"

// staleReason says why an action was refused under a policy that is not
// the live one.
func staleReason(held, live string) string {
	if live == "" {
		return fmt.Sprintf("%s: policy version %s is not recorded as live in the database (no server recorded one), so nothing is decided under it", StalePolicyReason, held)
	}
	return fmt.Sprintf("%s: this server holds policy version %s but the live policy is %s; it must load the same policy files as the process that recorded it", StalePolicyReason, held, live)
}

// uncertain reports whether a backend error leaves open whether the action
// happened: a timeout, an unavailable system or an error with no code. A
// coded refusal (conflict, invalid, not_found) means it did not.
func uncertain(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	switch mandate.ErrorCode(err) {
	case mandate.EUNAVAILABLE, mandate.EINTERNAL:
		return true
	}
	return false
}

func initialStatus(effect string, action bool) string {
	switch {
	case effect == policy.Deny:
		return storage.StatusDenied
	case effect == policy.RequireApproval:
		return storage.StatusPending
	case !action:
		return storage.StatusExecuted
	}
	return storage.StatusExecuting
}

func newActionID() string {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return "act_" + hex.EncodeToString(b[:])
}
