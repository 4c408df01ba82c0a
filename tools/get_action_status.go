package tools

import (
	"context"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/mcp"
)

type actionIDArgs struct {
	ActionID string `json:"action_id"`
}

func (a *actionIDArgs) validate() error { return required("action_id", a.ActionID, 100) }

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
	ExpiresAt *time.Time     `json:"expires_at,omitempty"`
	// DecidedBy and Comment are the person who approved or denied it, and
	// what they said; pass a denial's comment on to the customer.
	DecidedBy string `json:"decided_by,omitempty"`
	Comment   string `json:"comment,omitempty"`
	Message   string `json:"message"`
}

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
			mcp.WithDescription("Check on one of your earlier actions by its action_id, e.g. one waiting for a person's approval: pending, approved, denied, expired, executed (with the result) or failed (with the error). You can only see actions you made."),
			mcp.WithString("action_id", mcp.Required(), mcp.MaxLength(100), mcp.Description("The action_id an action tool returned, e.g. \"act_3f2a…\".")),
			mcp.WithOutputSchema[ActionStatus](),
		)...),
		describe: func(a *actionIDArgs) string { return "status check of " + a.ActionID },
		run: func(ctx context.Context, d *Deps, a *actionIDArgs, _ string) (any, error) {
			act, err := d.DB.Action(ctx, a.ActionID)
			if err != nil {
				return nil, err
			}
			if act.Agent != d.identity(ctx) {
				// Another agent's action does not exist as far as this one knows.
				return nil, mandate.Errorf(mandate.ENOTFOUND, "no action %q", a.ActionID)
			}
			st := ActionStatus{
				ActionID: act.ID, Tool: act.Tool, Status: act.Status, Decision: act.Decision, Rule: act.Rule,
				Args: object(act.Args), Result: object(act.Result), Error: act.Error, CreatedAt: act.CreatedAt, UpdatedAt: act.UpdatedAt,
			}
			if act.Status == storage.StatusPending {
				exp := act.ExpiresAt
				st.ExpiresAt = &exp
				if !d.Now().Before(exp) {
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
