package mandate

import (
	"errors"
	"fmt"
)

// Error codes. Each maps to something an agent can act on: fix its input,
// pick another id, stop, or try again later.
const (
	EINVALID     = "invalid"     // the arguments are wrong; fixing them may help
	ENOTFOUND    = "not_found"   // no such order, customer or action
	EDENIED      = "denied"      // the rules refuse it; retrying will not help
	ECONFLICT    = "conflict"    // the system of record refuses it in its current state
	EUNAVAILABLE = "unavailable" // a dependency failed; nothing happened, try later
	EINTERNAL    = "internal"    // a bug; details are in the server log only
)

// Error is an error whose Message is safe to show to an agent and a customer.
// Internal details belong in the log, never in Message.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Errorf returns an *Error with the given code and formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of err, EINTERNAL for errors that carry none,
// and "" for nil.
func ErrorCode(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the message of err that is safe to show, or a generic
// one for errors that carry no code.
func ErrorMessage(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Message
	}
	return "internal error; the operator can find details in the server log"
}
