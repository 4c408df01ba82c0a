package backend

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Kinds of system of record a capability can be backed by.
const (
	KindStore  = "store"
	KindHTTP   = "http"
	KindStripe = "stripe"
)

// Capabilities names the entries of a backend file, in the order they are
// reported.
var Capabilities = []string{"orders", "customers", "payments"}

// Config is a backend file, read and checked: for each capability, which
// system of record serves it, with its secrets already resolved from the
// environment or from files. It holds no open connections; cmd builds the
// adapters from it.
type Config struct {
	// File is the backend file read, for messages.
	File      string
	Orders    Source
	Customers Source
	Payments  Source
}

// Source is one capability's system of record. Exactly one of Store, HTTP
// and Stripe is set, according to Kind.
type Source struct {
	Kind   string
	Store  *StoreSource
	HTTP   *HTTPSource
	Stripe *StripeSource
}

// Capability returns the source configured for a capability name.
func (c *Config) Capability(name string) Source {
	switch name {
	case "orders":
		return c.Orders
	case "customers":
		return c.Customers
	}
	return c.Payments
}

// StoreSource is the embedded store file; an empty Path means the --store
// the command was given.
type StoreSource struct {
	Path string
}

// HTTPSource is a service implementing the HTTP contract.
type HTTPSource struct {
	URL     string
	Token   string
	TLS     *tls.Config // nil: the system's roots, no client certificate
	Timeout time.Duration
}

// StripeSource is Stripe, or a Stripe-compatible stub such as stripe-mock
// at APIURL.
type StripeSource struct {
	SecretKey string
	APIURL    string
	Timeout   time.Duration
}

// The file's shape. Literal secret keys (token, secret_key, ...) are fields
// only so they can be refused with a message that says what to do instead.
type fileConfig struct {
	Orders    *fileSource `yaml:"orders"`
	Customers *fileSource `yaml:"customers"`
	Payments  *fileSource `yaml:"payments"`
}

type fileSource struct {
	Store  *fileStore  `yaml:"store"`
	HTTP   *fileHTTP   `yaml:"http"`
	Stripe *fileStripe `yaml:"stripe"`
}

type fileStore struct {
	Path string `yaml:"path"`
}

type fileHTTP struct {
	URL       string `yaml:"url"`
	TokenEnv  string `yaml:"token_env"`
	TokenFile string `yaml:"token_file"`
	Token     string `yaml:"token"`
	CAFile    string `yaml:"ca_file"`
	CertFile  string `yaml:"cert_file"`
	KeyFile   string `yaml:"key_file"`
	Timeout   string `yaml:"timeout"`
}

type fileStripe struct {
	SecretKeyEnv  string `yaml:"secret_key_env"`
	SecretKeyFile string `yaml:"secret_key_file"`
	SecretKey     string `yaml:"secret_key"`
	APIURL        string `yaml:"api_url"`
	Timeout       string `yaml:"timeout"`
}

// secretLike matches values that are credentials themselves: Stripe keys,
// bearer tokens, JWTs. Such a value in the file is refused wherever it is,
// because a backend file is checked in and copied around.
var secretLike = regexp.MustCompile(`^(sk|rk|pk)_(live|test)_|^whsec_|^Bearer\s|^eyJ[A-Za-z0-9_-]{10,}\.`)

// LoadConfig reads and checks a backend file. getenv resolves *_env keys
// (os.Getenv in production). Every error names the file and the key. A
// capability the file leaves out is the embedded store, as without a file.
// Relative paths in the file (store path, token_file, TLS files) are
// relative to the file's directory, so the file means the same thing
// whatever directory Mandate is started from.
func LoadConfig(path string, getenv func(string) string) (*Config, error) {
	buf, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("backend file: %w", err)
	}
	return ParseConfig(path, buf, getenv)
}

// ParseConfig is LoadConfig for a file already read.
func ParseConfig(path string, buf []byte, getenv func(string) string) (*Config, error) {
	fail := func(key, format string, args ...any) error {
		return fmt.Errorf("backend file %s: %s: %s", path, key, fmt.Sprintf(format, args...))
	}
	var root yaml.Node
	if err := yaml.Unmarshal(buf, &root); err != nil {
		return nil, fmt.Errorf("backend file %s: not valid YAML: %w", path, err)
	}
	if err := checkSecrets(&root, "", fail); err != nil {
		return nil, err
	}
	var f fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(buf))
	dec.KnownFields(true)
	// io.EOF is an empty file: the default, everything on the embedded store.
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		msg := strings.TrimPrefix(friendlyYAML(err), "yaml: ")
		msg = strings.ReplaceAll(strings.TrimPrefix(msg, "unmarshal errors:\n  "), "\n  ", "; ")
		return nil, fmt.Errorf("backend file %s: %s", path, msg)
	}
	dir := filepath.Dir(path)
	cfg := &Config{File: path}
	for _, c := range []struct {
		name string
		in   *fileSource
		out  *Source
	}{{"orders", f.Orders, &cfg.Orders}, {"customers", f.Customers, &cfg.Customers}, {"payments", f.Payments, &cfg.Payments}} {
		src, err := resolve(c.name, c.in, dir, getenv, fail)
		if err != nil {
			return nil, err
		}
		*c.out = src
	}
	// Refunds are made where payments point, and the embedded store
	// refunds only the orders it holds. With the orders elsewhere, a refund
	// would be made in a local file nobody reads and answered as done.
	// A path left out is the command's --store, known only there
	// (CheckStores); two given paths are compared here.
	if err := cfg.CheckStores(""); err != nil {
		return nil, err
	}
	return cfg, nil
}

