package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/services/issuer/internal/browsersession"
	"github.com/gatehouse/gatehouse/services/issuer/internal/consent"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
)

// BrowserSessionStore is a store.BrowserSessionStore on a pgx pool it does
// not own.
type BrowserSessionStore struct {
	pool *pgxpool.Pool
}

var _ store.BrowserSessionStore = (*BrowserSessionStore)(nil)

// NewBrowserSessionStore returns a BrowserSessionStore using pool; the
// schema must be migrated (see Migrate).
func NewBrowserSessionStore(pool *pgxpool.Pool) *BrowserSessionStore {
	return &BrowserSessionStore{pool: pool}
}

// CreateBrowserSession implements store.BrowserSessionStore.
func (s *BrowserSessionStore) CreateBrowserSession(ctx context.Context, sess browsersession.Session) error {
	if err := sess.Validate(); err != nil {
		return err
	}
	_, err := s.pool.Exec(ctx, `
		INSERT INTO browser_sessions (id, subject, tenant, auth_time, amr, acr, expires_at, idle_expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		sess.ID, sess.Subject, sess.Tenant, sess.AuthTime, sess.AMR, sess.ACR, sess.ExpiresAt, sess.IdleExpiresAt)
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == uniqueViolation {
		return fmt.Errorf("browser session: %w", store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("issuer store: create browser session: %w", err)
	}
	return nil
}

// GetBrowserSession implements store.BrowserSessionStore.
func (s *BrowserSessionStore) GetBrowserSession(ctx context.Context, id string, now time.Time) (browsersession.Session, error) {
	var sess browsersession.Session
	err := s.pool.QueryRow(ctx, `
		SELECT id, subject, tenant, auth_time, amr, acr, expires_at, idle_expires_at
		FROM browser_sessions
		WHERE id = $1 AND expires_at > $2 AND idle_expires_at > $2`, id, now).
		Scan(&sess.ID, &sess.Subject, &sess.Tenant, &sess.AuthTime, &sess.AMR, &sess.ACR,
			&sess.ExpiresAt, &sess.IdleExpiresAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return browsersession.Session{}, fmt.Errorf("browser session: %w", store.ErrNotFound)
	}
	if err != nil {
		return browsersession.Session{}, fmt.Errorf("issuer store: get browser session: %w", err)
	}
	sess.AuthTime, sess.ExpiresAt, sess.IdleExpiresAt = sess.AuthTime.UTC(), sess.ExpiresAt.UTC(), sess.IdleExpiresAt.UTC()
	return sess, nil
}

// TouchBrowserSession implements store.BrowserSessionStore.
func (s *BrowserSessionStore) TouchBrowserSession(ctx context.Context, id string, idleExpiresAt time.Time) error {
	tag, err := s.pool.Exec(ctx, `
		UPDATE browser_sessions SET idle_expires_at = LEAST($2::timestamptz, expires_at) WHERE id = $1`,
		id, idleExpiresAt)
	if err != nil {
		return fmt.Errorf("issuer store: touch browser session: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("browser session: %w", store.ErrNotFound)
	}
	return nil
}

// DeleteBrowserSession implements store.BrowserSessionStore.
func (s *BrowserSessionStore) DeleteBrowserSession(ctx context.Context, id string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM browser_sessions WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("issuer store: delete browser session: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("browser session: %w", store.ErrNotFound)
	}
	return nil
}

// DeleteExpiredBrowserSessions implements store.BrowserSessionStore. The
// idle expiry is never after the absolute one (a table constraint), so it
// alone decides, on its index.
func (s *BrowserSessionStore) DeleteExpiredBrowserSessions(ctx context.Context, now time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM browser_sessions WHERE idle_expires_at <= $1`, now)
	if err != nil {
		return 0, fmt.Errorf("issuer store: delete expired browser sessions: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// InteractionStore is a store.InteractionStore on a pgx pool it does not
// own. The version checks are WHERE clauses of single statements, so the
// row lock serializes concurrent updates.
type InteractionStore struct {
	pool *pgxpool.Pool
}

var _ store.InteractionStore = (*InteractionStore)(nil)

// NewInteractionStore returns an InteractionStore using pool; the schema
// must be migrated (see Migrate).
func NewInteractionStore(pool *pgxpool.Pool) *InteractionStore {
	return &InteractionStore{pool: pool}
}

// CreateInteraction implements store.InteractionStore.
func (s *InteractionStore) CreateInteraction(ctx context.Context, p browsersession.Pending) error {
	if err := p.Validate(); err != nil {
		return err
	}
	query, err := json.Marshal(nonNilValues(p.Query))
	if err != nil {
		return fmt.Errorf("issuer store: interaction query: %w", err)
	}
	_, err = s.pool.Exec(ctx, `
		INSERT INTO interactions (id, version, browser, query, client_id, redirect_uri, scopes,
		                          require_login, require_mfa, next, created_at, expires_at,
		                          subject, login_at, consent_granted, consent_id, consent_denied,
		                          failure, mfa_username, password_verified_at)
		VALUES ($1, 1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)`,
		p.ID, p.Browser, string(query), p.ClientID, p.RedirectURI, nonNil(p.Scopes),
		p.RequireLogin, p.RequireMFA, p.Next, p.CreatedAt, p.ExpiresAt,
		p.Subject, nullTime(p.LoginAt), p.ConsentGranted, p.ConsentID, p.ConsentDenied,
		p.Failure, p.MFAUsername, nullTime(p.PasswordVerifiedAt))
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == uniqueViolation {
		return fmt.Errorf("interaction: %w", store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("issuer store: create interaction: %w", err)
	}
	return nil
}

// GetInteraction implements store.InteractionStore.
func (s *InteractionStore) GetInteraction(ctx context.Context, id string, now time.Time) (browsersession.Pending, error) {
	var (
		p                           browsersession.Pending
		query                       string
		loginAt, passwordVerifiedAt *time.Time
	)
	err := s.pool.QueryRow(ctx, `
		SELECT id, version, browser, query, client_id, redirect_uri, scopes,
		       require_login, require_mfa, next, created_at, expires_at,
		       subject, login_at, consent_granted, consent_id, consent_denied,
		       failure, mfa_username, password_verified_at
		FROM interactions WHERE id = $1 AND expires_at > $2`, id, now).
		Scan(&p.ID, &p.Version, &p.Browser, &query, &p.ClientID, &p.RedirectURI, &p.Scopes,
			&p.RequireLogin, &p.RequireMFA, &p.Next, &p.CreatedAt, &p.ExpiresAt,
			&p.Subject, &loginAt, &p.ConsentGranted, &p.ConsentID, &p.ConsentDenied,
			&p.Failure, &p.MFAUsername, &passwordVerifiedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return browsersession.Pending{}, fmt.Errorf("interaction: %w", store.ErrNotFound)
	}
	if err != nil {
		return browsersession.Pending{}, fmt.Errorf("issuer store: get interaction: %w", err)
	}
	if err := json.Unmarshal([]byte(query), &p.Query); err != nil {
		return browsersession.Pending{}, fmt.Errorf("issuer store: interaction query: %w", err)
	}
	p.CreatedAt, p.ExpiresAt = p.CreatedAt.UTC(), p.ExpiresAt.UTC()
	if loginAt != nil {
		p.LoginAt = loginAt.UTC()
	}
	if passwordVerifiedAt != nil {
		p.PasswordVerifiedAt = passwordVerifiedAt.UTC()
	}
	return p, nil
}

// UpdateInteraction implements store.InteractionStore.
func (s *InteractionStore) UpdateInteraction(ctx context.Context, p browsersession.Pending) (int64, error) {
	if err := p.Validate(); err != nil {
		return 0, err
	}
	var (
		version int64
		found   bool
	)
	err := s.pool.QueryRow(ctx, `
		WITH updated AS (
			UPDATE interactions SET
				subject = $3, login_at = $4, consent_granted = $5, consent_id = $6,
				consent_denied = $7, failure = $8, mfa_username = $9,
				password_verified_at = $10, version = version + 1
			WHERE id = $1 AND version = $2
			RETURNING version
		)
		SELECT COALESCE((SELECT version FROM updated), 0),
		       EXISTS (SELECT 1 FROM interactions WHERE id = $1)`,
		p.ID, p.Version, p.Subject, nullTime(p.LoginAt), p.ConsentGranted, p.ConsentID,
		p.ConsentDenied, p.Failure, p.MFAUsername, nullTime(p.PasswordVerifiedAt)).
		Scan(&version, &found)
	switch {
	case err != nil:
		return 0, fmt.Errorf("issuer store: update interaction: %w", err)
	case version != 0:
		return version, nil
	case !found:
		return 0, fmt.Errorf("interaction: %w", store.ErrNotFound)
	}
	return 0, fmt.Errorf("interaction version %d: %w", p.Version, store.ErrConflict)
}

// DeleteInteraction implements store.InteractionStore.
func (s *InteractionStore) DeleteInteraction(ctx context.Context, id string, version int64) error {
	var deleted, found bool
	err := s.pool.QueryRow(ctx, `
		WITH deleted AS (
			DELETE FROM interactions WHERE id = $1 AND version = $2 RETURNING 1
		)
		SELECT EXISTS (SELECT 1 FROM deleted), EXISTS (SELECT 1 FROM interactions WHERE id = $1)`,
		id, version).Scan(&deleted, &found)
	switch {
	case err != nil:
		return fmt.Errorf("issuer store: delete interaction: %w", err)
	case deleted:
		return nil
	case !found:
		return fmt.Errorf("interaction: %w", store.ErrNotFound)
	}
	return fmt.Errorf("interaction version %d: %w", version, store.ErrConflict)
}

// DeleteExpiredInteractions implements store.InteractionStore.
func (s *InteractionStore) DeleteExpiredInteractions(ctx context.Context, now time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM interactions WHERE expires_at <= $1`, now)
	if err != nil {
		return 0, fmt.Errorf("issuer store: delete expired interactions: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// ConsentStore is a store.ConsentStore on a pgx pool it does not own.
type ConsentStore struct {
	pool *pgxpool.Pool
}

var _ store.ConsentStore = (*ConsentStore)(nil)

// NewConsentStore returns a ConsentStore using pool; the schema must be
// migrated (see Migrate).
func NewConsentStore(pool *pgxpool.Pool) *ConsentStore { return &ConsentStore{pool: pool} }

const consentColumns = `id, subject, tenant, client_id, scopes, granted_at, expires_at, withdrawn_at`

// GrantConsent implements store.ConsentStore.
func (s *ConsentStore) GrantConsent(ctx context.Context, c consent.Consent) error {
	if err := c.Validate(); err != nil {
		return err
	}
	_, err := s.pool.Exec(ctx, `
		INSERT INTO consents (`+consentColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		c.ID, c.Subject, c.Tenant, c.ClientID, c.Scopes, c.GrantedAt, c.ExpiresAt, nullTime(c.WithdrawnAt))
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == uniqueViolation {
		return fmt.Errorf("consent %q: %w", c.ID, store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("issuer store: grant consent: %w", err)
	}
	return nil
}

// GetConsent implements store.ConsentStore.
func (s *ConsentStore) GetConsent(ctx context.Context, id string) (consent.Consent, error) {
	c, err := scanConsent(s.pool.QueryRow(ctx, `SELECT `+consentColumns+` FROM consents WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return consent.Consent{}, fmt.Errorf("consent %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return consent.Consent{}, fmt.Errorf("issuer store: get consent: %w", err)
	}
	return c, nil
}

// FindActiveConsent implements store.ConsentStore.
func (s *ConsentStore) FindActiveConsent(ctx context.Context, subject, clientID string, scopes []string, now time.Time) (consent.Consent, error) {
	c, err := scanConsent(s.pool.QueryRow(ctx, `
		SELECT `+consentColumns+` FROM consents
		WHERE subject = $1 AND client_id = $2 AND scopes @> $3::text[]
		  AND withdrawn_at IS NULL AND granted_at <= $4 AND expires_at > $4
		ORDER BY granted_at DESC, id DESC
		LIMIT 1`, subject, clientID, nonNil(scopes), now))
	if errors.Is(err, pgx.ErrNoRows) {
		return consent.Consent{}, fmt.Errorf("consent of %q for %q: %w", subject, clientID, store.ErrNotFound)
	}
	if err != nil {
		return consent.Consent{}, fmt.Errorf("issuer store: find consent: %w", err)
	}
	return c, nil
}

// ListConsentsBySubject implements store.ConsentStore.
func (s *ConsentStore) ListConsentsBySubject(ctx context.Context, subject string) ([]consent.Consent, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT `+consentColumns+` FROM consents WHERE subject = $1
		ORDER BY granted_at DESC, id DESC
		LIMIT $2`, subject, store.MaxListedConsents)
	if err != nil {
		return nil, fmt.Errorf("issuer store: list consents: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (consent.Consent, error) { return scanConsent(row) })
	if err != nil {
		return nil, fmt.Errorf("issuer store: list consents: %w", err)
	}
	return list, nil
}

// WithdrawConsent implements store.ConsentStore. The owner and
// not-yet-withdrawn checks are in the UPDATE's WHERE clause, so a
// concurrent second withdrawal finds nothing.
func (s *ConsentStore) WithdrawConsent(ctx context.Context, subject, id string, at time.Time) (consent.Consent, error) {
	c, err := scanConsent(s.pool.QueryRow(ctx, `
		UPDATE consents SET withdrawn_at = $3
		WHERE id = $1 AND subject = $2 AND withdrawn_at IS NULL
		RETURNING `+consentColumns, id, subject, at))
	if errors.Is(err, pgx.ErrNoRows) {
		return consent.Consent{}, fmt.Errorf("consent %q of %q: %w", id, subject, store.ErrNotFound)
	}
	if err != nil {
		return consent.Consent{}, fmt.Errorf("issuer store: withdraw consent: %w", err)
	}
	return c, nil
}

// scanConsent scans one row of consentColumns.
func scanConsent(row pgx.Row) (consent.Consent, error) {
	var (
		c           consent.Consent
		withdrawnAt *time.Time
	)
	if err := row.Scan(&c.ID, &c.Subject, &c.Tenant, &c.ClientID, &c.Scopes, &c.GrantedAt, &c.ExpiresAt, &withdrawnAt); err != nil {
		return consent.Consent{}, err
	}
	c.GrantedAt, c.ExpiresAt = c.GrantedAt.UTC(), c.ExpiresAt.UTC()
	if withdrawnAt != nil {
		c.WithdrawnAt = withdrawnAt.UTC()
	}
	return c, nil
}

// nonNilValues maps nil to an empty map: the query column is NOT NULL JSON.
func nonNilValues(v url.Values) url.Values {
	if v == nil {
		return url.Values{}
	}
	return v
}
