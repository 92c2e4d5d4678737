// Package postgres is the PDP's policystore.Store on PostgreSQL (pgx v5),
// shared by every replica. Its schema lives in migrations/ and is applied
// by Migrate, which records its versions in a table of its own
// (VersionTable) so that it can share a database with other schemas.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	libpostgres "github.com/gatehouse/gatehouse/libs/postgres"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policystore"
)

// VersionTable is where Migrate records the policy store's schema versions.
const VersionTable = "pdp_policy_goose_db_version"

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrate applies the policy store's migrations to pool's database.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	migrations, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return fmt.Errorf("policy store: migrations: %w", err)
	}
	if err := libpostgres.Migrate(ctx, pool, migrations, libpostgres.WithVersionTable(VersionTable)); err != nil {
		return fmt.Errorf("policy store: %w", err)
	}
	return nil
}

// Store is a policystore.Store on a pgx pool it does not own.
type Store struct {
	pool   *pgxpool.Pool
	logger *slog.Logger
}

var _ policystore.Store = (*Store)(nil)

// Option configures a Store.
type Option func(*Store)

// WithLogger makes Subscribe's listeners report lost connections to l
// (by default they are not reported).
func WithLogger(l *slog.Logger) Option {
	return func(s *Store) { s.logger = l }
}

// New returns a Store using pool; the schema must be migrated (see Migrate).
func New(pool *pgxpool.Pool, opts ...Option) *Store {
	s := &Store{pool: pool, logger: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(s)
	}
	return s
}

// PutBundle implements policystore.Store. Of two concurrent puts of one
// revision, one inserts and the other waits for it, then compares digests.
func (s *Store) PutBundle(ctx context.Context, b policystore.Bundle) (bool, error) {
	if err := policystore.CheckBundle(b); err != nil {
		return false, err
	}
	tag, err := s.pool.Exec(ctx, `
		INSERT INTO policy_bundles (revision, digest, tarball, signing_key_id, uploaded_by)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (revision) DO NOTHING`,
		b.Revision, b.Digest, b.Tarball, b.SigningKeyID, b.UploadedBy)
	if err != nil {
		return false, fmt.Errorf("policy store: put bundle: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return true, nil
	}
	var digest string
	if err := s.pool.QueryRow(ctx, `SELECT digest FROM policy_bundles WHERE revision = $1`, b.Revision).Scan(&digest); err != nil {
		return false, fmt.Errorf("policy store: put bundle: %w", err)
	}
	if digest != b.Digest {
		return false, fmt.Errorf("bundle %q: %w", b.Revision, policystore.ErrRevisionConflict)
	}
	return false, nil
}

// Bundle implements policystore.Store.
func (s *Store) Bundle(ctx context.Context, revision string) (policystore.Bundle, error) {
	var b policystore.Bundle
	err := s.pool.QueryRow(ctx, `
		SELECT revision, digest, tarball, signing_key_id, uploaded_by, uploaded_at
		FROM policy_bundles WHERE revision = $1`, revision).
		Scan(&b.Revision, &b.Digest, &b.Tarball, &b.SigningKeyID, &b.UploadedBy, &b.UploadedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return policystore.Bundle{}, fmt.Errorf("bundle %q: %w", revision, policystore.ErrNotFound)
	}
	if err != nil {
		return policystore.Bundle{}, fmt.Errorf("policy store: get bundle: %w", err)
	}
	b.UploadedAt = b.UploadedAt.UTC()
	return b, nil
}

// ListBundles implements policystore.Store.
func (s *Store) ListBundles(ctx context.Context) ([]policystore.BundleInfo, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT revision, digest, octet_length(tarball), signing_key_id, uploaded_by, uploaded_at
		FROM policy_bundles ORDER BY seq DESC`)
	if err != nil {
		return nil, fmt.Errorf("policy store: list bundles: %w", err)
	}
	infos, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (policystore.BundleInfo, error) {
		var b policystore.BundleInfo
		err := row.Scan(&b.Revision, &b.Digest, &b.SizeBytes, &b.SigningKeyID, &b.UploadedBy, &b.UploadedAt)
		b.UploadedAt = b.UploadedAt.UTC()
		return b, err
	})
	if err != nil {
		return nil, fmt.Errorf("policy store: list bundles: %w", err)
	}
	return infos, nil
}
