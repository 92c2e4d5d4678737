package store

import (
	"context"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/browsersession"
	"github.com/gatehouse/gatehouse/services/issuer/internal/consent"
)

// MaxListedConsents is the most consents ListConsentsBySubject returns.
const MaxListedConsents = 200

// BrowserSessionStore keeps signed-in browser sessions, keyed by the
// SHA-256 of the session cookie (browsersession.Session.ID): the cookie
// value itself is never stored. A session past its absolute or idle expiry
// is gone for every method but DeleteExpiredBrowserSessions.
type BrowserSessionStore interface {
	// CreateBrowserSession validates s and stores it; ErrConflict if its
	// ID is taken.
	CreateBrowserSession(ctx context.Context, s browsersession.Session) error
	// GetBrowserSession returns the session with id if it is active at now
	// (browsersession.Session.ActiveAt), or ErrNotFound.
	GetBrowserSession(ctx context.Context, id string, now time.Time) (browsersession.Session, error)
	// TouchBrowserSession sets the session's idle expiry to idleExpiresAt,
	// capped at its absolute expiry; ErrNotFound if there is no such session.
	TouchBrowserSession(ctx context.Context, id string, idleExpiresAt time.Time) error
	// DeleteBrowserSession removes the session (logout), or returns ErrNotFound.
	DeleteBrowserSession(ctx context.Context, id string) error
	// DeleteExpiredBrowserSessions removes every session not active at now
	// and returns how many.
	DeleteExpiredBrowserSessions(ctx context.Context, now time.Time) (int, error)
}

// InteractionStore keeps pending authorization requests
// (browsersession.Pending) while the user logs in and consents. Updates
// and deletes are compare-and-set on Pending.Version, so two tabs (or a
// replayed form) cannot both move one interaction on. An interaction past
// its ExpiresAt is gone for every method but DeleteExpiredInteractions.
type InteractionStore interface {
	// CreateInteraction validates p and stores it with Version 1;
	// ErrConflict if its ID is taken.
	CreateInteraction(ctx context.Context, p browsersession.Pending) error
	// GetInteraction returns the interaction with id if it has not expired
	// at now, or ErrNotFound.
	GetInteraction(ctx context.Context, id string, now time.Time) (browsersession.Pending, error)
	// UpdateInteraction validates p and, if the stored Version equals
	// p.Version, replaces the outcome fields (Subject, LoginAt,
	// ConsentGranted, ConsentID, ConsentDenied, Failure) and the MFA state
	// (MFAUsername, PasswordVerifiedAt) and returns the new version; the
	// request fields never change. ErrConflict if the version differs,
	// ErrNotFound if there is no such interaction.
	UpdateInteraction(ctx context.Context, p browsersession.Pending) (int64, error)
	// DeleteInteraction removes the interaction if its stored Version is
	// version; ErrConflict if it differs, ErrNotFound if there is none. Of
	// two concurrent deletes of one interaction exactly one succeeds.
	DeleteInteraction(ctx context.Context, id string, version int64) error
	// DeleteExpiredInteractions removes every interaction whose ExpiresAt
	// is not after now and returns how many.
	DeleteExpiredInteractions(ctx context.Context, now time.Time) (int, error)
}

// ConsentStore keeps consent records. A record never changes except to be
// withdrawn, and withdrawn or expired records stay as history.
type ConsentStore interface {
	// GrantConsent validates c and stores it; ErrConflict if its ID is taken.
	GrantConsent(ctx context.Context, c consent.Consent) error
	// GetConsent returns the consent with id, withdrawn or not, or ErrNotFound.
	GetConsent(ctx context.Context, id string) (consent.Consent, error)
	// FindActiveConsent returns the most recently granted consent of
	// subject for clientID that is active at now and covers every scope in
	// scopes, or ErrNotFound.
	FindActiveConsent(ctx context.Context, subject, clientID string, scopes []string, now time.Time) (consent.Consent, error)
	// ListConsentsBySubject returns subject's consents, active or not, most
	// recently granted first, at most MaxListedConsents.
	ListConsentsBySubject(ctx context.Context, subject string) ([]consent.Consent, error)
	// WithdrawConsent marks the consent with id withdrawn at at and returns
	// it, if it belongs to subject and is not yet withdrawn; otherwise it
	// changes nothing and returns ErrNotFound (someone else's consent is
	// indistinguishable from none).
	WithdrawConsent(ctx context.Context, subject, id string, at time.Time) (consent.Consent, error)
}
