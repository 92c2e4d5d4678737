package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/tokensession"
)

var (
	_ store.GrantStore           = (*Store)(nil)
	_ store.ClientAssertionStore = (*Store)(nil)
)

// grantColumns are the grant_records columns scanGrant reads, in order.
const grantColumns = `kind, signature, request_id, client_id, subject, consent_id,
	session_id, access_signature, active, requested_at, expires_at, request`

// CreateGrant implements store.GrantStore. It refuses a record of a
// revoked request with store.ErrRevoked (see insertUnlessRevoked).
func (s *Store) CreateGrant(ctx context.Context, g tokensession.Grant) error {
	if err := g.Validate(); err != nil {
		return err
	}
	err := s.insertUnlessRevoked(ctx, g.RequestID, `
		INSERT INTO grant_records (`+grantColumns+`)
		SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12
		WHERE NOT EXISTS (SELECT 1 FROM revoked_requests WHERE request_id = $3)`,
		string(g.Kind), g.Signature, g.RequestID, g.ClientID, g.Subject, g.ConsentID,
		g.SessionID, g.AccessSignature, g.Active, g.RequestedAt, g.ExpiresAt, g.Request)
	if errors.Is(err, store.ErrRevoked) {
		return fmt.Errorf("grant %s: %w", g.Kind, err)
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		switch pgErr.Code {
		case uniqueViolation:
			return fmt.Errorf("grant %s: %w", g.Kind, store.ErrConflict)
		case foreignKeyViolation:
			return fmt.Errorf("grant for client %q: %w", g.ClientID, store.ErrNotFound)
		}
	}
	if err != nil {
		return fmt.Errorf("issuer store: create grant %s: %w", g.Kind, err)
	}
	return nil
}

// GetGrant implements store.GrantStore.
func (s *Store) GetGrant(ctx context.Context, kind tokensession.GrantKind, signature string) (tokensession.Grant, error) {
	var (
		g       tokensession.Grant
		rowKind string
	)
	err := s.pool.QueryRow(ctx, `SELECT `+grantColumns+` FROM grant_records WHERE kind = $1 AND signature = $2`,
		string(kind), signature).
		Scan(&rowKind, &g.Signature, &g.RequestID, &g.ClientID, &g.Subject, &g.ConsentID,
			&g.SessionID, &g.AccessSignature, &g.Active, &g.RequestedAt, &g.ExpiresAt, &g.Request)
	if errors.Is(err, pgx.ErrNoRows) {
		return tokensession.Grant{}, fmt.Errorf("grant %s: %w", kind, store.ErrNotFound)
	}
	if err != nil {
		return tokensession.Grant{}, fmt.Errorf("issuer store: get grant %s: %w", kind, err)
	}
	g.Kind = tokensession.GrantKind(rowKind)
	g.RequestedAt = g.RequestedAt.UTC()
	g.ExpiresAt = g.ExpiresAt.UTC()
	return g, nil
}

// DeactivateGrant implements store.GrantStore. The UPDATE's WHERE active is
// the compare-and-set: a concurrent second UPDATE waits for the row lock,
// then finds the row inactive and changes nothing.
func (s *Store) DeactivateGrant(ctx context.Context, kind tokensession.GrantKind, signature string) error {
	var deactivated, found bool
	err := s.pool.QueryRow(ctx, `
		WITH deactivated AS (
			UPDATE grant_records SET active = false
			WHERE kind = $1 AND signature = $2 AND active
			RETURNING 1
		)
		SELECT EXISTS (SELECT 1 FROM deactivated),
		       EXISTS (SELECT 1 FROM grant_records WHERE kind = $1 AND signature = $2)`,
		string(kind), signature).Scan(&deactivated, &found)
	switch {
	case err != nil:
		return fmt.Errorf("issuer store: deactivate grant %s: %w", kind, err)
	case deactivated:
		return nil
	case !found:
		return fmt.Errorf("grant %s: %w", kind, store.ErrNotFound)
	default:
		return fmt.Errorf("grant %s: %w", kind, store.ErrInactive)
	}
}

