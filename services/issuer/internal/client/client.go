// Package client defines the issuer's OAuth 2.0 client record: who a client
// is, how it authenticates, which grants, scopes and audiences it may use,
// and which tenant its tokens speak for.
package client

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v3"
	"github.com/ory/fosite"
)

// Grant types a client record may list. Listing a grant does not mean the
// issuer serves it yet; the token endpoint decides that.
const (
	GrantAuthorizationCode = "authorization_code"
	GrantRefreshToken      = "refresh_token"
	GrantClientCredentials = "client_credentials"
	GrantTokenExchange     = "urn:ietf:params:oauth:grant-type:token-exchange" //nolint:gosec // G101: a grant type URN, not a credential
)

// Client authentication methods at the token endpoint (RFC 8414 names).
const (
	AuthMethodClientSecretBasic = "client_secret_basic"
	AuthMethodClientSecretPost  = "client_secret_post"
	AuthMethodPrivateKeyJWT     = "private_key_jwt"
	AuthMethodNone              = "none"
)

// AssertionSigningAlgorithm is the one JWS algorithm accepted for
// private_key_jwt client assertions.
const AssertionSigningAlgorithm = "ES256"

// ErrInvalid marks a client record that breaks an invariant.
var ErrInvalid = errors.New("invalid client")

// Client is one registered OAuth 2.0 client. It implements fosite.Client and
// fosite.ClientWithCustomTokenLifespans so fosite's handlers can use it as is.
// The secret is only ever held as a keyed hash (see package clientsecret).
type Client struct {
	// ID is the client_id.
	ID string
	// SecretHash is the keyed hash of the client secret; empty for public clients.
	SecretHash []byte
	// Tenant is the tenant a confidential client acts for; it becomes the
	// tenant claim of tokens issued to the client itself.
	Tenant string
	// Public clients cannot keep a secret (browser or native apps).
	Public bool
	// GrantTypes the client may use.
	GrantTypes []string
	// ResponseTypes the client may request at the authorization endpoint.
	ResponseTypes []string
	// Scopes the client may request; a token never carries more.
	Scopes []string
	// Audiences the client may request. When a request names none, the token
	// is issued for all of them.
	Audiences []string
	// RedirectURIs registered for the authorization endpoint.
	RedirectURIs []string
	// AccessTokenLifespan overrides the issuer's default access-token
	// lifetime for this client; zero means the default.
	AccessTokenLifespan time.Duration
	// RefreshTokenLifespan overrides the issuer's default refresh-token
	// lifetime for this client; zero means the default.
	RefreshTokenLifespan time.Duration
	// AuthMethod is how the client authenticates at the token endpoint:
	// client_secret_basic (default for confidential clients; the issuer also
	// accepts client_secret_post for them), private_key_jwt, or none (public
	// clients, and only they).
	AuthMethod string
	// JWKS holds the public keys of a private_key_jwt client (ES256 only).
	JWKS *jose.JSONWebKeySet
	// DisplayName is what the consent page calls the client; the ID when empty.
	DisplayName string
}

// EffectiveAuthMethod is AuthMethod, or the default for the client's type
// when unset: none for public clients, client_secret_basic otherwise.
func (c *Client) EffectiveAuthMethod() string {
	switch {
	case c.AuthMethod != "":
		return c.AuthMethod
	case c.Public:
		return AuthMethodNone
	default:
		return AuthMethodClientSecretBasic
	}
}

// Name is the client's display name, or its ID.
func (c *Client) Name() string {
	if c.DisplayName != "" {
		return c.DisplayName
	}
	return c.ID
}

