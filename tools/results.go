package tools

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/mcp"
)

// ActionResult is what every action tool returns.
type ActionResult struct {
	ActionID string `json:"action_id"`
	Decision string `json:"decision" jsonschema:"enum=allow,enum=deny,enum=require_approval"`
	Rule     string `json:"rule"`
	Status   string `json:"status"`
	Message  string `json:"message"`
	// Result is what the system of record returned: a refund, an order or
	// a customer, as in the lookups.
	Result map[string]any `json:"result,omitempty"`
	// Error is set when the action could not even be decided: not_found for
	// an unknown id (fix it and retry), unavailable for a failing backend.
	Error string `json:"error,omitempty"`
}

func pendingResult(act *storage.Action, what string) *mcp.CallToolResult {
	res := &ActionResult{ActionID: act.ID, Decision: act.Decision, Rule: act.Rule, Status: act.Status,
		Message: fmt.Sprintf("The %s needs a person's approval, so it has not happened yet. Tell the customer that a member of staff will review it and give them the reference %s. Check back with get_action_status(action_id=%q); the request expires at %s.",
			what, act.ID, act.ID, act.ExpiresAt.UTC().Format(time.RFC3339))}
	return mcp.NewToolResultStructured(res, res.Message)
}

func denyResult(act *storage.Action, what string, dec policy.Decision, loadErr error) *mcp.CallToolResult {
	why := "the rules do not allow it"
	if dec.Rule != nil {
		why = "the rules refuse it (" + dec.Rule.File + fmt.Sprintf(":%d)", dec.Rule.Line)
	}
	res := &ActionResult{ActionID: act.ID, Decision: act.Decision, Rule: act.Rule, Status: act.Status,
		Message: fmt.Sprintf("Refused: the %s was not done because %s. Retrying will not change this; tell the customer it cannot be done here and offer to pass it to a human agent.", what, why)}
	if loadErr != nil {
		// No facts, no action; but an unknown id is the agent's to fix.
		res.Error = mandate.ErrorCode(loadErr)
		res.Message = fmt.Sprintf("Not done: the %s could not be checked because %s.", what, mandate.ErrorMessage(loadErr))
		switch res.Error {
		case mandate.ENOTFOUND:
			res.Message += " Check the id (get_order, find_customer) and try again."
		case mandate.EDENIED, mandate.ECONFLICT:
			res.Message += " Nothing was changed, and retrying will not change this; tell the customer it cannot be done here and offer to pass it to a human agent."
		default:
			res.Message += " Nothing was changed; try again later."
		}
		// As every error result, the text is JSON with error and message
		// ({"error":"not_found","message":…}); the refusal was audited,
		// so it carries the action_id and decision too.
		r := structuredError(res)
		b, _ := json.Marshal(res)
		r.Content = []mcp.Content{mcp.NewTextContent(string(b))}
		return r
	}
	return structuredError(res)
}

// auditFailedResult refuses a call whose audit record could not be
// written: nothing was done or shown.
func auditFailedResult() *mcp.CallToolResult {
	return errorResult(mandate.Errorf(mandate.EUNAVAILABLE, "the audit trail could not be written, so nothing was done; try again later"))
}

func structuredError(res *ActionResult) *mcp.CallToolResult {
	r := mcp.NewToolResultStructured(res, res.Message)
	r.IsError = true
	return r
}

// ErrorResult is the body of a tool error that is not an action's
// decision: invalid arguments, an unknown id, a refused lookup.
type ErrorResult struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// errorResult turns an error into a tool result the agent can act on: its
// code and safe message, never internals. It is JSON text with no
// structuredContent, because structured content must match the tool's
// output schema, which describes success.
func errorResult(err error) *mcp.CallToolResult {
	b, _ := json.Marshal(ErrorResult{Error: mandate.ErrorCode(err), Message: mandate.ErrorMessage(err)})
	return mcp.NewToolResultError(string(b))
}

// cancelledResult answers a call the client cancelled before its attempt
// was recorded, and logs it to log. The client has stopped listening, but a
// proxy or log may not have: the answer says that nothing was done.
func cancelledResult(log *slog.Logger) *mcp.CallToolResult {
	log.Info("cancelled before the attempt was recorded; nothing done")
	return errorResult(mandate.Errorf(mandate.EUNAVAILABLE, "the call was cancelled before it was recorded, so nothing was done"))
}

// object turns a recorded JSON object into a map for structured content;
// anything else becomes nil.
func object(raw []byte) map[string]any {
	var m map[string]any
	if len(raw) == 0 || json.Unmarshal(raw, &m) != nil {
		return nil
	}
	return m
}
