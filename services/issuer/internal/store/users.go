package store

import (
	"context"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/user"
)

// UserStore keeps end-user accounts. Usernames are unique across all
// tenants (they are the sub of a user's tokens) and are always passed in
// normalized form (user.NormalizeUsername); a store does no normalization.
// The methods that change login state are atomic, so concurrent logins
// neither lose a failure nor accept one TOTP code twice.
type UserStore interface {
	// CreateUser validates u and stores it; ErrConflict if the username is
	// taken. Login state (failures, lockout, last TOTP step) starts from u.
	CreateUser(ctx context.Context, u *user.User) error
	// UpsertUser validates u and creates it, or replaces an existing user's
	// tenant, roles, password hash and TOTP secret. An existing user's login
	// state is kept: re-seeding never unlocks an account.
	UpsertUser(ctx context.Context, u *user.User) error
	// GetUser returns the user with username, or ErrNotFound.
	GetUser(ctx context.Context, username string) (*user.User, error)
	// SetPasswordHash replaces the user's password hash (password change or
	// rehash under new parameters); ErrNotFound for an unknown user.
	SetPasswordHash(ctx context.Context, username, hash string) error
	// RecordLoginFailure adds one consecutive failure and, when policy says
	// so, locks the account from at, in one atomic step; it returns the new
	// state, or ErrNotFound.
	RecordLoginFailure(ctx context.Context, username string, at time.Time, policy user.LockoutPolicy) (user.LoginState, error)
	// RecordLoginSuccess resets the failure count and lifts any lockout;
	// ErrNotFound for an unknown user.
	RecordLoginSuccess(ctx context.Context, username string) error
	// AdvanceTOTPStep stores step as the last accepted TOTP step only if it
	// is later than the stored one (compare-and-set); ErrConflict if not,
	// which means the code was already used. ErrNotFound for an unknown user.
	AdvanceTOTPStep(ctx context.Context, username string, step int64) error
}
