// Package token is the issuer's OAuth 2.0 token endpoint, built on fosite:
// client authentication (client_secret_basic and client_secret_post only),
// the client_credentials grant, and RFC 9068 JWT access tokens signed with
// ES256.
package token

import (
	"errors"
	"log/slog"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/token/jwt"

	"github.com/gatehouse/gatehouse/services/issuer/internal/client"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
)

// Path is where the token endpoint is mounted.
const Path = "/oauth2/token"

// AccessTokenType is the JOSE typ header of access tokens (RFC 9068 §2.1).
const AccessTokenType = "at+jwt"

// Client authentication methods the endpoint accepts (RFC 8414 names).
const (
	AuthMethodClientSecretBasic = "client_secret_basic"
	AuthMethodClientSecretPost  = "client_secret_post"
)

// GrantTypes returns the grant types the endpoint serves.
func GrantTypes() []string { return []string{client.GrantClientCredentials} }

// AuthMethods returns the client authentication methods the endpoint accepts.
func AuthMethods() []string {
	return []string{AuthMethodClientSecretBasic, AuthMethodClientSecretPost}
}

// Config is what the token endpoint needs.
type Config struct {
	// Issuer is the iss of every token, and the base of the token URL.
	Issuer string
	// AccessTokenLifespan is the default access-token lifetime; a client
	// record may override it.
	AccessTokenLifespan time.Duration
	// MaxTokenLifetime caps every token's lifetime, a client's override
	// included, so no token outlives the publication of its signing key.
	// Zero means no cap beyond the lifespans themselves.
	MaxTokenLifetime time.Duration
	// Key supplies the key that signs each access token and the keys that
	// verify them: a *signingkey.Ring, or one fixed *signingkey.Key.
	Key KeySource
	// Hasher checks client secrets against their stored hashes.
	Hasher fosite.Hasher
	// Store holds clients and token sessions.
	Store store.Store
	// Logger receives one line per issued token and per rejected request.
	Logger *slog.Logger
}

func (c Config) validate() error {
	var errs []error
	if c.Issuer == "" {
		errs = append(errs, errors.New("issuer is empty"))
	}
	if c.AccessTokenLifespan <= 0 {
		errs = append(errs, errors.New("access token lifespan must be positive"))
	}
	if c.Key == nil {
		errs = append(errs, errors.New("signing key is missing"))
	}
	if c.Hasher == nil {
		errs = append(errs, errors.New("secret hasher is missing"))
	}
	if c.Store == nil {
		errs = append(errs, errors.New("store is missing"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("logger is missing"))
	}
	return errors.Join(errs...)
}

// newProvider composes the fosite provider: one grant (client_credentials),
// JWT access tokens, exact scope and audience matching, our own client
// authentication, and scope as a space-separated string claim.
func newProvider(cfg Config) fosite.OAuth2Provider {
	auth := &authenticator{clients: cfg.Store, hasher: cfg.Hasher}
	fcfg := &fosite.Config{
		AccessTokenLifespan:          cfg.AccessTokenLifespan,
		AccessTokenIssuer:            cfg.Issuer,
		TokenURL:                     cfg.Issuer + Path,
		ScopeStrategy:                fosite.ExactScopeStrategy,
		AudienceMatchingStrategy:     fosite.ExactAudienceMatchingStrategy,
		JWTScopeClaimKey:             jwt.JWTScopeFieldString,
		ClientSecretsHasher:          cfg.Hasher,
		ClientAuthenticationStrategy: auth.authenticate,
		SendDebugMessagesToClients:   false,
	}
	strategy := &oauth2.DefaultJWTStrategy{
		Signer: &keySigner{keys: cfg.Key},
		// No HMAC strategy: the endpoint issues neither refresh tokens nor
		// authorization codes yet, so DefaultJWTStrategy never reaches for it.
		Config: fcfg,
	}
	// Introspection and revocation handle access tokens only, so fosite's
	// stock handlers (which reach for refresh tokens) are not composed.
	return compose.Compose(fcfg, NewStorage(cfg.Store), strategy,
		clientCredentialsFactory(cfg.MaxTokenLifetime), introspectionFactory, revocationFactory(cfg.Logger))
}

// newSession returns the session every token request starts with: the
// RFC 9068 header (the signer adds the kid); the claims are filled in once
// the client is known.
func newSession() *oauth2.JWTSession {
	return &oauth2.JWTSession{
		JWTClaims: &jwt.JWTClaims{},
		JWTHeader: &jwt.Headers{Extra: map[string]any{"typ": AccessTokenType}},
	}
}
