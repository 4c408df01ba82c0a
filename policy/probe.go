package policy

import (
	"slices"

	"github.com/casbin/govaluate"
)

// maxProbes bounds the grid; a pair of conditions over more combinations is
// not judged.
const maxProbes = 20000

// probeValues are the values every text attribute is tried with besides
// the conditions' own literals and "" and "other". A value no condition
// names behaves like "other", so a few real values are enough.
var probeValues = map[string][]string{
	AttrOrderStatus: AttrValues[AttrOrderStatus],
	AttrCurrency:    {"USD", "EUR", "GBP", "JPY"},
	AttrField:       AttrValues[AttrField],
}

// prober judges conditions by evaluating them over a grid of values (see
// Lint). It remembers every answer by condition text, so a policy that
// repeats a condition for many roles pays for it once, walks the grid with
// one reused map instead of building every combination first, and judges
// a pair of conditions over different attributes from what it knows of
// each alone: together these keep `policy check` linear in the rules.
type prober struct {
	conds map[string]*govaluate.EvaluableExpression
	info  map[string]*condInfo
	impl  map[[2]string]bool // (a, b) → implies(a, b)
	m     map[string]any     // the attributes being tried, reused
	evals int                // conditions evaluated, for the cost test
	boxed map[float64]any    // numbers as interface values, boxed once
}

// condInfo is what the prober knows of one condition.
type condInfo struct {
	ok            bool // compiled, and its grid is small enough
	vars          []string
	nums          []float64
	strs          []string
	grid          probeAxes
	never, always bool // false, or true, on every probe
	// A probe where the condition held and one where it did not: values
	// of vars, to refute "a implies b" before walking a grid of both.
	truePt, falsePt []any
}

type probeAxes struct {
	names []string
	axes  [][]any
	ok    bool
}

func newProber(conds map[string]*govaluate.EvaluableExpression) *prober {
	m := make(map[string]any, len(sampleAttrs))
	for k, v := range sampleAttrs {
		m[k] = v
	}
	return &prober{conds: conds, info: map[string]*condInfo{}, impl: map[[2]string]bool{}, m: m, boxed: map[float64]any{}}
}

// condInfo reads a condition's variables and literals once, and probes it
// alone: whether it is false, or true, for every value tried.
func (pr *prober) condInfo(cond string) *condInfo {
	if ci, ok := pr.info[cond]; ok {
		return ci
	}
	ci := &condInfo{}
	pr.info[cond] = ci
	expr := pr.conds[cond]
	if expr == nil {
		return ci
	}
	for _, tok := range expr.Tokens() {
		switch tok.Kind {
		case govaluate.VARIABLE:
			ci.vars = append(ci.vars, tok.Value.(string))
		case govaluate.NUMERIC:
			if f, ok := tok.Value.(float64); ok {
				ci.nums = append(ci.nums, f-1, f-0.01, f, f+0.01, f+1)
			}
		case govaluate.STRING:
			if s, ok := tok.Value.(string); ok {
				ci.strs = append(ci.strs, s)
			}
		}
	}
	slices.Sort(ci.vars)
	ci.vars = slices.Compact(ci.vars)
	ci.grid = pr.makeGrid(ci.vars, ci.nums, ci.strs)
	if ci.ok = ci.grid.ok; !ci.ok {
		return ci
	}
	some, all := false, true
	point := func(m map[string]any) []any {
		pt := make([]any, len(ci.vars))
		for i, v := range ci.vars {
			pt[i] = m[v]
		}
		return pt
	}
	pr.each(ci.grid, func(m map[string]any) bool {
		if pr.holds(cond, m) {
			if !some {
				ci.truePt = point(m)
			}
			some = true
		} else {
			if all {
				ci.falsePt = point(m)
			}
			all = false
		}
		return !some || all // stop once it is neither never nor always true
	})
	ci.never, ci.always = !some, all
	return ci
}

// makeGrid returns the values each of vars takes: around every number
// literal (c-1, c-0.01, c, c+0.01, c+1, and 0, 1, -1, 10^9), and every text
// literal plus the known values. ok is false when the grid would exceed
// maxProbes.
func (pr *prober) makeGrid(vars []string, literals []float64, strs []string) probeAxes {
	g := probeAxes{names: vars, axes: make([][]any, len(vars)), ok: true}
	var nums []any // the same values for every number attribute
	total := 1
	for i, v := range vars {
		switch sampleAttrs[v].(type) {
		case float64:
			if nums == nil {
				fs := make([]float64, 0, len(literals)+4)
				fs = append(append(fs, literals...), 0, 1, -1, 1e9)
				slices.Sort(fs)
				fs = slices.Compact(fs)
				nums = make([]any, len(fs))
				for j, f := range fs {
					b, ok := pr.boxed[f]
					if !ok {
						b = f
						pr.boxed[f] = b
					}
					nums[j] = b
				}
			}
			g.axes[i] = nums
		default:
			// The shared base values, copied only when a literal adds one.
			axis := textAxes[v]
			for _, s := range strs {
				if !slices.Contains(axis, any(s)) {
					if len(axis) == len(textAxes[v]) {
						axis = slices.Clip(axis)
					}
					axis = append(axis, s)
				}
			}
			g.axes[i] = axis
		}
		total *= len(g.axes[i])
		if total > maxProbes {
			return probeAxes{}
		}
	}
	return g
}

