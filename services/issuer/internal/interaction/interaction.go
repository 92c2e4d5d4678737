// Package interaction is the browser side of the authorization-code flow:
// the issuer's own pages where a user signs in (password, then a TOTP code
// for users enrolled in one), consents to a client's scopes, and later
// lists and withdraws those consents.
//
// The authorization endpoint parks a request with Begin, which binds it to
// the browser (a random cookie) and redirects to /login or /consent; the
// pages record the outcome on the parked request and redirect to
// ResumePath, where the endpoint takes it back with Resume (single use).
// Signed-in browsers hold a session cookie whose SHA-256 keys the
// server-side session. Every POST form carries a CSRF token derived from
// the browser cookie and is also checked against Origin and
// Sec-Fetch-Site. Failed password and code attempts are throttled per
// source address in front of authn's per-account lockout (throttle.go).
// Pages are server-rendered html/template with embedded CSS and no script.
package interaction

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sync/atomic"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/authn"
	"github.com/gatehouse/gatehouse/services/issuer/internal/browsersession"
	"github.com/gatehouse/gatehouse/services/issuer/internal/consent"
	"github.com/gatehouse/gatehouse/services/issuer/internal/scopecatalog"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
)

// Paths of the pages Mount serves, and of the authorization endpoint's
// resume handler that the pages send the browser back to.
const (
	PathLogin           = "/login"
	PathMFA             = "/login/mfa"
	PathConsent         = "/consent"
	PathAccountConsents = "/account/consents"
	PathWithdraw        = "/account/consents/withdraw"
	PathLogout          = "/logout"
	// ResumePath is served by the authorization endpoint, which calls
	// Resume with the interaction query parameter.
	ResumePath = "/oauth2/authorize/resume"
)

// Session is a signed-in browser (see browsersession.Session).
type Session = browsersession.Session

// Pending is an authorization request parked for the user (see
// browsersession.Pending).
type Pending = browsersession.Pending

// Errors of Begin and Resume; match them with errors.Is.
var (
	// ErrInteractionNotFound means the interaction is unknown, expired,
	// already resumed, or bound to another browser: the four are
	// deliberately not told apart.
	ErrInteractionNotFound = errors.New("interaction: not found, expired, used or bound to another browser")
	// ErrSessionMismatch means the interaction was answered by a user who
	// is no longer the browser's signed-in user (signed out, or another
	// user signed in meanwhile). The interaction is used up.
	ErrSessionMismatch = errors.New("interaction: the browser's session is not the interaction's user")
	// ErrInvalidPending means Begin was given a request it cannot park.
	ErrInvalidPending = errors.New("interaction: invalid pending request")
)

// Audit event types passed to Config.Audit.
const (
	// AuditLoginSucceeded: a user signed in (attrs subject, tenant, acr, amr, client_id).
	AuditLoginSucceeded = "login.succeeded"
	// AuditLoginFailed: a sign-in failed (attrs reason, client_id, and
	// subject once the password was verified). The typed username is
	// never included: people type passwords into it.
	AuditLoginFailed = "login.failed"
	// AuditConsentGranted: a user allowed a client's request (attrs
	// consent_id, subject, tenant, client_id, scope, expires_at).
	AuditConsentGranted = "consent.granted"
	// AuditConsentDenied: a user denied a client's request (attrs subject, client_id, scope).
	AuditConsentDenied = "consent.denied"
	// AuditConsentWithdrawn: a user withdrew a consent (attrs as granted,
	// plus revocation "ok" or "failed").
	AuditConsentWithdrawn = "consent.withdrawn"
	// AuditLogout: a user signed out (attrs subject).
	AuditLogout = "logout"
	// AuditLoginThrottled: a source address ran out of login attempts and
	// a password or code was refused unchecked (attrs source: an IPv4
	// address or an IPv6 /64; step: "password" or "code"; client_id).
	// Emitted once per run of refusals, not per refused request. Never the
	// typed username.
	AuditLoginThrottled = "login.throttled"
)

// Defaults for Config's durations.
const (
	DefaultSessionLifetime     = 8 * time.Hour
	DefaultSessionIdleTimeout  = time.Hour
	DefaultInteractionLifetime = 10 * time.Minute
	DefaultConsentLifetime     = 90 * 24 * time.Hour
)

// sweepInterval is how often Begin sweeps expired sessions and interactions.
const sweepInterval = time.Minute

