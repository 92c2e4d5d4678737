package demoseed_test

import (
	"slices"
	"testing"

	"github.com/gatehouse/gatehouse/services/issuer/internal/client"
	"github.com/gatehouse/gatehouse/services/issuer/internal/clientsecret"
	"github.com/gatehouse/gatehouse/services/issuer/internal/demoseed"
)

// TestClientsMatchDesign pins the demo clients to DESIGN.md: tutorials and
// e2e suites depend on them.
func TestClientsMatchDesign(t *testing.T) {
	t.Parallel()
	hasher, err := clientsecret.NewHasher(clientsecret.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	clients, err := demoseed.Clients(t.Context(), hasher)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		id, tenant, secret string
		public             bool
		grants, scopes     []string
		redirects          []string
		noAudience         bool
		audience           string
	}{
		{id: "reporting-job", tenant: "acme", secret: "reporting-job-secret", grants: []string{"client_credentials"}, scopes: []string{"invoice:read"}},
		{id: "billing-bot", tenant: "acme", secret: "billing-bot-secret", grants: []string{"client_credentials"}, scopes: []string{"invoice:read", "invoice:write"}},
		{id: "invoice-web", public: true, grants: []string{"authorization_code", "refresh_token"},
			scopes: []string{"openid", "profile", "offline_access", "invoice:read", "invoice:write", "invoice:approve", "support:write"}, redirects: []string{"http://127.0.0.1/callback"}},
		{id: "support-console", tenant: "", secret: "support-console-secret",
			grants:    []string{"authorization_code", "refresh_token", client.GrantTokenExchange},
			scopes:    []string{"openid", "support:read", "support:impersonate", "invoice:read"},
			redirects: []string{"http://127.0.0.1/callback"}},
		{id: "support-export", tenant: "acme", secret: "support-export-secret",
			grants: []string{"client_credentials", client.GrantTokenExchange}, scopes: []string{"invoice:read"}},
		{id: "gateway", secret: "gateway-secret", scopes: []string{"revocations:read"}, noAudience: true},
		{id: "issuer-admin", secret: "issuer-admin-secret", scopes: []string{"keys:admin"}, noAudience: true},
		{id: "policy-admin", tenant: "gatehouse", secret: "policy-admin-secret", grants: []string{"client_credentials"},
			scopes: []string{"policy:admin"}, audience: demoseed.PDPAudience},
	}
	if len(clients) != len(want) {
		t.Fatalf("%d demo clients, want %d", len(clients), len(want))
	}
	for i, w := range want {
		c := clients[i]
		if w.audience == "" {
			w.audience = demoseed.Audience
		}
		t.Run(w.id, func(t *testing.T) {
			t.Parallel()
			if c.ID != w.id || c.Tenant != w.tenant || c.Public != w.public ||
				!slices.Equal(c.GrantTypes, w.grants) || !slices.Equal(c.Scopes, w.scopes) ||
				!slices.Equal(c.RedirectURIs, w.redirects) || (w.noAudience != (len(c.Audiences) == 0)) ||
				(!w.noAudience && !slices.Equal(c.Audiences, []string{w.audience})) {
				t.Fatalf("client = %+v", c)
			}
			if w.public {
				if len(c.SecretHash) != 0 {
					t.Fatal("public client has a secret hash")
				}
				return
			}
			if string(c.SecretHash) == w.secret {
				t.Fatal("secret stored in clear")
			}
			if err := hasher.Compare(t.Context(), c.SecretHash, []byte(w.secret)); err != nil {
				t.Fatalf("demo secret does not verify: %v", err)
			}
		})
	}
}

func TestUsersMatchDesign(t *testing.T) {
	t.Parallel()
	want := []demoseed.User{
		{Username: "alice", Tenant: "acme", Roles: []string{"billing_approver"}, Password: "alice-demo-password", TOTPSecret: "JBSWY3DPEHPK3PXPALICE234"},
		{Username: "bob", Tenant: "acme", Roles: []string{"billing_viewer"}, Password: "bob-demo-password"},
		{Username: "carol", Tenant: "globex", Roles: []string{"billing_approver"}, Password: "carol-demo-password", TOTPSecret: "JBSWY3DPEHPK3PXPCAROL234"},
		{Username: "sam", Tenant: "acme", Roles: []string{"support_agent"}, Password: "sam-demo-password", TOTPSecret: "JBSWY3DPEHPK3PXPSAM23456"},
	}
	got := demoseed.Users()
	if !slices.EqualFunc(got, want, func(a, b demoseed.User) bool {
		return a.Username == b.Username && a.Tenant == b.Tenant && slices.Equal(a.Roles, b.Roles) &&
			a.Password == b.Password && a.TOTPSecret == b.TOTPSecret
	}) {
		t.Fatalf("users = %+v", got)
	}
}
