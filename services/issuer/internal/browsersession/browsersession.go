// Package browsersession defines the issuer's server-side browser state: the
// signed-in Session behind the session cookie, and the Pending authorization
// request that the authorization endpoint parks while the user logs in,
// presents a second factor or consents. It holds no I/O: stores keep the
// records (package store) and package interaction runs the pages.
package browsersession

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/consent"
)

// Authentication context class references a Session carries (the acr claim).
const (
	// ACRPassword: the user presented a password only.
	ACRPassword = "pwd"
	// ACRMFA: the user presented a password and a TOTP code.
	ACRMFA = "mfa"
)

// FailureMFANotEnrolled is Pending.Failure when the request asked for a
// second factor and the user has none enrolled: the authorization endpoint
// answers access_denied.
const FailureMFANotEnrolled = "mfa_not_enrolled"

// Bounds on records, so that no request can make one unbounded.
const (
	// MaxIDLen is the longest interaction id accepted, in bytes.
	MaxIDLen = 128
	// MaxQueryBytes is the largest authorization request kept, URL-encoded.
	MaxQueryBytes = 8 << 10
	// MaxFieldLen bounds subjects, tenants, client ids and similar fields.
	MaxFieldLen = 256
	// MaxRedirectURILen bounds Pending.RedirectURI.
	MaxRedirectURILen = 2048
)

// ErrInvalid marks a record that breaks an invariant.
var ErrInvalid = errors.New("invalid browser state")

// Session is a signed-in browser. The cookie holds a random secret; the
// store keys the session by the secret's SHA-256 (ID), so a leaked table
// row cannot be replayed as a cookie.
type Session struct {
	// ID is the lowercase hex SHA-256 of the cookie value; usable as the
	// OpenID Connect sid, never as a cookie.
	ID string
	// Subject is the username (the sub claim).
	Subject string
	// Tenant is the user's tenant.
	Tenant string
	// AuthTime is when the user authenticated (the auth_time claim).
	AuthTime time.Time
	// AMR are the RFC 8176 methods of that authentication (the amr claim).
	AMR []string
	// ACR is ACRMFA when a TOTP code was verified in that login, else ACRPassword.
	ACR string
	// ExpiresAt is the absolute end of the session, however active.
	ExpiresAt time.Time
	// IdleExpiresAt is when the session ends unless used again; each use
	// moves it forward, never past ExpiresAt.
	IdleExpiresAt time.Time
}