// touchInterval is how stale a session's idle expiry may get before a use
// writes a new one, so that not every request writes.
const touchInterval = time.Minute

// Config configures a Manager.
type Config struct {
	// Sessions, Interactions and Consents are the stores; required.
	Sessions     store.BrowserSessionStore
	Interactions store.InteractionStore
	Consents     store.ConsentStore
	// Authenticator decides logins (passwords, TOTP, lockout); required.
	Authenticator *authn.Authenticator
	// Catalog describes scopes on the consent and account pages; required.
	Catalog *scopecatalog.Catalog
	// ClientName returns a client's display name; nil or an error shows the id.
	ClientName func(ctx context.Context, clientID string) (string, error)
	// OnConsentWithdrawn revokes every token resting on c; required. It is
	// called after the store recorded the withdrawal; its error is logged
	// and shown as an error page.
	OnConsentWithdrawn func(ctx context.Context, c consent.Consent) error
	// OnSignedOut, when set, revokes every grant the session authorized;
	// it is called before the session is deleted, and if it fails the
	// session stays (the user sees an error and can sign out again).
	OnSignedOut func(ctx context.Context, s Session) error
	// Audit receives login, consent and logout events (see the Audit*
	// constants); nil drops them. attrs never hold a password, code or cookie.
	Audit func(ctx context.Context, typ string, attrs map[string]string)
	// Logger receives operational errors; required.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// SecureCookies sets the Secure attribute and the __Host- prefix on
	// cookies; false only for a plain-HTTP localhost demo.
	SecureCookies bool
	// SessionLifetime is a session's absolute lifetime (DefaultSessionLifetime).
	SessionLifetime time.Duration
	// SessionIdleTimeout ends a session unused this long (DefaultSessionIdleTimeout).
	SessionIdleTimeout time.Duration
	// InteractionLifetime bounds a parked request (DefaultInteractionLifetime).
	InteractionLifetime time.Duration
	// ConsentLifetime is how long a grant lasts (DefaultConsentLifetime).
	ConsentLifetime time.Duration
	// LoginFailureBurst is how many failed password or code attempts a
	// source address (an IPv4 address, an IPv6 /64) may make in a row
	// before its attempts are refused unchecked (DefaultLoginFailureBurst).
	// Successful attempts do not count.
	LoginFailureBurst int
	// LoginFailureInterval is how often a source earns one more attempt
	// back, the failure rate it may sustain (DefaultLoginFailureInterval).
	LoginFailureInterval time.Duration
	// LoginThrottleSources bounds the source addresses tracked
	// (DefaultLoginThrottleSources); the least recently seen is forgotten
	// first.
	LoginThrottleSources int
}

// Manager runs the pages and parks authorization requests. It is safe for
// concurrent use.
type Manager struct {
	sessions     store.BrowserSessionStore
	interactions store.InteractionStore
	consents     store.ConsentStore
	auth         *authn.Authenticator
	catalog      *scopecatalog.Catalog
	clientName   func(ctx context.Context, clientID string) (string, error)
	onWithdrawn  func(ctx context.Context, c consent.Consent) error
	onSignedOut  func(ctx context.Context, s Session) error
	audit        func(ctx context.Context, typ string, attrs map[string]string)
	logger       *slog.Logger
	now          func() time.Time
	throttle     *loginThrottle

	secure              bool
	browserCookie       string
	sessionCookie       string
	sessionLifetime     time.Duration
	sessionIdle         time.Duration
	interactionLifetime time.Duration
	consentLifetime     time.Duration

	pages     map[string]*template.Template
	styleHash string // CSP source for the inline stylesheet

	lastSweep atomic.Int64 // unix nanoseconds of the last sweep Begin started
}

