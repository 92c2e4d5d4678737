package tokensession

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// GrantKind names what a Grant record holds. Every kind is keyed by its
// own signature: fosite's handle for the credential (an HMAC over the
// authorization code or refresh token; never the credential itself).
type GrantKind string

// The kinds of Grant.
const (
	// KindAuthorizeCode is an authorization code's request.
	KindAuthorizeCode GrantKind = "authorize_code"
	// KindPKCE is the PKCE challenge of an authorization code (keyed by the code's signature).
	KindPKCE GrantKind = "pkce"
	// KindOIDC is the OpenID Connect request of an authorization code (keyed by the code's signature).
	KindOIDC GrantKind = "oidc"
	// KindRefreshToken is a refresh token's request.
	KindRefreshToken GrantKind = "refresh_token"
)

// Valid reports whether k is one of the kinds above.
func (k GrantKind) Valid() bool {
	switch k {
	case KindAuthorizeCode, KindPKCE, KindOIDC, KindRefreshToken:
		return true
	}
	return false
}

// MaxSessionIDLen bounds Grant.SessionID in bytes; the Postgres
// grant_records_session_id_length constraint (migration 00009) says the
// same.
const MaxSessionIDLen = 128

// Grant is the stored form of one authorization code, PKCE or OIDC request,
// or refresh token. All records of one authorization share its RequestID
// (the refresh token family), with the access tokens issued from it.
type Grant struct {
	// Kind says what the record holds.
	Kind GrantKind
	// Signature is fosite's handle for the credential.
	Signature string
	// RequestID is fosite's request id: the authorization, and the family of
	// every refresh and access token issued from it.
	RequestID string
	// ClientID is the client the credential was issued to.
	ClientID string
	// Subject is the end user the authorization is for.
	Subject string
	// ConsentID is the consent record the authorization rests on ("" for none).
	ConsentID string
	// SessionID is the browser login session (browsersession.Session.ID, a
	// hex SHA-256) that authorized the grant, so that signing out can
	// revoke every authorization of the session. Every record of one
	// authorization carries it, refresh tokens included; it is "" only
	// where no browser login was involved.
	SessionID string
	// AccessSignature links a refresh token to the access token issued with it.
	AccessSignature string
	// Active is false once the credential is used (a code exchanged, a
	// refresh token rotated) or revoked. Inactive records are kept until
	// they expire so that reuse is detected.
	Active bool
	// RequestedAt is when the authorization request arrived.
	RequestedAt time.Time
	// ExpiresAt is when the credential expires; the record may be deleted after it.
	ExpiresAt time.Time
	// Request is the encoded fosite request (see EncodeRequest).
	Request []byte
}

// Validate reports whether g can be stored.
func (g Grant) Validate() error {
	var errs []error
	if !g.Kind.Valid() {
		errs = append(errs, fmt.Errorf("unknown kind %q", g.Kind))
	}
	if g.Signature == "" {
		errs = append(errs, errors.New("empty signature"))
	}
	if g.RequestID == "" {
		errs = append(errs, errors.New("empty request id"))
	}
	if g.ClientID == "" {
		errs = append(errs, errors.New("empty client id"))
	}
	if len(g.SessionID) > MaxSessionIDLen {
		errs = append(errs, fmt.Errorf("session id longer than %d bytes", MaxSessionIDLen))
	}
	if g.ExpiresAt.IsZero() {
		errs = append(errs, errors.New("no expiry"))
	}
	if len(g.Request) == 0 {
		errs = append(errs, errors.New("empty request"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tokensession: invalid grant: %w", err)
	}
	return nil
}

// Clone returns a deep copy of g.
func (g Grant) Clone() Grant {
	g.Request = slices.Clone(g.Request)
	return g
}
