package backend_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mandatehq/mandate/backend"
)

func TestParseConfig(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("file-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"ORDERS_TOKEN": "env-token", "STRIPE_KEY": "sk_test_123"}
	getenv := func(k string) string { return env[k] }

	t.Run("the issue's example", func(t *testing.T) {
		cfg, err := backend.ParseConfig(filepath.Join(dir, "b.yaml"), []byte(`
orders:    { http:   { url: "http://127.0.0.1:9000", token_env: "ORDERS_TOKEN" } }
customers: { http:   { url: "http://127.0.0.1:9000/", token_file: "token", timeout: 3s } }
payments:  { stripe: { secret_key_env: "STRIPE_KEY", api_url: "http://127.0.0.1:12111" } }
`), getenv)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Orders.Kind != backend.KindHTTP || cfg.Orders.HTTP.Token != "env-token" || cfg.Orders.HTTP.URL != "http://127.0.0.1:9000" {
			t.Fatalf("orders = %+v", cfg.Orders.HTTP)
		}
		if cfg.Customers.HTTP.Token != "file-token" || cfg.Customers.HTTP.Timeout.String() != "3s" {
			t.Fatalf("customers = %+v", cfg.Customers.HTTP)
		}
		if cfg.Payments.Kind != backend.KindStripe || cfg.Payments.Stripe.SecretKey != "sk_test_123" {
			t.Fatalf("payments = %+v", cfg.Payments)
		}
	})
	t.Run("empty file and absent capabilities are the embedded store", func(t *testing.T) {
		// docs/backends.md's "the default, spelled out" too: a path left
		// out is the command's --store, judged where it is known.
		for _, src := range []string{"", "orders: { store: { path: shop.db } }\npayments: { store: { path: shop.db } }\n", "orders: { store: { path: shop.db } }\n"} {
			cfg, err := backend.ParseConfig(filepath.Join(dir, "b.yaml"), []byte(src), getenv)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range backend.Capabilities {
				if s := cfg.Capability(name); s.Kind != backend.KindStore {
					t.Fatalf("%q: %s = %+v, want store", src, name, s)
				}
			}
			if src != "" && cfg.Orders.Store.Path != filepath.Join(dir, "shop.db") {
				t.Fatalf("store path = %q, want it relative to the file", cfg.Orders.Store.Path)
			}
		}
	})

	for _, tc := range []struct{ name, src, want string }{
		{"literal token", `orders: { http: { url: "http://127.0.0.1:9000", token: "abc" } }`, "orders.http.token: line 1: a literal secret"},
		{"literal stripe key", `payments: { stripe: { secret_key: "sk_test_1" } }`, "payments.stripe.secret_key: line 1: a literal secret"},
		{"a key as a value", `payments: { stripe: { secret_key_env: "sk_live_abc" } }`, "payments.stripe.secret_key_env: line 1: this value looks like a credential"},
		{"password in url", `orders: { http: { url: "https://u:p@x.example", token_env: ORDERS_TOKEN } }`, "orders.http.url: line 1: the URL carries a password"},
		{"unknown key", "orders:\n  http: { url: \"http://127.0.0.1:9000\", tokn_env: X }", `line 2: unknown key "tokn_env" in http`},
		{"unknown capability", `refunds: { store: {} }`, `unknown key "refunds" at the top level`},
		{"missing env var", `orders: { http: { url: "http://127.0.0.1:9000", token_env: NOPE } }`, "orders.http.token_env: environment variable NOPE is not set"},
		{"no token", `orders: { http: { url: "http://127.0.0.1:9000" } }`, "orders.http: no token"},
		{"bad url", `orders: { http: { url: "127.0.0.1:9000", token_env: ORDERS_TOKEN } }`, "orders.http.url: \"127.0.0.1:9000\" is not an http:// or https:// URL"},
		{"clear text off this machine", `orders: { http: { url: "http://orders.example", token_env: ORDERS_TOKEN } }`, "orders.http.url: \"http://orders.example\" sends credentials in clear"},
		{"two kinds", `orders: { store: {}, http: { url: "http://127.0.0.1:9000" } }`, "orders: set exactly one of store, http or stripe (found 2"},
		{"stripe for orders", `orders: { stripe: { secret_key_env: STRIPE_KEY } }`, "orders.stripe: Stripe can serve payments only"},
		{"not a stripe key", `payments: { stripe: { secret_key_env: ORDERS_TOKEN } }`, "payments.stripe.secret_key: the secret key does not start with sk_"},
		{"refunds in a store without the orders", `orders: { http: { url: "http://127.0.0.1:9000", token_env: ORDERS_TOKEN } }`, "payments: refunds would be made in the embedded store, which does not hold your orders (they are at http://127.0.0.1:9000)"},
		{"refunds in another store file", "orders: { store: { path: shop.db } }\npayments: { store: { path: other.db } }", "payments: refunds would be made in the embedded store, which does not hold your orders (they are at "},
		{"bad timeout", `orders: { http: { url: "http://127.0.0.1:9000", token_env: ORDERS_TOKEN, timeout: soon } }`, "orders.http.timeout: \"soon\" is not a duration"},
		{"half mTLS", `orders: { http: { url: "https://x.example", token_env: ORDERS_TOKEN, cert_file: c.pem } }`, "orders.http: set both cert_file and key_file"},
		{"token file missing", `orders: { http: { url: "http://127.0.0.1:9000", token_file: nope } }`, "orders.http.token_file: open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := backend.ParseConfig("b.yaml", []byte(tc.src), getenv)
			if err == nil || !strings.Contains(err.Error(), "backend file b.yaml: ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v\nwant it to name the file and contain %q", err, tc.want)
			}
		})
	}
}

// TestCheckStores: payments on the embedded store only with the orders in
// the same store file; a path left out is the command's --store, so
// "orders in shop.db, payments left out" is refused with --store store.db
// and accepted with --store shop.db.
func TestCheckStores(t *testing.T) {
	dir := t.TempDir()
	cfg, err := backend.ParseConfig(filepath.Join(dir, "b.yaml"), []byte("orders: { store: { path: shop.db } }\n"), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.CheckStores(filepath.Join(dir, "store.db")); err == nil || !strings.Contains(err.Error(), "refunds would be made in the embedded store") {
		t.Fatalf("orders in shop.db, payments in --store store.db: %v; want refused", err)
	}
	if err := cfg.CheckStores(filepath.Join(dir, "shop.db")); err != nil {
		t.Fatalf("orders in shop.db, payments in --store shop.db: %v; want accepted", err)
	}
}
