package tools

import (
	"context"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/mcp"
)

type actionIDArgs struct {
	ActionID       string `json:"action_id"`
	IdempotencyKey string `json:"idempotency_key"`
}

func (a *actionIDArgs) validate() error {
	switch {
	case a.ActionID != "" && a.IdempotencyKey != "":
		return mandate.Errorf(mandate.EINVALID, "send either action_id or idempotency_key, not both")
	case a.IdempotencyKey != "":
		return validKey(a.IdempotencyKey)
	case a.ActionID == "":
		return mandate.Errorf(mandate.EINVALID, "argument action_id or idempotency_key is required")
	}
	return required("action_id", a.ActionID, 100)
}

// ActionStatus is what an agent learns about one of its actions.
type ActionStatus struct {
	ActionID  string         `json:"action_id"`
	Tool      string         `json:"tool"`
	Status    string         `json:"status" jsonschema:"enum=pending,enum=executing,enum=executed,enum=failed,enum=denied,enum=approved,enum=expired"`
	Decision  string         `json:"decision"`
	Rule      string         `json:"rule"`
	Args      map[string]any `json:"args"`
	Result    map[string]any `json:"result,omitempty"`
	Error     string         `json:"error,omitempty"`
	CreatedAt time.Time      `json:"created_at"`
	UpdatedAt time.Time      `json:"updated_at"`
	// ExpiresAt is when a pending action lapses (RFC 3339), and absent
	// otherwise. It is a plain string rather than a nullable one: a type
	// of ["null","string"] is valid JSON Schema, but the MCP Inspector's
	// strict mode and some clients' validators flag it, while an optional
	// string passes every validator.
	ExpiresAt string `json:"expires_at,omitempty"`
	// DecidedBy and Comment are the person who approved or denied it, and
	// what they said; pass a denial's comment on to the customer.
	DecidedBy string `json:"decided_by,omitempty"`
	Comment   string `json:"comment,omitempty"`
	Message   string `json:"message"`
	// customer is the action's customer, whose data its arguments and
	// result show; recorded, not sent (customerShown).
	customer string
}

func (s ActionStatus) shownCustomer() string { return s.customer }

var statusMessages = map[string]string{
	storage.StatusPending:   "Waiting for a person to approve or deny it. Check back later.",
	storage.StatusExecuting: "It is being carried out now.",
	storage.StatusExecuted:  "It was carried out.",
	storage.StatusFailed:    "It was allowed but the system of record refused or failed; see error.",
	storage.StatusDenied:    "It was refused and will not happen.",
	storage.StatusApproved:  "A person approved it; it will be carried out shortly.",
	storage.StatusExpired:   "Nobody approved it in time, so it will not happen.",
}

func getActionStatus() entry {
	return spec[actionIDArgs]{
		tool: mcp.NewTool("get_action_status", options(readHints(),
			mcp.WithTitleAnnotation("Check an action"),
			mcp.WithDescription("Check on one of your earlier actions, by its action_id or by the idempotency_key you sent with it (exactly one of the two), e.g. one waiting for a person's approval: pending, approved, denied, expired, executed (with the result) or failed (with the error). "+
				"After a call timed out or was cancelled, look it up by its idempotency_key: not_found means no action was recorded under that key, so nothing was done; call again with the same key, which can never act twice. You can only see actions you made."),
			mcp.WithString("action_id", mcp.MaxLength(100), mcp.Description("The action_id an action tool returned, e.g. \"act_3f2a…\". Give this or idempotency_key.")),
			mcp.WithString("idempotency_key", mcp.MaxLength(200), mcp.Description("The idempotency_key you sent with the action. Give this or action_id.")),
			mcp.WithOutputSchema[ActionStatus](),
		)...),
		describe: func(a *actionIDArgs) string {
			if a.ActionID == "" {
				return "status check by idempotency key"
			}
			return "status check of " + a.ActionID
		},
		run: func(ctx context.Context, d *Deps, a *actionIDArgs, _ string) (any, error) {
			agent := d.identity(ctx)
			var act *storage.Action
			var err error
			if a.IdempotencyKey != "" {
				// Keys are the agent's own namespace: the lookup is by this
				// agent's identity, so another agent's key finds nothing.
				act, err = d.DB.ActionByKey(ctx, agent, a.IdempotencyKey)
				if mandate.ErrorCode(err) == mandate.ENOTFOUND {
					return nil, mandate.Errorf(mandate.ENOTFOUND, "no action of yours is recorded with that idempotency_key, so nothing was done under it; call again with the same key, which can never act twice")
				}
			} else {
				act, err = d.DB.Action(ctx, a.ActionID)
			}
			if err != nil {
				return nil, err
			}
			if act.Agent != agent || agent == "" {
				// Another agent's action does not exist as far as this one knows.
				if a.IdempotencyKey != "" {
					return nil, mandate.Errorf(mandate.ENOTFOUND, "no action of yours with that idempotency_key")
				}
				return nil, mandate.Errorf(mandate.ENOTFOUND, "no action %q", a.ActionID)
			}
			st := ActionStatus{
				ActionID: act.ID, Tool: act.Tool, Status: act.Status, Decision: act.Decision, Rule: act.Rule,
				Args: object(act.Args), Result: object(act.Result), Error: act.Error, CreatedAt: act.CreatedAt, UpdatedAt: act.UpdatedAt,
				customer: act.CustomerID,
			}
			if act.Status == storage.StatusPending {
				st.ExpiresAt = act.ExpiresAt.UTC().Format(time.RFC3339Nano)
				if !d.Now().Before(act.ExpiresAt) {
					st.Status = storage.StatusExpired
				}
			}
			st.Message = statusMessages[st.Status]
			ap, err := d.DB.Approval(ctx, act.ID)
			if err != nil {
				return nil, err
			}
			st.DecidedBy, st.Comment = ap.Approver, ap.Comment
			if ap.Approver != "" {
				switch st.Status {
				case storage.StatusDenied:
					st.Message = "A person reviewed it and denied it, so it will not happen. Their comment: " + ap.Comment
				case storage.StatusExecuted:
					st.Message = "A person approved it and it was carried out; see result."
				case storage.StatusFailed:
					st.Message = "A person approved it, but the system of record refused or failed; see error."
				}
			}
			return st, nil
		},
	}
}
