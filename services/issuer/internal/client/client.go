// Package client defines the issuer's OAuth 2.0 client record: who a client
// is, how it authenticates, which grants, scopes and audiences it may use,
// and which tenant its tokens speak for.
package client

import (
	"errors"
	"fmt"
	"slices"
	"time"

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
	if !c.Public && len(c.SecretHash) == 0 {
		errs = append(errs, errors.New("a confidential client needs a secret hash"))
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
	return fallback
}
