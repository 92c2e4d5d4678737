// Package user defines the issuer's end-user account: who a user is (a
// normalized username, a tenant and roles), how the user proves it (an
// argon2id password hash and, when enrolled, a TOTP secret) and the state
// that throttles guessing (failed attempts, lockout, last accepted TOTP
// step). It holds no I/O: stores keep users (package store) and package
// authn runs a login against them.
package user

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// MaxUsernameLen is the longest username accepted, in bytes.
const MaxUsernameLen = 64

// Errors of the package; match them with errors.Is.
var (
	// ErrInvalid marks a user record that breaks an invariant.
	ErrInvalid = errors.New("invalid user")
	// ErrInvalidUsername marks a username outside [a-z0-9._-]{1,64} once
	// lowercased.
	ErrInvalidUsername = errors.New("invalid username")
	// ErrUsernameReserved marks a username that a UsernameCheck refuses, for
	// example because it equals an OAuth 2.0 client id.
	ErrUsernameReserved = errors.New("username is reserved")
)

// User is one end-user account. The username is the account's identity:
// it is unique across all tenants and becomes the sub claim of the user's
// tokens.
type User struct {
	// Username is the normalized login name (see NormalizeUsername).
	Username string
	// Tenant is the tenant the user belongs to; it becomes the tenant claim.
	Tenant string
	// Roles are the user's roles in the tenant.
	Roles []string
	// PasswordHash is the argon2id hash in PHC string format (see
	// HashPassword); never the password itself.
	PasswordHash string
	// TOTPSecret is the base32 RFC 6238 secret; empty when the user has not
	// enrolled a second factor.
	TOTPSecret string
	// TOTPLastStep is the time step of the last TOTP code accepted, so that
	// no code (nor an older one) is accepted twice; zero before the first.
	TOTPLastStep int64
	// FailedAttempts counts consecutive failed logins since the last
	// successful one.
	FailedAttempts int
	// LockedUntil is the end of the current lockout; zero or past when the
	// account is not locked.
	LockedUntil time.Time
	// CreatedAt is when the record was first stored (set by the store).
	CreatedAt time.Time
	// UpdatedAt is when the record last changed (set by the store).
	UpdatedAt time.Time
}

// HasTOTP reports whether the user must present a TOTP code to log in.
func (u *User) HasTOTP() bool { return u.TOTPSecret != "" }

// LockedAt reports whether the account is locked at now.
func (u *User) LockedAt(now time.Time) bool { return now.Before(u.LockedUntil) }

// Clone returns a deep copy of u, so stores never share memory with callers.
func (u *User) Clone() *User {
	c := *u
	c.Roles = slices.Clone(u.Roles)
	return &c
}

// Validate reports whether u is a record the issuer can store: a normalized
// username, a tenant, non-empty roles, a parsable password hash and, when
// present, a usable TOTP secret.
func (u *User) Validate() error {
	var errs []error
	if n, err := NormalizeUsername(u.Username); err != nil {
		errs = append(errs, err)
	} else if n != u.Username {
		errs = append(errs, fmt.Errorf("username %q is not normalized (want %q)", u.Username, n))
	}
	if u.Tenant == "" {
		errs = append(errs, errors.New("tenant is empty"))
	}
	if slices.Contains(u.Roles, "") {
		errs = append(errs, errors.New("a role is empty"))
	}
	if _, err := parseHash(u.PasswordHash); err != nil {
		errs = append(errs, fmt.Errorf("password hash: %w", err))
	}
	if u.TOTPSecret != "" {
		if err := ValidateTOTPSecret(u.TOTPSecret); err != nil {
			errs = append(errs, err)
		}
	}
	if u.FailedAttempts < 0 {
		errs = append(errs, errors.New("failed attempts is negative"))
	}
	if u.TOTPLastStep < 0 {
		errs = append(errs, errors.New("last TOTP step is negative"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w %q: %w", ErrInvalid, u.Username, errors.Join(errs...))
	}
	return nil
}

// NormalizeUsername returns the canonical form of a login name: ASCII
// lowercase, 1 to MaxUsernameLen characters from [a-z0-9._-]. Anything
// else, including non-ASCII letters that would lowercase into ASCII (such as
// the Kelvin sign), is ErrInvalidUsername, so two spellings never name two
// accounts and no spelling names someone else's.
func NormalizeUsername(name string) (string, error) {
	if name == "" || len(name) > MaxUsernameLen {
		return "", fmt.Errorf("%w: length must be 1 to %d", ErrInvalidUsername, MaxUsernameLen)
	}
	for i := range len(name) {
		switch c := name[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return "", fmt.Errorf("%w: only letters, digits, '.', '_' and '-' are allowed", ErrInvalidUsername)
		}
	}
	return strings.ToLower(name), nil
}

// UsernameCheck vets a new username against names this package cannot see.
// The issuer must refuse a username equal to an OAuth 2.0 client id: a
// client-credentials token carries the client id as sub, so such a user
// would share a subject with a machine client in every policy decision.
// The application wires a check that looks the name up among clients and
// returns an error wrapping ErrUsernameReserved when it is taken.
type UsernameCheck func(ctx context.Context, username string) error

// ValidateNew validates u (see Validate) and runs each check on its
// username; use it before creating or replacing a user.
func ValidateNew(ctx context.Context, u *User, checks ...UsernameCheck) error {
	if err := u.Validate(); err != nil {
		return err
	}
	for _, check := range checks {
		if err := check(ctx, u.Username); err != nil {
			return fmt.Errorf("username %q: %w", u.Username, err)
		}
	}
	return nil
}
