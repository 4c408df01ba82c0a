package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
)

// ImportStats counts the records an import wrote.
type ImportStats struct {
	Customers int
	Orders    int
}

// ImportFile is the JSON an operator imports (mandate store import, and the
// data sets tests and benchmarks generate): customers, then orders that
// refer to them. Amounts are decimal strings so no float ever touches money.
// Fields left empty are as if absent.
type ImportFile struct {
	AsOf      string           `json:"as_of"`
	Customers []CustomerRecord `json:"customers"`
	Orders    []OrderRecord    `json:"orders"`
}

// CustomerRecord is one customer of an ImportFile.
type CustomerRecord struct {
	ID              string `json:"id"`
	Name            string `json:"name"`
	Email           string `json:"email"`
	Phone           string `json:"phone"`
	ShippingAddress string `json:"shipping_address"`
	CreatedAt       string `json:"created_at"`
}

// OrderRecord is one order of an ImportFile.
type OrderRecord struct {
	ID         string `json:"id"`
	CustomerID string `json:"customer_id"`
	Status     string `json:"status"`
	Currency   string `json:"currency"`
	Total      string `json:"total"`
	Refunded   string `json:"refunded"`
	PaymentRef string `json:"payment_ref"`
	CreatedAt  string `json:"created_at"`
}

// Import adds the customers and orders in data (see demo.json for the
// format). It is all or nothing: the first bad record, named in the error,
// refuses the whole file and nothing is written. Times are kept as given.
func (s *Store) Import(ctx context.Context, data []byte) (ImportStats, error) {
	return s.load(ctx, data, false, false)
}

// Seed is Import for sample data: when the file has "as_of", every created_at
// moves by Now - as_of, so an account that was two days old at as_of is two
// days old when seeded, and checks such as "account younger than 7 days"
// behave the same whenever the demo runs.
func (s *Store) Seed(ctx context.Context, data []byte) (ImportStats, error) {
	return s.load(ctx, data, true, false)
}

