package tools

import (
	"context"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
)

// facts binds raw arguments and loads the attributes the rules test,
// exactly as the guard does before deciding.
func (s spec[A]) facts(ctx context.Context, d *Deps, args map[string]any) (map[string]any, error) {
	// The idempotency key is not an argument the rules see.
	rest, _, err := splitKey(args, policy.Tools[s.tool.Name].Action)
	if err != nil {
		return nil, err
	}
	var a A
	if err := bind(rest, &a, argNames(s.tool.InputSchema.Properties)); err != nil {
		return nil, err
	}
	if s.load == nil {
		return map[string]any{}, nil
	}
	attrs, err := s.load(ctx, d, &a)
	if err != nil {
		return nil, err
	}
	// Limits over time are counted in the gateway database as the attempt
	// is recorded; a dry run has no attempt, so it counts no past usage.
	if sc, ok := any(&a).(scoped); ok {
		if _, _, currency := sc.scope(); currency != "" {
			for k, v := range usageAttrs(storage.Usage{}, currency) {
				attrs[k] = v
			}
		}
	}
	return attrs, nil
}

// Facts returns the policy attributes for a call of tool with args, read
// from d's systems of record the same way the guard reads them, without
// deciding, recording or acting. `mandate policy explain` and `policy test`
// use it for dry runs against live data. Only d.Backend and d.Now are used:
// the usage attributes of limits over time (agent_refunded_24h and the
// like) are zero, as for an agent's first call.
func Facts(ctx context.Context, d *Deps, tool string, args map[string]any) (map[string]any, error) {
	if e, ok := lookup(tool); ok {
		return e.facts(ctx, withDefaults(d), args)
	}
	return nil, mandate.Errorf(mandate.ENOTFOUND, "unknown tool %q", tool)
}
