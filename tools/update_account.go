package tools

import (
	"context"
	"net/mail"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/mcp"
)

type updateArgs struct {
	CustomerID string `json:"customer_id"`
	Field      string `json:"field"`
	Value      string `json:"value"`
	Reason     string `json:"reason"`
	// expected is a person's revert's precondition (revertStillDue), set
	// just before it is sent; never bound from arguments.
	expected string
}

func (a *updateArgs) expect(v string) { a.expected = v }

// validate checks the new value by field before anything is decided or
// recorded: a value the system of record would refuse must not wait in a
// person's queue, or be audited as allowed, only to fail later. The
// messages never repeat the value, which is personal data.
func (a *updateArgs) validate() error { return a.validateWith(validValue) }

// validateRevert is validate for a person's revert (see bindCall): the
// value it puts back, restore, is checked only by restorable; any other
// value as an agent's would be.
func (a *updateArgs) validateRevert(restore string) error {
	return a.validateWith(func(field, v string) error {
		if v == restore {
			return restorable(v)
		}
		return validValue(field, v)
	})
}

func (a *updateArgs) validateWith(check func(field, v string) error) error {
	if err := required("customer_id", a.CustomerID, 100); err != nil {
		return err
	}
	if !slices.Contains(backend.UpdatableFields, a.Field) {
		return mandate.Errorf(mandate.EINVALID, "field must be one of %s", strings.Join(backend.UpdatableFields, ", "))
	}
	if err := required("value", a.Value, 500); err != nil {
		return err
	}
	if err := check(a.Field, a.Value); err != nil {
		return err
	}
	return required("reason", a.Reason, maxText)
}

func updateAccount() entry {
	return spec[updateArgs]{
		tool: mcp.NewTool("update_account", options(actionHints(),
			mcp.WithTitleAnnotation("Change a customer's account details"),
			mcp.WithDescription("Change one contact detail on a customer's account: email, phone, shipping_address or name. "+
				"The operator's rules decide: \"allow\" means it was changed; \"require_approval\" means a person must approve it first (email changes usually do; give the customer the action_id); \"deny\" means it was refused. Send an idempotency_key: a retry with it can never act twice, and after a timeout or a cancelled call get_action_status(idempotency_key=...) tells you what happened."),
			mcp.WithString("customer_id", mcp.Required(), mcp.MaxLength(100), mcp.Description("The customer whose account changes, e.g. \"cus_ada\".")),
			mcp.WithString("field", mcp.Required(), mcp.Enum(backend.UpdatableFields...), mcp.Description("Which detail to change.")),
			mcp.WithString("value", mcp.Required(), mcp.MaxLength(500), mcp.Description("The new value: an email address such as \"ada@example.com\" (no display name); a phone number in E.164 form, \"+\" then the country code and number with no spaces, such as \"+441234567890\"; a postal address on one line, at most 300 characters; or a name, at most 100 characters. No control or invisible characters.")),
			mcp.WithString("reason", mcp.Required(), mcp.MaxLength(maxText), mcp.Description("Why the customer wants this change and how you confirmed it is them, in a sentence. A person reviewing the request reads it.")),
			idempotencyKeyArg(),
			mcp.WithOutputSchema[ActionResult](),
		)...),
		load: func(ctx context.Context, d *Deps, a *updateArgs) (map[string]any, error) {
			c, err := d.Backend.Customers.Customer(ctx, a.CustomerID)
			if err != nil {
				return nil, err
			}
			return map[string]any{"field": a.Field, "customer_age_days": ageDays(d.Now(), c.CreatedAt)}, nil
		},
		// The new value is personal data: it stays out of messages and logs.
		describe: func(a *updateArgs) string { return "change of " + a.Field + " on customer " + a.CustomerID },
		run: func(ctx context.Context, d *Deps, a *updateArgs, key string) (any, error) {
			c, err := d.Backend.Customers.UpdateCustomer(ctx, backend.UpdateRequest{
				CustomerID: a.CustomerID, Field: a.Field, Value: a.Value, Expected: a.expected, IdempotencyKey: key,
			})
			if err != nil {
				return nil, err
			}
			return customerView(c), nil
		},
		reconcile: func(ctx context.Context, d *Deps, act *storage.Action) (any, error) {
			c, err := d.Backend.Customers.UpdateByKey(ctx, act.ID)
			if err != nil {
				return nil, err
			}
			return customerView(c), nil
		},
	}
}

