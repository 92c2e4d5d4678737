package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/services/issuer/internal/signingkey"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
)

// KeyStore is a store.KeyStore on a pgx pool it does not own (table
// signing_keys, migration 00003).
type KeyStore struct {
	pool *pgxpool.Pool
}

var _ store.KeyStore = (*KeyStore)(nil)

// NewKeyStore returns a KeyStore using pool; the schema must be migrated
// (see Migrate).
func NewKeyStore(pool *pgxpool.Pool) *KeyStore { return &KeyStore{pool: pool} }

// ListKeys implements store.KeyStore.
func (s *KeyStore) ListKeys(ctx context.Context) ([]signingkey.Record, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT kid, alg, public_jwk::text, sealed_key, predecessor,
		       created_at, activate_at, retire_at, expire_at
		FROM signing_keys ORDER BY created_at DESC, kid DESC`)
	if err != nil {
		return nil, fmt.Errorf("issuer store: list signing keys: %w", err)
	}
	recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (signingkey.Record, error) {
		var (
			r                  signingkey.Record
			jwk                string
			retireAt, expireAt *time.Time
		)
		if err := row.Scan(&r.KID, &r.Algorithm, &jwk, &r.Sealed, &r.Predecessor,
			&r.CreatedAt, &r.ActivateAt, &retireAt, &expireAt); err != nil {
			return r, err
		}
		r.PublicJWK = []byte(jwk)
		r.CreatedAt, r.ActivateAt = r.CreatedAt.UTC(), r.ActivateAt.UTC()
		if retireAt != nil && expireAt != nil {
			r.RetireAt, r.ExpireAt = retireAt.UTC(), expireAt.UTC()
		}
		return r, nil
	})
	if err != nil {
		return nil, fmt.Errorf("issuer store: list signing keys: %w", err)
	}
	return recs, nil
}

// RotateKeys implements store.KeyStore.
func (s *KeyStore) RotateKeys(ctx context.Context, next signingkey.Record, retiredExpireAt time.Time) error {
	if err := next.Validate(); err != nil {
		return err
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			INSERT INTO signing_keys (kid, alg, public_jwk, sealed_key, predecessor,
			                          created_at, activate_at, retire_at, expire_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			next.KID, next.Algorithm, string(next.PublicJWK), next.Sealed, next.Predecessor,
			next.CreatedAt, next.ActivateAt, optionalTime(next.RetireAt), optionalTime(next.ExpireAt)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `
			UPDATE signing_keys SET retire_at = $2, expire_at = $3
			WHERE kid <> $1 AND (retire_at IS NULL OR retire_at > $2)`,
			next.KID, next.ActivateAt, retiredExpireAt)
		return err
	})
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == uniqueViolation {
		return fmt.Errorf("signing key %s (predecessor %q): %s: %w: %w", next.KID, next.Predecessor, pgErr.ConstraintName, store.ErrConflict, signingkey.ErrRotationRace)
	}
	if err != nil {
		return fmt.Errorf("issuer store: rotate signing keys: %w", err)
	}
	return nil
}

// DeleteExpiredKeys implements store.KeyStore.
func (s *KeyStore) DeleteExpiredKeys(ctx context.Context, now time.Time) ([]string, error) {
	rows, err := s.pool.Query(ctx, `DELETE FROM signing_keys WHERE expire_at <= $1 RETURNING kid`, now)
	if err != nil {
		return nil, fmt.Errorf("issuer store: delete expired signing keys: %w", err)
	}
	kids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("issuer store: delete expired signing keys: %w", err)
	}
	return kids, nil
}

// optionalTime stores a zero time as NULL.
func optionalTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
