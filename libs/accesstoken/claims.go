// Package accesstoken verifies Gatehouse access tokens: JWTs per RFC 9068,
// signed by the issuer with a key published in its JWKS. The gateway and every
// service verify tokens with it, so the rules live in one place.
package accesstoken

import (
	"slices"
	"time"
)

// Claims is the verified content of an access token.
type Claims struct {
	Issuer    string
	Subject   string
	Audience  []string
	Expiry    time.Time
	IssuedAt  time.Time
	NotBefore time.Time
	ID        string
	ClientID  string
	Scopes    []string
	Tenant    string
	// Roles is RFC 9068 section 2.2.3.1's roles claim, set for users.
	Roles []string
	ACR   string
	AMR   []string
	// AuthTime is when the user last authenticated; zero when absent.
	AuthTime time.Time
	// Actor is the RFC 8693 act claim: the party acting for Subject, with the
	// party it acts for nested below it.
	Actor *Actor
}

// Actor is one link of an RFC 8693 actor chain.
type Actor struct {
	Subject  string
	ClientID string
	Actor    *Actor
}

// HasScope reports whether the token grants scope.
func (c *Claims) HasScope(scope string) bool { return slices.Contains(c.Scopes, scope) }

// IsClient reports whether the token was issued to a client acting for
// itself (RFC 9068 section 2.2: sub is the client_id, no user involved).
func (c *Claims) IsClient() bool { return c.Subject == c.ClientID }