// New returns a Manager. It parses the page templates, so a broken
// template fails here rather than on a request.
func New(cfg Config) (*Manager, error) {
	if cfg.Sessions == nil || cfg.Interactions == nil || cfg.Consents == nil ||
		cfg.Authenticator == nil || cfg.Catalog == nil || cfg.OnConsentWithdrawn == nil || cfg.Logger == nil {
		return nil, errors.New("interaction: Sessions, Interactions, Consents, Authenticator, Catalog, OnConsentWithdrawn and Logger are required")
	}
	throttle, err := newLoginThrottle(cfg.LoginFailureBurst, cfg.LoginFailureInterval, cfg.LoginThrottleSources)
	if err != nil {
		return nil, err
	}
	m := &Manager{
		sessions:            cfg.Sessions,
		interactions:        cfg.Interactions,
		consents:            cfg.Consents,
		auth:                cfg.Authenticator,
		catalog:             cfg.Catalog,
		clientName:          cfg.ClientName,
		onWithdrawn:         cfg.OnConsentWithdrawn,
		onSignedOut:         cfg.OnSignedOut,
		audit:               cfg.Audit,
		logger:              cfg.Logger,
		now:                 cfg.Now,
		throttle:            throttle,
		secure:              cfg.SecureCookies,
		browserCookie:       "gatehouse-browser",
		sessionCookie:       "gatehouse-session",
		sessionLifetime:     orDefault(cfg.SessionLifetime, DefaultSessionLifetime),
		sessionIdle:         orDefault(cfg.SessionIdleTimeout, DefaultSessionIdleTimeout),
		interactionLifetime: orDefault(cfg.InteractionLifetime, DefaultInteractionLifetime),
		consentLifetime:     orDefault(cfg.ConsentLifetime, DefaultConsentLifetime),
	}
	for _, d := range [...]struct {
		name  string
		value time.Duration
	}{
		{"SessionLifetime", m.sessionLifetime}, {"SessionIdleTimeout", m.sessionIdle},
		{"InteractionLifetime", m.interactionLifetime}, {"ConsentLifetime", m.consentLifetime},
	} {
		if d.value < time.Minute {
			return nil, fmt.Errorf("interaction: %s must be at least a minute, got %v", d.name, d.value)
		}
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.audit == nil {
		m.audit = func(context.Context, string, map[string]string) {}
	}
	if m.secure {
		// __Host-: only set over HTTPS, by this host, for every path, so a
		// sibling subdomain cannot plant a cookie (RFC 6265bis 4.1.3.2).
		m.browserCookie, m.sessionCookie = "__Host-"+m.browserCookie, "__Host-"+m.sessionCookie
	}
	if m.pages, m.styleHash, err = parsePages(); err != nil {
		return nil, err
	}
	return m, nil
}

func orDefault[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// Begin parks p for the browser of r and redirects it (303) to the login
// page, or to the consent page when needLogin is false (the current
// session will do and only consent is missing). Begin sets p's ID, browser
// binding, CreatedAt and ExpiresAt; it keeps Subject and LoginAt (for a
// request resumed after a login and parked again for consent) and clears
// every other outcome. p must name a client.
func (m *Manager) Begin(w http.ResponseWriter, r *http.Request, p Pending, needLogin bool) error {
	ctx := r.Context()
	if p.ClientID == "" || p.Next != "" {
		return fmt.Errorf("%w: need a client id", ErrInvalidPending)
	}
	m.maybeSweep(ctx)
	now := m.now()
	secret := m.ensureBrowser(w, r)
	p.ID = randomToken()
	p.Version = 0
	p.Browser = hashHex(secret)
	p.Query = p.Clone().Query
	p.Scopes = slices.Clone(p.Scopes)
	p.CreatedAt, p.ExpiresAt = now, now.Add(m.interactionLifetime)
	p.ConsentGranted, p.ConsentID, p.ConsentDenied, p.Failure = false, "", false, ""
	p.MFAUsername, p.PasswordVerifiedAt = "", time.Time{}
	if err := p.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidPending, err)
	}
	if err := m.interactions.CreateInteraction(ctx, p); err != nil {
		return fmt.Errorf("interaction: park request: %w", err)
	}
	target := PathConsent
	if needLogin {
		target = PathLogin
	}
	setSecurityHeaders(w.Header(), m.styleHash, "")
	seeOther(w, r, target+"?interaction="+url.QueryEscape(p.ID))
	return nil
}

