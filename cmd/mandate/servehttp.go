package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/mandatehq/mandate/auth"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/mcp"
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

// shutdownGraceFor is how long a stop waits for calls in flight: 30 s, or
// longer when a call may take longer (twice --backend-timeout: execute's
// budget, tools.execBudget), so an action sent to the backend is never
// cut off before its outcome is recorded.
func shutdownGraceFor(backendTimeout time.Duration) time.Duration {
	return max(shutdownGrace, 2*backendTimeout+5*time.Second)
}

// serveHTTP serves s over MCP Streamable HTTP at /mcp on ln until ctx is
// done, then stops accepting and waits (up to grace) for calls in
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
func serveHTTP(ctx context.Context, ln net.Listener, tlsOn bool, s *server.MCPServer, authn *auth.Bearer, toolNames []string, log *slog.Logger, ops *httpOps, proxy *proxySettings, grace time.Duration) error {
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
	streamsDone := make(chan struct{})
	mux := http.NewServeMux()
	mux.Handle("/mcp", ops.guarded(limitBody(auth.Middleware(authn, dropCancels(ops.limited(ownSessions(endStreams(authn, toolNames, streamsDone, mcpHandler)))), toolNames, func(r *http.Request) string {
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
		Handler:           bodyDeadline(proxy.clientAddr(mux)),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		// Calls in flight keep their own context: a SIGTERM stops new
		// requests, and lets running calls finish and record outcomes.
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	srv.RegisterOnShutdown(func() { close(streamsDone) })
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: no new requests; waiting for calls in flight")
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(<-done, http.ErrServerClosed) && err == nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("serve: calls still running after %s at shutdown: %w", grace, err)
	}
	return nil
}

// ownSessions keeps every request off every other request's session:
// stateless, a client's Mcp-Session-Id names nothing, so a POST never
// runs on (and a DELETE never ends) a stream another credential opened,
// and each GET stream gets a session of its own that no one can name.
func ownSessions(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodDelete:
			w.Header().Set("Allow", "GET, POST")
			http.Error(w, "this server is stateless: there is no session to end", http.StatusMethodNotAllowed)
			return
		case http.MethodGet:
			r.Header.Set("Mcp-Session-Id", "mcp-session-"+rand.Text())
		default:
			r.Header.Del("Mcp-Session-Id")
		}
		next.ServeHTTP(w, r)
	})
}

// dropCancels answers a notifications/cancelled with 202 Accepted and
// passes it no further: over this server's HTTP no request cancels
// another. mcp-go keeps the cancel func of every request in flight in one
// process-wide map keyed by session id and JSON-RPC id; stateless, every
// POST runs on a session whose id is "", so the key is the request id
// alone, which each client picks for itself (most count from 0 or 1).
// Passed on, agent B's cancel for id 42 would end agent A's call 42 (one
// not yet recorded stops and does nothing) or A's subscriptions/listen,
// with nothing in the audit trail to say who did it. Only the verified
// credential names a caller, and scoping a cancel to its agent would still
// let one of an agent's clients end another's call with the same id, so
// cancels are dropped. A client cancels a call over HTTP by closing its
// connection: that ends the request's context, which the guard honours
// until the attempt is recorded (tools/guard.go), as it honours a cancel
// over stdio. The body is already bounded (limitBody); it is read here and
// handed on unchanged, read error included, so mcp-go answers as before.
func dropCancels(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), errReader{err}))
		// Decoded as mcp-go decodes it (encoding/json: the last "method"
		// key wins, names match case-insensitively), so both see the
		// same method.
		var msg struct {
			Method string `json:"method"`
		}
		if err == nil && json.Unmarshal(body, &msg) == nil && msg.Method == string(mcp.MethodNotificationCancelled) {
			w.WriteHeader(http.StatusAccepted)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// errReader returns err, or io.EOF when err is nil.
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) {
	if e.err == nil {
		return 0, io.EOF
	}
	return 0, e.err
}

// isStream reports whether r opens a notification stream: a 2025-11-25
// GET, or a 2026-07-28 subscriptions/listen (named in its Mcp-Method
// header, which mcp-go requires to match the body).
func isStream(r *http.Request) bool {
	return r.Method == http.MethodGet || r.Header.Get("Mcp-Method") == "subscriptions/listen"
}

// streamRecheck is how often an open notification stream's credential
// is checked again.
const streamRecheck = 5 * time.Second

// endStreams ends a notification stream (a 2025-11-25 GET, a 2026-07-28
// subscriptions/listen) at shutdown, so that SIGTERM does not wait out the
// grace period for streams that never end by themselves, and once its
// credential no longer authenticates (a key revoked or expired, a token
// expired, an identity gone from the policy): revocation applies to open
// streams too, within streamRecheck. The failed check is audited like any
// refused request (auth.RequestAuthenticator).
func endStreams(authn auth.RequestAuthenticator, tools []string, shutdown <-chan struct{}, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isStream(r) {
			next.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		go func() {
			t := time.NewTicker(streamRecheck)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-shutdown:
					cancel()
					return
				case <-t.C:
					if _, err := authn.Authenticate(r, tools); err != nil {
						cancel()
						return
					}
				}
			}
		}()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// bodyTimeout bounds how long a request's body may take to arrive.
const bodyTimeout = 30 * time.Second

// bodyDeadline gives a request with a body bodyTimeout to send it, as the
// connection's read deadline. Without it a client, authenticated or not,
// could announce a body and never send it and hold the connection (and,
// with a key, one of its agent's concurrent-call slots) for ever: net/http
// waits to discard an unread body before it writes a 401, and mcp-go reads
// the whole body before it answers. A plain ReadTimeout would also end
// notification streams; this deadline is lifted once the body has been
// read, so a subscriptions/listen stream stays open.
func bodyDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
			rc := http.NewResponseController(w)
			_ = rc.SetReadDeadline(time.Now().Add(bodyTimeout))
			r.Body = &liftAtEOF{ReadCloser: r.Body, lift: func() { _ = rc.SetReadDeadline(time.Time{}) }}
		}
		next.ServeHTTP(w, r)
	})
}

// liftAtEOF calls lift once its body has been read to the end.
type liftAtEOF struct {
	io.ReadCloser
	lift func()
	once sync.Once
}

func (b *liftAtEOF) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.once.Do(b.lift)
	}
	return n, err
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
