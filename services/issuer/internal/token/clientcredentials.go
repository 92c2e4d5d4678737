package token

import (
	"context"
	"crypto/rand"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/token/jwt"

	"github.com/gatehouse/gatehouse/services/issuer/internal/client"
)

// clientCredentialsGrant wraps fosite's client_credentials handler to make
// its tokens follow the Gatehouse profile: the client must list the grant
// (unauthorized_client otherwise, checked before anything else), scopes and
// audiences default to the client's registered ones, and the claims are
// exactly sub, client_id, tenant, jti, iat, nbf (plus iss, aud, exp, scope
// that fosite adds).
type clientCredentialsGrant struct {
	inner *oauth2.ClientCredentialsGrantHandler
	// maxLifetime caps the lifetime of every token (0: no cap).
	maxLifetime time.Duration
}

var _ fosite.TokenEndpointHandler = (*clientCredentialsGrant)(nil)

// clientCredentialsFactory returns a compose.Factory for
// clientCredentialsGrant whose tokens live at most maxLifetime.
func clientCredentialsFactory(maxLifetime time.Duration) compose.Factory {
	return func(config fosite.Configurator, storage, strategy any) any {
		inner, _ := compose.OAuth2ClientCredentialsGrantFactory(config, storage, strategy).(*oauth2.ClientCredentialsGrantHandler)
		return &clientCredentialsGrant{inner: inner, maxLifetime: maxLifetime}
	}
}

// CanHandleTokenEndpointRequest implements fosite.TokenEndpointHandler.
func (g *clientCredentialsGrant) CanHandleTokenEndpointRequest(ctx context.Context, ar fosite.AccessRequester) bool {
	return g.inner.CanHandleTokenEndpointRequest(ctx, ar)
}

// CanSkipClientAuth implements fosite.TokenEndpointHandler: never.
func (g *clientCredentialsGrant) CanSkipClientAuth(context.Context, fosite.AccessRequester) bool {
	return false
}

// HandleTokenEndpointRequest implements fosite.TokenEndpointHandler.
func (g *clientCredentialsGrant) HandleTokenEndpointRequest(ctx context.Context, ar fosite.AccessRequester) error {
	if !g.CanHandleTokenEndpointRequest(ctx, ar) {
		return fosite.ErrUnknownRequest
	}
	c, ok := ar.GetClient().(*client.Client)
	if !ok {
		return fosite.ErrServerError.WithDebugf("client is %T, want *client.Client", ar.GetClient())
	}
	if !c.GetGrantTypes().Has(client.GrantClientCredentials) {
		return fosite.ErrUnauthorizedClient.WithHint("The client is not allowed to use the client_credentials grant.")
	}
	// Checks requested scopes and audiences against the client's, rejects
	// public clients.
	if err := g.inner.HandleTokenEndpointRequest(ctx, ar); err != nil {
		return err
	}

	scopes := ar.GetRequestedScopes()
	if len(scopes) == 0 {
		scopes = c.GetScopes()
	}
	for _, s := range scopes {
		ar.GrantScope(s)
	}
	audiences := ar.GetRequestedAudience()
	if len(audiences) == 0 {
		audiences = c.GetAudience()
	}
	for _, a := range audiences {
		ar.GrantAudience(a)
	}

	sess, ok := ar.GetSession().(*Session)
	if !ok {
		return fosite.ErrServerError.WithDebugf("session is %T, want *token.Session", ar.GetSession())
	}
	// One clock reading for iat, nbf and exp, so exp-iat is the lifespan exactly.
	now := time.Now().UTC()
	lifespan := fosite.GetEffectiveLifespan(c, fosite.GrantTypeClientCredentials, fosite.AccessToken, g.inner.Config.GetAccessTokenLifespan(ctx))
	if g.maxLifetime > 0 {
		lifespan = min(lifespan, g.maxLifetime)
	}
	sess.SetExpiresAt(fosite.AccessToken, now.Add(lifespan))
	sess.Subject = c.ID
	sess.JWTClaims = &jwt.JWTClaims{
		Subject:   c.ID,
		JTI:       rand.Text(),
		IssuedAt:  now,
		NotBefore: now,
		Extra: map[string]any{
			"client_id": c.ID,
			"tenant":    c.Tenant,
		},
	}
	return nil
}

// PopulateTokenEndpointResponse implements fosite.TokenEndpointHandler: it
// signs the token and stores its session.
func (g *clientCredentialsGrant) PopulateTokenEndpointResponse(ctx context.Context, ar fosite.AccessRequester, resp fosite.AccessResponder) error {
	return g.inner.PopulateTokenEndpointResponse(ctx, ar, resp)
}
