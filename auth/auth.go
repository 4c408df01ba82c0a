// Package auth turns an approver's credentials into an identity, or a
// refusal: a password (bcrypt, for the admin page and the approvals CLI)
// or a per-approver token (for the CLI). It is the one place that decides
// who is at the keyboard; what they may then do is the policy's to say,
// asked again on every request (RoleOf).
//
// Guessing is slowed where every process sees it: failures are counted per
// user name and per address in the database, each blocking further tries
// for an exponentially growing, capped time, and every failure is an
// audit record. A password attempt is counted before it is hashed, so
// guesses sent at once are held to the count guesses one after another
// would be. Password hashing is capped per process so a flood of
// guesses cannot pin the CPU.
package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
	"golang.org/x/crypto/bcrypt"
)

// Audit tool names for the security events this package records.
const (
	// LoginTool marks a failed or refused sign-in (web or CLI).
	LoginTool = "admin_login"
	// AccessTool marks a signed-in user refused: the live policy no
	// longer gives them a role, or not the one the request needs (an
	// auditor deciding an action), or a form lacked the session's CSRF
	// token.
	AccessTool = "admin_access"
)

// Identity is who proved themselves, and what the live policy let them be
// at that moment.
type Identity struct {
	Name string
	Role Role
}

// Authenticator checks credentials against the users in DB. The zero
// values of the tuning fields are the defaults.
type Authenticator struct {
	DB     *storage.DB
	Policy *policy.Engine
	// Now is the clock; tests fix it. Nil is time.Now.
	Now    func() time.Time
	Logger *slog.Logger

	// MaxHashes is how many password hashes may run at once in this
	// process (default 2); HashWait how long a login waits for a slot
	// before it is refused as busy (default 2 s).
	MaxHashes int
	HashWait  time.Duration
	// BaseDelay is the first wait after FreeFailures consecutive failures
	// (default 1 s); each further failure doubles it up to MaxDelay
	// (default 15 min). A key's count starts again Forget (default 24 h)
	// after its last failure, and at zero on a successful login.
	BaseDelay time.Duration
	MaxDelay  time.Duration
	Forget    time.Duration
	// ActionID, when set, is the action this sign-in is for (a CLI
	// approval): its refusals join that action's lineage, so the trail of
	// an action shows who tried to decide it and could not.
	ActionID string

	once    sync.Once
	sem     chan struct{}
	compare func(hash, password []byte) error // bcrypt; tests count calls
	dummy   []byte                            // dummyHash(); tests use a cheaper one
}

// Per-key free failures before any wait: a person mistyping twice waits
// for nothing; an address is shared by everyone behind a NAT, so it gets
// more room before it slows down.
const (
	freeUserFailures = 3
	freeAddrFailures = 10
)

func (a *Authenticator) init() {
	a.once.Do(func() {
		if a.MaxHashes <= 0 {
			a.MaxHashes = 2
		}
		if a.HashWait <= 0 {
			a.HashWait = 2 * time.Second
		}
		if a.BaseDelay <= 0 {
			a.BaseDelay = time.Second
		}
		if a.MaxDelay <= 0 {
			a.MaxDelay = 15 * time.Minute
		}
		if a.Forget <= 0 {
			a.Forget = 24 * time.Hour
		}
		if a.Logger == nil {
			a.Logger = slog.New(slog.DiscardHandler)
		}
		if a.dummy == nil {
			a.dummy = dummyHash()
		}
		if a.compare == nil {
			a.compare = bcrypt.CompareHashAndPassword
		}
		a.sem = make(chan struct{}, a.MaxHashes)
	})
}

func (a *Authenticator) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// ThrottledError refuses a login while its user or address is blocked
// after failed logins. No password is checked while blocked.
type ThrottledError struct {
	Until time.Time
	Wait  time.Duration
}

func (e *ThrottledError) Error() string { return mandate.ErrorMessage(e) }

// Unwrap gives the error its code and a message safe to show.
func (e *ThrottledError) Unwrap() error {
	return mandate.Errorf(mandate.EDENIED, "too many failed sign-ins; try again in %s", roundUp(e.Wait))
}

func roundUp(d time.Duration) time.Duration {
	if d < time.Second {
		return time.Second
	}
	return d.Round(time.Second)
}

// ErrBadCredentials is the one answer to a wrong name, a wrong password or
// an unknown token: which of them was wrong is never said.
var ErrBadCredentials = mandate.Errorf(mandate.EDENIED, "that name and password (or token) do not match")

// errBusy refuses a login when every hashing slot stayed taken.
var errBusy = mandate.Errorf(mandate.EUNAVAILABLE, "too many sign-ins at once; try again in a moment")

