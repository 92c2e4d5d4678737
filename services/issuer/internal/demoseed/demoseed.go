// Package demoseed is the demo data set of DESIGN.md: the OAuth 2.0
// clients and the four users that tutorials, e2e suites and outside checks
// rely on. The issuer loads it only with --demo; nothing else ships a
// default secret.
package demoseed

import (
	"context"
	"fmt"

	"github.com/ory/fosite"

	"github.com/gatehouse/gatehouse/services/issuer/internal/client"
)

// Audience is the default API audience of every demo client; the gateway
// checks a token's aud against it.
const Audience = "gatehouse-api"

// PDPAudience is the audience of tokens for the PDP's PolicyAdminService.
const PDPAudience = "gatehouse-pdp"

// Tenants of the demo.
const (
	TenantAcme   = "acme"
	TenantGlobex = "globex"
	// TenantPlatform is the operators' own tenant (policy administration).
	TenantPlatform = "gatehouse"
)

// clientSpec is a demo client with its clear-text secret (demo only).
type clientSpec struct {
	client.Client
	secret string
}

func clientSpecs() []clientSpec {
	return []clientSpec{
		{
			Client: client.Client{
				ID:         "reporting-job",
				Tenant:     TenantAcme,
				GrantTypes: []string{client.GrantClientCredentials},
				Scopes:     []string{"invoice:read"},
				Audiences:  []string{Audience},
			},
			secret: "reporting-job-secret",
		},
		{
			Client: client.Client{
				ID:         "billing-bot",
				Tenant:     TenantAcme,
				GrantTypes: []string{client.GrantClientCredentials},
				Scopes:     []string{"invoice:read", "invoice:write"},
				Audiences:  []string{Audience},
			},
			secret: "billing-bot-secret",
		},
		{
			// Public: PKCE S256 required, loopback redirect on any port (RFC 8252).
			// No tenant: its users come from any tenant.
			Client: client.Client{
				ID:            "invoice-web",
				Public:        true,
				GrantTypes:    []string{client.GrantAuthorizationCode, client.GrantRefreshToken},
				ResponseTypes: []string{"code"},
				// support:write: customers open support tickets.
				Scopes:       []string{"openid", "profile", "offline_access", "invoice:read", "invoice:write", "invoice:approve", "support:write"},
				Audiences:    []string{Audience},
				RedirectURIs: []string{"http://127.0.0.1/callback"},
			},
		},
		{
			Client: client.Client{
				// No tenant, as in DESIGN.md: the console serves agents of
				// any tenant; its tokens carry the user's tenant.
				ID:            "support-console",
				GrantTypes:    []string{client.GrantAuthorizationCode, client.GrantRefreshToken, client.GrantTokenExchange},
				ResponseTypes: []string{"code"},
				Scopes:        []string{"openid", "support:read", "support:impersonate", "invoice:read"},
				Audiences:     []string{Audience},
				RedirectURIs:  []string{"http://127.0.0.1/callback"},
			},
			secret: "support-console-secret",
		},
		{
			// The support export job: by token exchange (delegation) it
			// obtains tokens that say "support-export acting for user X".
			Client: client.Client{
				ID:         "support-export",
				Tenant:     TenantAcme,
				GrantTypes: []string{client.GrantClientCredentials, client.GrantTokenExchange},
				Scopes:     []string{"invoice:read"},
				Audiences:  []string{Audience},
			},
			secret: "support-export-secret",
		},
		{
			// The edge gateway: it only reads the revocation feed.
			Client: client.Client{
				ID:          "gateway",
				Scopes:      []string{"revocations:read"},
				DisplayName: "Gatehouse gateway",
			},
			secret: "gateway-secret",
		},
		{
			// Operators' tooling: lists and rotates signing keys through
			// the admin API.
			Client: client.Client{
				ID:          "issuer-admin",
				Scopes:      []string{"keys:admin"},
				DisplayName: "Issuer administration",
			},
			secret: "issuer-admin-secret",
		},
		{
			// Policy operators' tooling (the gatehouse CLI): pushes policy
			// bundles and drives rollouts through the PDP's
			// PolicyAdminService. Its tokens are for the PDP only.
			Client: client.Client{
				ID:          "policy-admin",
				Tenant:      TenantPlatform,
				GrantTypes:  []string{client.GrantClientCredentials},
				Scopes:      []string{"policy:admin"},
				Audiences:   []string{PDPAudience},
				DisplayName: "Policy administration",
			},
			secret: "policy-admin-secret",
		},
	}
}

// Clients returns the demo clients with their secrets hashed by hasher.
func Clients(ctx context.Context, hasher fosite.Hasher) ([]*client.Client, error) {
	specs := clientSpecs()
	out := make([]*client.Client, 0, len(specs))
	for _, s := range specs {
		c := s.Clone()
		if s.secret != "" {
			hash, err := hasher.Hash(ctx, []byte(s.secret))
			if err != nil {
				return nil, fmt.Errorf("demoseed: hash secret of %s: %w", c.ID, err)
			}
			c.SecretHash = hash
		}
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("demoseed: %w", err)
		}
		out = append(out, c)
	}
	return out, nil
}

// User is a demo end user; SeedUsers stores them (password hashed) for the
// login pages.
type User struct {
	// Username is the login name.
	Username string
	// Tenant is the user's tenant.
	Tenant string
	// Roles are the user's roles in the tenant.
	Roles []string
	// Password is the demo password (demo only; stores must hash it).
	Password string
	// TOTPSecret is the base32 TOTP secret, empty when the user has no MFA.
	TOTPSecret string
}

// Users returns the demo users of DESIGN.md.
func Users() []User {
	return []User{
		{Username: "alice", Tenant: TenantAcme, Roles: []string{"billing_approver"}, Password: "alice-demo-password", TOTPSecret: "JBSWY3DPEHPK3PXPALICE234"},
		{Username: "bob", Tenant: TenantAcme, Roles: []string{"billing_viewer"}, Password: "bob-demo-password"},
		{Username: "carol", Tenant: TenantGlobex, Roles: []string{"billing_approver"}, Password: "carol-demo-password", TOTPSecret: "JBSWY3DPEHPK3PXPCAROL234"},
		{Username: "sam", Tenant: TenantAcme, Roles: []string{"support_agent"}, Password: "sam-demo-password", TOTPSecret: "JBSWY3DPEHPK3PXPSAM23456"},
	}
}