// Validate reports whether c is a record the issuer can serve safely.
func (c *Client) Validate() error {
	var errs []error
	if c.ID == "" {
		errs = append(errs, errors.New("id is empty"))
	}
	if c.Public && len(c.SecretHash) > 0 {
		errs = append(errs, errors.New("a public client has no secret"))
	}
	switch method := c.EffectiveAuthMethod(); method {
	case AuthMethodNone:
		if !c.Public {
			errs = append(errs, errors.New("only a public client may use token endpoint auth method none"))
		}
	case AuthMethodClientSecretBasic, AuthMethodClientSecretPost:
		if c.Public {
			errs = append(errs, fmt.Errorf("a public client cannot use %s", method))
		} else if len(c.SecretHash) == 0 {
			errs = append(errs, errors.New("a confidential client needs a secret hash"))
		}
	case AuthMethodPrivateKeyJWT:
		if c.Public {
			errs = append(errs, errors.New("a public client cannot use private_key_jwt"))
		}
		if len(c.SecretHash) > 0 {
			errs = append(errs, errors.New("a private_key_jwt client has no secret"))
		}
		if err := validateJWKS(c.JWKS); err != nil {
			errs = append(errs, err)
		}
	default:
		errs = append(errs, fmt.Errorf("unknown token endpoint auth method %q", method))
	}
	if c.JWKS != nil && c.EffectiveAuthMethod() != AuthMethodPrivateKeyJWT {
		errs = append(errs, errors.New("only a private_key_jwt client has a key set"))
	}
	if c.RefreshTokenLifespan < 0 {
		errs = append(errs, errors.New("refresh token lifespan is negative"))
	}
	if slices.Contains(c.GrantTypes, GrantAuthorizationCode) && len(c.RedirectURIs) == 0 {
		errs = append(errs, errors.New("authorization_code needs at least one redirect uri"))
	}
	for _, u := range c.RedirectURIs {
		if err := validateRedirectURI(u); err != nil {
			errs = append(errs, err)
		}
	}
	if c.AccessTokenLifespan < 0 {
		errs = append(errs, errors.New("access token lifespan is negative"))
	}
	for _, g := range c.GrantTypes {
		switch g {
		case GrantAuthorizationCode, GrantRefreshToken, GrantClientCredentials, GrantTokenExchange:
		default:
			errs = append(errs, fmt.Errorf("unknown grant type %q", g))
		}
	}
	if slices.Contains(c.GrantTypes, GrantTokenExchange) && c.Public {
		// RFC 8693 §2.1: the exchange authenticates the client; a public
		// client cannot, so it could act for anyone whose token it holds.
		errs = append(errs, errors.New("a public client cannot use token exchange"))
	}
	if slices.Contains(c.GrantTypes, GrantClientCredentials) {
		if c.Public {
			errs = append(errs, errors.New("a public client cannot use client_credentials"))
		}
		if c.Tenant == "" {
			errs = append(errs, errors.New("client_credentials needs a tenant"))
		}
		if len(c.Audiences) == 0 {
			errs = append(errs, errors.New("client_credentials needs at least one audience"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w %q: %w", ErrInvalid, c.ID, err)
	}
	return nil
}

// Clone returns a deep copy, so stores never share slices with callers.
func (c *Client) Clone() *Client {
	out := *c
	out.SecretHash = slices.Clone(c.SecretHash)
	out.GrantTypes = slices.Clone(c.GrantTypes)
	out.ResponseTypes = slices.Clone(c.ResponseTypes)
	out.Scopes = slices.Clone(c.Scopes)
	out.Audiences = slices.Clone(c.Audiences)
	out.RedirectURIs = slices.Clone(c.RedirectURIs)
	if c.JWKS != nil {
		keys := slices.Clone(c.JWKS.Keys)
		out.JWKS = &jose.JSONWebKeySet{Keys: keys}
	}
	return &out
}

// GetID implements fosite.Client.
func (c *Client) GetID() string { return c.ID }

// GetHashedSecret implements fosite.Client.
func (c *Client) GetHashedSecret() []byte { return c.SecretHash }

// GetRedirectURIs implements fosite.Client.
func (c *Client) GetRedirectURIs() []string { return c.RedirectURIs }

// GetGrantTypes implements fosite.Client.
func (c *Client) GetGrantTypes() fosite.Arguments { return c.GrantTypes }

// GetResponseTypes implements fosite.Client.
func (c *Client) GetResponseTypes() fosite.Arguments { return c.ResponseTypes }

// GetScopes implements fosite.Client.
func (c *Client) GetScopes() fosite.Arguments { return c.Scopes }

// IsPublic implements fosite.Client.
func (c *Client) IsPublic() bool { return c.Public }

// GetAudience implements fosite.Client.
func (c *Client) GetAudience() fosite.Arguments { return c.Audiences }

// GetEffectiveLifespan implements fosite.ClientWithCustomTokenLifespans: the
// client's access-token override when set, else fallback.
func (c *Client) GetEffectiveLifespan(_ fosite.GrantType, tt fosite.TokenType, fallback time.Duration) time.Duration {
	if tt == fosite.AccessToken && c.AccessTokenLifespan > 0 {
		return c.AccessTokenLifespan
	}
	if tt == fosite.RefreshToken && c.RefreshTokenLifespan > 0 {
		return c.RefreshTokenLifespan
	}
	return fallback
}

// GetRequestURIs implements fosite.OpenIDConnectClient: request objects by
// reference are not supported.
func (c *Client) GetRequestURIs() []string { return nil }

// GetJSONWebKeys implements fosite.OpenIDConnectClient: the keys that verify
// a private_key_jwt client's assertions.
func (c *Client) GetJSONWebKeys() *jose.JSONWebKeySet { return c.JWKS }

// GetJSONWebKeysURI implements fosite.OpenIDConnectClient: keys are
// registered by value only, never fetched from a client-supplied URL.
func (c *Client) GetJSONWebKeysURI() string { return "" }

// GetRequestObjectSigningAlgorithm implements fosite.OpenIDConnectClient:
// request objects are not supported.
func (c *Client) GetRequestObjectSigningAlgorithm() string { return "" }

// GetTokenEndpointAuthMethod implements fosite.OpenIDConnectClient.
func (c *Client) GetTokenEndpointAuthMethod() string { return c.EffectiveAuthMethod() }

// GetTokenEndpointAuthSigningAlgorithm implements fosite.OpenIDConnectClient:
// ES256, the only algorithm accepted for client assertions.
func (c *Client) GetTokenEndpointAuthSigningAlgorithm() string { return AssertionSigningAlgorithm }

// validateJWKS checks a private_key_jwt client's key set: at least one key,
// every key public, ECDSA P-256 for ES256, with a unique kid.
func validateJWKS(set *jose.JSONWebKeySet) error {
	if set == nil || len(set.Keys) == 0 {
		return errors.New("a private_key_jwt client needs at least one public key")
	}
	seen := map[string]bool{}
	for i, k := range set.Keys {
		if !k.Valid() || !k.IsPublic() {
			return fmt.Errorf("key %d is not a valid public key", i)
		}
		pub, ok := k.Key.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			return fmt.Errorf("key %d is not an ECDSA P-256 key (ES256 only)", i)
		}
		if k.KeyID == "" || seen[k.KeyID] {
			return fmt.Errorf("key %d needs a unique kid", i)
		}
		seen[k.KeyID] = true
	}
	return nil
}

// validateRedirectURI accepts an absolute URI without a fragment (RFC 6749
// §3.1.2): https anywhere, http only on a loopback host (RFC 8252 §7.3).
func validateRedirectURI(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("redirect uri %q must be absolute, without fragment or user info", raw)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !IsLoopbackHost(u.Hostname()) {
			return fmt.Errorf("redirect uri %q: http only on a loopback address", raw)
		}
	default:
		return fmt.Errorf("redirect uri %q: scheme must be https, or http on loopback", raw)
	}
	return nil
}

// IsLoopbackHost reports whether host is a loopback IP literal (RFC 8252
// §7.3 recommends the literal over "localhost").
func IsLoopbackHost(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
