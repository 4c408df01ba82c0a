package policy

import "sync/atomic"

// Engine holds the live Policy and swaps in a new one atomically, so every
// decision sees one whole policy, never a half-loaded one.
type Engine struct {
	cur atomic.Pointer[Policy]
}

// NewEngine returns an Engine deciding with p.
func NewEngine(p *Policy) *Engine {
	e := &Engine{}
	e.cur.Store(p)
	return e
}

// Policy returns the live policy.
func (e *Engine) Policy() *Policy { return e.cur.Load() }

// Swap makes p the live policy for every decision that starts afterwards.
func (e *Engine) Swap(p *Policy) { e.cur.Store(p) }

// Decide decides req with the live policy.
func (e *Engine) Decide(req Request) Decision { return e.cur.Load().Decide(req) }
