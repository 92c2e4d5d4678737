package app_test

import (
	"net/url"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"

	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	supportv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/support/v1"
	"github.com/gatehouse/gatehouse/services/support/app"
	"github.com/gatehouse/gatehouse/services/support/internal/supporttest"
)

func TestExportInvoices(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		invoices  int
		want      int
		wantPages []int32 // page sizes asked
	}{
		{name: "one page", invoices: 3, want: 3, wantPages: []int32{100}},
		{name: "several pages", invoices: 250, want: 250, wantPages: []int32{100, 100, 100}},
		{name: "capped at 1000", invoices: 1500, want: 1000, wantPages: []int32{100, 100, 100, 100, 100, 100, 100, 100, 100, 100}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.inv.Seed("acme", tc.invoices)
			hdr, bobToken := h.login(bob)
			resp, err := h.client.ExportInvoices(t.Context(), as(hdr, &supportv1.ExportInvoicesRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			if resp.Msg.GetActor() != "support-export" || len(resp.Msg.GetInvoices()) != tc.want {
				t.Fatalf("export by %q of %d invoices, want support-export and %d", resp.Msg.GetActor(), len(resp.Msg.GetInvoices()), tc.want)
			}
			for i, inv := range resp.Msg.GetInvoices() {
				if inv.GetTenant() != "acme" || inv.GetCustomer() == "" || inv.GetAmountCents() != int64(i+1)*100 {
					t.Fatalf("invoice %d: %v, want the invoice service's, in order", i, inv)
				}
			}
			assertChecks(t, h.pdp.Received(), wantCheck(bob, "support:export", &authzv1.Resource{Type: "support", Tenant: "acme"}))

			// support-export's own token: client credentials.
			cc := h.iss.ClientCredentials()
			if len(cc) != 1 || cc[0].ClientID != "support-export" ||
				!cmp.Equal(cc[0].Form, url.Values{"grant_type": {"client_credentials"}, "scope": {"invoice:read"}}) {
				t.Fatalf("client credentials requests %+v, want one by support-export for invoice:read", cc)
			}
			// The delegation: bob's token as subject, support-export's as actor.
			ex := h.iss.Exchanges()
			if len(ex) != 1 || ex[0].ClientID != "support-export" {
				t.Fatalf("exchanges %+v, want one by support-export", ex)
			}
			actor, err := h.iss.Verify(t.Context(), ex[0].Form.Get("actor_token"))
			if err != nil || actor.Subject != "support-export" || actor.ClientID != "support-export" {
				t.Fatalf("actor_token %+v (%v), want support-export's own token", actor, err)
			}
			want := url.Values{
				"grant_type":           {supporttest.GrantTypeTokenExchange},
				"subject_token":        {bobToken},
				"subject_token_type":   {supporttest.TokenTypeAccessToken},
				"actor_token":          {ex[0].Form.Get("actor_token")},
				"actor_token_type":     {supporttest.TokenTypeAccessToken},
				"requested_token_type": {supporttest.TokenTypeAccessToken},
				"scope":                {"invoice:read"},
				"requested_lifetime":   {"60"},
			}
			if diff := cmp.Diff(want, ex[0].Form); diff != "" {
				t.Fatalf("exchange form (-want +got):\n%s", diff)
			}

			// The invoice service saw bob, acted for by support-export.
			calls := h.inv.Calls()
			var pages []int32
			for _, c := range calls {
				pages = append(pages, c.PageSize)
				if c.Claims.Subject != "bob" || c.Claims.Tenant != "acme" || c.Claims.ClientID != "support-export" ||
					c.Claims.Actor == nil || c.Claims.Actor.Subject != "support-export" || c.Claims.Actor.ClientID != "support-export" ||
					c.RequestID != testRequestID {
					t.Fatalf("invoice call %+v (act %+v), want bob acted for by support-export", c, c.Claims.Actor)
				}
			}
			if !cmp.Equal(pages, tc.wantPages) {
				t.Fatalf("page sizes asked %v, want %v", pages, tc.wantPages)
			}
		})
	}
}

func TestExportInvoicesRejects(t *testing.T) {
	t.Parallel()
	noInvoiceRead := bob
	noInvoiceRead.Scope = "support:write"
	noRole := supporttest.Principal{Sub: "dave", Tenant: "acme", ClientID: "invoice-web", Scope: "invoice:read"}
	tests := []struct {
		name     string
		p        supporttest.Principal
		refusal  *supporttest.Refusal
		code     connect.Code
		reason   string
		exchange bool // whether the issuer is asked
	}{
		{name: "no invoice:read scope", p: noInvoiceRead, code: connect.CodePermissionDenied, reason: reason.InsufficientScope},
		{name: "no role that reads invoices", p: noRole, code: connect.CodePermissionDenied, reason: reason.RoleNotPermitted},
		{name: "the delegation is refused", p: carol, refusal: &supporttest.Refusal{Status: 400, Error: "invalid_grant", ReasonCode: reason.TenantMismatch},
			code: connect.CodePermissionDenied, reason: reason.TenantMismatch, exchange: true},
		{name: "the issuer is down", p: bob, refusal: &supporttest.Refusal{Status: 503, Error: "temporarily_unavailable"},
			code: connect.CodeUnavailable, reason: reason.IssuerUnavailable, exchange: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.iss.Refuse(tc.refusal)
			_, err := h.client.ExportInvoices(t.Context(), as(h.headers(tc.p), &supportv1.ExportInvoicesRequest{}))
			assertError(t, err, tc.code, tc.reason)
			if got := len(h.iss.Exchanges()) > 0; got != tc.exchange {
				t.Fatalf("issuer asked: %v, want %v", got, tc.exchange)
			}
			if got := h.inv.Calls(); len(got) != 0 {
				t.Fatalf("the invoice service was called %d times", len(got))
			}
		})
	}
	t.Run("the export job's own credentials are refused", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, func(c *app.Config) { c.ExportClientSecret = "not-the-secret" })
		_, err := h.client.ExportInvoices(t.Context(), as(h.headers(bob), &supportv1.ExportInvoicesRequest{}))
		assertError(t, err, connect.CodeUnavailable, reason.IssuerUnavailable)
		if got := h.iss.Exchanges(); len(got) != 0 {
			t.Fatalf("%d exchanges without an actor token", len(got))
		}
	})
}