// DeleteGrant implements store.GrantStore.
func (s *Store) DeleteGrant(ctx context.Context, kind tokensession.GrantKind, signature string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM grant_records WHERE kind = $1 AND signature = $2`,
		string(kind), signature)
	if err != nil {
		return fmt.Errorf("issuer store: delete grant %s: %w", kind, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("grant %s: %w", kind, store.ErrNotFound)
	}
	return nil
}

// RevokeRequest implements store.GrantStore. Its statements run in one
// transaction, so nobody sees the grants revoked but the access tokens
// still live, or the reverse. It also records requestID in
// revoked_requests, even if nothing of it is stored, so that CreateGrant
// and CreateTokenSession refuse it from now on (store.ErrRevoked) until
// the revocation expires (store.RevocationRetention); it holds requestID's
// revocation lock (lockRequest) throughout. The records come back ordered
// by signature.
func (s *Store) RevokeRequest(ctx context.Context, requestID string) ([]tokensession.Record, error) {
	if requestID == "" {
		return nil, errors.New("issuer store: revoke request: empty request id")
	}
	var revoked []tokensession.Record
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		if err := lockRequest(ctx, tx, requestID); err != nil {
			return err
		}
		var err error
		revoked, err = revokeRequest(ctx, tx, requestID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("issuer store: revoke request: %w", err)
	}
	slices.SortFunc(revoked, func(a, b tokensession.Record) int { return strings.Compare(a.Signature, b.Signature) })
	return revoked, nil
}

// RequestTokenSessions implements store.GrantStore.
func (s *Store) RequestTokenSessions(ctx context.Context, requestID string) ([]tokensession.Record, error) {
	if requestID == "" {
		return nil, errors.New("issuer store: request token sessions: empty request id")
	}
	rows, err := s.pool.Query(ctx, `SELECT `+tokenSessionColumns+` FROM access_token_sessions
		WHERE request_id = $1 ORDER BY signature`, requestID)
	if err != nil {
		return nil, fmt.Errorf("issuer store: request token sessions: %w", err)
	}
	recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (tokensession.Record, error) {
		return scanTokenSession(row)
	})
	if err != nil {
		return nil, fmt.Errorf("issuer store: request token sessions: %w", err)
	}
	return recs, nil
}

// MarkRequestRevoked implements store.GrantStore: RevokeRequest's
// transaction without its DELETE.
func (s *Store) MarkRequestRevoked(ctx context.Context, requestID string) error {
	if requestID == "" {
		return errors.New("issuer store: mark request revoked: empty request id")
	}
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		if err := lockRequest(ctx, tx, requestID); err != nil {
			return err
		}
		return markRevoked(ctx, tx, requestID)
	})
	if err != nil {
		return fmt.Errorf("issuer store: mark request revoked: %w", err)
	}
	return nil
}

// revokeRequest runs RevokeRequest's statements in tx, which holds
// requestID's revocation lock, and returns the deleted sessions.
func revokeRequest(ctx context.Context, tx pgx.Tx, requestID string) ([]tokensession.Record, error) {
	if err := markRevoked(ctx, tx, requestID); err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx,
		`DELETE FROM access_token_sessions WHERE request_id = $1 RETURNING `+tokenSessionColumns, requestID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (tokensession.Record, error) {
		return scanTokenSession(row)
	})
}

// markRevoked records requestID in revoked_requests and marks its grant
// records inactive, in tx, which holds requestID's revocation lock.
func markRevoked(ctx context.Context, tx pgx.Tx, requestID string) error {
	// The revocation outlives every record of the request; a repeated
	// revocation keeps the first revoked_at and the later expiry.
	if _, err := tx.Exec(ctx, `
		INSERT INTO revoked_requests (request_id, revoked_at, expires_at)
		SELECT $1, now(), GREATEST(now() + $2::interval,
			(SELECT max(expires_at) FROM grant_records WHERE request_id = $1),
			(SELECT max(expires_at) FROM access_token_sessions WHERE request_id = $1))
		ON CONFLICT (request_id) DO UPDATE
		SET expires_at = GREATEST(revoked_requests.expires_at, EXCLUDED.expires_at)`,
		requestID, toInterval(store.RevocationRetention)); err != nil {
		return err
	}
	_, err := tx.Exec(ctx,
		`UPDATE grant_records SET active = false WHERE request_id = $1 AND active`, requestID)
	return err
}

// RevokedRequestsWithSessions implements store.GrantStore. It starts from
// the access token sessions, which hold only tokens of the last access
// token lifetime, rather than from revoked_requests, which remembers every
// revocation for at least store.RevocationRetention.
func (s *Store) RevokedRequestsWithSessions(ctx context.Context, now time.Time, limit int) ([]string, error) {
	if limit < 1 {
		return nil, fmt.Errorf("issuer store: revoked requests with sessions: limit %d", limit)
	}
	rows, err := s.pool.Query(ctx, `
		SELECT DISTINCT s.request_id FROM access_token_sessions s
		JOIN revoked_requests r ON r.request_id = s.request_id
		WHERE s.expires_at > $1
		ORDER BY s.request_id
		LIMIT $2`, now, limit)
	if err != nil {
		return nil, fmt.Errorf("issuer store: revoked requests with sessions: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("issuer store: revoked requests with sessions: %w", err)
	}
	return ids, nil
}

// RequestIDsForConsent implements store.GrantStore. An empty consentID is
// an error: it would name every authorization that rests on no consent.
func (s *Store) RequestIDsForConsent(ctx context.Context, consentID string) ([]string, error) {
	if consentID == "" {
		return nil, errors.New("issuer store: request ids for consent: empty consent id")
	}
	// consent_id <> '' lets the planner use the partial index.
	return s.requestIDs(ctx, "consent", `
		SELECT DISTINCT request_id FROM grant_records
		WHERE consent_id = $1 AND consent_id <> ''
		ORDER BY request_id`, consentID)
}

// RequestIDsForSession implements store.GrantStore. An empty sessionID is
// an error: it would name every authorization made without a browser
// session.
func (s *Store) RequestIDsForSession(ctx context.Context, sessionID string) ([]string, error) {
	if sessionID == "" {
		return nil, errors.New("issuer store: request ids for session: empty session id")
	}
	// session_id <> '' lets the planner use the partial index.
	return s.requestIDs(ctx, "session", `
		SELECT DISTINCT request_id FROM grant_records
		WHERE session_id = $1 AND session_id <> ''
		ORDER BY request_id`, sessionID)
}

// requestIDs runs query, which selects request ids by one argument, and
// collects them; what names the lookup in errors.
func (s *Store) requestIDs(ctx context.Context, what, query string, arg string) ([]string, error) {
	rows, err := s.pool.Query(ctx, query, arg)
	if err != nil {
		return nil, fmt.Errorf("issuer store: request ids for %s: %w", what, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("issuer store: request ids for %s: %w", what, err)
	}
	return ids, nil
}

// DeleteExpiredGrants implements store.GrantStore. It also removes
// revocations (revoked_requests) and client assertion jtis that expired
// before t, and counts them with the rest; the four deletes are one
// statement.
func (s *Store) DeleteExpiredGrants(ctx context.Context, t time.Time) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `
		WITH grants AS (
			DELETE FROM grant_records WHERE expires_at < $1 RETURNING 1
		), sessions AS (
			DELETE FROM access_token_sessions WHERE expires_at < $1 RETURNING 1
		), revocations AS (
			DELETE FROM revoked_requests WHERE expires_at < $1 RETURNING 1
		), jtis AS (
			DELETE FROM client_assertion_jtis WHERE expires_at < $1 RETURNING 1
		)
		SELECT (SELECT count(*) FROM grants) + (SELECT count(*) FROM sessions) +
		       (SELECT count(*) FROM revocations) + (SELECT count(*) FROM jtis)`,
		t).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("issuer store: delete expired grants: %w", err)
	}
	return n, nil
}

// UseClientAssertion implements store.ClientAssertionStore. A jti is new,
// or its stored expiry has passed (by the database clock, which every
// replica shares), exactly when the upsert changes a row. A concurrent
// second insert of one jti waits for the first, then takes the conflict
// path and finds the stored expiry still ahead.
func (s *Store) UseClientAssertion(ctx context.Context, jti string, exp time.Time) error {
	if err := validateAssertion(jti, exp); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `
		INSERT INTO client_assertion_jtis (jti, expires_at) VALUES ($1, $2)
		ON CONFLICT (jti) DO UPDATE SET expires_at = EXCLUDED.expires_at
		WHERE client_assertion_jtis.expires_at < now()`, jti, exp)
	if err != nil {
		return fmt.Errorf("issuer store: use client assertion: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("client assertion jti: %w", store.ErrConflict)
	}
	return nil
}

// validateAssertion rejects a jti the table cannot hold, and an assertion
// without expiry (its jti could never be forgotten).
func validateAssertion(jti string, exp time.Time) error {
	switch {
	case jti == "":
		return errors.New("issuer store: client assertion: empty jti")
	case len(jti) > store.MaxAssertionJTILength:
		return fmt.Errorf("issuer store: client assertion: jti longer than %d bytes", store.MaxAssertionJTILength)
	case exp.IsZero():
		return errors.New("issuer store: client assertion: no expiry")
	}
	return nil
}

// RequestRevoked implements store.GrantStore.
func (s *Store) RequestRevoked(ctx context.Context, requestID string) (bool, error) {
	var revoked bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM revoked_requests WHERE request_id = $1)`, requestID).Scan(&revoked)
	if err != nil {
		return false, fmt.Errorf("issuer store: request revoked: %w", err)
	}
	return revoked, nil
}