// textAxes are the values every text attribute is probed with before a
// condition's own literals: "", "other" and probeValues. Only read.
var textAxes = func() map[string][]any {
	out := map[string][]any{}
	for name, v := range sampleAttrs {
		if _, ok := v.(string); !ok {
			continue
		}
		axis := []any{"", "other"}
		for _, s := range probeValues[name] {
			axis = append(axis, s)
		}
		out[name] = axis
	}
	return out
}()

// each calls fn with every combination of g's values (other attributes at
// their sample values) until fn returns false. The map is reused: fn must
// not keep it.
func (pr *prober) each(g probeAxes, fn func(m map[string]any) bool) {
	m := pr.m
	defer func() {
		for _, v := range g.names {
			m[v] = sampleAttrs[v]
		}
	}()
	idx := make([]int, len(g.names))
	for {
		for i, v := range g.names {
			m[v] = g.axes[i][idx[i]]
		}
		if !fn(m) {
			return
		}
		k := len(idx) - 1
		for ; k >= 0; k-- {
			idx[k]++
			if idx[k] < len(g.axes[k]) {
				break
			}
			idx[k] = 0
		}
		if k < 0 {
			return
		}
	}
}

func (pr *prober) holds(cond string, attrs map[string]any) bool {
	pr.evals++
	out, err := pr.conds[cond].Evaluate(attrs)
	b, _ := out.(bool)
	return err == nil && b
}

// neverTrue reports whether cond is false for every probe; ok is false when
// it could not be judged.
func (pr *prober) neverTrue(cond string) (never, ok bool) {
	ci := pr.condInfo(cond)
	return ci.never, ci.ok
}

// implies reports whether b holds on every probe where a holds, and a
// holds on at least one.
func (pr *prober) implies(a, b string) bool {
	ca, cb := pr.condInfo(a), pr.condInfo(b)
	if !ca.ok || !cb.ok || ca.never || cb.never {
		return false
	}
	if cb.always {
		return true
	}
	// Over different attributes, b must hold whatever a's attributes are:
	// b is always true, answered above.
	shared := false
	for _, v := range ca.vars {
		if _, found := slices.BinarySearch(cb.vars, v); found {
			shared = true
			break
		}
	}
	if !shared {
		return false
	}
	// Where a held alone, try b's other attributes over their own values:
	// usually enough to show that b can fail where a holds, at the cost of
	// one attribute's values rather than a grid of all of them.
	var only []string
	for _, v := range cb.vars {
		if _, found := slices.BinarySearch(ca.vars, v); !found {
			only = append(only, v)
		}
	}
	refuted := false
	if len(only) == 0 {
		for i, v := range ca.vars {
			pr.m[v] = ca.truePt[i]
		}
		refuted = !pr.holds(b, pr.m)
		for _, v := range ca.vars {
			pr.m[v] = sampleAttrs[v]
		}
	} else if g := pr.makeGrid(only, slices.Concat(ca.nums, cb.nums), slices.Concat(ca.strs, cb.strs)); g.ok {
		for i, v := range ca.vars {
			pr.m[v] = ca.truePt[i]
		}
		pr.each(g, func(m map[string]any) bool {
			refuted = !pr.holds(b, m)
			return !refuted
		})
		for _, v := range ca.vars {
			pr.m[v] = sampleAttrs[v]
		}
	}
	if refuted {
		return false
	}
	// The whole grid, for the few pairs that get this far; the answer is
	// kept, as a policy that repeats conditions asks again.
	key := [2]string{a, b}
	if v, done := pr.impl[key]; done {
		return v
	}
	vars := slices.Concat(ca.vars, cb.vars)
	slices.Sort(vars)
	g := pr.makeGrid(slices.Compact(vars), slices.Concat(ca.nums, cb.nums), slices.Concat(ca.strs, cb.strs))
	if !g.ok {
		return false
	}
	some, all := false, true
	pr.each(g, func(m map[string]any) bool {
		if pr.holds(a, m) {
			some = true
			if !pr.holds(b, m) {
				all = false
			}
		}
		return all
	})
	pr.impl[key] = some && all
	return some && all
}