// Resume takes back the interaction id for the browser of r: it must be
// bound to this browser and unexpired (else ErrInteractionNotFound). It is
// deleted, so it resumes once. Resume returns it with the browser's current
// session (nil if none). When the interaction names a Subject, the session
// must be that user's, or the error is ErrSessionMismatch.
func (m *Manager) Resume(ctx context.Context, r *http.Request, id string) (Pending, *Session, error) {
	p, err := m.interactionFor(ctx, r, id)
	if err != nil {
		return Pending{}, nil, err
	}
	if p.Next != "" {
		// An account login, not an authorization request.
		return Pending{}, nil, ErrInteractionNotFound
	}
	if err := m.interactions.DeleteInteraction(ctx, p.ID, p.Version); errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) {
		return Pending{}, nil, ErrInteractionNotFound
	} else if err != nil {
		return Pending{}, nil, fmt.Errorf("interaction: resume: %w", err)
	}
	sess, err := m.Session(ctx, r)
	if err != nil {
		return Pending{}, nil, err
	}
	if p.Subject != "" && (sess == nil || sess.Subject != p.Subject) {
		return Pending{}, nil, ErrSessionMismatch
	}
	return p, sess, nil
}

// Session returns the signed-in session of r's browser, or nil when there
// is none or it has expired. Each use keeps an idle session alive (up to
// its absolute lifetime).
func (m *Manager) Session(ctx context.Context, r *http.Request) (*Session, error) {
	secret, ok := cookieSecret(r, m.sessionCookie)
	if !ok {
		return nil, nil
	}
	now := m.now()
	s, err := m.sessions.GetBrowserSession(ctx, hashHex(secret), now)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("interaction: session: %w", err)
	}
	if idle := now.Add(m.sessionIdle); idle.Sub(s.IdleExpiresAt) > touchInterval && s.IdleExpiresAt.Before(s.ExpiresAt) {
		if err := m.sessions.TouchBrowserSession(ctx, s.ID, idle); err != nil {
			// The session still works until its current idle expiry.
			m.logger.WarnContext(ctx, "touching browser session failed", slog.String("error", err.Error()))
		} else {
			s.IdleExpiresAt = minTime(idle, s.ExpiresAt)
		}
	}
	return &s, nil
}

// FindConsent returns subject's active consent for clientID that covers
// every scope in scopes, the most recent if several do, or an error
// matching store.ErrNotFound.
func (m *Manager) FindConsent(ctx context.Context, subject, clientID string, scopes []string) (consent.Consent, error) {
	c, err := m.consents.FindActiveConsent(ctx, subject, clientID, scopes, m.now())
	if err != nil {
		return consent.Consent{}, fmt.Errorf("interaction: %w", err)
	}
	return c, nil
}

// Sweep deletes expired sessions and interactions. Begin calls it at most
// once a minute; a deployment may also run it on a schedule.
func (m *Manager) Sweep(ctx context.Context) error {
	now := m.now()
	_, errS := m.sessions.DeleteExpiredBrowserSessions(ctx, now)
	_, errI := m.interactions.DeleteExpiredInteractions(ctx, now)
	if err := errors.Join(errS, errI); err != nil {
		return fmt.Errorf("interaction: sweep: %w", err)
	}
	return nil
}

// maybeSweep runs Sweep if no sweep started in the last sweepInterval.
func (m *Manager) maybeSweep(ctx context.Context) {
	now := m.now().UnixNano()
	last := m.lastSweep.Load()
	if now-last < int64(sweepInterval) || !m.lastSweep.CompareAndSwap(last, now) {
		return
	}
	if err := m.Sweep(ctx); err != nil {
		m.logger.WarnContext(ctx, "sweeping expired browser state failed", slog.String("error", err.Error()))
	}
}

// interactionFor loads interaction id if it is bound to r's browser.
func (m *Manager) interactionFor(ctx context.Context, r *http.Request, id string) (Pending, error) {
	secret, ok := cookieSecret(r, m.browserCookie)
	if !ok || !browsersession.ValidID(id) {
		return Pending{}, ErrInteractionNotFound
	}
	p, err := m.interactions.GetInteraction(ctx, id, m.now())
	if errors.Is(err, store.ErrNotFound) {
		return Pending{}, ErrInteractionNotFound
	}
	if err != nil {
		return Pending{}, fmt.Errorf("interaction: load: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(p.Browser), []byte(hashHex(secret))) != 1 {
		return Pending{}, ErrInteractionNotFound
	}
	return p, nil
}

// randomToken returns 256 random bits, URL-safe base64 without padding.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it crashes the program instead).
	return base64.RawURLEncoding.EncodeToString(b)
}

// hashHex is the lowercase hex SHA-256 of s: how cookie secrets are stored.
func hashHex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func resumeURL(id string) string { return ResumePath + "?interaction=" + url.QueryEscape(id) }

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
