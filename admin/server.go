// Package admin is the web page where people decide what the rules sent to
// them: a queue of pending actions with the order and customer behind each,
// approve and deny with a comment, and an audit viewer with one action's
// whole lineage and the state of the hash chain.
//
// It is server-rendered html/template with its CSS embedded, so it works
// with no internet and runs no script. Sessions live in the gateway
// database (storage.CreateSession): any admin process sharing the database
// honours them, and a restart logs nobody out. The cookie holds a random
// token (HttpOnly, SameSite=Strict, Secure when served over TLS); every form
// carries the session's CSRF token and every POST is refused without it.
// Approving goes through tools.Approve, the same path as the CLI: fresh
// facts, the approver's rule, the current policy, one execution.
//
// Who may sign in is auth's to decide (backoff, hashing cap, audited
// failures); what they may see is asked of the live policy on every
// request: approvers see the queue and the audit trail, an auditor only the
// trail, and anyone else (a user whose role was removed a second ago) is
// signed out. The server judges roles by the policy it holds, so while that
// is not the live one (another process recorded a newer version) it
// answers every sign-in and page 503. Requests whose Host header names another site are refused,
// so a DNS-rebinding page cannot reach the login form.
package admin

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auth"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
)

//go:embed templates/*.html static/*
var assets embed.FS

const (
	sessionCookie = "mandate_session"
	loginCookie   = "mandate_login" // the login form's CSRF token, before there is a session
)

// Config is what the admin server needs, built in cmd.
type Config struct {
	// Deps are the tools' dependencies: approving executes through them,
	// and their Backend supplies the order and customer context.
	Deps *tools.Deps
	// Secure marks cookies Secure; set it when serving over TLS or behind
	// an https:// public URL.
	Secure bool
	// SessionTTL is how long a login lasts at most, however busy; 0 means
	// 8 hours.
	SessionTTL time.Duration
	// IdleTimeout ends a session not used for this long; 0 means 30 min.
	IdleTimeout time.Duration
	// Hosts are the host names served ("approvals.example.com",
	// "127.0.0.1"), on any port: rebinding is about names. Empty means
	// loopback only: localhost, 127.0.0.1 and ::1.
	// Anything else gets 421, so a DNS-rebinding page cannot talk to us.
	Hosts []string
	// Auth checks passwords; nil builds one on Deps with the defaults.
	Auth *auth.Authenticator
	// TrustedProxies are the addresses of reverse proxies in front of this
	// server. For a request from one of them, the client's address (for
	// per-address backoff and the audit) is the nearest untrusted address
	// in X-Forwarded-For; from anywhere else that header is ignored, so a
	// client cannot pick its own address. Without this, everyone behind a
	// proxy shares the proxy's address and its backoff.
	TrustedProxies []netip.Prefix
	// FailureWarning is how many failed sign-ins on one account in the
	// last 24 h put a warning on the queue; 0 means 5.
	FailureWarning int
	Logger         *slog.Logger
}

// Server serves the admin pages.
type Server struct {
	cfg   Config
	pages map[string]*template.Template
	mux   *http.ServeMux
	live  liveView
}

