package policy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Severities of a Finding. Only errors stop a policy from loading; warnings
// point at rules that do nothing or identities the rules forget; notes are
// for review (a role's rule that some member roles replace, by design).
const (
	SevError   = "error"
	SevWarning = "warning"
	SevNote    = "note"
)

// Finding is one thing `mandate policy check` reports, at file:line.
type Finding struct {
	File     string
	Line     int // 0 when the problem has no single line
	Severity string
	Message  string
}

func (f Finding) String() string {
	if f.Line > 0 {
		return fmt.Sprintf("%s:%d: %s: %s", f.File, f.Line, f.Severity, f.Message)
	}
	return fmt.Sprintf("%s: %s: %s", f.File, f.Severity, f.Message)
}

// Check loads a model and policy and lints what loaded. Everything Load
// refuses is an error (and then nothing else is checked, and the policy
// returned is nil); otherwise the findings are Lint's. It stops when ctx
// is done (`policy check` on SIGINT or SIGTERM) and returns ctx's error:
// Load itself cannot be interrupted, so it is left to finish on its own
// goroutine, which matters only to a caller that goes on running.
func Check(ctx context.Context, modelSrc, policySrc Source) (*Policy, []Finding, error) {
	type loaded struct {
		p   *Policy
		err error
	}
	done := make(chan loaded, 1)
	go func() {
		p, err := Load(modelSrc, policySrc)
		done <- loaded{p, err}
	}()
	var l loaded
	select {
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	case l = <-done:
	}
	if l.err != nil {
		return nil, loadFindings(l.err, modelSrc, policySrc), nil
	}
	findings, err := l.p.Lint(ctx)
	if err != nil {
		return nil, nil, err
	}
	return l.p, findings, nil
}

var problemAt = regexp.MustCompile(`^(.+?):(\d+): (.*)$`)

// loadFindings turns a load error into findings with file:line, finding
// the line for the few problems Load reports without one.
func loadFindings(err error, modelSrc, policySrc Source) []Finding {
	var le *LoadError
	if !errors.As(err, &le) {
		return []Finding{{File: policySrc.Name, Severity: SevError, Message: err.Error()}}
	}
	var out []Finding
	for _, problem := range le.Problems {
		if m := problemAt.FindStringSubmatch(problem); m != nil {
			line, _ := strconv.Atoi(m[2])
			out = append(out, Finding{File: m[1], Line: line, Severity: SevError, Message: m[3]})
			continue
		}
		if msg, ok := strings.CutPrefix(problem, modelSrc.Name+": "); ok {
			out = append(out, Finding{File: modelSrc.Name, Line: modelLine(modelSrc.Data, msg), Severity: SevError, Message: msg})
			continue
		}
		f := Finding{File: policySrc.Name, Severity: SevError, Message: problem}
		// "role chain from "X" is deeper than 10 or has a cycle": point at
		// X's first grant.
		if i := strings.IndexByte(problem, '"'); i >= 0 {
			if name, err := strconv.QuotedPrefix(problem[i:]); err == nil {
				name, _ = strconv.Unquote(name)
				if parsed, err := parse(policySrc); err == nil {
					for _, g := range parsed.grants {
						if g.Member == name {
							f.Line = g.Line
							break
						}
					}
				}
			}
		}
		out = append(out, f)
	}
	sortFindings(out)
	return out
}

// modelLine finds the line of model.conf a model problem is about: the
// definition itself, else its section header.
func modelLine(data []byte, msg string) int {
	var def, header string
	switch {
	case strings.HasPrefix(msg, "r must"):
		def, header = "r", "[request_definition]"
	case strings.HasPrefix(msg, "p must"):
		def, header = "p", "[policy_definition]"
	case strings.Contains(msg, "[matchers]"):
		def, header = "m", "[matchers]"
	default:
		return 0
	}
	headerLine := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		if key, _, ok := strings.Cut(l, "="); ok && strings.TrimSpace(key) == def {
			return n
		}
		if l == header && headerLine == 0 {
			headerLine = n
		}
	}
	return headerLine
}

// grantCycles returns each cycle in the g lines once, as the grants that
// form it, starting from its earliest line.
func grantCycles(grants []Grant) [][]Grant {
	from := map[string][]Grant{}
	for _, g := range grants {
		from[g.Member] = append(from[g.Member], g)
	}
	var out [][]Grant
	seen := map[string]bool{}
	var path []Grant
	onPath, done := map[string]bool{}, map[string]bool{}
	var walk func(n string)
	walk = func(n string) {
		if done[n] {
			// Walked from an earlier name: each back edge is found once,
			// and a wide role graph is walked in linear time.
			return
		}
		onPath[n] = true
		for _, g := range from[n] {
			path = append(path, g)
			if onPath[g.Role] {
				i := len(path) - 1
				for path[i].Member != g.Role {
					i--
				}
				c := slices.Clone(path[i:])
				first := 0
				for j := range c {
					if c[j].Line < c[first].Line {
						first = j
					}
				}
				c = append(c[first:], c[:first]...)
				key := fmt.Sprint(c[0].Line)
				if !seen[key] {
					seen[key] = true
					out = append(out, c)
				}
			} else {
				walk(g.Role)
			}
			path = path[:len(path)-1]
		}
		onPath[n], done[n] = false, true
	}
	names := make([]string, 0, len(from))
	for n := range from {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		walk(n)
	}
	return out
}

func cycleText(c []Grant) string {
	parts := []string{c[0].Member}
	for _, g := range c {
		parts = append(parts, fmt.Sprintf("%s (line %d)", g.Role, g.Line))
	}
	return strings.Join(parts, " -> ")
}

func sortFindings(fs []Finding) {
	sort.SliceStable(fs, func(i, j int) bool {
		if fs[i].File != fs[j].File {
			return fs[i].File < fs[j].File
		}
		return fs[i].Line < fs[j].Line
	})
}
