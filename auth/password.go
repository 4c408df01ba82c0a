package auth

import (
	"bufio"
	_ "embed"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/mandatehq/mandate"
	"golang.org/x/crypto/bcrypt"
)

// MinPassword is the shortest password accepted, in characters.
const MinPassword = 12

//go:embed common-passwords.txt
var commonText string

// common is the shipped list of common passwords, read on first use.
var common = sync.OnceValue(func() map[string]bool {
	m := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(commonText))
	for sc.Scan() {
		if l := sc.Text(); l != "" && !strings.HasPrefix(l, "#") {
			m[l] = true
		}
	}
	return m
})

// CheckPassword says why password is too weak for user name, or returns
// nil: at least MinPassword characters, at most bcrypt's 72 bytes, not on
// the shipped list of common passwords (compared in lower case), not the
// name itself, and not a few characters repeated.
func CheckPassword(name, password string) error {
	lower := strings.ToLower(password)
	distinct := map[rune]bool{}
	for _, r := range password {
		distinct[r] = true
	}
	switch {
	case utf8.RuneCountInString(password) < MinPassword:
		return mandate.Errorf(mandate.EINVALID, "the password must be at least %d characters", MinPassword)
	case len(password) > 72:
		return mandate.Errorf(mandate.EINVALID, "the password is longer than bcrypt's 72 bytes")
	case common()[lower] || common()[strings.Join(strings.Fields(lower), "")]:
		return mandate.Errorf(mandate.EINVALID, "that password is on the list of common passwords; choose another")
	case name != "" && strings.Contains(lower, strings.ToLower(name)):
		return mandate.Errorf(mandate.EINVALID, "the password must not contain the user name")
	case len(distinct) < 5:
		return mandate.Errorf(mandate.EINVALID, "the password repeats too few different characters; choose another")
	}
	return nil
}

// HashPassword returns the bcrypt hash stored for a password.
func HashPassword(password string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	return string(h), err
}
