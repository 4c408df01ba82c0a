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
	// is recorded. A dry run records nothing: with a database it reads the
	// counters as the guard would count them now for d.Agent; without one
	// it counts no past usage.
	if sc, ok := any(&a).(scoped); ok {
		if customer, amount, currency := sc.scope(); currency != "" {
			var u storage.Usage
			if d.DB != nil {
				u, err = d.DB.Usage(ctx, &storage.Action{Agent: d.Agent, Tool: s.tool.Name, CustomerID: customer, AmountMinor: amount, Currency: currency})
				if err != nil {
					return nil, err
				}
			}
			for k, v := range usageAttrs(u, currency) {
				attrs[k] = v
			}
		}
	}
	return attrs, nil
}

// Facts returns the policy attributes for a call of tool with args, read
// from d's systems of record the same way the guard reads them, without
// deciding, recording or acting. `mandate policy explain` and `policy test`
// use it for dry runs against live data. Only d.Backend, d.Now and d.Rates
// are used, and d.DB with d.Agent if set: then the usage attributes of
// limits over time (agent_refunded_24h and the like) are d.Agent's real
// counters in d.DB, as the guard would count them if the call were made
// now; with no d.DB they are zero, as for an agent's first call.
func Facts(ctx context.Context, d *Deps, tool string, args map[string]any) (map[string]any, error) {
	if e, ok := lookup(tool); ok {
		return e.facts(ctx, withDefaults(d), args)
	}
	return nil, mandate.Errorf(mandate.ENOTFOUND, "unknown tool %q", tool)
}
