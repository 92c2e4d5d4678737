package store

import (
	"context"
	"errors"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/tokensession"
)

// ErrInactive means a grant record exists but was already used or revoked.
var ErrInactive = errors.New("store: inactive")

// GrantStore keeps the records behind authorization codes, PKCE and OIDC
// requests and refresh tokens (tokensession.Grant), and revokes whole
// authorizations. Records are keyed by (kind, signature).
type GrantStore interface {
	// CreateGrant validates g and stores it; ErrConflict if (kind,
	// signature) is taken, ErrNotFound if its client does not exist,
	// ErrRevoked if its request was revoked (see RevokeRequest).
	CreateGrant(ctx context.Context, g tokensession.Grant) error
	// GetGrant returns the record whether active or not (Active tells), or
	// ErrNotFound.
	GetGrant(ctx context.Context, kind tokensession.GrantKind, signature string) (tokensession.Grant, error)
	// DeactivateGrant marks an active record inactive, as one
	// compare-and-set: ErrInactive if it already was (so of two concurrent
	// uses exactly one succeeds), ErrNotFound if there is none.
	DeactivateGrant(ctx context.Context, kind tokensession.GrantKind, signature string) error
	// DeleteGrant removes a record, or returns ErrNotFound.
	DeleteGrant(ctx context.Context, kind tokensession.GrantKind, signature string) error
	// RevokeRequest ends a whole authorization in one transaction: it
	// records the request as revoked (so no later CreateGrant or
	// CreateTokenSession for it succeeds: they return ErrRevoked, which
	// closes the race with a refresh in flight), marks every grant record of
	// requestID inactive and deletes every access token session of
	// requestID, returning the deleted access-token records (for the
	// revocation feed). Revoking an unknown request, or one RevokeRequest
	// already revoked, returns no records and no error.
	RevokeRequest(ctx context.Context, requestID string) ([]tokensession.Record, error)
	// MarkRequestRevoked is the first half of RevokeRequest, for a caller
	// that must publish a revocation before the access tokens' sessions
	// go: in one transaction, serialized against the creates of
	// requestID's records as RevokeRequest is, it records requestID as
	// revoked (CreateGrant and CreateTokenSession refuse it from then on)
	// and marks every grant record of it inactive, but leaves its access
	// token sessions. Listed after it (RequestTokenSessions), they are
	// complete: no session of requestID can appear any more. RevokeRequest
	// then deletes them. An empty requestID is an error.
	MarkRequestRevoked(ctx context.Context, requestID string) error
	// RequestTokenSessions returns the access token sessions of requestID,
	// expired or not, ordered by signature, and changes nothing. An empty
	// requestID is an error.
	RequestTokenSessions(ctx context.Context, requestID string) ([]tokensession.Record, error)
	// RevokedRequestsWithSessions returns up to limit ids of revoked
	// requests (MarkRequestRevoked, RevokeRequest) that still have an access
	// token session expiring after now, sorted, and changes nothing. These
	// are revocations that never completed: marked, but their publication
	// failed and nobody retried, so their access tokens are still valid at
	// the gateways. A limit below 1 is an error.
	RevokedRequestsWithSessions(ctx context.Context, now time.Time, limit int) ([]string, error)
	// RequestRevoked reports whether requestID was revoked (and the record
	// of it has not expired yet).
	RequestRevoked(ctx context.Context, requestID string) (bool, error)
	// RequestIDsForConsent returns the distinct request ids of the grant
	// records that rest on consentID, active or not.
	RequestIDsForConsent(ctx context.Context, consentID string) ([]string, error)
	// RequestIDsForSession returns the distinct request ids of the grant
	// records that carry the browser login session sessionID (see
	// tokensession.Grant.SessionID), active or not, sorted. An empty
	// sessionID is an error: it would name every authorization made
	// without a browser session.
	RequestIDsForSession(ctx context.Context, sessionID string) ([]string, error)
	// DeleteExpiredGrants removes grant records, access token sessions,
	// used client-assertion jtis and revoked-request records that expired
	// before t, returning how many rows went.
	DeleteExpiredGrants(ctx context.Context, t time.Time) (int, error)
}

// MaxAssertionJTILength bounds a client assertion's jti in bytes; the
// Postgres client_assertion_jtis_jti_length constraint (migration 00004)
// says the same.
const MaxAssertionJTILength = 256

// ClientAssertionStore remembers the jti of every accepted client assertion
// (RFC 7523 private_key_jwt) until it expires, so none is accepted twice.
type ClientAssertionStore interface {
	// UseClientAssertion records jti until exp; ErrConflict if jti was
	// already recorded and has not expired (a replay). Atomic: of two
	// concurrent uses of one jti exactly one succeeds.
	UseClientAssertion(ctx context.Context, jti string, exp time.Time) error
}
