// Package consent defines the consent record: which scopes a user granted to
// which OAuth 2.0 client, when, until when, and whether the user has since
// withdrawn the grant. Every token issued on the strength of a consent rests
// on it, so withdrawing it revokes them. The package holds no I/O: stores
// keep records (package store) and package interaction asks for and lists
// them.
package consent

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Bounds on a record, so that no request can make one unbounded.
const (
	// MaxScopes is the most scopes one consent covers.
	MaxScopes = 64
	// MaxScopeLen is the longest scope name accepted, in bytes.
	MaxScopeLen = 128
	// MaxIDLen is the longest consent id, subject or client id accepted, in bytes.
	MaxIDLen = 256
)

// ErrInvalid marks a consent record that breaks an invariant.
var ErrInvalid = errors.New("invalid consent")

// Consent is one grant: Subject allowed ClientID the Scopes from GrantedAt
// until ExpiresAt, unless withdrawn earlier (WithdrawnAt). A record never
// changes except to be withdrawn; a new grant is a new record.
type Consent struct {
	// ID identifies the record; tokens issued on the consent carry it.
	ID string
	// Subject is the user who granted it (the sub of their tokens).
	Subject string
	// Tenant is the user's tenant when they granted it.
	Tenant string
	// ClientID is the client the scopes were granted to.
	ClientID string
	// Scopes are the granted scopes, sorted and without duplicates (see
	// NormalizeScopes).
	Scopes []string
	// GrantedAt is when the user allowed the request.
	GrantedAt time.Time
	// ExpiresAt is when the grant lapses on its own.
	ExpiresAt time.Time
	// WithdrawnAt is when the user withdrew the grant; zero while it stands.
	WithdrawnAt time.Time
}

// Validate reports whether c is a record a store can keep: ids set and
// bounded, normalized valid scopes, and an expiry after the grant.
func (c Consent) Validate() error {
	var errs []error
	for _, f := range [...]struct{ name, value string }{{"id", c.ID}, {"subject", c.Subject}, {"client id", c.ClientID}} {
		if f.value == "" || len(f.value) > MaxIDLen {
			errs = append(errs, fmt.Errorf("%s must be 1 to %d bytes", f.name, MaxIDLen))
		}
	}
	if len(c.Tenant) > MaxIDLen {
		errs = append(errs, fmt.Errorf("tenant is longer than %d bytes", MaxIDLen))
	}
	if err := ValidateScopes(c.Scopes); err != nil {
		errs = append(errs, err)
	} else if !slices.Equal(c.Scopes, NormalizeScopes(c.Scopes)) {
		errs = append(errs, errors.New("scopes are not sorted and unique"))
	}
	if len(c.Scopes) == 0 {
		errs = append(errs, errors.New("no scopes"))
	}
	if c.GrantedAt.IsZero() || !c.ExpiresAt.After(c.GrantedAt) {
		errs = append(errs, errors.New("need a grant time and an expiry after it"))
	}
	if !c.WithdrawnAt.IsZero() && c.WithdrawnAt.Before(c.GrantedAt) {
		errs = append(errs, errors.New("withdrawn before it was granted"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w %q: %w", ErrInvalid, c.ID, err)
	}
	return nil
}

// ActiveAt reports whether c stands at t: granted, not expired, not withdrawn.
func (c Consent) ActiveAt(t time.Time) bool {
	return c.WithdrawnAt.IsZero() && !t.Before(c.GrantedAt) && t.Before(c.ExpiresAt)
}

// Covers reports whether c grants every scope in scopes.
func (c Consent) Covers(scopes []string) bool {
	for _, s := range scopes {
		if !slices.Contains(c.Scopes, s) {
			return false
		}
	}
	return true
}

// Clone returns a copy of c that shares no memory with it.
func (c Consent) Clone() Consent {
	c.Scopes = slices.Clone(c.Scopes)
	return c
}

// NormalizeScopes returns scopes sorted and without duplicates, the form a
// record stores. It never returns nil.
func NormalizeScopes(scopes []string) []string {
	out := slices.Clone(scopes)
	slices.Sort(out)
	out = slices.Compact(out)
	if out == nil {
		out = []string{}
	}
	return out
}

// ValidateScopes reports whether scopes are at most MaxScopes valid scope
// names (see ValidScope).
func ValidateScopes(scopes []string) error {
	if len(scopes) > MaxScopes {
		return fmt.Errorf("%d scopes, at most %d allowed", len(scopes), MaxScopes)
	}
	for _, s := range scopes {
		if !ValidScope(s) {
			return fmt.Errorf("invalid scope %q", s)
		}
	}
	return nil
}

// ValidScope reports whether s is an RFC 6749 scope-token (printable ASCII
// except space, '"' and '\') of at most MaxScopeLen bytes.
func ValidScope(s string) bool {
	if s == "" || len(s) > MaxScopeLen {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
