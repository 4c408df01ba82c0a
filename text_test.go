package mandate

import (
	"testing"
	"unicode/utf8"
)

func TestVisible(t *testing.T) {
	for _, c := range []struct {
		in        string
		keepLines bool
		want      string
	}{
		{"refund 75.00", false, "refund 75.00"},
		{"is OK \u202erefund 75.00", false, "is OK ⟨U+202E⟩refund 75.00"},
		{"csi \u009b31m red", false, "csi ⟨U+009B⟩31m red"},
		{"esc \x1b[2J", false, "esc ⟨U+001B⟩[2J"},
		{"two\nlines\tx", true, "two\nlines\tx"},
		{"two\nlines", false, "two⟨U+000A⟩lines"},
		{"zero\u200bwidth", true, "zero⟨U+200B⟩width"},
		{"bad \xff byte", false, "bad ⟨0xFF⟩ byte"},
		{"Grüße, 東京", false, "Grüße, 東京"},
	} {
		if got := Visible(c.in, c.keepLines); got != c.want {
			t.Errorf("Visible(%q, %v) = %q, want %q", c.in, c.keepLines, got, c.want)
		}
		if got, want := HasHidden(c.in, c.keepLines), c.in != c.want; got != want {
			t.Errorf("HasHidden(%q, %v) = %v, want %v", c.in, c.keepLines, got, want)
		}
	}
}

func TestTruncateCutsRunes(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"東京東京東京", 3, "東京東…"},
		{"abcdef", 3, "abc…"},
		{"abc", 3, "abc"},
	} {
		if got := Truncate(c.in, c.n); got != c.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}

func TestNameProblem(t *testing.T) {
	for _, ok := range []string{"alice", "demo-agent", "senior.bot", "ops@example.com", "bob_2"} {
		if p := NameProblem(ok); p != "" {
			t.Errorf("NameProblem(%q) = %q, want none", ok, p)
		}
	}
	for _, bad := range []string{"", "\u0430lice", "demo\u2010agent", "al\u200bice", "a b", "<b>x</b>", "ali\u202ece", "ｂｏｂ", "ałice"} {
		if p := NameProblem(bad); p == "" {
			t.Errorf("NameProblem(%q) = none, want a problem", bad)
		}
	}
}

func TestSkeleton(t *testing.T) {
	same := [][2]string{
		{"alice", "\u0430lice"},
		{"demo-agent", "demo\u2010agent"},
		{"demo-agent", "demo_agent"},
		{"bob", "B0B"},
		{"admin", "adrnin"},
		{"alice", "al\u200bice"},
		{"bob", "ｂｏｂ"},
		{"paypal", "paypa1"},
	}
	for _, p := range same {
		if Skeleton(p[0]) != Skeleton(p[1]) {
			t.Errorf("Skeleton(%q) = %q, Skeleton(%q) = %q: want equal", p[0], Skeleton(p[0]), p[1], Skeleton(p[1]))
		}
	}
	for _, p := range [][2]string{{"alice", "bob"}, {"demo-agent", "senior-bot"}, {"ann", "anna"}} {
		if Skeleton(p[0]) == Skeleton(p[1]) {
			t.Errorf("Skeleton(%q) == Skeleton(%q): want different", p[0], p[1])
		}
	}
}

func TestTruncateBytesKeepsCharactersWhole(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"abcdef", 3, "abc…"},
		{"aé", 2, "a…"}, // é is two bytes: not split
		{"東京", 4, "東…"}, // 東 is three bytes
		{"東京", 6, "東京"},
	} {
		got := TruncateBytes(c.in, c.n)
		if got != c.want || !utf8.ValidString(got) {
			t.Errorf("TruncateBytes(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}

func TestUnquoted(t *testing.T) {
	for in, want := range map[string]string{
		`no order with id "grace@example.com"`:         `no order with id "…"`,
		`amount "a \"b\" c" is not a decimal; see "x"`: `amount "…" is not a decimal; see "…"`,
		`nothing quoted`: `nothing quoted`,
		`unknown argument "ünïcode\u202e" and "" at end`: `unknown argument "…" and "…" at end`,
	} {
		if got := Unquoted(in); got != want {
			t.Errorf("Unquoted(%q) = %q, want %q", in, got, want)
		}
	}
}
