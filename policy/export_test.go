package policy

import "context"

// LintEvals runs Lint and returns how many times it evaluated a condition,
// the unit of its work that grew with the square of the rules before.
func LintEvals(p *Policy) (int, error) {
	l, err := p.lint(context.Background())
	if err != nil {
		return 0, err
	}
	return l.pr.evals, nil
}
