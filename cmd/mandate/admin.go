package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/mandatehq/mandate/admin"
	"github.com/mandatehq/mandate/storage"
)

// runAdmin serves the admin pages; `admin -h` lists `admin user add` too,
// in the serve flags' synopsis.
func runAdmin(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "user" {
		return runAdminUser(ctx, args[1:], stdin, stdout, stderr)
	}
	return runAdminServe(ctx, args, stdout, stderr)
}

func runAdminServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("admin", "mandate admin [--listen 127.0.0.1:8080] [--tls-cert FILE --tls-key FILE] [--public-url URL]\n       [--db FILE --store FILE --model FILE --policy FILE]\n       mandate admin user list | add|remove|passwd|sessions|token NAME   (approvers: 'mandate admin user -h')", stderr)
	listen := fs.String("listen", env("MANDATE_ADMIN_LISTEN", "127.0.0.1:8080"), "address to serve the admin pages on (env MANDATE_ADMIN_LISTEN)")
	dbPath := dbFlag(fs)
	auditKey := auditKeyFlag(fs)
	storePath := fs.String("store", env("MANDATE_STORE", "store.db"), "the store approved actions run against (env MANDATE_STORE)")
	backendFile := fs.String("backend", env("MANDATE_BACKEND", ""), backendFlagHelp)
	secure := fs.Bool("secure-cookies", false, "mark cookies Secure: set when a TLS proxy serves these pages (implied by --tls-cert or an https --public-url)")
	tlsCert := fs.String("tls-cert", env("MANDATE_ADMIN_TLS_CERT", ""), "serve HTTPS with this PEM certificate (chain) file (env MANDATE_ADMIN_TLS_CERT); needs --tls-key")
	tlsKey := fs.String("tls-key", env("MANDATE_ADMIN_TLS_KEY", ""), "the PEM private key of --tls-cert (env MANDATE_ADMIN_TLS_KEY)")
	publicURL := fs.String("public-url", env("MANDATE_ADMIN_PUBLIC_URL", ""), "the URL people open, e.g. https://approvals.example.com (env MANDATE_ADMIN_PUBLIC_URL): its host is accepted in the Host header")
	insecure := fs.Bool("insecure-http", false, "allow plain HTTP on a non-loopback --listen: passwords and sessions cross the network readable; only behind a TLS proxy on a trusted network")
	proxies := fs.String("trusted-proxy", env("MANDATE_ADMIN_TRUSTED_PROXY", ""), "comma-separated addresses or CIDRs of reverse proxies whose X-Forwarded-For names the client (env MANDATE_ADMIN_TRUSTED_PROXY)")
	idle := fs.Duration("idle-timeout", 30*time.Minute, "end a session unused for this long")
	ttl := fs.Duration("session-ttl", 8*time.Hour, "end a session this long after sign-in, however busy")
	level := fs.String("log-level", env("MANDATE_LOG_LEVEL", "info"), "debug, info, warn or error (env MANDATE_LOG_LEVEL)")
	var pf policyFlags
	pf.register(fs)
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	nw, err := adminNetwork(*listen, *tlsCert, *tlsKey, *publicURL, *insecure)
	if err != nil {
		return err
	}
	trusted, err := parsePrefixes(*proxies)
	if err != nil {
		return usageError{"admin: --trusted-proxy: " + err.Error()}
	}
	if *idle <= 0 || *ttl <= 0 {
		return usageError{"admin: --idle-timeout and --session-ttl must be positive"}
	}
	log, err := newLogger(stderr, *level, "text")
	if err != nil {
		return err
	}
	if nw.insecureWarning {
		fmt.Fprintf(stderr, "WARNING: serving plain HTTP on %s, which is not loopback (--insecure-http). Passwords, session cookies and every decision cross the network unencrypted. Put a TLS proxy in front or use --tls-cert/--tls-key.\n", *listen)
		log.Warn("serving plain HTTP on a non-loopback address", "listen", *listen)
	}
	ad, err := openApprovalDeps(ctx, *dbPath, *storePath, *backendFile, &pf, stderr, storage.AuditKeyFile(*auditKey))
	if err != nil {
		return err
	}
	defer ad.Close()
	ad.deps.Logger = log
	// admin decides, so it records its policy as live and reloads it like serve.
	if err := keepPolicyLive(ctx, ad.deps.DB, ad.deps.Policy, &pf, "admin", "", log, nil); err != nil {
		return err
	}
	// Approvals convert money with the rates live now, as serve does, and
	// only when they are the live rates recorded in the database.
	if err := pf.keepRatesLive(ctx, ad.deps.DB, ad.deps.Rates, "admin", "", log); err != nil {
		return err
	}
	srv, err := admin.New(admin.Config{Deps: ad.deps, Secure: *secure || nw.secure, Logger: log,
		IdleTimeout: *idle, SessionTTL: *ttl, Hosts: nw.hosts, TrustedProxies: trusted})
	if err != nil {
		return err
	}
	var cert tls.Certificate
	if nw.tls {
		if cert, err = tls.LoadX509KeyPair(*tlsCert, *tlsKey); err != nil {
			return fmt.Errorf("admin: TLS certificate: %w", err)
		}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	scheme := "http"
	if nw.tls {
		scheme = "https"
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	go srv.ExpireLoop(ctx, time.Minute)
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: time.Minute,
		MaxHeaderBytes: 64 << 10}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
	}()
	fmt.Fprintf(stdout, "Mandate admin on %s://%s/ (db %s, store %s)\n", scheme, ln.Addr(), storage.Redact(*dbPath), *storePath)
	log.Info("serving admin pages", "addr", ln.Addr().String(), "tls", nw.tls, "db", storage.Redact(*dbPath), "store", *storePath)
	if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// adminNet is how the admin page meets the network, decided from flags.