// dummyHash is compared against when the user does not exist, so that a
// wrong name costs as long as a wrong password. Computed on first use.
var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("not a password"), bcrypt.DefaultCost)
	return h
})

// Password signs in name with password, coming from addr (a remote
// address for the web, "cli:USER" for the CLI); via says which ("web",
// "cli") for the audit record. It refuses while name or addr is blocked,
// when the password is wrong (counting and auditing the failure), and when
// the live policy gives name no role (auditing the refusal, and counting it
// like a failure, so the backoff does not tell a right password from a
// wrong one).
func (a *Authenticator) Password(ctx context.Context, name, password, addr, via string) (Identity, error) {
	a.init()
	now := a.now()
	// The attempt is counted as a failure before its password is hashed,
	// in the same transaction that checks the backoff: checking first and
	// counting after the hash would let every guess sent at once, to this
	// process or another on the database, through to bcrypt.
	attempt := storage.LoginAttempt{Keys: []string{UserKey(name), AddrKey(addr)}, Delay: a.delay, Forget: a.Forget}
	until, err := a.DB.CountLoginAttempt(ctx, now, attempt)
	if err != nil {
		return Identity{}, err
	}
	if !until.IsZero() {
		return Identity{}, a.throttled(now, until, name, via)
	}
	// From here an error leaves the attempt counted: fail closed.
	u, err := a.DB.User(ctx, name)
	hash := a.dummy
	found := err == nil
	if found {
		hash = []byte(u.PasswordHash)
	} else if mandate.ErrorCode(err) != mandate.ENOTFOUND {
		return Identity{}, err
	}
	ok, err := a.check(ctx, hash, password)
	if err != nil {
		a.Logger.Warn("sign-in refused: hashing is saturated", "user", name, "via", via)
		// Never checked, so not a failure; also when the client hung up
		// while waiting (ctx is done then), or an impatient user would
		// lock themselves out under load.
		if uerr := a.DB.UncountLoginAttempt(context.WithoutCancel(ctx), attempt); uerr != nil {
			a.Logger.Warn("sign-in attempt left counted", "user", name, "via", via, "err", uerr)
		}
		return Identity{}, err
	}
	if !ok || !found {
		return Identity{}, a.fail(ctx, a.now(), name, addr, via, "password", "wrong name or password", attempt.Keys, true)
	}
	// The role before the uncount: a right password for a name the live
	// policy gives no role stays counted, as a wrong one does, or the
	// backoff (429 after a few tries instead of 401) would tell which it
	// was. admitAs refuses it and records the refusal.
	role := RoleOf(a.Policy.Policy(), name)
	if role != None {
		if err := a.DB.UncountLoginAttempt(ctx, attempt); err != nil {
			return Identity{}, err
		}
	}
	return a.admitAs(ctx, name, role, addr, via, UserKey(name))
}

// Token signs in whoever token belongs to (created by `mandate admin user
// token`). Tokens carry 256 random bits, so they are looked up by hash
// without bcrypt; failures still count against addr.
func (a *Authenticator) Token(ctx context.Context, token, addr, via string) (Identity, error) {
	a.init()
	now := a.now()
	keys := []string{AddrKey(addr)}
	if err := a.blocked(ctx, now, "", via, keys); err != nil {
		return Identity{}, err
	}
	name, err := a.DB.TokenUser(ctx, token)
	if mandate.ErrorCode(err) == mandate.ENOTFOUND {
		return Identity{}, a.fail(ctx, now, "", addr, via, "token", "unknown token", keys, false)
	} else if err != nil {
		return Identity{}, err
	}
	return a.admit(ctx, name, addr, via, "token")
}

// check compares under the hashing cap: it waits up to HashWait for a slot.
func (a *Authenticator) check(ctx context.Context, hash []byte, password string) (bool, error) {
	t := time.NewTimer(a.HashWait)
	defer t.Stop()
	select {
	case a.sem <- struct{}{}:
	case <-t.C:
		return false, errBusy
	case <-ctx.Done():
		return false, errBusy
	}
	defer func() { <-a.sem }()
	return a.compare(hash, []byte(password)) == nil, nil
}

func (a *Authenticator) blocked(ctx context.Context, now time.Time, name, via string, keys []string) error {
	until, err := a.DB.LoginBlockedUntil(ctx, now, keys...)
	if err != nil {
		return err
	}
	if until.IsZero() {
		return nil
	}
	return a.throttled(now, until, name, via)
}

// throttled refuses a sign-in while it is blocked until until.
func (a *Authenticator) throttled(now, until time.Time, name, via string) error {
	// Not audited one by one: a blocked try costs the attacker nothing, so
	// auditing each would let anyone fill the trail; the failures that led
	// here are audited, and the log says the block is being hit.
	a.Logger.Warn("sign-in refused: backing off after failed sign-ins", "user", name, "via", via, "until", until)
	return &ThrottledError{Until: until, Wait: until.Sub(now)}
}

