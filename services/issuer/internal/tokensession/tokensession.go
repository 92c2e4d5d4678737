// Package tokensession turns the fosite request behind an issued access
// token into a flat record that a store can keep, and back. Every token the
// issuer hands out has such a record, so introspection and revocation can
// find it later even though the token itself is a self-contained JWT.
package tokensession

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/token/jwt"
)

// Record is the stored form of one access token's session.
type Record struct {
	// Signature is fosite's handle for the token: its JWS signature part.
	Signature string
	// JTI is the token's jti claim.
	JTI string
	// RequestID is fosite's request id, shared by every token of one grant.
	RequestID string
	// ClientID is the client the token was issued to.
	ClientID string
	// Subject is the token's sub claim.
	Subject string
	// Scopes are the granted scopes.
	Scopes []string
	// Audiences are the granted audiences.
	Audiences []string
	// RequestedAt is when the token request arrived.
	RequestedAt time.Time
	// ExpiresAt is the token's exp.
	ExpiresAt time.Time
	// Session is the fosite session as JSON (claims, header, expiries).
	Session []byte
}

// FromRequester builds the record for the token with the given signature.
// The requester's session must be an oauth2.JWTSessionContainer with
// *jwt.JWTClaims.
func FromRequester(signature string, r fosite.Requester) (Record, error) {
	if signature == "" {
		return Record{}, errors.New("tokensession: empty signature")
	}
	sess, ok := r.GetSession().(oauth2.JWTSessionContainer)
	if !ok {
		return Record{}, fmt.Errorf("tokensession: session is %T, want a JWT session", r.GetSession())
	}
	claims, ok := sess.GetJWTClaims().(*jwt.JWTClaims)
	if !ok || claims.JTI == "" {
		return Record{}, errors.New("tokensession: session has no jti")
	}
	data, err := json.Marshal(sess)
	if err != nil {
		return Record{}, fmt.Errorf("tokensession: marshal session: %w", err)
	}
	return Record{
		Signature:   signature,
		JTI:         claims.JTI,
		RequestID:   r.GetID(),
		ClientID:    r.GetClient().GetID(),
		Subject:     sess.GetSubject(),
		Scopes:      slices.Clone(r.GetGrantedScopes()),
		Audiences:   slices.Clone(r.GetGrantedAudience()),
		RequestedAt: r.GetRequestedAt().UTC(),
		ExpiresAt:   sess.GetExpiresAt(fosite.AccessToken).UTC(),
		Session:     data,
	}, nil
}

// Requester rebuilds the fosite request of rec for client, decoding the
// stored session into session. Requested scopes and audiences are the
// granted ones: only what was granted is kept.
func (rec Record) Requester(client fosite.Client, session fosite.Session) (fosite.Requester, error) {
	if client.GetID() != rec.ClientID {
		return nil, fmt.Errorf("tokensession: record belongs to client %q, not %q", rec.ClientID, client.GetID())
	}
	if err := json.Unmarshal(rec.Session, session); err != nil {
		return nil, fmt.Errorf("tokensession: unmarshal session: %w", err)
	}
	r := fosite.NewRequest()
	r.ID = rec.RequestID
	r.RequestedAt = rec.RequestedAt
	r.Client = client
	r.Session = session
	r.RequestedScope = slices.Clone(rec.Scopes)
	r.GrantedScope = slices.Clone(rec.Scopes)
	r.RequestedAudience = slices.Clone(rec.Audiences)
	r.GrantedAudience = slices.Clone(rec.Audiences)
	return r, nil
}

// Clone returns a deep copy of rec.
func (rec Record) Clone() Record {
	rec.Scopes = slices.Clone(rec.Scopes)
	rec.Audiences = slices.Clone(rec.Audiences)
	rec.Session = slices.Clone(rec.Session)
	return rec
}
