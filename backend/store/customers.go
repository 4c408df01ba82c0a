package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/mail"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
)

// maxFieldLen bounds every customer field, in characters.
const maxFieldLen = 500

var phonePattern = regexp.MustCompile(`^\+?[0-9 ()-]{6,20}$`)

// Customer returns the customer with id, or not_found.
func (s *Store) Customer(ctx context.Context, id string) (backend.Customer, error) {
	q, done := s.warm()
	defer done()
	return findCustomer(ctx, q, "id", id)
}

// CustomerByEmail returns the customer whose email matches, ignoring case, as
// people type addresses in any case.
func (s *Store) CustomerByEmail(ctx context.Context, email string) (backend.Customer, error) {
	return findCustomer(ctx, s.rd, "email", strings.TrimSpace(email)) // email is COLLATE NOCASE
}

// UpdateCustomer sets one field of backend.UpdatableFields. A repeat with the
// same idempotency key returns the customer as the first call left it and
// changes nothing, even if the account changed since. With req.Expected,
// the field's value is compared inside the write transaction (BEGIN
// IMMEDIATE, so no other writer, in any process, can change it between
// the comparison and the write) and a mismatch changes nothing.
func (s *Store) UpdateCustomer(ctx context.Context, req backend.UpdateRequest) (backend.Customer, error) {
	if err := requireKey(req.IdempotencyKey); err != nil {
		return backend.Customer{}, err
	}
	value := strings.TrimSpace(req.Value)
	if err := validateField(req.Field, value); err != nil {
		return backend.Customer{}, err
	}
	dig := digest(kindUpdateCustomer, struct{ CustomerID, Field, Value string }{req.CustomerID, req.Field, value})
	if req.Expected != "" {
		// Only then, so that the keys recorded before preconditions existed
		// keep their digests: a precondition is part of the request, and
		// the same key with another one is another request.
		dig = digest(kindUpdateCustomer, struct{ CustomerID, Field, Value, Expected string }{req.CustomerID, req.Field, value, req.Expected})
	}

	tx, end, err := s.beginWrite(ctx)
	if err != nil {
		return backend.Customer{}, dbError(err)
	}
	defer end()

	var c backend.Customer
	if done, err := findOperation(ctx, tx, req.IdempotencyKey, kindUpdateCustomer, dig, &c); err != nil || done {
		return c, err
	}
	if err := s.checkDeadline(req.NotAfter); err != nil {
		return backend.Customer{}, err
	}
	if c, err = findCustomer(ctx, tx, "id", req.CustomerID); err != nil {
		return backend.Customer{}, err
	}
	if cur, _ := c.Field(req.Field); req.Expected != "" && cur != req.Expected {
		// The value is personal data: the message quotes neither.
		return backend.Customer{}, fmt.Errorf("%w: %w", mandate.Errorf(mandate.ECONFLICT,
			"the %s is no longer the expected value: it was changed since, and this change would overwrite it", fieldName(req.Field)), backend.ErrChangedSince)
	}
	if req.Field == backend.FieldEmail {
		if err := emailFree(ctx, tx, value, c.ID); err != nil {
			return backend.Customer{}, err
		}
	}

	if _, err := tx.ExecContext(ctx, updateCustomerQuery(req.Field), value, c.ID); err != nil {
		return backend.Customer{}, dbError(err)
	}
	setCustomerField(&c, req.Field, value)
	if err := recordOperation(ctx, tx, req.IdempotencyKey, kindUpdateCustomer, dig, c, s.now()); err != nil {
		return backend.Customer{}, err
	}
	if err := tx.Commit(); err != nil {
		return backend.Customer{}, dbError(err)
	}
	return c, nil
}

func setCustomerField(c *backend.Customer, field, value string) {
	switch field {
	case backend.FieldEmail:
		c.Email = value
	case backend.FieldPhone:
		c.Phone = value
	case backend.FieldShippingAddress:
		c.ShippingAddress = value
	case backend.FieldName:
		c.Name = value
	}
}

func fieldName(field string) string { return strings.ReplaceAll(field, "_", " ") }

// updateCustomerQuery sets one column of a customer. The column name comes
// from backend.UpdatableFields, checked by validateField, never from input.
func updateCustomerQuery(field string) string {
	return `UPDATE customers SET ` + field + ` = ? WHERE id = ?`
}

// validateField checks a new value for a customer field. Import applies the
// same rules, so no path can store what an update would refuse.
func validateField(field, value string) error {
	if !slices.Contains(backend.UpdatableFields, field) {
		return mandate.Errorf(mandate.EINVALID, "field %q cannot be changed; use one of %s",
			field, strings.Join(backend.UpdatableFields, ", "))
	}
	if value == "" {
		return mandate.Errorf(mandate.EINVALID, "%s must not be empty", field)
	}
	if n := utf8.RuneCountInString(value); n > maxFieldLen {
		return mandate.Errorf(mandate.EINVALID, "%s is %d characters long; at most %d are allowed", field, n, maxFieldLen)
	}
	switch field {
	case backend.FieldEmail:
		if a, err := mail.ParseAddress(value); err != nil || a.Name != "" || a.Address != value {
			// The value is personal data: the message does not repeat it.
			return mandate.Errorf(mandate.EINVALID, "email is not an email address like name@example.com")
		}
	case backend.FieldPhone:
		if !phonePattern.MatchString(value) {
			return mandate.Errorf(mandate.EINVALID,
				"phone is not a phone number: use 6 to 20 digits, spaces, brackets or dashes, optionally starting with +")
		}
	}
	return nil
}

// emailFree refuses an email another customer already uses, ignoring case,
// because CustomerByEmail must find exactly one account. The message does
// not name the other account.
func emailFree(ctx context.Context, tx writeTx, email, customerID string) error {
	var n int
	if err := tx.QueryRowContext(ctx, qEmailTaken, email, customerID).Scan(&n); err != nil {
		return dbError(err)
	} else if n > 0 {
		return mandate.Errorf(mandate.ECONFLICT, "another customer account already uses that email")
	}
	return nil
}

// findCustomer reads the customer whose column (id or email, both unique)
// equals value, or returns not_found naming what was looked up.
func findCustomer(ctx context.Context, q querier, column, value string) (backend.Customer, error) {
	var c backend.Customer
	var created string
	err := q.QueryRowContext(ctx, findCustomerQuery(column), value).Scan(&c.ID, &c.Name, &c.Email, &c.Phone, &c.ShippingAddress, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return backend.Customer{}, mandate.Errorf(mandate.ENOTFOUND, "no customer with %s %q", column, value)
	} else if err != nil {
		return backend.Customer{}, dbError(err)
	}
	if c.CreatedAt, err = parseTime(created); err != nil {
		return backend.Customer{}, dbError(err)
	}
	return c, nil
}
