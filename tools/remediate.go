package tools

import (
	"context"
)

// revertKey marks, in a context only tools.Remediate makes, that the call
// is a person's revert of an agent's action (whose id it holds). Tool
// arguments never carry it, so no agent can make its call a revert.
type revertKey struct{}

func withRevert(ctx context.Context, actionID string) context.Context {
	return context.WithValue(ctx, revertKey{}, actionID)
}

// RevertAttr is the fact recorded with a revert's attempt: the id of the
// action it reverts.
const RevertAttr = "reverts"

// revertTool is the policy tool that decides a call of tool name: the
// name itself, or for a revert of an update_account,
// revert_update_account, whose attributes then also record which action
// it reverts.
func revertTool(ctx context.Context, name string, attrs map[string]any) string {
	id, _ := ctx.Value(revertKey{}).(string)
	if id == "" || name != "update_account" {
		return name
	}
	if attrs != nil {
		attrs[RevertAttr] = id
	}
	return "revert_" + name
}