// liveView is the server's view of the live policy version (the newest
// recorded load), read again at most every tools.SuspensionRefresh, as the
// tools' lookups read it.
type liveView struct {
	mu      sync.Mutex
	at      time.Time
	version string
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Deps == nil || cfg.Deps.DB == nil || cfg.Deps.Policy == nil {
		return nil, errors.New("admin: Deps with a DB and a Policy are required")
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = 8 * time.Hour
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 30 * time.Minute
	}
	if cfg.FailureWarning == 0 {
		cfg.FailureWarning = 5
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Hosts) == 0 {
		cfg.Hosts = []string{"localhost", "127.0.0.1", "::1"}
	}
	s := &Server{cfg: cfg, pages: map[string]*template.Template{}, mux: http.NewServeMux()}
	if s.cfg.Auth == nil {
		s.cfg.Auth = &auth.Authenticator{DB: cfg.Deps.DB, Policy: cfg.Deps.Policy, Now: s.now, Logger: cfg.Logger}
	}
	for _, page := range []string{"login", "queue", "action", "audit", "lineage", "agents"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/"+page+".html")
		if err != nil {
			return nil, err
		}
		s.pages[page] = t
	}
	static, err := fs.Sub(assets, "static")
	if err != nil {
		return nil, err
	}
	s.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(filesOnly{static})))
	s.mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=86400")
		http.ServeFileFS(w, r, static, "favicon.ico")
	})
	s.mux.HandleFunc("GET /login", s.loginPage)
	s.mux.HandleFunc("POST /login", s.login)
	s.mux.HandleFunc("POST /logout", s.authed(auth.Auditor, s.logout))
	s.mux.HandleFunc("GET /{$}", s.authed(auth.Approver, s.queue))
	s.mux.HandleFunc("GET /actions/{id}", s.authed(auth.Approver, s.action))
	s.mux.HandleFunc("POST /actions/{id}/approve", s.authed(auth.Approver, s.decide(true)))
	s.mux.HandleFunc("POST /actions/{id}/deny", s.authed(auth.Approver, s.decide(false)))
	s.mux.HandleFunc("GET /audit", s.authed(auth.Auditor, s.audit))
	s.mux.HandleFunc("GET /customers/{id}", s.authed(auth.Auditor, s.lineage("customer"))) // lineage.go
	s.mux.HandleFunc("GET /orders/{id}", s.authed(auth.Auditor, s.lineage("order")))
	s.mux.HandleFunc("GET /agents", s.authed(auth.Approver, s.agents)) // the kill switch (agents.go)
	s.mux.HandleFunc("POST /agents/suspend", s.authed(auth.Approver, s.suspend))
	s.mux.HandleFunc("POST /agents/{agent}/resume", s.authed(auth.Approver, s.resume))
	return s, nil
}

// filesOnly serves the files of an fs.FS and nothing else: a directory is
// "not found", so /static/ lists nothing.
type filesOnly struct{ fs.FS }

func (f filesOnly) Open(name string) (fs.File, error) {
	file, err := f.FS.Open(name)
	if err != nil {
		return nil, err
	}
	if st, err := file.Stat(); err != nil || st.IsDir() {
		file.Close()
		return nil, fs.ErrNotExist
	}
	return file, nil
}

// clientAddr is the address a request came from: its peer, or, when the
// peer is a trusted proxy, the nearest untrusted address the proxies
// recorded in X-Forwarded-For.
func (s *Server) clientAddr(r *http.Request) string {
	trusted := func(a netip.Addr) bool {
		for _, p := range s.cfg.TrustedProxies {
			if p.Contains(a.Unmap()) {
				return true
			}
		}
		return false
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil || !trusted(ap.Addr()) {
		return r.RemoteAddr
	}
	var hops []string
	for _, h := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(h, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break // garbage: trust nothing further left
		}
		if !trusted(a) {
			return a.String()
		}
	}
	return ap.Addr().String()
}

// hostAllowed reports whether the request's Host header names this site.
func (s *Server) hostAllowed(r *http.Request) bool {
	name := strings.ToLower(r.Host)
	if h, _, err := net.SplitHostPort(name); err == nil {
		name = h
	}
	name = strings.TrimSuffix(strings.Trim(name, "[]"), ".")
	for _, allowed := range s.cfg.Hosts {
		if name != "" && name == strings.Trim(strings.ToLower(allowed), "[]") {
			return true
		}
	}
	return false
}