// CheckStores refuses payments on the embedded store when the orders are
// not in the same store file: refunds are made where payments point, and
// the store refunds only the orders it holds, so with the orders elsewhere
// a refund would be made in a local file nobody reads and answered as
// done. storePath is what a store entry without a path means (the
// command's --store); "" leaves such an entry unjudged.
func (c *Config) CheckStores(storePath string) error {
	if c.Payments.Kind != KindStore {
		return nil
	}
	where := ""
	switch c.Orders.Kind {
	case KindHTTP:
		where = c.Orders.HTTP.URL
	case KindStore:
		o, p := c.Orders.Store.Path, c.Payments.Store.Path
		if o == "" {
			o = storePath
		}
		if p == "" {
			p = storePath
		}
		if o != "" && p != "" && filepath.Clean(o) != filepath.Clean(p) {
			where = o
		}
	}
	if where == "" {
		return nil
	}
	return fmt.Errorf("backend file %s: payments: refunds would be made in the embedded store, which does not hold your orders (they are at %s): say where refunds are made, e.g. payments: { http: { url: ..., token_env: ... } } for the service that answers POST /orders/{id}/refunds, or payments: { stripe: { ... } }", c.File, where)
}

// friendlyYAML rewrites yaml.v3's "field x not found in type backend.fileHTTP"
// as "unknown key x".
func friendlyYAML(err error) string {
	msg := err.Error()
	re := regexp.MustCompile(`field (\S+) not found in type backend\.file(\w+)`)
	return re.ReplaceAllStringFunc(msg, func(m string) string {
		s := re.FindStringSubmatch(m)
		where := map[string]string{"Config": "at the top level (use orders, customers, payments)",
			"Source": "in a capability (use one of store, http, stripe)",
			"Store":  "in store (use path)",
			"HTTP":   "in http (use url, token_env, token_file, ca_file, cert_file, key_file, timeout)",
			"Stripe": "in stripe (use secret_key_env, secret_key_file, api_url, timeout)"}[s[2]]
		return fmt.Sprintf("unknown key %q %s", s[1], where)
	})
}

// checkSecrets walks the document and refuses literal secrets: a token or
// secret_key key, or any value that looks like a credential.
func checkSecrets(n *yaml.Node, path string, fail func(key, format string, args ...any) error) error {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			if err := checkSecrets(c, path, fail); err != nil {
				return err
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := strings.TrimPrefix(path+"."+k.Value, ".")
			switch k.Value {
			case "token", "secret_key", "password", "api_key":
				return fail(key, "line %d: a literal secret is not allowed in the backend file; name an environment variable with %s_env or a file with %s_file instead",
					k.Line, k.Value, k.Value)
			}
			if err := checkSecrets(v, key, fail); err != nil {
				return err
			}
		}
	case yaml.ScalarNode:
		if secretLike.MatchString(n.Value) {
			return fail(path, "line %d: this value looks like a credential; secrets come from the environment (*_env) or a file (*_file), never from the backend file", n.Line)
		}
		if u, err := url.Parse(n.Value); err == nil && u.User != nil {
			if _, has := u.User.Password(); has {
				return fail(path, "line %d: the URL carries a password; use token_env or token_file instead", n.Line)
			}
		}
	}
	return nil
}

