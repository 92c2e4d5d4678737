package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/user"
)

// UserStore is a store.UserStore on a pgx pool it does not own. Every
// login-state change is a single UPDATE, so concurrent logins are
// serialized by the row lock and no update is lost.
type UserStore struct {
	pool *pgxpool.Pool
}

var _ store.UserStore = (*UserStore)(nil)

// NewUserStore returns a UserStore using pool; the schema must be migrated
// (see Migrate).
func NewUserStore(pool *pgxpool.Pool) *UserStore { return &UserStore{pool: pool} }

// CreateUser implements store.UserStore.
func (s *UserStore) CreateUser(ctx context.Context, u *user.User) error {
	if err := u.Validate(); err != nil {
		return err
	}
	_, err := s.pool.Exec(ctx, `
		INSERT INTO users (username, tenant, roles, password_hash, totp_secret,
		                   totp_last_step, failed_attempts, locked_until)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		u.Username, u.Tenant, nonNil(u.Roles), u.PasswordHash, nullString(u.TOTPSecret),
		u.TOTPLastStep, u.FailedAttempts, nullTime(u.LockedUntil))
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == uniqueViolation {
		return fmt.Errorf("user %q: %w", u.Username, store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("issuer store: create user %q: %w", u.Username, err)
	}
	return nil
}

// UpsertUser implements store.UserStore.
func (s *UserStore) UpsertUser(ctx context.Context, u *user.User) error {
	if err := u.Validate(); err != nil {
		return err
	}
	_, err := s.pool.Exec(ctx, `
		INSERT INTO users (username, tenant, roles, password_hash, totp_secret,
		                   totp_last_step, failed_attempts, locked_until)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (username) DO UPDATE SET
			tenant = EXCLUDED.tenant,
			roles = EXCLUDED.roles,
			password_hash = EXCLUDED.password_hash,
			totp_secret = EXCLUDED.totp_secret,
			updated_at = now()`,
		u.Username, u.Tenant, nonNil(u.Roles), u.PasswordHash, nullString(u.TOTPSecret),
		u.TOTPLastStep, u.FailedAttempts, nullTime(u.LockedUntil))
	if err != nil {
		return fmt.Errorf("issuer store: upsert user %q: %w", u.Username, err)
	}
	return nil
}

// GetUser implements store.UserStore.
func (s *UserStore) GetUser(ctx context.Context, username string) (*user.User, error) {
	var (
		u           user.User
		totpSecret  *string
		lockedUntil *time.Time
	)
	err := s.pool.QueryRow(ctx, `
		SELECT username, tenant, roles, password_hash, totp_secret, totp_last_step,
		       failed_attempts, locked_until, created_at, updated_at
		FROM users WHERE username = $1`, username).
		Scan(&u.Username, &u.Tenant, &u.Roles, &u.PasswordHash, &totpSecret, &u.TOTPLastStep,
			&u.FailedAttempts, &lockedUntil, &u.CreatedAt, &u.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("user %q: %w", username, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("issuer store: get user %q: %w", username, err)
	}
	if totpSecret != nil {
		u.TOTPSecret = *totpSecret
	}
	if lockedUntil != nil {
		u.LockedUntil = lockedUntil.UTC()
	}
	u.CreatedAt = u.CreatedAt.UTC()
	u.UpdatedAt = u.UpdatedAt.UTC()
	return &u, nil
}

// SetPasswordHash implements store.UserStore.
func (s *UserStore) SetPasswordHash(ctx context.Context, username, hash string) error {
	if _, err := user.ParseParams(hash); err != nil {
		return fmt.Errorf("user %q: %w: password hash: %w", username, user.ErrInvalid, err)
	}
	return s.exec(ctx, "set password hash", username, `
		UPDATE users SET password_hash = $2, updated_at = now() WHERE username = $1`,
		username, hash)
}

// RecordLoginFailure implements store.UserStore. The increment and the
// lockout are computed from the row's current value inside one UPDATE; the
// lockout formula is LockoutPolicy.Duration's (base doubling per failure
// past the threshold, capped), which the contract suite pins.
func (s *UserStore) RecordLoginFailure(ctx context.Context, username string, at time.Time, policy user.LockoutPolicy) (user.LoginState, error) {
	var (
		state       user.LoginState
		lockedUntil *time.Time
	)
	err := s.pool.QueryRow(ctx, `
		UPDATE users SET
			failed_attempts = failed_attempts + 1,
			locked_until = CASE
				WHEN failed_attempts + 1 >= $3 THEN $2::timestamptz + LEAST(
					$4::numeric * power(2::numeric, LEAST(failed_attempts + 1 - $3, 62)),
					$5::numeric)::bigint * interval '1 microsecond'
				ELSE locked_until
			END,
			updated_at = now()
		WHERE username = $1
		RETURNING failed_attempts, locked_until`,
		username, at, policy.Threshold, policy.Base.Microseconds(), policy.Max.Microseconds()).
		Scan(&state.FailedAttempts, &lockedUntil)
	if errors.Is(err, pgx.ErrNoRows) {
		return user.LoginState{}, fmt.Errorf("user %q: %w", username, store.ErrNotFound)
	}
	if err != nil {
		return user.LoginState{}, fmt.Errorf("issuer store: record login failure of %q: %w", username, err)
	}
	if lockedUntil != nil {
		state.LockedUntil = lockedUntil.UTC()
	}
	return state, nil
}

// RecordLoginSuccess implements store.UserStore.
func (s *UserStore) RecordLoginSuccess(ctx context.Context, username string) error {
	return s.exec(ctx, "record login success", username, `
		UPDATE users SET failed_attempts = 0, locked_until = NULL, updated_at = now()
		WHERE username = $1`, username)
}

// AdvanceTOTPStep implements store.UserStore. The WHERE clause is the
// compare-and-set: of two concurrent updates to one step, the second finds
// the condition false once the first has committed.
func (s *UserStore) AdvanceTOTPStep(ctx context.Context, username string, step int64) error {
	var advanced, found bool
	err := s.pool.QueryRow(ctx, `
		WITH advanced AS (
			UPDATE users SET totp_last_step = $2, updated_at = now()
			WHERE username = $1 AND totp_last_step < $2
			RETURNING 1
		)
		SELECT EXISTS (SELECT 1 FROM advanced), EXISTS (SELECT 1 FROM users WHERE username = $1)`,
		username, step).Scan(&advanced, &found)
	switch {
	case err != nil:
		return fmt.Errorf("issuer store: advance TOTP step of %q: %w", username, err)
	case !found:
		return fmt.Errorf("user %q: %w", username, store.ErrNotFound)
	case !advanced:
		return fmt.Errorf("user %q: TOTP step %d: %w", username, step, store.ErrConflict)
	}
	return nil
}

// exec runs an UPDATE of one user, mapping "no row" to ErrNotFound.
func (s *UserStore) exec(ctx context.Context, what, username, sql string, args ...any) error {
	tag, err := s.pool.Exec(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("issuer store: %s of %q: %w", what, username, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("user %q: %w", username, store.ErrNotFound)
	}
	return nil
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