// fail records a failed sign-in: backoff for keys (already counted when
// counted is set), the queue's warning and an audit record, in one
// transaction. The password is never recorded.
func (a *Authenticator) fail(ctx context.Context, now time.Time, name, addr, via, method, reason string, keys []string, counted bool) error {
	rec := a.record(name, addr, via, method, reason, LoginTool)
	_, err := a.DB.RecordLoginFailure(ctx, now, storage.LoginFailure{
		User: name, Address: addr, Keys: keys, Counted: counted, Delay: a.delay, Forget: a.Forget, Audit: rec,
	})
	a.Logger.Info("failed sign-in", "user", name, "via", via, "method", method)
	if err != nil {
		return err // fail closed: no audit record, no sign-in
	}
	return ErrBadCredentials
}

// admit checks the live policy still gives name a role, then forgets the
// backoff for the keys the success clears.
func (a *Authenticator) admit(ctx context.Context, name, addr, via, method string, clear ...string) (Identity, error) {
	return a.admitAs(ctx, name, RoleOf(a.Policy.Policy(), name), addr, via, clear...)
}

// admitAs is admit with name's role already read from the policy: None
// is refused, and the refusal audited.
func (a *Authenticator) admitAs(ctx context.Context, name string, role Role, addr, via string, clear ...string) (Identity, error) {
	if role == None {
		err := mandate.Errorf(mandate.EDENIED, "%s", describe(name))
		if aerr := a.Refuse(ctx, name, addr, via, LoginTool, describe(name)); aerr != nil {
			return Identity{}, aerr
		}
		return Identity{}, err
	}
	if err := a.DB.ClearLoginFailures(ctx, clear...); err != nil {
		return Identity{}, err
	}
	return Identity{Name: name, Role: role}, nil
}

// Refuse audits a refusal that is not a wrong credential (no credentials
// at all, a role removed from the policy) without counting it toward
// backoff. tool is LoginTool or AccessTool.
func (a *Authenticator) Refuse(ctx context.Context, name, addr, via, tool, reason string) error {
	a.init()
	a.Logger.Warn("refused", "user", name, "via", via, "reason", reason)
	return a.DB.Append(ctx, a.record(name, addr, via, "", reason, tool))
}

func (a *Authenticator) record(name, addr, via, method, reason, tool string) *storage.Record {
	rec := refusal(a.now(), a.Policy, name, tool, map[string]string{"via": via, "address": addr, "method": method}, reason)
	rec.Approver, rec.ActionID = rec.Agent, a.ActionID
	return rec
}

// refusal is the audit record of a refused sign-in or request, for people
// and for agents alike: the claimed name made visible and short (it is
// attacker text), where and how it came, and why it was refused; never a
// secret.
func refusal(now time.Time, pol *policy.Engine, claimed, tool string, args map[string]string, reason string) *storage.Record {
	b, _ := json.Marshal(args)
	version := ""
	if pol != nil {
		version = pol.Policy().Version
	}
	return &storage.Record{
		Time: now, Agent: mandate.Truncate(mandate.Visible(claimed, false), 64), Tool: tool,
		Args: b, Decision: policy.Deny, PolicyVersion: version,
		Phase: storage.PhaseAttempt, Outcome: "refused", Error: reason,
	}
}

// delay is the wait after the nth consecutive failure of key: nothing for
// the first few, then BaseDelay doubling up to MaxDelay.
func (a *Authenticator) delay(key string, n int) time.Duration {
	free := freeUserFailures
	if len(key) > 5 && key[:5] == "addr:" {
		free = freeAddrFailures
	}
	if n < free {
		return 0
	}
	d := a.BaseDelay
	for i := free; i < n && d < a.MaxDelay; i++ {
		d *= 2
	}
	return min(d, a.MaxDelay)
}

// UserKey is the backoff key of a user name.
func UserKey(name string) string { return "user:" + name }

// AddrKey is the backoff key of an address: the IP without its port, and
// an IPv6 address as its /64, since one host usually holds a whole /64.
func AddrKey(addr string) string {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		if ip.Is6() {
			p, _ := ip.Prefix(64)
			return "addr:" + p.String()
		}
		return "addr:" + ip.String()
	}
	return "addr:" + host
}

// IsThrottled reports whether err is a refusal by backoff, and for how long.
func IsThrottled(err error) (time.Duration, bool) {
	var te *ThrottledError
	if errors.As(err, &te) {
		return te.Wait, true
	}
	return 0, false
}

// String is for logs.
func (i Identity) String() string { return fmt.Sprintf("%s (%s)", i.Name, i.Role) }