func resolve(name string, in *fileSource, dir string, getenv func(string) string, fail func(key, format string, args ...any) error) (Source, error) {
	if in == nil {
		return Source{Kind: KindStore, Store: &StoreSource{}}, nil
	}
	var kinds []string
	if in.Store != nil {
		kinds = append(kinds, KindStore)
	}
	if in.HTTP != nil {
		kinds = append(kinds, KindHTTP)
	}
	if in.Stripe != nil {
		kinds = append(kinds, KindStripe)
	}
	if len(kinds) != 1 {
		return Source{}, fail(name, "set exactly one of store, http or stripe (found %d: %s)", len(kinds), strings.Join(kinds, ", "))
	}
	switch kinds[0] {
	case KindStore:
		p := in.Store.Path
		if p != "" && !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		return Source{Kind: KindStore, Store: &StoreSource{Path: p}}, nil
	case KindStripe:
		if name != "payments" {
			return Source{}, fail(name+".stripe", "Stripe can serve payments only; %s need store or http", name)
		}
		key := name + ".stripe"
		secret, err := secretFrom(key, "secret_key", in.Stripe.SecretKeyEnv, in.Stripe.SecretKeyFile, dir, getenv, fail)
		if err != nil {
			return Source{}, err
		}
		if !strings.HasPrefix(secret, "sk_") && !strings.HasPrefix(secret, "rk_") {
			return Source{}, fail(key+".secret_key", "the secret key does not start with sk_ or rk_; use a Stripe secret or restricted key")
		}
		apiURL := in.Stripe.APIURL
		if apiURL != "" {
			if err := checkURL(key+".api_url", apiURL, fail); err != nil {
				return Source{}, err
			}
		}
		timeout, err := duration(key+".timeout", in.Stripe.Timeout, fail)
		if err != nil {
			return Source{}, err
		}
		return Source{Kind: KindStripe, Stripe: &StripeSource{SecretKey: secret, APIURL: strings.TrimRight(apiURL, "/"), Timeout: timeout}}, nil
	}
	key := name + ".http"
	h := in.HTTP
	if h.URL == "" {
		return Source{}, fail(key+".url", "missing; name the service's base URL, e.g. https://orders.internal/mandate")
	}
	if err := checkURL(key+".url", h.URL, fail); err != nil {
		return Source{}, err
	}
	token, err := secretFrom(key, "token", h.TokenEnv, h.TokenFile, dir, getenv, fail)
	if err != nil {
		return Source{}, err
	}
	timeout, err := duration(key+".timeout", h.Timeout, fail)
	if err != nil {
		return Source{}, err
	}
	src := &HTTPSource{URL: strings.TrimRight(h.URL, "/"), Token: token, Timeout: timeout}
	if h.CAFile != "" || h.CertFile != "" || h.KeyFile != "" {
		if src.TLS, err = tlsConfig(key, h, dir, fail); err != nil {
			return Source{}, err
		}
		if !strings.HasPrefix(h.URL, "https://") {
			return Source{}, fail(key+".url", "ca_file, cert_file and key_file need an https:// URL")
		}
	}
	return Source{Kind: KindHTTP, HTTP: src}, nil
}

// secretFrom reads a secret from exactly one of an environment variable or
// a file.
func secretFrom(key, what, envName, file, dir string, getenv func(string) string, fail func(key, format string, args ...any) error) (string, error) {
	switch {
	case envName != "" && file != "":
		return "", fail(key, "set only one of %s_env and %s_file", what, what)
	case envName != "":
		v := strings.TrimSpace(getenv(envName))
		if v == "" {
			return "", fail(key+"."+what+"_env", "environment variable %s is not set or empty", envName)
		}
		return v, nil
	case file != "":
		if !filepath.IsAbs(file) {
			file = filepath.Join(dir, file)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fail(key+"."+what+"_file", "%v", err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fail(key+"."+what+"_file", "%s is empty", file)
		}
		return v, nil
	}
	return "", fail(key, "no %s: set %s_env (an environment variable) or %s_file (a file holding it)", what, what, what)
}

// checkURL accepts http(s) URLs with a host, and plain http only to this
// machine: a bearer token or a Stripe key never crosses a network in clear.
func checkURL(key, raw string, fail func(key, format string, args ...any) error) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.RawQuery != "" || u.Fragment != "" {
		return fail(key, "%q is not an http:// or https:// URL with a host and no query", raw)
	}
	if u.Scheme == "http" {
		host := u.Hostname()
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fail(key, "%q sends credentials in clear over the network; use https:// (plain http is allowed only to localhost)", raw)
		}
	}
	return nil
}

func duration(key, s string, fail func(key, format string, args ...any) error) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 || d > 5*time.Minute {
		return 0, fail(key, "%q is not a duration between 0 and 5m, like \"5s\"", s)
	}
	return d, nil
}

func tlsConfig(key string, h *fileHTTP, dir string, fail func(key, format string, args ...any) error) (*tls.Config, error) {
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if h.CAFile != "" {
		pem, err := os.ReadFile(abs(h.CAFile))
		if err != nil {
			return nil, fail(key+".ca_file", "%v", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fail(key+".ca_file", "no PEM certificate in %s", h.CAFile)
		}
	}
	if (h.CertFile == "") != (h.KeyFile == "") {
		return nil, fail(key, "set both cert_file and key_file for mutual TLS, or neither")
	}
	if h.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(abs(h.CertFile), abs(h.KeyFile))
		if err != nil {
			return nil, fail(key+".cert_file", "%v", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
