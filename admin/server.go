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
package admin

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"golang.org/x/crypto/bcrypt"
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
	// Secure marks cookies Secure; set it when serving over TLS.
	Secure bool
	// SessionTTL is how long a login lasts; 0 means 8 hours.
	SessionTTL time.Duration
	Logger     *slog.Logger
}

// Server serves the admin pages.
type Server struct {
	cfg   Config
	pages map[string]*template.Template
	mux   *http.ServeMux
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Deps == nil || cfg.Deps.DB == nil || cfg.Deps.Policy == nil {
		return nil, errors.New("admin: Deps with a DB and a Policy are required")
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = 8 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, pages: map[string]*template.Template{}, mux: http.NewServeMux()}
	for _, page := range []string{"login", "queue", "action", "audit"} {
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
	s.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	s.mux.HandleFunc("GET /login", s.loginPage)
	s.mux.HandleFunc("POST /login", s.login)
	s.mux.HandleFunc("POST /logout", s.authed(s.logout))
	s.mux.HandleFunc("GET /{$}", s.authed(s.queue))
	s.mux.HandleFunc("GET /actions/{id}", s.authed(s.action))
	s.mux.HandleFunc("POST /actions/{id}/approve", s.authed(s.decide(true)))
	s.mux.HandleFunc("POST /actions/{id}/deny", s.authed(s.decide(false)))
	s.mux.HandleFunc("GET /audit", s.authed(s.audit))
	return s, nil
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

// session is the logged-in user of a request.
type session struct {
	storage.Session
	token string
}

// authed wraps a handler that needs a logged-in user: without a live
// session the request goes to the login page, and a POST must carry the
// session's CSRF token or it is refused with 403.
func (s *Server) authed(h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(sessionCookie)
		var sess storage.Session
		if err == nil {
			sess, err = s.cfg.Deps.DB.Session(r.Context(), c.Value)
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
		if r.Method == http.MethodPost && !sameToken(r.PostFormValue("csrf"), sess.CSRF) {
			s.cfg.Logger.Warn("form without a valid CSRF token refused", "user", sess.User, "path", r.URL.Path)
			http.Error(w, "Forbidden: this form is missing its security token. Reload the page and try again.", http.StatusForbidden)
			return
		}
		h(w, r, &session{Session: sess, token: c.Value})
	}
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

// dummyHash is compared against when the user does not exist, so that a
// wrong name takes as long as a wrong password.
// It is computed on first use, not when the package loads, so commands
// that never log anyone in do not pay for a bcrypt hash.
var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("not a password"), bcrypt.DefaultCost)
	return h
})

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie(loginCookie)
	if err != nil || !sameToken(r.PostFormValue("csrf"), c.Value) {
		http.Error(w, "Forbidden: this form is missing its security token. Reload the page and try again.", http.StatusForbidden)
		return
	}
	name, password := r.PostFormValue("name"), r.PostFormValue("password")
	next := localPath(r.PostFormValue("next"))
	u, err := s.cfg.Deps.DB.User(r.Context(), name)
	hash := dummyHash()
	if err == nil {
		hash = []byte(u.PasswordHash)
	} else if mandate.ErrorCode(err) != mandate.ENOTFOUND {
		s.cfg.Logger.Error("reading user failed", "err", err)
		http.Error(w, "the database is unavailable", http.StatusServiceUnavailable)
		return
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil || err != nil {
		s.cfg.Logger.Info("failed login", "user", name)
		s.renderLogin(w, r, http.StatusUnauthorized, loginData{Next: next, Name: name, Error: "That name and password do not match."})
		return
	}
	token, _, err := s.cfg.Deps.DB.CreateSession(r.Context(), u.Name, s.cfg.SessionTTL)
	if err != nil {
		s.cfg.Logger.Error("creating session failed", "err", err)
		http.Error(w, "the database is unavailable", http.StatusServiceUnavailable)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: token, Path: "/", HttpOnly: true,
		Secure: s.cfg.Secure, SameSite: http.SameSiteStrictMode, MaxAge: int(s.cfg.SessionTTL.Seconds())})
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: "", Path: "/login", MaxAge: -1})
	s.cfg.Logger.Info("login", "user", u.Name)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, sess *session) {
	if err := s.cfg.Deps.DB.DeleteSession(r.Context(), sess.token); err != nil {
		s.cfg.Logger.Error("deleting session failed", "err", err)
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: s.cfg.Secure, SameSite: http.SameSiteStrictMode})
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
}

func (s *Server) render(w http.ResponseWriter, code int, name string, p page) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	if err := s.pages[name].Execute(w, p); err != nil {
		s.cfg.Logger.Error("rendering failed", "page", name, "err", err)
	}
}