// load validates data in full, then writes it in one transaction. With
// onlyIfEmpty it writes nothing into a store that already has customers, so
// two processes seeding a new file at once do not collide.
func (s *Store) load(ctx context.Context, data []byte, rebase, onlyIfEmpty bool) (ImportStats, error) {
	f, err := decodeImport(data)
	if err != nil {
		return ImportStats{}, err
	}
	var shift time.Duration
	if f.AsOf != "" {
		asOf, err := time.Parse(time.RFC3339, f.AsOf)
		if err != nil {
			return ImportStats{}, refused("as_of", "%q is not an RFC 3339 time like \"2026-11-25T00:00:00Z\"", f.AsOf)
		}
		if rebase {
			shift = s.now().Sub(asOf)
		}
	}
	customers, err := parseCustomers(f.Customers, shift, s.now())
	if err != nil {
		return ImportStats{}, err
	}
	orders, err := parseOrders(f.Orders, customers, shift, s.now())
	if err != nil {
		return ImportStats{}, err
	}

	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return ImportStats{}, dbError(err)
	}
	defer tx.Rollback()

	if onlyIfEmpty {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM customers`).Scan(&n); err != nil {
			return ImportStats{}, dbError(err)
		} else if n > 0 {
			return ImportStats{}, nil
		}
	}
	if err := checkExisting(ctx, tx, customers, orders); err != nil {
		return ImportStats{}, err
	}
	if err := insertAll(ctx, tx, customers, orders); err != nil {
		return ImportStats{}, err
	}
	if err := tx.Commit(); err != nil {
		return ImportStats{}, dbError(err)
	}
	return ImportStats{Customers: len(customers), Orders: len(orders)}, nil
}

// decodeImport parses data strictly: an unknown field is more likely a typo
// that would silently drop data than something to ignore.
func decodeImport(data []byte) (ImportFile, error) {
	var f ImportFile
	if len(bytes.TrimSpace(data)) == 0 {
		return f, refused("file", "it is empty")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return f, refused("file", "malformed JSON at byte %d: %v", syn.Offset, err)
		}
		return f, refused("file", "malformed JSON: %v", err)
	}
	if err := dec.Decode(&struct{}{}); err != io.EOF {
		return f, refused("file", "unexpected data after the JSON object")
	}
	return f, nil
}

// parseCustomers checks each customer with the rules UpdateCustomer applies,
// and for ids and emails repeated within the file.
func parseCustomers(recs []CustomerRecord, shift time.Duration, now time.Time) ([]backend.Customer, error) {
	ids := map[string]int{}
	emails := map[string]int{}
	out := make([]backend.Customer, 0, len(recs))
	for i, r := range recs {
		where := recordName("customers", i, r.ID)
		if err := required(where, "id", r.ID, "name", r.Name, "email", r.Email, "created_at", r.CreatedAt); err != nil {
			return nil, err
		}
		if err := checkID(where, "id", r.ID); err != nil {
			return nil, err
		}
		if j, ok := ids[r.ID]; ok {
			return nil, refused(where, "duplicate id: customers[%d] has it too", j)
		}
		ids[r.ID] = i
		email := strings.ToLower(r.Email)
		if j, ok := emails[email]; ok {
			// The address is personal data: the message does not repeat it.
			return nil, refused(where, "duplicate email: customers[%d] has the same one", j)
		}
		emails[email] = i
		for _, fv := range [][2]string{
			{backend.FieldName, r.Name}, {backend.FieldEmail, r.Email},
			{backend.FieldPhone, r.Phone}, {backend.FieldShippingAddress, r.ShippingAddress},
		} {
			if fv[1] == "" && (fv[0] == backend.FieldPhone || fv[0] == backend.FieldShippingAddress) {
				continue // optional
			}
			if fv[1] != strings.TrimSpace(fv[1]) {
				return nil, refused(where, "%s has leading or trailing spaces", fv[0])
			}
			if err := validateField(fv[0], fv[1]); err != nil {
				return nil, refused(where, "%s", mandate.ErrorMessage(err))
			}
		}
		created, err := parseCreatedAt(where, r.CreatedAt, shift, now)
		if err != nil {
			return nil, err
		}
		out = append(out, backend.Customer{
			ID: r.ID, Name: r.Name, Email: r.Email, Phone: r.Phone,
			ShippingAddress: r.ShippingAddress, CreatedAt: created,
		})
	}
	return out, nil
}

// parseOrders checks each order's status and money, and for ids repeated
// within the file. Customers not in the file are checked against the store
// later, inside the transaction.
func parseOrders(recs []OrderRecord, customers []backend.Customer, shift time.Duration, now time.Time) ([]backend.Order, error) {
	ids := map[string]int{}
	out := make([]backend.Order, 0, len(recs))
	for i, r := range recs {
		where := recordName("orders", i, r.ID)
		if err := required(where, "id", r.ID, "customer_id", r.CustomerID, "status", r.Status,
			"currency", r.Currency, "total", r.Total, "created_at", r.CreatedAt); err != nil {
			return nil, err
		}
		if err := checkID(where, "id", r.ID); err != nil {
			return nil, err
		}
		if j, ok := ids[r.ID]; ok {
			return nil, refused(where, "duplicate id: orders[%d] has it too", j)
		}
		ids[r.ID] = i
		if !slices.Contains(backend.Statuses, r.Status) {
			return nil, refused(where, "unknown status %q; use one of %s", r.Status, strings.Join(backend.Statuses, ", "))
		}
		if _, ok := mandate.CurrencyExponent(r.Currency); !ok {
			return nil, refused(where, "unknown currency %q; use an ISO 4217 code such as USD or EUR", r.Currency)
		}
		total, err := parseAmount(where, "total", r.Total, r.Currency)
		if err != nil {
			return nil, err
		}
		if r.Refunded == "" {
			r.Refunded = "0"
		}
		refunded, err := parseAmount(where, "refunded", r.Refunded, r.Currency)
		if err != nil {
			return nil, err
		}
		if refunded.Minor > total.Minor {
			return nil, refused(where, "refunded %s exceeds total %s %s", refunded, total, r.Currency)
		}
		created, err := parseCreatedAt(where, r.CreatedAt, shift, now)
		if err != nil {
			return nil, err
		}
		out = append(out, backend.Order{
			ID: r.ID, CustomerID: r.CustomerID, Status: r.Status,
			Total: total, Refunded: refunded, PaymentRef: r.PaymentRef, CreatedAt: created,
		})
	}
	return out, nil
}

// checkExisting refuses records that clash with rows already stored, and
// orders whose customer is neither in the file nor in the store.
func checkExisting(ctx context.Context, tx *sql.Tx, customers []backend.Customer, orders []backend.Order) error {
	inFile := map[string]bool{}
	for i, c := range customers {
		inFile[c.ID] = true
		where := recordName("customers", i, c.ID)
		if n, err := count(ctx, tx, `SELECT COUNT(*) FROM customers WHERE id = ?`, c.ID); err != nil {
			return err
		} else if n > 0 {
			return refused(where, "a customer with this id already exists")
		}
		if n, err := count(ctx, tx, `SELECT COUNT(*) FROM customers WHERE email = ?`, c.Email); err != nil {
			return err
		} else if n > 0 {
			return refused(where, "its email is already used by an existing customer")
		}
	}
	for i, o := range orders {
		where := recordName("orders", i, o.ID)
		if n, err := count(ctx, tx, `SELECT COUNT(*) FROM orders WHERE id = ?`, o.ID); err != nil {
			return err
		} else if n > 0 {
			return refused(where, "an order with this id already exists")
		}
		if inFile[o.CustomerID] {
			continue
		}
		if n, err := count(ctx, tx, `SELECT COUNT(*) FROM customers WHERE id = ?`, o.CustomerID); err != nil {
			return err
		} else if n == 0 {
			return refused(where, "unknown customer %q", o.CustomerID)
		}
	}
	return nil
}

// insertAll writes records that have passed every check.
func insertAll(ctx context.Context, tx *sql.Tx, customers []backend.Customer, orders []backend.Order) error {
	for _, c := range customers {
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO customers (id, name, email, phone, shipping_address, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
			c.ID, c.Name, c.Email, c.Phone, c.ShippingAddress, formatTime(c.CreatedAt)); err != nil {
			return dbError(err)
		}
	}
	for _, o := range orders {
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO orders (id, customer_id, status, currency, total, refunded, payment_ref, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			o.ID, o.CustomerID, o.Status, o.Total.Currency, o.Total.Minor, o.Refunded.Minor, o.PaymentRef, formatTime(o.CreatedAt)); err != nil {
			return dbError(err)
		}
	}
	return nil
}

func count(ctx context.Context, tx *sql.Tx, query string, args ...any) (int, error) {
	var n int
	err := tx.QueryRowContext(ctx, query, args...).Scan(&n)
	return n, dbError(err)
}

// parseAmount parses a non-negative decimal amount. ParseMoney refuses signs
// with a generic message; a negative amount gets a message of its own.
func parseAmount(where, field, s, currency string) (mandate.Money, error) {
	if strings.HasPrefix(strings.TrimSpace(s), "-") {
		return mandate.Money{}, refused(where, "%s %q: negative amounts are not allowed", field, s)
	}
	m, err := mandate.ParseMoney(s, currency)
	if err != nil {
		return mandate.Money{}, refused(where, "%s: %s", field, mandate.ErrorMessage(err))
	}
	return m, nil
}

// parseCreatedAt parses s and moves it by shift (Seed's rebasing); one more
// than a day after now (the store's clock) is refused.
func parseCreatedAt(where, s string, shift time.Duration, now time.Time) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, refused(where, "created_at %q is not an RFC 3339 time like \"2024-03-01T10:00:00Z\"", s)
	}
	t = t.Add(shift)
	// A customer or order from the future would have a negative age,
	// which rules like customer_age_days < 7 would misjudge. A day's
	// slack allows for clocks and time zones.
	if t.After(now.Add(24 * time.Hour)) {
		return time.Time{}, refused(where, "created_at %q is in the future", s)
	}
	return t.UTC(), nil
}

// maxIDBytes is the longest id a tool call can name (tools: order_id and
// customer_id are at most 100 bytes).
const maxIDBytes = 100

// checkID refuses an id an agent could not name, or a person could not
// tell from another: surrounding spaces, control or invisible characters
// (" c1" beside "c1", or a right-to-left override), or more than
// maxIDBytes.
func checkID(where, field, id string) error {
	switch {
	case id != strings.TrimSpace(id):
		return refused(where, "%s has leading or trailing spaces", field)
	case mandate.HasHidden(id, false):
		return refused(where, "%s holds a control or invisible character", field)
	case len(id) > maxIDBytes:
		return refused(where, "%s is %d bytes; the limit is %d", field, len(id), maxIDBytes)
	}
	return nil
}

// required refuses the first of the named fields (name, value pairs) that is
// empty.
func required(where string, pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if strings.TrimSpace(pairs[i+1]) == "" {
			return refused(where, "missing %q", pairs[i])
		}
	}
	return nil
}

// recordName names a record the way an operator finds it in the file:
// orders[3] (ord_1004).
func recordName(list string, i int, id string) string {
	if id == "" {
		return fmt.Sprintf("%s[%d]", list, i)
	}
	return fmt.Sprintf("%s[%d] (%s)", list, i, id)
}

// refused is the error for a bad import: it names the record and says that
// nothing was written.
func refused(where, format string, args ...any) error {
	return mandate.Errorf(mandate.EINVALID, "import refused, nothing was written: %s: %s", where, fmt.Sprintf(format, args...))
}
