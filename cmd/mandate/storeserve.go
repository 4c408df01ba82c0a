package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/mandatehq/mandate/backend"
	"github.com/mandatehq/mandate/backend/httpapi"
	"github.com/mandatehq/mandate/backend/store"
)

// runStoreServe serves the embedded store over the HTTP backend contract
// (api/backend.openapi.yaml): the reference implementation, and a way to run
// the demo store as its own service.
func runStoreServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("store serve", "mandate store serve [--store FILE] [--listen ADDR] [--token-file FILE]", stderr)
	path := fs.String("store", env("MANDATE_STORE", "store.db"), "embedded store to serve; created with the demo data if missing (env MANDATE_STORE)")
	listen := fs.String("listen", env("MANDATE_STORE_LISTEN", "127.0.0.1:9000"), "address to listen on (env MANDATE_STORE_LISTEN)")
	tokenFile := fs.String("token-file", env("MANDATE_STORE_TOKEN_FILE", ""), "file holding the bearer token clients must send; required unless --listen is a loopback address (env MANDATE_STORE_TOKEN_FILE)")
	level := fs.String("log-level", env("MANDATE_LOG_LEVEL", "info"), "debug, info, warn or error (env MANDATE_LOG_LEVEL)")
	format := fs.String("log-format", env("MANDATE_LOG_FORMAT", "text"), "text or json; logs go to stderr (env MANDATE_LOG_FORMAT)")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	log, err := newLogger(stderr, *level, *format)
	if err != nil {
		return err
	}
	var token string
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fmt.Errorf("store serve: --token-file: %w", err)
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return fmt.Errorf("store serve: --token-file %s is empty", *tokenFile)
		}
	} else if !loopback(*listen) {
		// The store holds customers' personal data and moves money: off the
		// local machine it is never served without authentication.
		return usageError{fmt.Sprintf("store serve: --listen %s is not a loopback address; set --token-file so clients must authenticate", *listen)}
	}
	st, seeded, err := store.OpenSeeded(ctx, *path)
	if err != nil {
		return fmt.Errorf("store %s: %w", *path, err)
	}
	defer st.Close()
	if seeded {
		log.Info("created the embedded store with demo data", "store", *path)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &httpapi.Server{Backend: backend.Backend{Payments: st, Orders: st, Customers: st}, Token: token, Logger: log}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	// The address actually bound goes to stdout so a caller that asked for
	// port 0 learns it.
	fmt.Fprintf(stdout, "serving %s on http://%s\n", *path, ln.Addr())
	log.Info("serving the store over the backend contract", "store", *path, "addr", ln.Addr().String(), "auth", token != "")
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
	}()
	if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// loopback reports whether addr listens on the local machine only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
