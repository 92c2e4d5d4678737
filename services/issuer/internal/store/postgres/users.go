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
//
// TOTP secrets are stored only sealed (users.totp_secret_sealed), with the
// username as additional data, so neither a copy of the database nor a
// sealed value moved to another user's row yields a second factor. Rows
// written before sealing keep the secret in clear (users.totp_secret):
// GetUser still reads it, and the next UpsertUser or
// ResealLegacyTOTPSecrets replaces it with the sealed form. A sealed
// secret that does not open makes GetUser fail with ErrUndecryptable.
type UserStore struct {
	pool   *pgxpool.Pool
	sealer Sealer
}

var _ store.UserStore = (*UserStore)(nil)

// totpAADPrefix starts the additional data of a sealed TOTP secret; the
// username follows it.
const totpAADPrefix = "gatehouse/issuer/totp-secret/v1:"

// NewUserStore returns a UserStore using pool that seals TOTP secrets with
// sealer (required); the schema must be migrated (see Migrate).
func NewUserStore(pool *pgxpool.Pool, sealer Sealer) *UserStore {
	return &UserStore{pool: pool, sealer: sealer}
}

// CreateUser implements store.UserStore.
func (s *UserStore) CreateUser(ctx context.Context, u *user.User) error {
	if err := u.Validate(); err != nil {
		return err
	}
	sealed, err := s.sealTOTP(u.Username, u.TOTPSecret)
	if err != nil {
		return err
	}
	_, err = s.pool.Exec(ctx, `
		INSERT INTO users (username, tenant, roles, password_hash, totp_secret_sealed,
		                   totp_last_step, failed_attempts, locked_until)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		u.Username, u.Tenant, nonNil(u.Roles), u.PasswordHash, sealed,
		u.TOTPLastStep, u.FailedAttempts, nullTime(u.LockedUntil))
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == uniqueViolation {
		return fmt.Errorf("user %q: %w", u.Username, store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("issuer store: create user %q: %w", u.Username, err)
	}
	return nil
}

// UpsertUser implements store.UserStore. It also clears a legacy clear-text
// TOTP secret: the row then holds only the sealed form.
func (s *UserStore) UpsertUser(ctx context.Context, u *user.User) error {
	if err := u.Validate(); err != nil {
		return err
	}
	sealed, err := s.sealTOTP(u.Username, u.TOTPSecret)
	if err != nil {
		return err
	}
	_, err = s.pool.Exec(ctx, `
		INSERT INTO users (username, tenant, roles, password_hash, totp_secret_sealed,
		                   totp_last_step, failed_attempts, locked_until)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (username) DO UPDATE SET
			tenant = EXCLUDED.tenant,
			roles = EXCLUDED.roles,
			password_hash = EXCLUDED.password_hash,
			totp_secret = NULL,
			totp_secret_sealed = EXCLUDED.totp_secret_sealed,
			updated_at = now()`,
		u.Username, u.Tenant, nonNil(u.Roles), u.PasswordHash, sealed,
		u.TOTPLastStep, u.FailedAttempts, nullTime(u.LockedUntil))
	if err != nil {
		return fmt.Errorf("issuer store: upsert user %q: %w", u.Username, err)
	}
	return nil
}

// GetUser implements store.UserStore. A TOTP secret whose sealed form does
// not open is ErrUndecryptable (and never store.ErrNotFound): the caller
// must fail the login, not skip the second factor.
func (s *UserStore) GetUser(ctx context.Context, username string) (*user.User, error) {
	var (
		u           user.User
		clearTOTP   *string
		sealedTOTP  []byte
		lockedUntil *time.Time
	)
	err := s.pool.QueryRow(ctx, `
		SELECT username, tenant, roles, password_hash, totp_secret, totp_secret_sealed,
		       totp_last_step, failed_attempts, locked_until, created_at, updated_at
		FROM users WHERE username = $1`, username).
		Scan(&u.Username, &u.Tenant, &u.Roles, &u.PasswordHash, &clearTOTP, &sealedTOTP,
			&u.TOTPLastStep, &u.FailedAttempts, &lockedUntil, &u.CreatedAt, &u.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("user %q: %w", username, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("issuer store: get user %q: %w", username, err)
	}
	switch {
	case sealedTOTP != nil:
		if u.TOTPSecret, err = s.openTOTP(u.Username, sealedTOTP); err != nil {
			return nil, err
		}
	case clearTOTP != nil:
		// Legacy row written before sealing; resealed by the next
		// UpsertUser or ResealLegacyTOTPSecrets.
		u.TOTPSecret = *clearTOTP
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

// ResealLegacyTOTPSecrets replaces every clear-text TOTP secret left by
// rows written before sealing with its sealed form, and returns how many it
// resealed. A row changed concurrently (by UpsertUser) is left to that
// change. Run it at start, after Migrate: it needs the Sealer, which the
// migration cannot have.
func (s *UserStore) ResealLegacyTOTPSecrets(ctx context.Context) (int, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT username, totp_secret FROM users WHERE totp_secret IS NOT NULL ORDER BY username`)
	if err != nil {
		return 0, fmt.Errorf("issuer store: list clear-text TOTP secrets: %w", err)
	}
	type legacy struct{ username, secret string }
	legacies, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (legacy, error) {
		var l legacy
		err := row.Scan(&l.username, &l.secret)
		return l, err
	})
	if err != nil {
		return 0, fmt.Errorf("issuer store: list clear-text TOTP secrets: %w", err)
	}
	resealed := 0
	for _, l := range legacies {
		sealed, err := s.sealTOTP(l.username, l.secret)
		if err != nil {
			return resealed, err
		}
		tag, err := s.pool.Exec(ctx, `
			UPDATE users SET totp_secret = NULL, totp_secret_sealed = $3, updated_at = now()
			WHERE username = $1 AND totp_secret = $2`,
			l.username, l.secret, sealed)
		if err != nil {
			return resealed, fmt.Errorf("issuer store: reseal TOTP secret of %q: %w", l.username, err)
		}
		resealed += int(tag.RowsAffected())
	}
	return resealed, nil
}

// sealTOTP returns secret sealed for username, nil when secret is empty.
func (s *UserStore) sealTOTP(username, secret string) ([]byte, error) {
	if secret == "" {
		return nil, nil
	}
	sealed, err := s.sealer.Seal([]byte(secret), totpAAD(username))
	if err != nil {
		return nil, fmt.Errorf("issuer store: seal TOTP secret of %q: %w", username, err)
	}
	return sealed, nil
}

// openTOTP opens the sealed TOTP secret of username. It fails closed: any
// failure, and a plaintext that is not a usable secret (an empty one would
// read as "no second factor"), is ErrUndecryptable. The Sealer's own error
// is only described, not wrapped, so that no sentinel it may carry (such as
// store.ErrNotFound) changes what the caller does.
func (s *UserStore) openTOTP(username string, sealed []byte) (string, error) {
	plaintext, err := s.sealer.Open(sealed, totpAAD(username))
	if err != nil {
		return "", fmt.Errorf("user %q: TOTP secret: %w (%v)", username, ErrUndecryptable, err)
	}
	secret := string(plaintext)
	if err := user.ValidateTOTPSecret(secret); err != nil {
		return "", fmt.Errorf("user %q: TOTP secret: %w (opened to no usable secret)", username, ErrUndecryptable)
	}
	return secret, nil
}

func totpAAD(username string) []byte { return []byte(totpAADPrefix + username) }

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

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