// ServeHTTP serves one request with headers that keep the pages out of
// frames and caches and forbid any script.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	if r.TLS != nil {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
	if !s.hostAllowed(r) {
		s.cfg.Logger.Warn("request for another host refused", "host", mandate.Truncate(mandate.Visible(r.Host, false), 100))
		http.Error(w, "Misdirected request: this server does not serve that host name. Use the address the operator gave you (see --public-url).", http.StatusMisdirectedRequest)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// ExpireLoop marks overdue pending actions expired every interval until ctx
// ends, so the trail shows when nobody decided even if nobody looks.
func (s *Server) ExpireLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if n, err := s.cfg.Deps.DB.ExpirePending(ctx, s.now()); err != nil && ctx.Err() == nil {
			s.cfg.Logger.Error("expiring pending actions failed", "err", err)
		} else if n > 0 {
			s.cfg.Logger.Info("expired pending actions", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) now() time.Time {
	if s.cfg.Deps.Now != nil {
		return s.cfg.Deps.Now()
	}
	return time.Now()
}

// liveVersion is the live policy version, as read at most
// tools.SuspensionRefresh ago. A cached version other than held (the one
// this server holds) is read again at once, so a reload here a moment ago
// refuses nothing; only a server that really holds another version keeps
// reading it, request after request.
func (s *Server) liveVersion(ctx context.Context, held string) (string, error) {
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	now := time.Now()
	if s.live.at.IsZero() || now.Sub(s.live.at) >= tools.SuspensionRefresh || now.Before(s.live.at) || s.live.version != held {
		v, err := s.cfg.Deps.DB.LiveVersion(context.WithoutCancel(ctx))
		if err != nil {
			s.live.at = time.Time{}
			return "", err
		}
		s.live.at, s.live.version = now, v
	}
	return s.live.version, nil
}

// stale answers 503 and returns true unless the policy this server holds
// is the live one: roles are read from the policy, and a server that has
// not loaded the live one would judge them by rules no longer in force (a
// supervisor whose g line another process's reload removed could still
// sign in and read customers' data). It fails closed when the live version
// cannot be read. user, when not "", is signed in, and the refusal is
// audited in their name, as a stale approval is; a sign-in is refused
// before any credential is checked, and only logged, so nobody can fill
// the trail at no cost.
func (s *Server) stale(w http.ResponseWriter, r *http.Request, user string) bool {
	held := s.cfg.Deps.Policy.Policy().Version
	live, err := s.liveVersion(r.Context(), held)
	if err != nil {
		s.cfg.Logger.Error("reading the live policy failed", "err", err)
		http.Error(w, "the database is unavailable", http.StatusServiceUnavailable)
		return true
	}
	if live == held {
		return false
	}
	reason := fmt.Sprintf("stale policy: this admin server holds policy version %s but the live policy is %s; nothing was shown or done", held, live)
	if live == "" {
		reason = fmt.Sprintf("stale policy: this admin server holds policy version %s but no live policy is recorded; nothing was shown or done", held)
	}
	s.cfg.Logger.Warn("refused: this server's policy is not the live one", "user", user, "held", held, "live", live, "pattern", r.Pattern)
	msg := "Service Unavailable: this server's rules are not the live ones (they may have just changed), so nothing was shown or done. "
	if user != "" {
		if !s.refuse(w, r, user, reason) {
			return true
		}
		msg += fmt.Sprintf("It holds policy version %s; the live one is %q. ", held, live)
	}
	http.Error(w, msg+"Try again in a few seconds; if it keeps happening, this admin server must load the live policy files.", http.StatusServiceUnavailable)
	return true
}

// session is the logged-in user of a request.
type session struct {
	storage.Session
	token string
	// role is what the live policy let the user be when authed checked
	// the request; pages show what it allows.
	role auth.Role
}

// authed wraps a handler that needs a signed-in user holding at least
// role in the live policy: without a live session the request goes to the
// login page; while this server's policy is not the live one, everything
// but signing out is refused with 503 (and audited, see stale); a user the
// policy no longer gives any role is signed out at once (and it is audited); a POST must carry the session's CSRF token or
// it is refused with 403; and an auditor asking for an approver's page is
// sent to the audit trail or refused. Refused POSTs are audited, and
// answered 503 if the record cannot be written.
func (s *Server) authed(need auth.Role, h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(sessionCookie)
		var sess storage.Session
		if err == nil {
			sess, err = s.cfg.Deps.DB.ActiveSession(r.Context(), c.Value, s.cfg.IdleTimeout)
		}
		if err != nil {
			if mandate.ErrorCode(err) == mandate.EUNAVAILABLE {
				s.cfg.Logger.Error("reading session failed", "err", err)
				http.Error(w, "the database is unavailable", http.StatusServiceUnavailable)
				return
			}
			next := "/"
			if r.Method == http.MethodGet {
				next = r.URL.RequestURI()
			}
			http.Redirect(w, r, "/login?next="+url.QueryEscape(next), http.StatusSeeOther)
			return
		}
		// Signing out needs no role, and ends what a stale server could
		// otherwise only refuse.
		if r.Pattern != "POST /logout" && s.stale(w, r, sess.User) {
			return
		}
		role := auth.RoleOf(s.cfg.Deps.Policy.Policy(), sess.User)
		if role == auth.None {
			reason := sess.User + " no longer holds an approver or auditor role in the live policy; signed out"
			if err := s.cfg.Auth.Refuse(r.Context(), sess.User, s.clientAddr(r), "web", auth.AccessTool, reason); err != nil {
				s.cfg.Logger.Error("auditing a refused session failed", "err", err)
			}
			if err := s.cfg.Deps.DB.DeleteSession(r.Context(), c.Value); err != nil {
				s.cfg.Logger.Error("deleting session failed", "err", err)
			}
			s.clearSession(w)
			http.Error(w, "Forbidden: your name no longer holds an approver or auditor role in the policy, so you were signed out.", http.StatusForbidden)
			return
		}
		// The token first: a POST without it may not be the user's own
		// doing, so it is recorded as a forged or stale form, not as
		// something the user tried.
		if r.Method == http.MethodPost && !sameToken(r.PostFormValue("csrf"), sess.CSRF) {
			reason := r.Pattern + " without the session's CSRF token: a forged cross-site request, or a form from an earlier session"
			if s.refuse(w, r, sess.User, reason) {
				http.Error(w, "Forbidden: this form is missing its security token. Reload the page and try again.", http.StatusForbidden)
			}
			return
		}
		if role < need {
			if r.Method == http.MethodGet && r.URL.Path == "/" {
				http.Redirect(w, r, "/audit", http.StatusSeeOther)
				return
			}
			// A page an auditor may not read is only a 403; a POST is an
			// attempt to act (decide, suspend), and is audited.
			if r.Method == http.MethodPost {
				reason := fmt.Sprintf("%s is an %s and may not %s; it needs an %s", sess.User, role, r.Pattern, need)
				if !s.refuse(w, r, sess.User, reason) {
					return
				}
			}
			http.Error(w, "Forbidden: auditors may read the audit trail only; deciding and the queue are for approvers.", http.StatusForbidden)
			return
		}
		h(w, r, &session{Session: sess, token: c.Value, role: role})
	}
}

// refuse audits the refusal of a signed-in user's request, in the lineage
// of the action its path names (if any), and reports whether it was
// recorded. If not, it has answered 503: the request is refused all the
// same, but a refusal that matters to security is never silent.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, user, reason string) bool {
	a := &auth.Authenticator{DB: s.cfg.Auth.DB, Policy: s.cfg.Auth.Policy, Now: s.cfg.Auth.Now, Logger: s.cfg.Auth.Logger,
		ActionID: mandate.Truncate(mandate.Visible(r.PathValue("id"), false), 64)} // the path is the client's text
	if err := a.Refuse(r.Context(), user, s.clientAddr(r), "web", auth.AccessTool, reason); err != nil {
		s.cfg.Logger.Error("auditing a refused request failed", "user", user, "pattern", r.Pattern, "err", err)
		http.Error(w, "the database is unavailable: the refusal could not be recorded", http.StatusServiceUnavailable)
		return false
	}
	return true
}

