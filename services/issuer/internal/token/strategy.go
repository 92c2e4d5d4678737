package token

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/token/jwt"
)

// accessTokenStrategy is fosite's JWT access-token strategy with the
// Gatehouse profile on top: every access token gets a fresh jti and
// iat/nbf of the moment it is signed (a refresh clones the session of the
// first token, so without this two tokens of one grant would share a jti),
// and no token outlives maxLifetime, whatever a client's lifespan says,
// nor its session's LifetimeLimit.
// Authorization codes and refresh tokens stay opaque HMAC values.
type accessTokenStrategy struct {
	*oauth2.DefaultJWTStrategy
	// lifespan is the default access-token lifetime; a client may override it.
	lifespan    time.Duration
	maxLifetime time.Duration
}

var _ oauth2.CoreStrategy = (*accessTokenStrategy)(nil)

// GenerateAccessToken implements oauth2.AccessTokenStrategy.
func (s *accessTokenStrategy) GenerateAccessToken(ctx context.Context, r fosite.Requester) (string, string, error) {
	sess, ok := r.GetSession().(oauth2.JWTSessionContainer)
	if !ok {
		return "", "", fmt.Errorf("token: session is %T, want a JWT session", r.GetSession())
	}
	claims, ok := sess.GetJWTClaims().(*jwt.JWTClaims)
	if !ok {
		return "", "", fmt.Errorf("token: claims are %T, want *jwt.JWTClaims", sess.GetJWTClaims())
	}
	now := time.Now().UTC()
	claims.JTI = rand.Text()
	claims.IssuedAt = now
	claims.NotBefore = now
	grant := fosite.GrantTypeClientCredentials
	if ar, ok := r.(fosite.AccessRequester); ok && len(ar.GetGrantTypes()) == 1 {
		grant = fosite.GrantType(ar.GetGrantTypes()[0])
	}
	lifespan := fosite.GetEffectiveLifespan(r.GetClient(), grant, fosite.AccessToken, s.lifespan)
	if s.maxLifetime > 0 {
		lifespan = min(lifespan, s.maxLifetime)
	}
	if gs, ok := sess.(*Session); ok && gs.LifetimeLimit > 0 {
		lifespan = min(lifespan, gs.LifetimeLimit)
	}
	if lifespan <= 0 {
		return "", "", errors.New("token: access token lifespan is not positive")
	}
	exp := now.Add(lifespan)
	sess.SetExpiresAt(fosite.AccessToken, exp)
	claims.ExpiresAt = exp
	// A session read back from the store has its numbers as JSON floats;
	// NumericDate claims must be integers (RFC 7519 §2 allows fractions,
	// but every verifier here, and most elsewhere, expects whole seconds).
	if v, ok := claims.Extra["auth_time"].(float64); ok {
		claims.Extra["auth_time"] = int64(v)
	}
	return s.DefaultJWTStrategy.GenerateAccessToken(ctx, r)
}
