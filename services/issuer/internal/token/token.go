// Package token is the issuer's OAuth 2.0 and OpenID Connect engine, built
// on fosite: the authorization endpoint (code flow with PKCE and OIDC), the
// token endpoint (authorization_code, refresh_token with rotation and reuse
// detection, client_credentials, and further grants such as token exchange
// composed in by Config.Grants), client authentication (keyed-hash
// secrets, private_key_jwt), introspection, revocation and userinfo. Access
// tokens are RFC 9068 JWTs signed with ES256.
package token

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/openid"
	"github.com/ory/fosite/token/jwt"

	"github.com/gatehouse/gatehouse/services/issuer/internal/client"
)

// Path is where the token endpoint is mounted.
const Path = "/oauth2/token"

// AccessTokenType is the JOSE typ header of access tokens (RFC 9068 §2.1).
const AccessTokenType = "at+jwt"

// Client authentication methods the endpoint accepts (RFC 8414 names).
const (
	AuthMethodClientSecretBasic = client.AuthMethodClientSecretBasic
	AuthMethodClientSecretPost  = client.AuthMethodClientSecretPost
	AuthMethodPrivateKeyJWT     = client.AuthMethodPrivateKeyJWT
	AuthMethodNone              = client.AuthMethodNone
)

// Defaults of the lifespans a Config may leave zero.
const (
	DefaultRefreshTokenLifespan  = 8 * time.Hour
	DefaultAuthorizeCodeLifespan = time.Minute
)

// GrantTypes returns the grant types every provider serves; a provider
// serves its Config.Grants too (see Provider.GrantTypes).
func GrantTypes() []string {
	return []string{client.GrantAuthorizationCode, client.GrantRefreshToken, client.GrantClientCredentials}
}

// Grant is a token endpoint handler for a grant type beyond the built-in
// ones (token exchange): Factory is composed into the provider like
// fosite's own handlers, receiving its configuration, storage (*Storage)
// and strategy (access tokens signed as RFC 9068 JWTs), and must return a
// fosite.TokenEndpointHandler that serves exactly Type.
type Grant struct {
	// Type is the grant_type value the handler serves.
	Type string
	// Factory builds the handler.
	Factory compose.Factory
}

// AuthMethods returns the client authentication methods the token endpoint
// accepts, none (public clients) included.
func AuthMethods() []string {
	return []string{AuthMethodClientSecretBasic, AuthMethodClientSecretPost, AuthMethodPrivateKeyJWT, AuthMethodNone}
}

// ConfidentialAuthMethods returns the methods by which a confidential
// client authenticates (introspection accepts only these).
func ConfidentialAuthMethods() []string {
	return []string{AuthMethodClientSecretBasic, AuthMethodClientSecretPost, AuthMethodPrivateKeyJWT}
}