// e164 is a phone number in E.164 form: "+", a country code that does not
// start with 0, and at most 15 digits in all (at least 6, as the store asks).
var e164 = regexp.MustCompile(`^\+[1-9][0-9]{5,14}$`)

// Limits on the free-text fields, in characters: room for every real name
// and address, none for a payload.
const (
	maxName    = 100
	maxAddress = 300
)

// validValue checks a new account value for its field.
func validValue(field, v string) error {
	if mandate.HasHidden(v, false) {
		return mandate.Errorf(mandate.EINVALID, "value holds a control or invisible character; send the %s as plain text on one line", fieldLabel(field))
	}
	switch field {
	case backend.FieldEmail:
		if !validEmail(v) {
			return mandate.Errorf(mandate.EINVALID, "value is not an email address like name@example.com (one address, no display name, no spaces)")
		}
	case backend.FieldPhone:
		if !e164.MatchString(v) {
			return mandate.Errorf(mandate.EINVALID, "value is not a phone number in E.164 form: \"+\", the country code and the number, digits only, such as +441234567890")
		}
	case backend.FieldName:
		if err := checkText(v, "name", maxName, "'’-.,"); err != nil {
			return err
		}
	case backend.FieldShippingAddress:
		if err := checkText(v, "address", maxAddress, "'’-.,#/&()°:;"); err != nil {
			return err
		}
	}
	return nil
}

// restorable checks a value a revert puts back: one the system of record
// held and accepted, in whatever form it holds it. It is put back as it
// was, so the only refusal is what nobody should be shown on a screen or
// in an email: control and invisible characters.
func restorable(v string) error {
	if mandate.HasHidden(v, false) {
		return mandate.Errorf(mandate.EINVALID, "value holds a control or invisible character, which Mandate does not put back")
	}
	return nil
}

func fieldLabel(field string) string { return strings.ReplaceAll(field, "_", " ") }

// checkText checks a name or an address: no more than max characters, no
// spaces at either end or twice in a row, at least one letter, and only
// letters, marks, digits, spaces and the punctuation in punct, so that
// markup and template syntax never reach a person's screen or an email.
func checkText(v, what string, max int, punct string) error {
	if n := utf8.RuneCountInString(v); n > max {
		return mandate.Errorf(mandate.EINVALID, "value is %d characters long; a %s may have at most %d", n, what, max)
	}
	if strings.TrimSpace(v) != v || strings.Contains(v, "  ") {
		return mandate.Errorf(mandate.EINVALID, "value has spaces at its start or end, or two in a row; send the %s as it should be written", what)
	}
	letter := false
	for _, r := range v {
		switch {
		case unicode.IsLetter(r):
			letter = true
		case unicode.IsMark(r), unicode.IsDigit(r), r == ' ', strings.ContainsRune(punct, r):
		default:
			return mandate.Errorf(mandate.EINVALID, "value holds %s, which a %s may not contain; use letters, digits, spaces and %s", strconv.QuoteRune(r), what, strings.Join(strings.Split(punct, ""), " "))
		}
	}
	if !letter {
		return mandate.Errorf(mandate.EINVALID, "value has no letters, so it is not a %s", what)
	}
	return nil
}

// validEmail accepts an address as net/mail reads it (RFC 5322), with no
// display name, comment or angle brackets, and within the everyday subset
// that mail systems deliver: ASCII, a local part of at most 64 characters
// without quotes, and a domain name of at least two labels.
func validEmail(v string) bool {
	if len(v) > 254 {
		return false
	}
	a, err := mail.ParseAddress(v)
	if err != nil || a.Name != "" || a.Address != v {
		return false
	}
	local, domain, ok := strings.Cut(v, "@")
	if !ok || local == "" || len(local) > 64 || strings.Contains(domain, "@") {
		return false
	}
	for i := 0; i < len(local); i++ {
		c := local[i]
		if !(isAlnum(c) || strings.IndexByte("!#$%&'*+/=?^_`{|}~.-", c) >= 0) {
			return false
		}
	}
	if strings.HasPrefix(local, ".") || strings.HasSuffix(local, ".") || strings.Contains(local, "..") {
		return false
	}
	labels := strings.Split(domain, ".")
	if len(labels) < 2 || len(domain) > 253 {
		return false
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			if !(isAlnum(l[i]) || l[i] == '-') {
				return false
			}
		}
	}
	return !mandate.Digits(labels[len(labels)-1]) // a top-level domain is never a number
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
