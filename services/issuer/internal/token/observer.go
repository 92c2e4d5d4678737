package token

import (
	"context"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/tokensession"
)

// What a Revocation ended.
const (
	// RevocationToken is one access token.
	RevocationToken = "token"
	// RevocationRefreshFamily is a whole grant: its refresh tokens and every
	// access token issued from it.
	RevocationRefreshFamily = "refresh_family"
	// RevocationConsent is every grant resting on a withdrawn consent.
	RevocationConsent = "consent"
)

// Why a grant was revoked.
const (
	RevocationReasonRequested    = "revocation_requested"
	RevocationReasonCodeReuse    = "authorization_code_reuse"
	RevocationReasonRefreshReuse = "refresh_token_reuse"
	RevocationReasonReuse        = "credential_reuse"
	RevocationReasonConsent      = "consent_withdrawn"
)

// Revocation reports what a revocation ended.
type Revocation struct {
	// Kind is one of the Revocation* kinds.
	Kind string
	// ID names what was revoked: a jti, a request (family) id, a consent id.
	ID string
	// Reason is one of the RevocationReason* values.
	Reason string
	// ClientID and Subject identify whose tokens these were, when known.
	ClientID, Subject string
	// Tokens are the access-token sessions deleted by the revocation: the
	// unexpired tokens a gateway must refuse from now on.
	Tokens []tokensession.Record
	// RevokedAt is when it happened.
	RevokedAt time.Time
}

// Issued reports a token response.
type Issued struct {
	// GrantType is the grant_type of the token request.
	GrantType string
	// ClientID, Subject and Tenant say who got the tokens.
	ClientID, Subject, Tenant string
	// RequestID is the grant (refresh family) id.
	RequestID string
	// JTI and ExpiresAt describe the access token.
	JTI       string
	ExpiresAt time.Time
	// Scopes and Audience were granted.
	Scopes, Audience []string
	// RefreshToken and IDToken say what else was issued.
	RefreshToken, IDToken bool
}

// Observer hears of every issued and revoked token. Revoked must not lose
// the event: an error fails the revocation's request, so the client retries.
type Observer interface {
	Issued(ctx context.Context, e Issued)
	Revoked(ctx context.Context, r Revocation) error
}

// NopObserver ignores everything (unit tests that do not look).
type NopObserver struct{}

// Issued implements Observer.
func (NopObserver) Issued(context.Context, Issued) {}

// Revoked implements Observer.
func (NopObserver) Revoked(context.Context, Revocation) error { return nil }