func sameToken(got, want string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// loginData is the login page.
type loginData struct {
	CSRF, Next, Name, Error string
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	s.renderLogin(w, r, http.StatusOK, loginData{Next: localPath(r.URL.Query().Get("next"))})
}

func (s *Server) renderLogin(w http.ResponseWriter, r *http.Request, code int, d loginData) {
	d.CSRF = randomToken()
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: d.CSRF, Path: "/login", HttpOnly: true,
		Secure: s.cfg.Secure, SameSite: http.SameSiteStrictMode, MaxAge: 3600})
	s.render(w, code, "login", page{Title: "Sign in", Data: d})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie(loginCookie)
	if err != nil || !sameToken(r.PostFormValue("csrf"), c.Value) {
		http.Error(w, "Forbidden: this form is missing its security token. Reload the page and try again.", http.StatusForbidden)
		return
	}
	if s.stale(w, r, "") {
		return
	}
	name, password := r.PostFormValue("name"), r.PostFormValue("password")
	next := localPath(r.PostFormValue("next"))
	id, err := s.cfg.Auth.Password(r.Context(), name, password, s.clientAddr(r), "web")
	if err != nil {
		d := loginData{Next: next, Name: name, Error: "That name and password do not match."}
		code := http.StatusUnauthorized
		if wait, ok := auth.IsThrottled(err); ok {
			code, d.Error = http.StatusTooManyRequests, mandate.ErrorMessage(err)
			w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
		} else if mandate.ErrorCode(err) == mandate.EUNAVAILABLE {
			code, d.Error = http.StatusServiceUnavailable, mandate.ErrorMessage(err)
			s.cfg.Logger.Error("sign-in failed", "err", err)
		}
		// A correct password for a name the policy gives no role gets the
		// same answer as a wrong one, and counts toward the backoff as one
		// (auth audits the difference), so the page is no oracle for
		// passwords of people who lost their role.
		s.renderLogin(w, r, code, d)
		return
	}
	token, _, err := s.cfg.Deps.DB.CreateSession(r.Context(), id.Name, s.cfg.SessionTTL)
	if err != nil {
		s.cfg.Logger.Error("creating session failed", "err", err)
		http.Error(w, "the database is unavailable", http.StatusServiceUnavailable)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: token, Path: "/", HttpOnly: true,
		Secure: s.cfg.Secure, SameSite: http.SameSiteStrictMode, MaxAge: int(s.cfg.SessionTTL.Seconds())})
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: "", Path: "/login", MaxAge: -1})
	s.cfg.Logger.Info("login", "user", id.Name, "role", id.Role.String())
	if id.Role == auth.Auditor && next == "/" {
		next = "/audit"
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) clearSession(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: s.cfg.Secure, SameSite: http.SameSiteStrictMode})
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, sess *session) {
	if err := s.cfg.Deps.DB.DeleteSession(r.Context(), sess.token); err != nil {
		s.cfg.Logger.Error("deleting session failed", "err", err)
	}
	s.clearSession(w)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// localPath keeps a redirect target on this site: a path, never a URL to
// somewhere else.
func localPath(p string) string {
	u, err := url.Parse(p)
	if p == "" || err != nil || u.Scheme != "" || u.Host != "" || len(p) < 1 || p[0] != '/' || (len(p) > 1 && (p[1] == '/' || p[1] == '\\')) {
		return "/"
	}
	return p
}

func randomToken() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return hex.EncodeToString(b[:])
}

