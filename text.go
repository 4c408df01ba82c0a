package mandate

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Text that agents and customers supply (reasons, names, addresses) is shown
// to the people who approve and audit actions. Bidi controls can make
// "approve 75.00" read as something else, C1 controls drive terminals, and
// zero-width characters hide differences between names. The functions here
// make such characters visible instead of acting on them.

// hidden reports whether r changes how text around it is shown, or is not
// shown at all: C0 and C1 controls (except the ones a caller allows), bidi
// embeddings, overrides and isolates, and every other Unicode format
// character (zero-width spaces and joiners, the byte-order mark, invisible
// operators, tag characters).
func hidden(r rune) bool {
	switch {
	case r == utf8.RuneError:
		return true
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case unicode.Is(unicode.Cf, r):
		return true // includes U+200B–U+200F, U+202A–U+202E, U+2060–U+2069, U+FEFF, tags
	case unicode.Is(unicode.Zl, r), unicode.Is(unicode.Zp, r):
		return true
	case r == 0x115f, r == 0x1160, r == 0x3164, r == 0xffa0: // Hangul fillers render as blanks
		return true
	case unicode.In(r, unicode.Variation_Selector):
		return true
	}
	return false
}

// Visible returns s with every hidden character replaced by a visible
// escape such as ⟨U+202E⟩, so that a person sees exactly what was sent.
// Newlines and tabs are kept only when keepLines is true (multi-line text
// in a web page); in one-line output (a terminal table) they are escaped
// too. Invalid UTF-8 bytes are shown as ⟨0xFF⟩.
func Visible(s string, keepLines bool) string {
	if !HasHidden(s, keepLines) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, "⟨0x%02X⟩", s[i])
		case keepLines && (r == '\n' || r == '\t'):
			b.WriteRune(r)
		case hidden(r):
			fmt.Fprintf(&b, "⟨U+%04X⟩", r)
		default:
			b.WriteRune(r)
		}
		i += size
	}
	return b.String()
}

// HasHidden reports whether Visible would change s: whether the text holds
// characters that a person would not see as they are. Pages mark such text
// as suspicious.
func HasHidden(s string, keepLines bool) bool {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size <= 1 {
			return true
		}
		if hidden(r) && !(keepLines && (r == '\n' || r == '\t')) {
			return true
		}
		i += size
	}
	return false
}

// Truncate cuts s to at most n runes, adding "…" when it cut: it never
// splits a character in two, as cutting bytes would.
func Truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	i := 0
	for j := range s {
		if i == n {
			return s[:j] + "…"
		}
		i++
	}
	return s
}

// TruncateBytes cuts s to at most n bytes, adding "…" when it cut, at a
// character boundary: for text whose size is bounded in bytes (an error
// echoing an agent's or a service's input), never split into invalid
// UTF-8.
func TruncateBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// NameProblem says what is wrong with a name that identifies a person or
// an agent (a policy identity, a web user), or "" when nothing is. Names
// are compared by people in policy files, queues and audit records, so a
// name must not hide characters, and must not mix letters that look alike
// across scripts: "аlice" with a Cyrillic а is not alice.
func NameProblem(name string) string {
	if name == "" {
		return "the name is empty"
	}
	for _, r := range name {
		switch {
		case hidden(r) || unicode.IsSpace(r):
			return fmt.Sprintf("the name holds an invisible or control character (%s)", Visible(string(r), false))
		case r > unicode.MaxASCII && confusable[r] != "":
			return fmt.Sprintf("the name holds %q (U+%04X), which looks like %q", r, r, confusable[r])
		case r > unicode.MaxASCII:
			return fmt.Sprintf("the name holds the non-ASCII character %q (U+%04X); use letters a-z, digits and . _ - @", r, r)
		case !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-@", r)):
			return fmt.Sprintf("the name holds %q; use letters a-z, digits and . _ - @", r)
		}
	}
	return ""
}

// Skeleton maps a name to a form in which names that people could mistake
// for each other are equal: case folded, lookalike letters from other
// scripts and lookalike punctuation mapped to ASCII, and a few ASCII
// sequences that read alike ("rn" and "m", "0" and "o", "1", "l" and "I")
// merged. Two different names with one skeleton are confusable. It follows
// the idea of Unicode TS #39 with a small table of the characters that
// matter in identity names, not the whole confusables file.
func Skeleton(name string) string {
	var b strings.Builder
	for _, r := range name {
		if hidden(r) {
			continue // invisible: not seen, so not part of what people compare
		}
		if s, ok := confusable[r]; ok {
			b.WriteString(s)
			continue
		}
		b.WriteRune(unicode.ToLower(r))
	}
	s := b.String()
	s = strings.NewReplacer("rn", "m", "vv", "w", "0", "o", "1", "l", "i", "l", "|", "l", "_", "-", ".", "-").Replace(s)
	return s
}

// confusable maps characters that look like ASCII letters, digits or
// punctuation to what they look like.
var confusable = map[rune]string{
	// Cyrillic
	'а': "a", 'в': "b", 'е': "e", 'ё': "e", 'к': "k", 'м': "m", 'н': "h", 'о': "o", 'р': "p", 'с': "c", 'т': "t", 'у': "y", 'х': "x",
	'ѕ': "s", 'і': "i", 'ї': "i", 'ј': "j", 'ԁ': "d", 'ԛ': "q", 'ԝ': "w", 'ɡ': "g", 'һ': "h", 'ӏ': "l",
	'А': "a", 'В': "b", 'Е': "e", 'К': "k", 'М': "m", 'Н': "h", 'О': "o", 'Р': "p", 'С': "c", 'Т': "t", 'Х': "x", 'У': "y",
	'Ѕ': "s", 'І': "i", 'Ј': "j",
	// Greek
	'α': "a", 'ο': "o", 'ν': "v", 'ρ': "p", 'τ': "t", 'υ': "u", 'ι': "i", 'κ': "k", 'χ': "x",
	'Α': "a", 'Β': "b", 'Ε': "e", 'Ζ': "z", 'Η': "h", 'Ι': "i", 'Κ': "k", 'Μ': "m", 'Ν': "n", 'Ο': "o", 'Ρ': "p", 'Τ': "t", 'Υ': "y", 'Χ': "x",
	// Latin lookalikes
	'ı': "i", 'ſ': "s", 'ℓ': "l", 'ⅰ': "i", 'ⅼ': "l", 'K': "k", 'Å': "a",
	// dashes, dots and other punctuation
	'‐': "-", '‑': "-", '‒': "-", '–': "-", '—': "-", '―': "-", '−': "-", '﹣': "-", '－': "-",
	'․': ".", '‧': ".", '。': ".", '．': ".", '＿': "_", '＠': "@",
}

func init() {
	// Fullwidth ASCII (ａ, Ａ, ０ …) looks like ASCII.
	for r := rune('!'); r <= '~'; r++ {
		confusable[r+0xfee0] = strings.ToLower(string(r))
	}
}

// quoted is a double-quoted string as %q writes it.
var quoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

// Unquoted replaces each double-quoted string in s with "…": for logging an
// error that quotes what an agent or a service sent (an email passed as an
// order id, a bad amount), since logs carry no personal data. The agent's
// answer and the audit record keep the whole message.
func Unquoted(s string) string { return quoted.ReplaceAllString(s, `"…"`) }