// Validate reports whether s is a record a store can keep.
func (s Session) Validate() error {
	var errs []error
	if !isHexSHA256(s.ID) {
		errs = append(errs, errors.New("id is not a hex SHA-256"))
	}
	if s.Subject == "" || len(s.Subject) > MaxFieldLen || len(s.Tenant) > MaxFieldLen {
		errs = append(errs, fmt.Errorf("subject must be 1 to %d bytes, tenant at most %d", MaxFieldLen, MaxFieldLen))
	}
	if s.ACR != ACRPassword && s.ACR != ACRMFA {
		errs = append(errs, fmt.Errorf("unknown acr %q", s.ACR))
	}
	if len(s.AMR) == 0 || len(s.AMR) > 8 {
		errs = append(errs, errors.New("need 1 to 8 amr values"))
	}
	if s.AuthTime.IsZero() || !s.ExpiresAt.After(s.AuthTime) || s.IdleExpiresAt.After(s.ExpiresAt) {
		errs = append(errs, errors.New("need auth time < idle expiry <= expiry"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: session: %w", ErrInvalid, err)
	}
	return nil
}

// ActiveAt reports whether s is signed in at t.
func (s Session) ActiveAt(t time.Time) bool {
	return t.Before(s.ExpiresAt) && t.Before(s.IdleExpiresAt)
}

// Clone returns a copy of s that shares no memory with it.
func (s Session) Clone() Session {
	s.AMR = slices.Clone(s.AMR)
	return s
}

// Pending is an authorization request parked for the user. The
// authorization endpoint fills the request fields and calls
// interaction.Manager.Begin; the login and consent pages fill the outcome
// fields; the endpoint reads them back with interaction.Manager.Resume.
// Only the outcome fields and the MFA state change after creation (see
// store.InteractionStore.UpdateInteraction).
type Pending struct {
	// ID is random and server-generated; it appears in page URLs, and is
	// useless without the browser cookie the interaction is bound to.
	ID string
	// Version counts updates, for compare-and-set; the store sets it.
	Version int64
	// Browser is the hex SHA-256 of the browser cookie the interaction is
	// bound to; set by Begin.
	Browser string

	// Query holds the original authorization request parameters.
	Query url.Values
	// ClientID is the requesting client.
	ClientID string
	// RedirectURI is where the authorization response will go, as validated
	// by the authorization endpoint (Query's redirect_uri when empty). The
	// pages allow its origin in CSP form-action, because Chrome and Safari
	// apply form-action to the redirects that follow a form submission.
	RedirectURI string
	// Scopes are the requested scopes.
	Scopes []string
	// RequireLogin is set for prompt=login or an exceeded max_age.
	RequireLogin bool
	// RequireMFA is set when acr_values asks for mfa.
	RequireMFA bool
	// CreatedAt and ExpiresAt bound the interaction's life; set by Begin.
	CreatedAt, ExpiresAt time.Time

	// Subject is the user who logged in or answered the consent page in
	// this interaction; the browser's session must still be this user's
	// when the interaction resumes.
	Subject string
	// LoginAt is when the user logged in during this interaction; zero if
	// the interaction reused an existing session.
	LoginAt time.Time
	// ConsentGranted is set when the user allowed the request; ConsentID
	// names the record stored for it.
	ConsentGranted bool
	// ConsentID names the consent record the user just granted.
	ConsentID string
	// ConsentDenied is set when the user denied the request.
	ConsentDenied bool
	// Failure, when set, ends the interaction in an error (access_denied);
	// see FailureMFANotEnrolled.
	Failure string

	// MFAUsername and PasswordVerifiedAt hold the login between the
	// password and the TOTP step (authn.MFARequiredError). Server-side only.
	MFAUsername string
	// PasswordVerifiedAt is when MFAUsername's password was verified.
	PasswordVerifiedAt time.Time
	// Next names a fixed page to show after a login that no client asked
	// for ("account"); empty for authorization requests.
	Next string
}

// Validate reports whether p is a record a store can keep.
func (p Pending) Validate() error {
	var errs []error
	if !ValidID(p.ID) {
		errs = append(errs, fmt.Errorf("id must be 1 to %d characters of [A-Za-z0-9_-]", MaxIDLen))
	}
	if !isHexSHA256(p.Browser) {
		errs = append(errs, errors.New("browser binding is not a hex SHA-256"))
	}
	if (p.ClientID == "") == (p.Next == "") {
		errs = append(errs, errors.New("need exactly one of client id and next"))
	}
	for _, f := range [...]struct{ name, value string }{
		{"client id", p.ClientID}, {"subject", p.Subject}, {"consent id", p.ConsentID},
		{"failure", p.Failure}, {"mfa username", p.MFAUsername}, {"next", p.Next},
	} {
		if len(f.value) > MaxFieldLen {
			errs = append(errs, fmt.Errorf("%s is longer than %d bytes", f.name, MaxFieldLen))
		}
	}
	if len(p.RedirectURI) > MaxRedirectURILen {
		errs = append(errs, fmt.Errorf("redirect uri is longer than %d bytes", MaxRedirectURILen))
	}
	if len(p.Query.Encode()) > MaxQueryBytes {
		errs = append(errs, fmt.Errorf("query is longer than %d bytes", MaxQueryBytes))
	}
	if err := consent.ValidateScopes(p.Scopes); err != nil {
		errs = append(errs, err)
	}
	if p.CreatedAt.IsZero() || !p.ExpiresAt.After(p.CreatedAt) {
		errs = append(errs, errors.New("need a creation time and an expiry after it"))
	}
	if p.ConsentGranted && p.ConsentDenied {
		errs = append(errs, errors.New("consent both granted and denied"))
	}
	if p.ConsentGranted != (p.ConsentID != "") {
		errs = append(errs, errors.New("consent id must be set exactly when consent is granted"))
	}
	if (p.MFAUsername == "") != p.PasswordVerifiedAt.IsZero() {
		errs = append(errs, errors.New("mfa username and password time go together"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: interaction: %w", ErrInvalid, err)
	}
	return nil
}

// Clone returns a copy of p that shares no memory with it.
func (p Pending) Clone() Pending {
	p.Query = cloneValues(p.Query)
	p.Scopes = slices.Clone(p.Scopes)
	return p
}

// ValidID reports whether id can be an interaction id: 1 to MaxIDLen
// characters of the URL-safe base64 alphabet.
func ValidID(id string) bool {
	if id == "" || len(id) > MaxIDLen {
		return false
	}
	for i := range len(id) {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := range len(s) {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func cloneValues(v url.Values) url.Values {
	if v == nil {
		return nil
	}
	out := make(url.Values, len(v))
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}
