package tools

import "time"

// Observer is told, for metrics, what the guard decided and how long each
// tool call took. The tools package does not know who listens (telemetry
// implements it in cmd); methods must be cheap and safe for concurrent use.
type Observer interface {
	// Decision is called once per call whose decision was recorded in the
	// audit trail: effect is the policy effect recorded (allow, deny,
	// require_approval). Replays of an idempotent retry decide nothing and
	// are not counted.
	Decision(tool, effect string)
	// ToolCall is called when a call returns, whatever its result.
	ToolCall(tool string, d time.Duration)
}

// nopObserver is the Observer of a Deps that has none: stdio without
// metrics and tests pay nothing.
type nopObserver struct{}

func (nopObserver) Decision(string, string)        {}
func (nopObserver) ToolCall(string, time.Duration) {}

// observer is d.Observer, or one that does nothing.
func (d *Deps) observer() Observer {
	if d.Observer == nil {
		return nopObserver{}
	}
	return d.Observer
}

// timeCall starts timing a call of tool; the returned func reports it.
// Wall-clock time, not d.Now, which tests fix.
func (d *Deps) timeCall(tool string) func() {
	o := d.observer()
	start := time.Now()
	return func() { o.ToolCall(tool, time.Since(start)) }
}
