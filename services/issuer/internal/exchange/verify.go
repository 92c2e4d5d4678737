package exchange

import (
	"context"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/gatehouse/gatehouse/libs/accesstoken"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/tokensession"
)

// Why a presented token is refused; wrapped with the detail, logged, never
// shown to the client.
var (
	// errTokenInvalid: not an access token of this issuer, or expired.
	errTokenInvalid = errors.New("not a valid, unexpired access token of this issuer")
	// errTokenRevoked: it verifies, but its session is gone (revoked,
	// or its grant was).
	errTokenRevoked = errors.New("revoked: no live token session")
	// errStore: the token sessions could not be read.
	errStore = errors.New("token sessions unavailable")
)

// KeySource supplies the issuer's verification keys: a *signingkey.Ring,
// or a single *signingkey.Key (tests).
type KeySource interface {
	// VerificationKey returns the published public key named kid, or an error.
	VerificationKey(ctx context.Context, kid string) (*ecdsa.PublicKey, error)
}

// TokenSessions finds the stored session of an issued access token;
// store.TokenSessionStore is one. A token without one was revoked (or never
// issued here).
type TokenSessions interface {
	// GetTokenSession returns the record for signature, or store.ErrNotFound.
	GetTokenSession(ctx context.Context, signature string) (tokensession.Record, error)
}

// presented is a verified subject or actor token.
type presented struct {
	claims *accesstoken.Claims
	// record is the token's stored session: its grant is record.RequestID.
	record tokensession.Record
	// mayAct is the token's may_act claim (RFC 8693 §4.4), nil when absent.
	mayAct *mayAct
}

// mayAct is the may_act claim: the party allowed to act for the subject.
type mayAct struct {
	Subject  string `json:"sub"`
	ClientID string `json:"client_id"`
}

// keySource adapts KeySource to accesstoken.KeySource: an unknown kid is
// accesstoken.ErrUnknownKey.
type keySource struct{ keys KeySource }

func (k keySource) Key(ctx context.Context, kid string) (*jose.JSONWebKey, error) {
	pub, err := k.keys.VerificationKey(ctx, kid)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", accesstoken.ErrUnknownKey, err)
	}
	return &jose.JSONWebKey{Key: pub, KeyID: kid, Algorithm: string(jose.ES256), Use: "sig"}, nil
}

// verify checks raw as a Gatehouse access token of this issuer, by
// libs/accesstoken's rules (typ at+jwt, ES256 only, allowed header, kid of
// a published key, signature, iss, exp, nbf, iat, lifetime, required
// claims, no cnf), then that it is unexpired now and not revoked: its
// session is still stored under its signature and agrees with its
// claims. The error wraps errTokenInvalid, errTokenRevoked or errStore.
func (h *handler) verify(ctx context.Context, raw string, now time.Time) (*presented, error) {
	body, err := payload(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errTokenInvalid, err)
	}
	if len(body.Audience) == 0 {
		return nil, fmt.Errorf("%w: no aud", errTokenInvalid)
	}
	// The verifier insists on one audience; any of the token's own will
	// do, as an exchange accepts this issuer's tokens for every audience
	// (the new token's audience is narrowed from them later).
	v, err := accesstoken.NewVerifier(accesstoken.Config{
		Issuer:      h.cfg.Issuer,
		Audience:    body.Audience[0],
		Keys:        keySource{h.cfg.Keys},
		MaxLifetime: h.cfg.MaxTokenLifetime,
		Now:         func() time.Time { return now },
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errTokenInvalid, err)
	}
	claims, err := v.Verify(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errTokenInvalid, err)
	}
	// The verifier allows clock skew; the issuer signed with its own clock.
	if !now.Before(claims.Expiry) {
		return nil, fmt.Errorf("%w: expired", errTokenInvalid)
	}
	rec, err := h.cfg.Tokens.GetTokenSession(ctx, h.issue.AccessTokenStrategy.AccessTokenSignature(ctx, raw))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("%w: jti %s", errTokenRevoked, claims.ID)
	case err != nil:
		return nil, fmt.Errorf("%w: %w", errStore, err)
	case rec.JTI != claims.ID || rec.ClientID != claims.ClientID || rec.Subject != claims.Subject:
		return nil, fmt.Errorf("%w: session of jti %s does not match the token", errTokenInvalid, claims.ID)
	case !now.Before(rec.ExpiresAt):
		return nil, fmt.Errorf("%w: session expired", errTokenInvalid)
	}
	return &presented{claims: claims, record: rec, mayAct: body.MayAct}, nil
}

// unverified is what is read from a token's payload before (aud, to
// configure the verifier) or besides (may_act, which libs/accesstoken does
// not parse) the verification; may_act is used only once the token
// verified.
type unverified struct {
	Audience josejwt.Audience `json:"aud"`
	MayAct   *mayAct          `json:"may_act"`
}

// payload decodes the claims of the compact JWS raw without verifying them.
func payload(raw string) (unverified, error) {
	var out unverified
	if len(raw) > accesstoken.MaxTokenBytes {
		return out, accesstoken.ErrTooLarge
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return out, fmt.Errorf("%w: not a compact JWS", accesstoken.ErrMalformed)
	}
	data, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return out, fmt.Errorf("%w: payload encoding", accesstoken.ErrMalformed)
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return out, fmt.Errorf("%w: payload json", accesstoken.ErrMalformed)
	}
	return out, nil
}

// permits reports whether m names the acting party (sub, and client_id
// when m has one). A may_act without sub permits nobody.
func (m *mayAct) permits(sub, clientID string) bool {
	return m.Subject != "" && m.Subject == sub && (m.ClientID == "" || m.ClientID == clientID)
}