// Config is what the token endpoints need.
type Config struct {
	// Issuer is the iss of every token, and the base of the endpoint URLs.
	Issuer string
	// AccessTokenLifespan is the default access-token lifetime; a client
	// record may override it.
	AccessTokenLifespan time.Duration
	// RefreshTokenLifespan is the default refresh-token lifetime (zero:
	// DefaultRefreshTokenLifespan); a client record may override it.
	RefreshTokenLifespan time.Duration
	// AuthorizeCodeLifespan is how long an authorization code may wait for
	// its exchange (zero: DefaultAuthorizeCodeLifespan).
	AuthorizeCodeLifespan time.Duration
	// MaxTokenLifetime caps every signed token's lifetime (access and ID
	// tokens), a client's override included, so no token outlives the
	// publication of its signing key. Zero means no cap beyond the
	// lifespans themselves.
	MaxTokenLifetime time.Duration
	// Key supplies the key that signs each token and the keys that
	// verify them: a *signingkey.Ring, or one fixed *signingkey.Key.
	Key KeySource
	// Hasher checks client secrets against their stored hashes.
	Hasher fosite.Hasher
	// TokenHMACKey (at least 32 bytes) keys the HMAC that makes
	// authorization codes and refresh tokens and their stored signatures.
	// Required for the authorization-code and refresh grants.
	TokenHMACKey []byte
	// Store holds clients, token sessions and grant records.
	Store Store
	// Observer hears of every issued and revoked token (nil: NopObserver).
	Observer Observer
	// ConsentActive, when set, reports whether a consent still stands; a
	// refresh of a grant whose consent does not is refused and ends the
	// grant (fail closed should revoking at withdrawal have failed).
	ConsentActive func(ctx context.Context, consentID string) (bool, error)
	// Grants are handlers for further grant types, composed after the
	// built-in ones; an unlisted grant type is unsupported_grant_type.
	Grants []Grant
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
	if c.RefreshTokenLifespan < 0 || c.AuthorizeCodeLifespan < 0 {
		errs = append(errs, errors.New("lifespans must not be negative"))
	}
	if c.Key == nil {
		errs = append(errs, errors.New("signing key is missing"))
	}
	if c.Hasher == nil {
		errs = append(errs, errors.New("secret hasher is missing"))
	}
	if len(c.TokenHMACKey) < 32 {
		errs = append(errs, errors.New("token HMAC key must be at least 32 bytes"))
	}
	if c.Store == nil {
		errs = append(errs, errors.New("store is missing"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("logger is missing"))
	}
	for _, g := range c.Grants {
		if g.Type == "" || g.Factory == nil || slices.Contains(GrantTypes(), g.Type) {
			errs = append(errs, fmt.Errorf("grant %q: needs a new grant type and a factory", g.Type))
		}
	}
	return errors.Join(errs...)
}

func (c Config) observer() Observer {
	if c.Observer == nil {
		return NopObserver{}
	}
	return c.Observer
}

// idTokenLifespan is how long ID tokens live: an hour, or the signing-key
// cap when it is shorter.
func (c Config) idTokenLifespan() time.Duration {
	if c.MaxTokenLifetime > 0 {
		return min(time.Hour, c.MaxTokenLifetime)
	}
	return time.Hour
}

// Provider is the composed fosite provider with its storage and client
// authenticator, shared by every endpoint of the issuer.
type Provider struct {
	fosite.OAuth2Provider
	storage *Storage
	auth    *authenticator
	cfg     Config
	// grantTypes are the grant types served.
	grantTypes []string
}

// NewProvider composes the fosite provider for cfg: the authorization-code
// grant with PKCE (S256, required for public clients) and OpenID Connect,
// refresh tokens with rotation and reuse detection, client_credentials,
// JWT access tokens, exact scope and audience matching, Gatehouse's client
// authentication (secrets by keyed hash, private_key_jwt), and the
// issuer's own introspection and revocation handlers.
func NewProvider(cfg Config) (*Provider, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	if cfg.RefreshTokenLifespan == 0 {
		cfg.RefreshTokenLifespan = DefaultRefreshTokenLifespan
	}
	if cfg.AuthorizeCodeLifespan == 0 {
		cfg.AuthorizeCodeLifespan = DefaultAuthorizeCodeLifespan
	}
	auth := &authenticator{clients: cfg.Store, hasher: cfg.Hasher}
	fcfg := &fosite.Config{
		AccessTokenLifespan:            cfg.AccessTokenLifespan,
		RefreshTokenLifespan:           cfg.RefreshTokenLifespan,
		AuthorizeCodeLifespan:          cfg.AuthorizeCodeLifespan,
		IDTokenLifespan:                cfg.idTokenLifespan(),
		AccessTokenIssuer:              cfg.Issuer,
		IDTokenIssuer:                  cfg.Issuer,
		TokenURL:                       cfg.Issuer + Path,
		ScopeStrategy:                  fosite.ExactScopeStrategy,
		AudienceMatchingStrategy:       fosite.ExactAudienceMatchingStrategy,
		JWTScopeClaimKey:               jwt.JWTScopeFieldString,
		ClientSecretsHasher:            cfg.Hasher,
		ClientAuthenticationStrategy:   auth.authenticate,
		SendDebugMessagesToClients:     false,
		EnforcePKCEForPublicClients:    true,
		EnablePKCEPlainChallengeMethod: false,
		RefreshTokenScopes:             []string{"offline_access"},
		GlobalSecret:                   cfg.TokenHMACKey,
		// The code response carries code and state only (RFC 6749 §4.1.2).
		OmitRedirectScopeParam: true,
	}
	signer := &keySigner{keys: cfg.Key}
	core := &accessTokenStrategy{
		DefaultJWTStrategy: &oauth2.DefaultJWTStrategy{
			Signer:          signer,
			HMACSHAStrategy: compose.NewOAuth2HMACStrategy(fcfg),
			Config:          fcfg,
		},
		lifespan:    cfg.AccessTokenLifespan,
		maxLifetime: cfg.MaxTokenLifetime,
	}
	strategy := &compose.CommonStrategy{
		CoreStrategy:               core,
		OpenIDConnectTokenStrategy: &openid.DefaultStrategy{Signer: signer, Config: fcfg},
		Signer:                     signer,
	}
	storage := NewStorage(cfg.Store, cfg.observer())
	storage.consentActive = cfg.ConsentActive
	factories := []compose.Factory{
		compose.OAuth2AuthorizeExplicitFactory,
		compose.OAuth2PKCEFactory,
		compose.OpenIDConnectExplicitFactory,
		compose.OpenIDConnectRefreshFactory,
		compose.OAuth2RefreshTokenGrantFactory,
		clientCredentialsFactory(cfg.MaxTokenLifetime),
		introspectionFactory,
		revocationFactory(cfg.Logger, storage),
	}
	grantTypes := GrantTypes()
	for _, g := range cfg.Grants {
		factories = append(factories, g.Factory)
		grantTypes = append(grantTypes, g.Type)
	}
	provider := compose.Compose(fcfg, storage, strategy, factories...)
	f, ok := provider.(*fosite.Fosite)
	if !ok {
		return nil, fmt.Errorf("token: provider is %T, want *fosite.Fosite", provider)
	}
	auth.assertions = f.DefaultClientAuthenticationStrategy
	auth.tokenURL = cfg.Issuer + Path
	return &Provider{OAuth2Provider: provider, storage: storage, auth: auth, cfg: cfg, grantTypes: grantTypes}, nil
}

// GrantTypes returns the grant types p serves (for the metadata's
// grant_types_supported): the built-in ones, then Config.Grants.
func (p *Provider) GrantTypes() []string { return slices.Clone(p.grantTypes) }

// Storage is the provider's fosite storage (for revocations outside the
// token endpoints, such as a withdrawn consent).
func (p *Provider) Storage() *Storage { return p.storage }

// ScopeRevocationsRead lets a confidential client subscribe to the
// revocation feed.
const ScopeRevocationsRead = "revocations:read"

// Errors of AuthenticateBasic.
var (
	// ErrClientUnauthenticated: no valid client credentials.
	ErrClientUnauthenticated = errors.New("token: client not authenticated")
	// ErrClientForbidden: a known client without the needed scope.
	ErrClientForbidden = errors.New("token: client lacks the required scope")
)

// AuthenticateBasic authenticates a confidential client by the
// client_secret_basic Authorization header in h (as the token endpoint
// would) and requires it to hold scope. It serves endpoints outside OAuth,
// such as the revocation feed, whose callers are services.
func (p *Provider) AuthenticateBasic(ctx context.Context, h http.Header, scope string) (string, error) {
	if len(h.Values("Authorization")) != 1 {
		return "", ErrClientUnauthenticated
	}
	r := &http.Request{Header: h}
	c, err := p.auth.authenticate(ctx, r, url.Values{})
	if err != nil {
		if rfcErr := fosite.ErrorToRFC6749Error(err); rfcErr.CodeField >= http.StatusInternalServerError {
			return "", fmt.Errorf("token: authenticate client: %w", err)
		}
		return "", fmt.Errorf("%w: %s", ErrClientUnauthenticated, fosite.ErrorToRFC6749Error(err).HintField)
	}
	if c.IsPublic() {
		return "", ErrClientUnauthenticated
	}
	if !c.GetScopes().Has(scope) {
		return c.GetID(), fmt.Errorf("%w %s", ErrClientForbidden, scope)
	}
	return c.GetID(), nil
}