// page is what the layout renders around a page's content.
type page struct {
	Title string
	User  string
	CSRF  string
	Nav   string
	Data  any
	// Approver is whether User may see the queue: the role authed read
	// from the live policy for this request.
	Approver bool
	// Warnings are shown above the queue: accounts with repeated failed
	// sign-ins. render fills them for the queue page.
	Warnings []string
}

func (s *Server) render(w http.ResponseWriter, code int, name string, p page) {
	if name == "queue" {
		p.Warnings = s.loginWarnings()
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	if err := s.pages[name].Execute(w, p); err != nil {
		s.cfg.Logger.Error("rendering failed", "page", name, "err", err)
	}
}

// loginWarnings names the accounts with at least FailureWarning failed
// sign-ins in the last 24 hours, most attacked first. It is filled here,
// not by the queue handler, so that every page rendered as "queue" gets it.
func (s *Server) loginWarnings() []string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counts, err := s.cfg.Deps.DB.LoginFailuresSince(ctx, s.now().Add(-24*time.Hour))
	if err != nil {
		s.cfg.Logger.Error("counting failed sign-ins failed", "err", err)
		return []string{"Failed sign-ins could not be counted: " + mandate.ErrorMessage(err)}
	}
	type acct struct {
		name string
		n    int
	}
	var hot []acct
	for u, n := range counts {
		if n >= s.cfg.FailureWarning {
			hot = append(hot, acct{u, n})
		}
	}
	sort.Slice(hot, func(i, j int) bool { return hot[i].n > hot[j].n || hot[i].n == hot[j].n && hot[i].name < hot[j].name })
	var out []string
	for _, a := range hot {
		name := mandate.Truncate(mandate.Visible(a.name, false), 64)
		if a.name == "" {
			name = "(unknown token)"
		}
		out = append(out, fmt.Sprintf("%d failed sign-ins on the account %q in the last 24 hours. If that was not its owner, someone is guessing its password: the guesses are slowed and in the audit trail (tool %s).", a.n, name, auth.LoginTool))
	}
	return out
}
