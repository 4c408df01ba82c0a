-- The policy tool that decided an action, when it is not the action's own
-- tool: a person's revert of an agent's account change is an update_account
-- action decided as revert_update_account (tools/remediate.go). Approving
-- or recovering such an action decides it again, and must ask the same
-- policy tool: asked as update_account, a revert that needed approval was
-- always denied. Set by the guard, never from what a caller sends; empty
-- for every other action.
ALTER TABLE actions ADD COLUMN policy_tool TEXT NOT NULL DEFAULT '';
