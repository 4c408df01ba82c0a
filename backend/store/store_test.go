package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io/fs"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/backend"
)

// asOf is the demo data's "as_of": with the clock fixed there, Seed shifts
// nothing and the fixtures keep their written times.
var asOf = time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)

// newStore opens an empty store in a fresh file with the clock fixed at asOf.
func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "mandate.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	s.Now = func() time.Time { return asOf }
	t.Cleanup(func() {
		// Every statement a call runs must be one Open prepared.
		if n := s.unprepared.Load(); n != 0 {
			t.Errorf("%d queries ran unprepared; add them to readQueries or writeQueries", n)
		}
		s.Close() // tests that close it themselves check Close's error
	})
	return s
}

// demoStore opens a store seeded with DemoData.
func demoStore(t *testing.T) *Store {
	t.Helper()
	s := newStore(t)
	if _, err := s.Seed(context.Background(), DemoData); err != nil {
		t.Fatalf("Seed: %v", err)
	}
	return s
}

func money(t *testing.T, amount, currency string) mandate.Money {
	t.Helper()
	m, err := mandate.ParseMoney(amount, currency)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// wantError fails unless err has code and its message contains want.
func wantError(t *testing.T, err error, code, want string) {
	t.Helper()
	if got := mandate.ErrorCode(err); got != code {
		t.Fatalf("error code = %q (%v), want %q", got, err, code)
	}
	if msg := mandate.ErrorMessage(err); !strings.Contains(msg, want) {
		t.Fatalf("error message = %q, want it to contain %q", msg, want)
	}
}

// snapshot dumps every row that a change could touch, to prove a refused
// change left the database as it was.
func snapshot(t *testing.T, s *Store) string {
	t.Helper()
	var b strings.Builder
	for _, q := range []string{
		`SELECT id, status, refunded, cancel_reason FROM orders ORDER BY id`,
		`SELECT id, name, email, phone, shipping_address FROM customers ORDER BY id`,
		`SELECT id, order_id, amount, idempotency_key FROM refunds ORDER BY id`,
		`SELECT idempotency_key, kind, digest FROM operations ORDER BY idempotency_key`,
	} {
		rows, err := s.db.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		for rows.Next() {
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintln(&b, vals...)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
	}
	return b.String()
}

func queryInt(t *testing.T, s *Store, query string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := s.db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRefund(t *testing.T) {
	ctx := context.Background()
	s := demoStore(t)

	r, err := s.Refund(ctx, backend.RefundRequest{
		OrderID: "ord_1001", Amount: money(t, "30.00", "USD"), Reason: "damaged", IdempotencyKey: "k1",
	})
	if err != nil {
		t.Fatalf("Refund: %v", err)
	}
	if !regexp.MustCompile(`^re_[0-9a-f]{16}$`).MatchString(r.ID) {
		t.Fatalf("refund id = %q, want re_ and 16 hex digits", r.ID)
	}
	if r.OrderID != "ord_1001" || r.Amount.Minor != 3000 || r.Reason != "damaged" || !r.CreatedAt.Equal(asOf) {
		t.Fatalf("refund = %+v", r)
	}
	o, _ := s.Order(ctx, "ord_1001")
	if o.Refunded.Minor != 3000 || o.Refundable().Minor != 9000 {
		t.Fatalf("after refund order = %+v", o)
	}
	// The refund reports the order as it left it: what a lookup now reads.
	if r.Order == nil || *r.Order != o {
		t.Fatalf("refund's order = %+v, want %+v", r.Order, o)
	}
	// RefundByKey is not the refund's own transaction: it has no order.
	got, err := s.RefundByKey(ctx, "k1")
	want := r
	want.Order = nil
	if err != nil || got != want {
		t.Fatalf("RefundByKey = %+v, %v; want %+v", got, err, want)
	}

	// Refunding exactly what is left is allowed; a cent more is not.
	rest, err := s.Refund(ctx, backend.RefundRequest{
		OrderID: "ord_1001", Amount: money(t, "90.00", "USD"), IdempotencyKey: "k2",
	})
	if err != nil {
		t.Fatalf("refund of the rest: %v", err)
	}
	if rest.Order == nil || rest.Order.Refunded.Minor != 12000 || rest.Order.Refundable().Minor != 0 ||
		rest.Order.Refunded.Currency != "USD" || rest.Order.ID != "ord_1001" {
		t.Fatalf("order after refunding the rest = %+v", rest.Order)
	}
	_, err = s.Refund(ctx, backend.RefundRequest{OrderID: "ord_1001", Amount: money(t, "0.01", "USD"), IdempotencyKey: "k3"})
	wantError(t, err, mandate.ECONFLICT, "refund of 0.01 USD exceeds the 0.00 USD still refundable on ord_1001")
}

func TestRefundRefused(t *testing.T) {
	for _, tt := range []struct {
		name      string
		req       backend.RefundRequest
		code      string
		wantInMsg string
	}{
		{"missing key", backend.RefundRequest{OrderID: "ord_1001", Amount: mandate.Money{Minor: 1000, Currency: "USD"}},
			mandate.EINVALID, "idempotency key is required"},
		{"blank key", backend.RefundRequest{OrderID: "ord_1001", Amount: mandate.Money{Minor: 1000, Currency: "USD"}, IdempotencyKey: "  "},
			mandate.EINVALID, "idempotency key is required"},
		{"zero amount", backend.RefundRequest{OrderID: "ord_1001", Amount: mandate.Money{Minor: 0, Currency: "USD"}, IdempotencyKey: "k"},
			mandate.EINVALID, "greater than zero"},
		{"negative amount", backend.RefundRequest{OrderID: "ord_1001", Amount: mandate.Money{Minor: -500, Currency: "USD"}, IdempotencyKey: "k"},
			mandate.EINVALID, "greater than zero"},
		{"other currency", backend.RefundRequest{OrderID: "ord_1001", Amount: mandate.Money{Minor: 1000, Currency: "EUR"}, IdempotencyKey: "k"},
			mandate.EINVALID, `refund is in "EUR" but order ord_1001 is in USD`},
		{"over the total", backend.RefundRequest{OrderID: "ord_1001", Amount: mandate.Money{Minor: 15000, Currency: "USD"}, IdempotencyKey: "k"},
			mandate.ECONFLICT, "refund of 150.00 USD exceeds the 120.00 USD still refundable on ord_1001"},
		{"over what is left", backend.RefundRequest{OrderID: "ord_1006", Amount: mandate.Money{Minor: 6000, Currency: "EUR"}, IdempotencyKey: "k"},
			mandate.ECONFLICT, "refund of 60.00 EUR exceeds the 50.00 EUR still refundable on ord_1006"},
		{"unknown order", backend.RefundRequest{OrderID: "ord_9999", Amount: mandate.Money{Minor: 1000, Currency: "USD"}, IdempotencyKey: "k"},
			mandate.ENOTFOUND, `"ord_9999"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := demoStore(t)
			before := snapshot(t, s)
			_, err := s.Refund(context.Background(), tt.req)
			wantError(t, err, tt.code, tt.wantInMsg)
			if after := snapshot(t, s); after != before {
				t.Fatalf("a refused refund changed the database")
			}
		})
	}
}

func TestRefundIdempotent(t *testing.T) {
	ctx := context.Background()
	s := demoStore(t)
	req := backend.RefundRequest{OrderID: "ord_1001", Amount: money(t, "30.00", "USD"), IdempotencyKey: "k1"}
	first, err := s.Refund(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, s)

	if first.Order == nil || first.Order.Refunded.Minor != 3000 {
		t.Fatalf("first refund's order = %+v, want refunded 30.00", first.Order)
	}
	// A repeat returns the first refund without the order: the order may
	// have changed since, and reporting it as this refund left it would lie.
	again, err := s.Refund(ctx, req)
	want := first
	want.Order = nil
	if err != nil || again != want {
		t.Fatalf("repeat = %+v, %v; want the first refund without its order %+v", again, err, want)
	}
	if o, _ := s.Order(ctx, "ord_1001"); o.Refunded.Minor != 3000 {
		t.Fatalf("refunded = %d after a repeat, want 3000", o.Refunded.Minor)
	}

	for _, tt := range []struct {
		name string
		req  backend.RefundRequest
	}{
		{"other amount", backend.RefundRequest{OrderID: "ord_1001", Amount: money(t, "31.00", "USD"), IdempotencyKey: "k1"}},
		{"other order", backend.RefundRequest{OrderID: "ord_1005", Amount: money(t, "30.00", "USD"), IdempotencyKey: "k1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Refund(ctx, tt.req)
			wantError(t, err, mandate.ECONFLICT, `idempotency key "k1" was already used`)
		})
	}
	if after := snapshot(t, s); after != before {
		t.Fatalf("repeats changed the database")
	}

	_, err = s.RefundByKey(ctx, "never-used")
	wantError(t, err, mandate.ENOTFOUND, `"never-used"`)

	// A key spent on another kind of change cannot move money.
	if _, err := s.CancelOrder(ctx, backend.CancelRequest{OrderID: "ord_1004", IdempotencyKey: "k-cancel"}); err != nil {
		t.Fatal(err)
	}
	_, err = s.Refund(ctx, backend.RefundRequest{OrderID: "ord_1001", Amount: money(t, "1.00", "USD"), IdempotencyKey: "k-cancel"})
	wantError(t, err, mandate.ECONFLICT, `"k-cancel" was already used for a different cancel order request`)
}

func TestCancelOrder(t *testing.T) {
	for _, tt := range []struct {
		name      string
		orderID   string
		key       string
		code      string
		wantInMsg string
	}{
		{"pending", "ord_1004", "k", "", ""},
		{"processing", "ord_1001", "k", "", ""},
		{"shipped", "ord_1003", "k", mandate.ECONFLICT, "order ord_1003 is shipped"},
		{"delivered", "ord_1002", "k", mandate.ECONFLICT, "order ord_1002 is delivered"},
		{"cancelled", "ord_1007", "k", mandate.ECONFLICT, "order ord_1007 is already cancelled"},
		{"unknown order", "ord_9999", "k", mandate.ENOTFOUND, `"ord_9999"`},
		{"missing key", "ord_1001", "", mandate.EINVALID, "idempotency key is required"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			s := demoStore(t)
			before := snapshot(t, s)
			o, err := s.CancelOrder(ctx, backend.CancelRequest{OrderID: tt.orderID, Reason: "customer asked", IdempotencyKey: tt.key})
			if tt.code != "" {
				wantError(t, err, tt.code, tt.wantInMsg)
				if after := snapshot(t, s); after != before {
					t.Fatalf("a refused cancel changed the database")
				}
				return
			}
			if err != nil {
				t.Fatalf("CancelOrder: %v", err)
			}
			if o.Status != backend.StatusCancelled {
				t.Fatalf("returned status = %q", o.Status)
			}
			if stored, _ := s.Order(ctx, tt.orderID); stored != o {
				t.Fatalf("stored order = %+v, returned %+v", stored, o)
			}
		})
	}
}

func TestCancelOrderIdempotent(t *testing.T) {
	ctx := context.Background()
	s := demoStore(t)
	req := backend.CancelRequest{OrderID: "ord_1001", Reason: "changed mind", IdempotencyKey: "k1"}
	first, err := s.CancelOrder(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, s)

	// The order is now cancelled; a repeat still succeeds with the first result.
	again, err := s.CancelOrder(ctx, req)
	if err != nil || again != first {
		t.Fatalf("repeat = %+v, %v; want %+v", again, err, first)
	}
	for _, tt := range []struct {
		name string
		req  backend.CancelRequest
	}{
		{"other order", backend.CancelRequest{OrderID: "ord_1004", Reason: "changed mind", IdempotencyKey: "k1"}},
		{"other reason", backend.CancelRequest{OrderID: "ord_1001", Reason: "duplicate", IdempotencyKey: "k1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.CancelOrder(ctx, tt.req)
			wantError(t, err, mandate.ECONFLICT, `idempotency key "k1" was already used`)
		})
	}
	if after := snapshot(t, s); after != before {
		t.Fatalf("repeats changed the database")
	}

	if _, err := s.Refund(ctx, backend.RefundRequest{OrderID: "ord_1005", Amount: money(t, "1.00", "USD"), IdempotencyKey: "k-refund"}); err != nil {
		t.Fatal(err)
	}
	_, err = s.CancelOrder(ctx, backend.CancelRequest{OrderID: "ord_1005", IdempotencyKey: "k-refund"})
	wantError(t, err, mandate.ECONFLICT, `"k-refund" was already used for a different refund request`)
}

func TestUpdateCustomer(t *testing.T) {
	for _, tt := range []struct {
		field, value string
		check        func(backend.Customer) string
	}{
		{backend.FieldEmail, "ada.king@example.com", func(c backend.Customer) string { return c.Email }},
		{backend.FieldEmail, "ADA@example.com", func(c backend.Customer) string { return c.Email }}, // own address, other case
		{backend.FieldPhone, "+44 (20) 7946-0000", func(c backend.Customer) string { return c.Phone }},
		{backend.FieldShippingAddress, "10 Downing Street, London", func(c backend.Customer) string { return c.ShippingAddress }},
		{backend.FieldName, "Augusta Ada King", func(c backend.Customer) string { return c.Name }},
		{backend.FieldName, strings.Repeat("a", 500), func(c backend.Customer) string { return c.Name }},
	} {
		t.Run(tt.field+"="+tt.value[:min(len(tt.value), 20)], func(t *testing.T) {
			ctx := context.Background()
			s := demoStore(t)
			c, err := s.UpdateCustomer(ctx, backend.UpdateRequest{CustomerID: "cus_ada", Field: tt.field, Value: tt.value, IdempotencyKey: "k"})
			if err != nil {
				t.Fatalf("UpdateCustomer: %v", err)
			}
			stored, _ := s.Customer(ctx, "cus_ada")
			if tt.check(c) != tt.value || stored != c {
				t.Fatalf("returned %+v, stored %+v; want %s = %q", c, stored, tt.field, tt.value)
			}
		})
	}
}

func TestUpdateCustomerRefused(t *testing.T) {
	for _, tt := range []struct {
		name                string
		id, field, value    string
		key                 string
		code, wantInMessage string
	}{
		{"field not updatable", "cus_ada", "created_at", "2020-01-01T00:00:00Z", "k", mandate.EINVALID, `field "created_at" cannot be changed`},
		{"id not updatable", "cus_ada", "id", "cus_eve", "k", mandate.EINVALID, `field "id" cannot be changed`},
		{"empty value", "cus_ada", backend.FieldName, "", "k", mandate.EINVALID, "name must not be empty"},
		{"blank value", "cus_ada", backend.FieldShippingAddress, "   ", "k", mandate.EINVALID, "shipping_address must not be empty"},
		{"too long", "cus_ada", backend.FieldShippingAddress, strings.Repeat("x", 501), "k", mandate.EINVALID, "at most 500"},
		{"not an email", "cus_ada", backend.FieldEmail, "ada at example.com", "k", mandate.EINVALID, "not an email address"},
		{"email with display name", "cus_ada", backend.FieldEmail, "Ada <ada2@example.com>", "k", mandate.EINVALID, "not an email address"},
		{"phone with letters", "cus_ada", backend.FieldPhone, "call me maybe", "k", mandate.EINVALID, "not a phone number"},
		{"phone too short", "cus_ada", backend.FieldPhone, "12345", "k", mandate.EINVALID, "not a phone number"},
		{"email taken", "cus_ada", backend.FieldEmail, "GRACE@example.com", "k", mandate.ECONFLICT, "already uses that email"},
		{"unknown customer", "cus_zzz", backend.FieldName, "Zed", "k", mandate.ENOTFOUND, `"cus_zzz"`},
		{"missing key", "cus_ada", backend.FieldName, "Ada", "", mandate.EINVALID, "idempotency key is required"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := demoStore(t)
			before := snapshot(t, s)
			_, err := s.UpdateCustomer(context.Background(),
				backend.UpdateRequest{CustomerID: tt.id, Field: tt.field, Value: tt.value, IdempotencyKey: tt.key})
			wantError(t, err, tt.code, tt.wantInMessage)
			if after := snapshot(t, s); after != before {
				t.Fatalf("a refused update changed the database")
			}
		})
	}
}

func TestUpdateCustomerIdempotent(t *testing.T) {
	ctx := context.Background()
	s := demoStore(t)
	req := backend.UpdateRequest{CustomerID: "cus_ada", Field: backend.FieldName, Value: "A. Lovelace", IdempotencyKey: "k1"}
	first, err := s.UpdateCustomer(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateCustomer(ctx, backend.UpdateRequest{CustomerID: "cus_ada", Field: backend.FieldName, Value: "Augusta Ada King", IdempotencyKey: "k2"}); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, s)

	// A late repeat of k1 returns its own result and does not undo k2.
	again, err := s.UpdateCustomer(ctx, req)
	if err != nil || again != first {
		t.Fatalf("repeat = %+v, %v; want %+v", again, err, first)
	}
	if c, _ := s.Customer(ctx, "cus_ada"); c.Name != "Augusta Ada King" {
		t.Fatalf("name = %q after a repeat, want the later update kept", c.Name)
	}
	_, err = s.UpdateCustomer(ctx, backend.UpdateRequest{CustomerID: "cus_ada", Field: backend.FieldName, Value: "Someone Else", IdempotencyKey: "k1"})
	wantError(t, err, mandate.ECONFLICT, `idempotency key "k1" was already used`)
	if after := snapshot(t, s); after != before {
		t.Fatalf("repeats changed the database")
	}
}

func TestLookups(t *testing.T) {
	ctx := context.Background()
	s := demoStore(t)

	c, err := s.CustomerByEmail(ctx, "ADA@Example.COM")
	if err != nil || c.ID != "cus_ada" {
		t.Fatalf("CustomerByEmail = %+v, %v", c, err)
	}
	_, err = s.CustomerByEmail(ctx, "nobody@example.com")
	wantError(t, err, mandate.ENOTFOUND, "nobody@example.com")
	_, err = s.Customer(ctx, "cus_zzz")
	wantError(t, err, mandate.ENOTFOUND, `"cus_zzz"`)

	o, err := s.Order(ctx, "ord_1006")
	want := backend.Order{
		ID: "ord_1006", CustomerID: "cus_marie", Status: backend.StatusDelivered,
		Total:     mandate.Money{Minor: 30000, Currency: "EUR"},
		Refunded:  mandate.Money{Minor: 25000, Currency: "EUR"},
		CreatedAt: time.Date(2026, 9, 15, 10, 0, 0, 0, time.UTC),
	}
	if err != nil || o != want {
		t.Fatalf("Order = %+v, %v; want %+v", o, err, want)
	}
}

// TestUnavailable checks that a database failure is reported as unavailable
// without the driver's text in the message an agent sees.
func TestUnavailable(t *testing.T) {
	s := demoStore(t)
	s.Close()
	_, err := s.Order(context.Background(), "ord_1001")
	wantError(t, err, mandate.EUNAVAILABLE, "unavailable")
	if msg := mandate.ErrorMessage(err); strings.Contains(strings.ToLower(msg), "sql") {
		t.Fatalf("message leaks driver details: %q", msg)
	}
}

// TestClose checks that Close closes the prepared statements and the
// database without error after they were used, and that a closed store
// refuses calls as unavailable instead of panicking.
func TestClose(t *testing.T) {
	ctx := context.Background()
	s, err := Open(filepath.Join(t.TempDir(), "mandate.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Seed(ctx, DemoData); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Order(ctx, "ord_1001"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Refund(ctx, backend.RefundRequest{OrderID: "ord_1001", Amount: money(t, "1.00", "USD"), IdempotencyKey: "k"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_, err = s.Refund(ctx, backend.RefundRequest{OrderID: "ord_1001", Amount: money(t, "1.00", "USD"), IdempotencyKey: "k2"})
	wantError(t, err, mandate.EUNAVAILABLE, "unavailable")
	_, err = s.Customer(ctx, "cus_ada")
	wantError(t, err, mandate.EUNAVAILABLE, "unavailable")
}

// importBase is a small valid import file; each rejection case breaks one
// record, placed after good ones, to prove nothing at all is written.
func importBase() ImportFile {
	return ImportFile{
		Customers: []CustomerRecord{
			{ID: "cus_a", Name: "A", Email: "a@example.com", Phone: "+1 555 0100", ShippingAddress: "1 Main St", CreatedAt: "2024-01-01T00:00:00Z"},
			{ID: "cus_b", Name: "B", Email: "b@example.com", CreatedAt: "2024-01-02T00:00:00Z"},
		},
		Orders: []OrderRecord{
			{ID: "ord_1", CustomerID: "cus_a", Status: "pending", Currency: "USD", Total: "10.00", Refunded: "0.00", CreatedAt: "2024-02-01T00:00:00Z"},
			{ID: "ord_2", CustomerID: "cus_b", Status: "delivered", Currency: "EUR", Total: "3000", Refunded: "12.5", CreatedAt: "2024-02-02T00:00:00Z"},
			{ID: "ord_3", CustomerID: "cus_b", Status: "shipped", Currency: "JPY", Total: "1200", CreatedAt: "2024-02-03T00:00:00Z"},
		},
	}
}

func encode(t *testing.T, f ImportFile) []byte {
	t.Helper()
	buf, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	return buf
}

func TestImport(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	f := importBase()
	f.AsOf = "2020-01-01T00:00:00Z" // Import keeps times as given
	stats, err := s.Import(ctx, encode(t, f))
	if err != nil || stats != (ImportStats{Customers: 2, Orders: 3}) {
		t.Fatalf("Import = %+v, %v", stats, err)
	}
	o, err := s.Order(ctx, "ord_2")
	if err != nil || o.Total.Minor != 300000 || o.Refunded.Minor != 1250 || o.Total.Currency != "EUR" {
		t.Fatalf("ord_2 = %+v, %v", o, err)
	}
	if o, _ := s.Order(ctx, "ord_3"); o.Total.Minor != 1200 || o.Refunded.Minor != 0 {
		t.Fatalf("ord_3 = %+v", o)
	}
	if c, _ := s.Customer(ctx, "cus_b"); !c.CreatedAt.Equal(time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("cus_b created_at = %v, want it unshifted", c.CreatedAt)
	}
}

func TestImportRefused(t *testing.T) {
	addOrder := func(o OrderRecord) func(*ImportFile) {
		return func(f *ImportFile) { f.Orders = append(f.Orders, o) }
	}
	addCustomer := func(c CustomerRecord) func(*ImportFile) {
		return func(f *ImportFile) { f.Customers = append(f.Customers, c) }
	}
	order := func(edit func(*OrderRecord)) func(*ImportFile) {
		o := OrderRecord{ID: "ord_4", CustomerID: "cus_a", Status: "processing", Currency: "USD", Total: "120.00", Refunded: "0.00", CreatedAt: "2024-03-01T00:00:00Z"}
		edit(&o)
		return addOrder(o)
	}
	customer := func(edit func(*CustomerRecord)) func(*ImportFile) {
		c := CustomerRecord{ID: "cus_c", Name: "C", Email: "c@example.com", CreatedAt: "2024-01-03T00:00:00Z"}
		edit(&c)
		return addCustomer(c)
	}
	for _, tt := range []struct {
		name string
		edit func(*ImportFile) // applied to importBase
		raw  string            // used instead when set
		want string
	}{
		{name: "malformed JSON", raw: `{"customers": [`, want: "file: malformed JSON"},
		{name: "syntax error", raw: `{"customers": [}`, want: "malformed JSON at byte 16"},
		{name: "unknown field", raw: `{"customers": [{"id": "cus_a", "nickname": "A"}]}`, want: `unknown field "nickname"`},
		{name: "number for money", raw: `{"orders": [{"id": "ord_1", "total": 5.00}]}`, want: "malformed JSON: json: cannot unmarshal number"},
		{name: "trailing data", raw: `{} {}`, want: "unexpected data after the JSON object"},
		{name: "empty file", raw: ` `, want: "file: it is empty"},
		{name: "bad as_of", edit: func(f *ImportFile) { f.AsOf = "yesterday" }, want: `as_of: "yesterday" is not an RFC 3339 time`},
		{name: "unknown customer", edit: order(func(o *OrderRecord) { o.CustomerID = "cus_zzz" }),
			want: `orders[3] (ord_4): unknown customer "cus_zzz"`},
		{name: "duplicate customer id", edit: customer(func(c *CustomerRecord) { c.ID = "cus_a" }),
			want: "customers[2] (cus_a): duplicate id: customers[0] has it too"},
		{name: "duplicate order id", edit: order(func(o *OrderRecord) { o.ID = "ord_1" }),
			want: "orders[3] (ord_1): duplicate id: orders[0] has it too"},
		{name: "duplicate email", edit: customer(func(c *CustomerRecord) { c.Email = "A@example.com" }),
			want: "customers[2] (cus_c): duplicate email: customers[0] has the same one"},
		{name: "unknown currency", edit: order(func(o *OrderRecord) { o.Currency = "XYZ" }),
			want: `orders[3] (ord_4): unknown currency "XYZ"`},
		{name: "lowercase currency", edit: order(func(o *OrderRecord) { o.Currency = "usd" }),
			want: `orders[3] (ord_4): unknown currency "usd"`},
		{name: "negative total", edit: order(func(o *OrderRecord) { o.Total = "-5.00" }),
			want: `orders[3] (ord_4): total "-5.00": negative amounts are not allowed`},
		{name: "negative refunded", edit: order(func(o *OrderRecord) { o.Refunded = "-1" }),
			want: `orders[3] (ord_4): refunded "-1": negative amounts are not allowed`},
		{name: "malformed total", edit: order(func(o *OrderRecord) { o.Total = "12,00" }),
			want: `orders[3] (ord_4): total: amount "12,00" is not a decimal number`},
		{name: "too many decimals", edit: order(func(o *OrderRecord) { o.Total = "1.005" }),
			want: `orders[3] (ord_4): total: amount "1.005" has more than 2 decimal places for USD`},
		{name: "refunded above total", edit: order(func(o *OrderRecord) { o.Refunded = "150.00" }),
			want: "orders[3] (ord_4): refunded 150.00 exceeds total 120.00 USD"},
		{name: "unknown status", edit: order(func(o *OrderRecord) { o.Status = "returned" }),
			want: `orders[3] (ord_4): unknown status "returned"`},
		{name: "missing order id", edit: order(func(o *OrderRecord) { o.ID = "" }),
			want: `orders[3]: missing "id"`},
		{name: "missing total", edit: order(func(o *OrderRecord) { o.Total = "" }),
			want: `orders[3] (ord_4): missing "total"`},
		{name: "missing customer name", edit: customer(func(c *CustomerRecord) { c.Name = "" }),
			want: `customers[2] (cus_c): missing "name"`},
		{name: "missing created_at", edit: customer(func(c *CustomerRecord) { c.CreatedAt = "" }),
			want: `customers[2] (cus_c): missing "created_at"`},
		{name: "bad timestamp", edit: order(func(o *OrderRecord) { o.CreatedAt = "2026-13-01" }),
			want: `orders[3] (ord_4): created_at "2026-13-01" is not an RFC 3339 time`},
		{name: "bad email", edit: customer(func(c *CustomerRecord) { c.Email = "c-at-example.com" }),
			want: `customers[2] (cus_c): email is not an email address`},
		{name: "bad phone", edit: customer(func(c *CustomerRecord) { c.Phone = "ask reception" }),
			want: `customers[2] (cus_c): phone is not a phone number`},
		// Ids an agent could not name, or a person could not tell apart.
		{name: "id with a leading space", edit: customer(func(c *CustomerRecord) { c.ID = " cus_a" }),
			want: `id has leading or trailing spaces`},
		{name: "id with a right-to-left override", edit: order(func(o *OrderRecord) { o.ID = "ord_\u202e4" }),
			want: `id holds a control or invisible character`},
		{name: "id too long", edit: order(func(o *OrderRecord) { o.ID = "ord_" + strings.Repeat("9", 100) }),
			want: `id is 104 bytes; the limit is 100`},
		{name: "created in the future", edit: customer(func(c *CustomerRecord) { c.CreatedAt = "2999-01-01T00:00:00Z" }),
			want: `customers[2] (cus_c): created_at "2999-01-01T00:00:00Z" is in the future`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			data := []byte(tt.raw)
			if tt.raw == "" {
				f := importBase()
				tt.edit(&f)
				data = encode(t, f)
			}
			_, err := s.Import(context.Background(), data)
			wantError(t, err, mandate.EINVALID, tt.want)
			if n := queryInt(t, s, `SELECT (SELECT COUNT(*) FROM customers) + (SELECT COUNT(*) FROM orders)`); n != 0 {
				t.Fatalf("a refused import wrote %d rows", n)
			}
		})
	}
}

// TestImportExisting checks records against rows already in the store.
func TestImportExisting(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if _, err := s.Import(ctx, encode(t, importBase())); err != nil {
		t.Fatal(err)
	}
	newCustomer := CustomerRecord{ID: "cus_c", Name: "C", Email: "c@example.com", CreatedAt: "2024-01-03T00:00:00Z"}
	for _, tt := range []struct {
		name string
		f    ImportFile
		want string
	}{
		{"customer id exists", ImportFile{Customers: []CustomerRecord{newCustomer, {ID: "cus_a", Name: "A", Email: "a2@example.com", CreatedAt: "2024-01-01T00:00:00Z"}}},
			"customers[1] (cus_a): a customer with this id already exists"},
		{"email exists", ImportFile{Customers: []CustomerRecord{{ID: "cus_d", Name: "D", Email: "B@Example.com", CreatedAt: "2024-01-01T00:00:00Z"}}},
			"customers[0] (cus_d): its email is already used by an existing customer"},
		{"order id exists", ImportFile{Customers: []CustomerRecord{newCustomer}, Orders: []OrderRecord{
			{ID: "ord_2", CustomerID: "cus_c", Status: "pending", Currency: "USD", Total: "1.00", CreatedAt: "2024-03-01T00:00:00Z"}}},
			"orders[0] (ord_2): an order with this id already exists"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := snapshot(t, s)
			_, err := s.Import(ctx, encode(t, tt.f))
			wantError(t, err, mandate.EINVALID, tt.want)
			if after := snapshot(t, s); after != before {
				t.Fatalf("a refused import changed the database")
			}
		})
	}

	// An order may refer to a customer imported earlier.
	stats, err := s.Import(ctx, encode(t, ImportFile{Orders: []OrderRecord{
		{ID: "ord_9", CustomerID: "cus_a", Status: "pending", Currency: "GBP", Total: "5.00", CreatedAt: "2024-03-01T00:00:00Z"}}}))
	if err != nil || stats != (ImportStats{Orders: 1}) {
		t.Fatalf("Import = %+v, %v", stats, err)
	}
}

func TestSeedRebases(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2027, 1, 10, 12, 0, 0, 0, time.UTC)
	shift := now.Sub(asOf)
	s := newStore(t)
	s.Now = func() time.Time { return now }
	if _, err := s.Seed(ctx, DemoData); err != nil {
		t.Fatal(err)
	}
	grace, _ := s.Customer(ctx, "cus_grace")
	if age := now.Sub(grace.CreatedAt); age != 48*time.Hour {
		t.Fatalf("cus_grace is %v old, want 48h", age)
	}
	ada, _ := s.Customer(ctx, "cus_ada")
	if want := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC).Add(shift); !ada.CreatedAt.Equal(want) {
		t.Fatalf("cus_ada created_at = %v, want %v", ada.CreatedAt, want)
	}
	o, _ := s.Order(ctx, "ord_1001")
	if want := time.Date(2026, 11, 20, 9, 30, 0, 0, time.UTC).Add(shift); !o.CreatedAt.Equal(want) {
		t.Fatalf("ord_1001 created_at = %v, want %v", o.CreatedAt, want)
	}
}

func TestDemoData(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	stats, err := s.Import(ctx, DemoData)
	if err != nil {
		t.Fatalf("DemoData does not pass its own validation: %v", err)
	}
	if stats.Customers < 24 || stats.Orders < 60 {
		t.Fatalf("DemoData has %+v, want at least 24 customers and 60 orders", stats)
	}

	customers := []backend.Customer{
		{ID: "cus_ada", Name: "Ada Lovelace", Email: "ada@example.com", Phone: "+441234567890",
			ShippingAddress: "12 St James's Square, London", CreatedAt: time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)},
	}
	for _, want := range customers {
		if got, err := s.Customer(ctx, want.ID); err != nil || got != want {
			t.Fatalf("%s = %+v, %v; want %+v", want.ID, got, err, want)
		}
	}
	for id, want := range map[string][2]string{
		"cus_grace": {"Grace Hopper", "grace@example.com"},
		"cus_marie": {"Marie Curie", "marie@example.fr"},
	} {
		if c, err := s.Customer(ctx, id); err != nil || c.Name != want[0] || c.Email != want[1] {
			t.Fatalf("%s = %+v, %v", id, c, err)
		}
	}
	if c, _ := s.Customer(ctx, "cus_grace"); asOf.Sub(c.CreatedAt) != 48*time.Hour {
		t.Fatalf("cus_grace created %v, want 2 days before as_of", c.CreatedAt)
	}
	if c, _ := s.Customer(ctx, "cus_marie"); c.CreatedAt.Year() != 2023 {
		t.Fatalf("cus_marie created %v, want 2023", c.CreatedAt)
	}
	for _, want := range []struct {
		id, customer, status, currency string
		total, refunded                int64
	}{
		{"ord_1001", "cus_ada", backend.StatusProcessing, "USD", 12000, 0},
		{"ord_1002", "cus_ada", backend.StatusDelivered, "USD", 250000, 0},
		{"ord_1003", "cus_ada", backend.StatusShipped, "USD", 8000, 0},
		{"ord_1004", "cus_ada", backend.StatusPending, "USD", 4500, 0},
		{"ord_1005", "cus_grace", backend.StatusProcessing, "USD", 4000, 0},
		{"ord_1006", "cus_marie", backend.StatusDelivered, "EUR", 30000, 25000},
		{"ord_1007", "cus_marie", backend.StatusCancelled, "EUR", 6000, 0},
	} {
		o, err := s.Order(ctx, want.id)
		if err != nil || o.CustomerID != want.customer || o.Status != want.status || o.Total.Currency != want.currency ||
			o.Total.Minor != want.total || o.Refunded.Minor != want.refunded {
			t.Fatalf("%s = %+v, %v; want %+v", want.id, o, err, want)
		}
	}

	for _, tt := range []struct {
		name  string
		query string
		min   int64
	}{
		{"pending", `SELECT COUNT(*) FROM orders WHERE status = 'pending'`, 1},
		{"processing", `SELECT COUNT(*) FROM orders WHERE status = 'processing'`, 1},
		{"shipped", `SELECT COUNT(*) FROM orders WHERE status = 'shipped'`, 1},
		{"delivered", `SELECT COUNT(*) FROM orders WHERE status = 'delivered'`, 1},
		{"cancelled", `SELECT COUNT(*) FROM orders WHERE status = 'cancelled'`, 1},
		{"USD", `SELECT COUNT(*) FROM orders WHERE currency = 'USD'`, 10},
		{"EUR", `SELECT COUNT(*) FROM orders WHERE currency = 'EUR'`, 10},
		{"GBP", `SELECT COUNT(*) FROM orders WHERE currency = 'GBP'`, 3},
		{"9.99 order", `SELECT COUNT(*) FROM orders WHERE total = 999`, 1},
		{"3000.00 order", `SELECT COUNT(*) FROM orders WHERE total = 300000`, 1},
		{"partially refunded", `SELECT COUNT(*) FROM orders WHERE refunded > 0 AND refunded < total`, 3},
		{"accounts under 7 days", `SELECT COUNT(*) FROM customers WHERE created_at > '2026-11-18'`, 3},
	} {
		if n := queryInt(t, s, tt.query); n < tt.min {
			t.Errorf("%s: %d, want at least %d", tt.name, n, tt.min)
		}
	}
	if n := queryInt(t, s, `SELECT COUNT(*) FROM orders WHERE total < 999 OR total > 300000`); n != 0 {
		t.Errorf("%d orders outside 9.99 to 3000.00", n)
	}
	if n := queryInt(t, s, `SELECT COUNT(*) FROM customers WHERE id NOT GLOB 'cus_[a-z]*' OR id GLOB '*[^a-z_]*'`); n != 0 {
		t.Errorf("%d customer ids are not cus_<firstname>", n)
	}
	if n := queryInt(t, s, `SELECT COUNT(*) FROM orders WHERE id NOT GLOB 'ord_[0-9][0-9][0-9][0-9]' OR id < 'ord_1001'`); n != 0 {
		t.Errorf("%d order ids are not ord_1001 upward", n)
	}
}

func TestOpenSeeded(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mandate.db")
	s, seeded, err := OpenSeeded(ctx, path)
	if err != nil || !seeded {
		t.Fatalf("OpenSeeded on a new file = %v, %v; want seeded", seeded, err)
	}
	grace, _ := s.Customer(ctx, "cus_grace")
	if age := time.Since(grace.CreatedAt); age < 47*time.Hour || age > 49*time.Hour {
		t.Fatalf("cus_grace is %v old, want about 2 days", age)
	}
	if _, err := s.Refund(ctx, backend.RefundRequest{OrderID: "ord_1001", Amount: money(t, "5.00", "USD"), IdempotencyKey: "k"}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, seeded, err = OpenSeeded(ctx, path)
	if err != nil || seeded {
		t.Fatalf("OpenSeeded on an existing file = %v, %v; want not seeded", seeded, err)
	}
	defer s.Close()
	if o, _ := s.Order(ctx, "ord_1001"); o.Refunded.Minor != 500 {
		t.Fatalf("refunded = %d after reopening, want 500", o.Refunded.Minor)
	}
}

func TestMigrationsRunOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mandate.db")
	for range 2 {
		s, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		files, _ := fs.Glob(migrationFS, "migrations/*.sql")
		if n := queryInt(t, s, `SELECT COUNT(*) FROM migrations`); n != int64(len(files)) {
			t.Fatalf("%d migrations recorded, want %d", n, len(files))
		}
		s.Close()
	}
}

// TestConcurrentRefunds runs refunds through two handles on one file, as two
// processes would: BEGIN IMMEDIATE must keep the total refunded within the
// order's total and every idempotency key to one refund.
func TestConcurrentRefunds(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mandate.db")
	var stores [2]*Store
	for i := range stores {
		s, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		stores[i] = s
	}
	if _, err := stores[0].Import(ctx, DemoData); err != nil {
		t.Fatal(err)
	}

	t.Run("distinct keys", func(t *testing.T) {
		var wg sync.WaitGroup
		codes := make([]string, 20)
		after := make([]int64, 20) // the order's refunded as each refund left it
		for i := range codes {
			wg.Go(func() {
				r, err := stores[i%2].Refund(ctx, backend.RefundRequest{
					OrderID: "ord_1001", Amount: mandate.Money{Minor: 1000, Currency: "USD"}, IdempotencyKey: fmt.Sprintf("k-%d", i),
				})
				codes[i] = mandate.ErrorCode(err)
				if err == nil && r.Order != nil {
					after[i] = r.Order.Refunded.Minor
				}
			})
		}
		wg.Wait()
		// Each refund's order was read in its own transaction, so the
		// successful ones saw 10.00, 20.00, … 120.00, each exactly once.
		var seen []int64
		for i, c := range codes {
			if c == "" {
				seen = append(seen, after[i])
			}
		}
		slices.Sort(seen)
		for j, v := range seen {
			if v != int64(j+1)*1000 {
				t.Fatalf("orders as the refunds left them = %v, want 1000, 2000, … in steps of 1000", seen)
			}
		}
		var ok, conflict int
		for i, c := range codes {
			switch c {
			case "":
				ok++
			case mandate.ECONFLICT:
				conflict++
			default:
				t.Errorf("refund %d: unexpected code %q", i, c)
			}
		}
		if ok != 12 || conflict != 8 {
			t.Fatalf("%d refunds succeeded and %d conflicted, want 12 and 8", ok, conflict)
		}
		refunded := queryInt(t, stores[1], `SELECT refunded FROM orders WHERE id = 'ord_1001'`)
		sum := queryInt(t, stores[1], `SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE order_id = 'ord_1001'`)
		if refunded != 12000 || sum != refunded {
			t.Fatalf("orders.refunded = %d, sum of refunds = %d; want both 12000", refunded, sum)
		}
	})

	t.Run("same key", func(t *testing.T) {
		var wg sync.WaitGroup
		ids := make([]string, 10)
		for i := range ids {
			wg.Go(func() {
				r, err := stores[i%2].Refund(ctx, backend.RefundRequest{
					OrderID: "ord_1002", Amount: mandate.Money{Minor: 1000, Currency: "USD"}, IdempotencyKey: "same",
				})
				if err != nil {
					t.Errorf("refund %d: %v", i, err)
				}
				ids[i] = r.ID
			})
		}
		wg.Wait()
		for _, id := range ids {
			if id != ids[0] {
				t.Fatalf("one key gave refunds %v, want one id", ids)
			}
		}
		if n := queryInt(t, stores[0], `SELECT refunded FROM orders WHERE id = 'ord_1002'`); n != 1000 {
			t.Fatalf("orders.refunded = %d, want 1000", n)
		}
	})
}

// TestReadersStayOpen: after as many reads at once as serve runs calls,
// the read connections stay open for the next burst instead of being
// closed and opened again (database/sql keeps only 2 by default, and each
// new connection applies the DSN's pragmas and prepares its statements
// anew).
func TestReadersStayOpen(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if _, err := s.Seed(ctx, DemoData); err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		conns := make([]*sql.Conn, idleReaders)
		for i := range conns {
			c, err := s.db.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			conns[i] = c
		}
		for _, c := range conns {
			c.Close()
		}
		// A burst of reads on the kept connections.
		var wg sync.WaitGroup
		for range idleReaders {
			wg.Go(func() {
				if _, err := s.Order(ctx, "ord_1001"); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		st := s.db.Stats()
		if st.MaxIdleClosed != 0 || st.OpenConnections != idleReaders {
			t.Fatalf("round %d: %d read connections closed for being idle past the limit, %d open; want 0 and %d",
				round, st.MaxIdleClosed, st.OpenConnections, idleReaders)
		}
	}
}
