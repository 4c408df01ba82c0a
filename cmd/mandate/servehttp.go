package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/mandatehq/mandate/auth"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/server"
)

// Limits of the HTTP transport. A tools/call is small: 1 MiB is far more
// than any of our tools' arguments, and bounds what one request can make
// the server hold. Headers must arrive within 10 s (slowloris); an idle
// keep-alive connection is closed after 2 min. There is no write timeout:
// a call may wait on a backend for up to --backend-timeout, twice.
const (
	maxRequestBody    = 1 << 20
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	shutdownGrace     = 30 * time.Second
)

// serveHTTP serves s over MCP Streamable HTTP at /mcp on ln until ctx is
// done, then stops accepting and waits (up to shutdownGrace) for calls in
// flight to finish, so their outcomes are recorded. Every /mcp request
// must prove an agent identity with its bearer credential (authn: an API
// key, or an OAuth access token when configured); the identity and the
// credential's name go into the request's context for the tools
// (tools.WithAgent, tools.WithCredential) and nothing else (arguments,
// other headers, a session id) can name it. Stateless:
// the server keeps no sessions, so several processes can share a
// database behind one load balancer, and a session id means nothing.
//
// ops adds the operations endpoints, the Host/Origin checks and the
// per-agent concurrency limit (ops.go, opsguard.go); proxy the public
// URL and the trusted proxies (proxy.go).
func serveHTTP(ctx context.Context, ln net.Listener, tlsOn bool, s *server.MCPServer, authn *auth.Bearer, toolNames []string, log *slog.Logger, ops *httpOps, proxy *proxySettings) error {
	mcpHandler := server.NewStreamableHTTPServer(s,
		server.WithStateLess(true),
		server.WithDisableLocalhostProtection(ops.ownHostCheck()),
		server.WithStreamableHTTPLogger(log),
		server.WithHTTPContextFunc(func(ctx context.Context, r *http.Request) context.Context {
			// The one place an HTTP request's identity enters the tools:
			// the principal the auth middleware verified, else nobody
			// (the guard denies).
			p, _ := auth.PrincipalFrom(r.Context())
			return tools.WithTraceparent(tools.WithCredential(tools.WithAgent(ctx, p.Agent), p.Credential), r.Header.Get("traceparent"))
		}),
	)
	mux := http.NewServeMux()
	mux.Handle("/mcp", ops.guarded(limitBody(auth.Middleware(authn, ops.limited(mcpHandler), toolNames, func(r *http.Request) string {
		return proxy.base(r, tlsOn) + "/.well-known/oauth-protected-resource"
	}))))
	meta := func(w http.ResponseWriter, r *http.Request) {
		// RFC 9728: names the resource, and the authorization server
		// when OAuth is on.
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(authn.ProtectedResource(proxy.base(r, tlsOn) + "/mcp"))
	}
	mux.Handle("GET /.well-known/oauth-protected-resource", ops.guarded(http.HandlerFunc(meta)))
	mux.Handle("GET /.well-known/oauth-protected-resource/mcp", ops.guarded(http.HandlerFunc(meta)))
	ops.handlers(mux)
	srv := &http.Server{
		Handler:           proxy.clientAddr(mux),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		// Calls in flight keep their own context: a SIGTERM stops new
		// requests, and lets running calls finish and record outcomes.
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: no new requests; waiting for calls in flight")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(<-done, http.ErrServerClosed) && err == nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("serve: calls still running after %s at shutdown: %w", shutdownGrace, err)
	}
	return nil
}

// limitBody caps each request body at maxRequestBody; a larger one fails
// to read, which mcp-go answers as a bad request.
func limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxRequestBody)
		next.ServeHTTP(w, r)
	})
}

// baseURL is this server's URL as the client reached it. The Host header
// is the client's; on loopback mcp-go refuses Host values that are not
// localhost (DNS rebinding), and elsewhere a wrong Host only misleads the
// client that sent it.
func baseURL(r *http.Request, tlsOn bool) string {
	scheme := "http"
	if tlsOn {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// listenHTTP opens addr, with TLS from cert and key when tlsOn.
func listenHTTP(ctx context.Context, addr string, tlsOn bool, cert, key string) (net.Listener, error) {
	var c tls.Certificate
	if tlsOn {
		var err error
		if c, err = tls.LoadX509KeyPair(cert, key); err != nil {
			return nil, fmt.Errorf("serve: load --tls-cert/--tls-key: %w", err)
		}
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("serve: listen on %s: %w", addr, err)
	}
	if tlsOn {
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12})
	}
	return ln, nil
}
