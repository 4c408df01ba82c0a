package httpapi

import (
	"testing"
	"unicode/utf8"
)

// TestTruncateKeepsCharactersWhole: a service's error text is cut to a byte
// bound without splitting a character.
func TestTruncateKeepsCharactersWhole(t *testing.T) {
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
		got := truncate(c.in, c.n)
		if got != c.want || !utf8.ValidString(got) {
			t.Errorf("truncate(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}