type adminNet struct {
	tls, secure, insecureWarning bool
	hosts                        []string
}

// adminNetwork checks the network flags of `mandate admin`: TLS needs both
// files; a --listen that is not loopback needs TLS (or --insecure-http,
// warned about loudly), because passwords and session cookies cross it;
// and it lists the Host header values to accept: the loopback names, the
// listen address itself when it names a host, and the --public-url host.
// A wildcard listen (0.0.0.0, :8080) names no host, so with it only the
// loopback names and --public-url are accepted: a DNS name pointing at us
// must be declared, which is what stops DNS rebinding.
func adminNetwork(listen, cert, key, publicURL string, insecure bool) (adminNet, error) {
	var n adminNet
	host, tls, warn, err := listenNetwork("admin", "--listen", listen, cert, key, insecure, "passwords and sessions")
	if err != nil {
		return n, err
	}
	n.tls, n.secure, n.insecureWarning = tls, tls, warn
	n.hosts = []string{"localhost", "127.0.0.1", "::1"}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		n.hosts = append(n.hosts, host)
	}
	if publicURL != "" {
		u, err := url.Parse(publicURL)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return n, usageError{fmt.Sprintf("admin: --public-url %q must be an http:// or https:// URL with a host", publicURL)}
		}
		if u.Scheme == "https" {
			n.secure = true
		}
		// The name only: a port differs behind a proxy, and rebinding is
		// about names, not ports.
		n.hosts = append(n.hosts, strings.ToLower(u.Hostname()))
	}
	return n, nil
}

// listenNetwork checks a listening command's network flags, shared by
// `mandate admin` and `mandate serve --http`: TLS needs both files, and an
// address that is not loopback needs TLS or insecure (--insecure-http),
// because secrets (what names) would cross the network in clear text;
// warn says the caller must then warn at start. host is the address's host.
func listenNetwork(cmd, flagName, listen, cert, key string, insecure bool, what string) (host string, tls, warn bool, err error) {
	if (cert == "") != (key == "") {
		return "", false, false, usageError{cmd + ": give both --tls-cert and --tls-key, or neither"}
	}
	tls = cert != ""
	host, _, err = net.SplitHostPort(listen)
	if err != nil {
		return "", false, false, usageError{fmt.Sprintf("%s: %s %q is not HOST:PORT: %v", cmd, flagName, listen, err)}
	}
	if !loopback(listen) && !tls {
		if !insecure {
			return "", false, false, usageError{fmt.Sprintf("%s: %s %s is reachable from the network, and without TLS %s would cross it in clear text; "+
				"give --tls-cert and --tls-key, listen on 127.0.0.1 behind a TLS proxy, or (on a trusted network only) add --insecure-http", cmd, flagName, listen, what)}
		}
		warn = true
	}
	return host, tls, warn, nil
}

// parsePrefixes reads "10.0.0.1, 192.168.0.0/16" as prefixes; a lone
// address is its own /32 or /128.
func parsePrefixes(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("%q is neither an address nor a CIDR", f)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}
