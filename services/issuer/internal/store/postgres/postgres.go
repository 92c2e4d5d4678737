// Package postgres is the issuer's store.Store on PostgreSQL (pgx v5). Its
// schema lives in migrations/ and is applied by Migrate at start.
package postgres

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/go-jose/go-jose/v3"
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

// Store is a store.Store, store.GrantStore and store.ClientAssertionStore
// on a pgx pool it does not own: fosite needs one storage object for all.
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
		c                       client.Client
		accessLife, refreshLife pgtype.Interval
		jwks                    *string
	)
	err := s.pool.QueryRow(ctx, `
		SELECT id, secret_hash, tenant, public, grant_types, response_types,
		       scopes, audiences, redirect_uris, access_token_lifespan,
		       refresh_token_lifespan, auth_method, jwks::text, display_name
		FROM clients WHERE id = $1`, id).
		Scan(&c.ID, &c.SecretHash, &c.Tenant, &c.Public, &c.GrantTypes, &c.ResponseTypes,
			&c.Scopes, &c.Audiences, &c.RedirectURIs, &accessLife,
			&refreshLife, &c.AuthMethod, &jwks, &c.DisplayName)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("client %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("issuer store: get client: %w", err)
	}
	if c.AccessTokenLifespan, err = fromInterval(accessLife); err != nil {
		return nil, fmt.Errorf("issuer store: client %q: access_token_lifespan: %w", id, err)
	}
	if c.RefreshTokenLifespan, err = fromInterval(refreshLife); err != nil {
		return nil, fmt.Errorf("issuer store: client %q: refresh_token_lifespan: %w", id, err)
	}
	if jwks != nil {
		c.JWKS = new(jose.JSONWebKeySet)
		if err := json.Unmarshal([]byte(*jwks), c.JWKS); err != nil {
			return nil, fmt.Errorf("issuer store: client %q: jwks: %w", id, err)
		}
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
	// jwks stays NULL (a nil *string) unless the client has a key set.
	var jwks *string
	if c.JWKS != nil {
		// Validate admits public keys only, so no private key is written.
		data, err := json.Marshal(c.JWKS)
		if err != nil {
			return fmt.Errorf("issuer store: client %q: jwks: %w", c.ID, err)
		}
		text := string(data)
		jwks = &text
	}
	_, err := s.pool.Exec(ctx, `
		INSERT INTO clients (id, secret_hash, tenant, public, grant_types, response_types,
		                     scopes, audiences, redirect_uris, access_token_lifespan,
		                     refresh_token_lifespan, auth_method, jwks, display_name)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
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
			refresh_token_lifespan = EXCLUDED.refresh_token_lifespan,
			auth_method = EXCLUDED.auth_method,
			jwks = EXCLUDED.jwks,
			display_name = EXCLUDED.display_name,
			updated_at = now()`,
		c.ID, secretHash, c.Tenant, c.Public, nonNil(c.GrantTypes), nonNil(c.ResponseTypes),
		nonNil(c.Scopes), nonNil(c.Audiences), nonNil(c.RedirectURIs), toInterval(c.AccessTokenLifespan),
		toInterval(c.RefreshTokenLifespan), c.AuthMethod, jwks, c.DisplayName)
	if err != nil {
		return fmt.Errorf("issuer store: upsert client %q: %w", c.ID, err)
	}
	return nil
}

// CreateTokenSession implements store.TokenSessionStore. It refuses a
// session of a revoked request with store.ErrRevoked (see
// insertUnlessRevoked).
func (s *Store) CreateTokenSession(ctx context.Context, rec tokensession.Record) error {
	err := s.insertUnlessRevoked(ctx, rec.RequestID, `
		INSERT INTO access_token_sessions (signature, jti, request_id, client_id, subject,
		                                   scopes, audiences, requested_at, expires_at, session)
		SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10
		WHERE NOT EXISTS (SELECT 1 FROM revoked_requests WHERE request_id = $3)`,
		rec.Signature, rec.JTI, rec.RequestID, rec.ClientID, rec.Subject,
		nonNil(rec.Scopes), nonNil(rec.Audiences), rec.RequestedAt, rec.ExpiresAt, string(rec.Session))
	if errors.Is(err, store.ErrRevoked) {
		return fmt.Errorf("token session: %w", err)
	}
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
	rec, err := scanTokenSession(s.pool.QueryRow(ctx,
		`SELECT `+tokenSessionColumns+` FROM access_token_sessions WHERE signature = $1`, signature))
	if errors.Is(err, pgx.ErrNoRows) {
		return tokensession.Record{}, fmt.Errorf("token session: %w", store.ErrNotFound)
	}
	if err != nil {
		return tokensession.Record{}, fmt.Errorf("issuer store: get token session: %w", err)
	}
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

// insertUnlessRevoked runs insert, an INSERT ... SELECT ... WHERE NOT
// EXISTS that adds no row if requestID is in revoked_requests, holding
// requestID's revocation lock (lockRequest); no row added means
// store.ErrRevoked. Errors of insert come back unwrapped.
func (s *Store) insertUnlessRevoked(ctx context.Context, requestID, insert string, args ...any) error {
	return pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		if err := lockRequest(ctx, tx, requestID); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, insert, args...)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrRevoked
		}
		return nil
	})
}

// lockRequest takes requestID's revocation lock, a transaction-scoped
// advisory lock that RevokeRequest and the creates of grant records and
// access token sessions hold, so that a create either commits before a
// revocation (which then revokes what it stored) or finds the revocation.
// tx must be READ COMMITTED: each later statement then takes its snapshot
// after the lock is held and sees what the previous holder committed. A
// hash collision merely serializes two request ids.
func lockRequest(ctx context.Context, tx pgx.Tx, requestID string) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, requestID); err != nil {
		return fmt.Errorf("lock request: %w", err)
	}
	return nil
}

// tokenSessionColumns are the access_token_sessions columns scanTokenSession reads, in order.
const tokenSessionColumns = `signature, jti, request_id, client_id, subject, scopes, audiences,
	requested_at, expires_at, session::text`

// scanTokenSession reads one row of tokenSessionColumns.
func scanTokenSession(row pgx.Row) (tokensession.Record, error) {
	var (
		rec     tokensession.Record
		session string
	)
	if err := row.Scan(&rec.Signature, &rec.JTI, &rec.RequestID, &rec.ClientID, &rec.Subject, &rec.Scopes,
		&rec.Audiences, &rec.RequestedAt, &rec.ExpiresAt, &session); err != nil {
		return tokensession.Record{}, err
	}
	rec.RequestedAt = rec.RequestedAt.UTC()
	rec.ExpiresAt = rec.ExpiresAt.UTC()
	rec.Session = []byte(session)
	return rec, nil
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
		return 0, errors.New("a lifespan in months is not supported")
	}
	return time.Duration(iv.Days)*24*time.Hour + time.Duration(iv.Microseconds)*time.Microsecond, nil
}
