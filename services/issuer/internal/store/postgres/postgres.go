// Package postgres is the issuer's store.Store on PostgreSQL (pgx v5). Its
// schema lives in migrations/ and is applied by Migrate at start.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	libpostgres "github.com/gatehouse/gatehouse/libs/postgres"
	"github.com/gatehouse/gatehouse/services/issuer/internal/client"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/tokensession"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrate applies the issuer's schema migrations to pool's database.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	migrations, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return fmt.Errorf("issuer store: migrations: %w", err)
	}
	if err := libpostgres.Migrate(ctx, pool, migrations); err != nil {
		return fmt.Errorf("issuer store: migrate: %w", err)
	}
	return nil
}

// PostgreSQL error codes the store maps to sentinel errors.
const (
	uniqueViolation     = "23505"
	foreignKeyViolation = "23503"
)

// Store is a store.Store on a pgx pool it does not own.
type Store struct {
	pool *pgxpool.Pool
}

var _ store.Store = (*Store)(nil)

// New returns a Store using pool; the schema must be migrated (see Migrate).
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Ping implements store.Store.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("issuer store: ping: %w", err)
	}
	return nil
}

// GetClient implements store.ClientStore.
func (s *Store) GetClient(ctx context.Context, id string) (*client.Client, error) {
	var (
		c        client.Client
		lifespan pgtype.Interval
	)
	err := s.pool.QueryRow(ctx, `
		SELECT id, secret_hash, tenant, public, grant_types, response_types,
		       scopes, audiences, redirect_uris, access_token_lifespan
		FROM clients WHERE id = $1`, id).
		Scan(&c.ID, &c.SecretHash, &c.Tenant, &c.Public, &c.GrantTypes, &c.ResponseTypes,
			&c.Scopes, &c.Audiences, &c.RedirectURIs, &lifespan)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("client %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("issuer store: get client: %w", err)
	}
	if c.AccessTokenLifespan, err = fromInterval(lifespan); err != nil {
		return nil, fmt.Errorf("issuer store: client %q: %w", id, err)
	}
	return &c, nil
}

// UpsertClient implements store.ClientStore.
func (s *Store) UpsertClient(ctx context.Context, c *client.Client) error {
	if err := c.Validate(); err != nil {
		return err
	}
	var secretHash []byte
	if len(c.SecretHash) > 0 {
		secretHash = c.SecretHash
	}
	_, err := s.pool.Exec(ctx, `
		INSERT INTO clients (id, secret_hash, tenant, public, grant_types, response_types,
		                     scopes, audiences, redirect_uris, access_token_lifespan)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
		ON CONFLICT (id) DO UPDATE SET
			secret_hash = EXCLUDED.secret_hash,
			tenant = EXCLUDED.tenant,
			public = EXCLUDED.public,
			grant_types = EXCLUDED.grant_types,
			response_types = EXCLUDED.response_types,
			scopes = EXCLUDED.scopes,
			audiences = EXCLUDED.audiences,
			redirect_uris = EXCLUDED.redirect_uris,
			access_token_lifespan = EXCLUDED.access_token_lifespan,
			updated_at = now()`,
		c.ID, secretHash, c.Tenant, c.Public, nonNil(c.GrantTypes), nonNil(c.ResponseTypes),
		nonNil(c.Scopes), nonNil(c.Audiences), nonNil(c.RedirectURIs), toInterval(c.AccessTokenLifespan))
	if err != nil {
		return fmt.Errorf("issuer store: upsert client %q: %w", c.ID, err)
	}
	return nil
}

// CreateTokenSession implements store.TokenSessionStore.
func (s *Store) CreateTokenSession(ctx context.Context, rec tokensession.Record) error {
	_, err := s.pool.Exec(ctx, `
		INSERT INTO access_token_sessions (signature, jti, request_id, client_id, subject,
		                                   scopes, audiences, requested_at, expires_at, session)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		rec.Signature, rec.JTI, rec.RequestID, rec.ClientID, rec.Subject,
		nonNil(rec.Scopes), nonNil(rec.Audiences), rec.RequestedAt, rec.ExpiresAt, string(rec.Session))
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		switch pgErr.Code {
		case uniqueViolation:
			return fmt.Errorf("token session: %s: %w", pgErr.ConstraintName, store.ErrConflict)
		case foreignKeyViolation:
			return fmt.Errorf("token session for client %q: %w", rec.ClientID, store.ErrNotFound)
		}
	}
	if err != nil {
		return fmt.Errorf("issuer store: create token session: %w", err)
	}
	return nil
}

// GetTokenSession implements store.TokenSessionStore.
func (s *Store) GetTokenSession(ctx context.Context, signature string) (tokensession.Record, error) {
	var (
		rec     tokensession.Record
		session string
	)
	err := s.pool.QueryRow(ctx, `
		SELECT signature, jti, request_id, client_id, subject, scopes, audiences,
		       requested_at, expires_at, session
		FROM access_token_sessions WHERE signature = $1`, signature).
		Scan(&rec.Signature, &rec.JTI, &rec.RequestID, &rec.ClientID, &rec.Subject, &rec.Scopes,
			&rec.Audiences, &rec.RequestedAt, &rec.ExpiresAt, &session)
	if errors.Is(err, pgx.ErrNoRows) {
		return tokensession.Record{}, fmt.Errorf("token session: %w", store.ErrNotFound)
	}
	if err != nil {
		return tokensession.Record{}, fmt.Errorf("issuer store: get token session: %w", err)
	}
	rec.RequestedAt = rec.RequestedAt.UTC()
	rec.ExpiresAt = rec.ExpiresAt.UTC()
	rec.Session = []byte(session)
	return rec, nil
}

// DeleteTokenSession implements store.TokenSessionStore.
func (s *Store) DeleteTokenSession(ctx context.Context, signature string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM access_token_sessions WHERE signature = $1`, signature)
	if err != nil {
		return fmt.Errorf("issuer store: delete token session: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("token session: %w", store.ErrNotFound)
	}
	return nil
}

// nonNil maps a nil slice to an empty one: the array columns are NOT NULL.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// toInterval stores a zero lifespan ("issuer default") as NULL.
func toInterval(d time.Duration) pgtype.Interval {
	if d <= 0 {
		return pgtype.Interval{}
	}
	return pgtype.Interval{Microseconds: d.Microseconds(), Valid: true}
}

func fromInterval(iv pgtype.Interval) (time.Duration, error) {
	if !iv.Valid {
		return 0, nil
	}
	if iv.Months != 0 {
		return 0, errors.New("access_token_lifespan in months is not supported")
	}
	return time.Duration(iv.Days)*24*time.Hour + time.Duration(iv.Microseconds)*time.Microsecond, nil
}
