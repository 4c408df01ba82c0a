package policy_test

import (
	"context"
	"runtime"
	"testing"

	"github.com/mandatehq/mandate/policy"
)

// TestCheckCostIsLinearAndWithinLoad keeps `policy check` linear and
// within twice the cost of loading the same file (check is load plus lint,
// so lint may cost no more than load), on the shipped policy grown to
// 10,000 and to 100,000 rules by benchPolicy.
//
// It counts work instead of timing it, so that it cannot flake on a busy
// machine or under -race: heap allocations, which drive the CPU time and
// the garbage collection of both phases (the quadratic lint this replaced
// allocated hundreds of times what load does), and conditions evaluated,
// which must grow in step with the rules. BenchmarkLoad100k and
// BenchmarkCheck100k measure the time.
func TestCheckCostIsLinearAndWithinLoad(t *testing.T) {
	model := shippedSource(t, "model.conf")
	evals, allocs := map[int]int{}, map[int]uint64{}
	for _, n := range []int{10000, 100000} {
		src := benchPolicy(t, n)
		var p *policy.Policy
		var err error
		loadAllocs := mallocs(func() { p, err = policy.Load(model, src) })
		if err != nil {
			t.Fatal(err)
		}
		lintAllocs := mallocs(func() { evals[n], err = policy.LintEvals(p) })
		if err != nil {
			t.Fatal(err)
		}
		allocs[n] = lintAllocs
		t.Logf("%d rules: load %d allocations, lint %d allocations and %d evaluations", n, loadAllocs, lintAllocs, evals[n])
		if lintAllocs > loadAllocs {
			t.Errorf("%d rules: lint made %d allocations, load %d: check costs more than twice a load", n, lintAllocs, loadAllocs)
		}
		if perRule := evals[n] / n; perRule > 50 {
			t.Errorf("%d rules: %d conditions evaluated, %d a rule; want at most 50", n, evals[n], perRule)
		}
	}
	if allocs[100000] > 12*allocs[10000] {
		t.Errorf("10 times the rules took %d allocations to lint, %.1f times %d: not linear", allocs[100000], float64(allocs[100000])/float64(allocs[10000]), allocs[10000])
	}
	if evals[100000] > 12*evals[10000] {
		t.Errorf("10 times the rules took %d evaluations, %.1f times %d: not linear", evals[100000], float64(evals[100000])/float64(evals[10000]), evals[10000])
	}
}

// mallocs returns how many heap objects fn allocated.
func mallocs(fn func()) uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.Mallocs
	fn()
	runtime.ReadMemStats(&ms)
	return ms.Mallocs - before
}

// BenchmarkLoad100k loads the shipped rules plus generated teams, 100,000
// rules in all: the yardstick for BenchmarkCheck100k.
func BenchmarkLoad100k(b *testing.B) {
	model, pol := shippedSource(b, "model.conf"), benchPolicy(b, 100000)
	for b.Loop() {
		if _, err := policy.Load(model, pol); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheck100k is `policy check` on the same file: load and lint.
func BenchmarkCheck100k(b *testing.B) {
	model, pol := shippedSource(b, "model.conf"), benchPolicy(b, 100000)
	for b.Loop() {
		if p, _, err := policy.Check(context.Background(), model, pol); err != nil || p == nil {
			b.Fatal(err)
		}
	}
}
