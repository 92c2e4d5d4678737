package flows

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/libs/enforce/reason"
)

// gatewayRoutes are every procedure the gateway routes, with a body each
// accepts; a revoked token must be refused on all of them.
var gatewayRoutes = []struct{ procedure, body string }{
	{"/gatehouse.invoice.v1.InvoiceService/ListInvoices", `{}`},
	{"/gatehouse.invoice.v1.InvoiceService/GetInvoice", `{"id":"inv_demo_acme_1"}`},
	{"/gatehouse.invoice.v1.InvoiceService/CreateInvoice", `{"customer":"Revoked Ltd","amountCents":"100","currency":"EUR"}`},
	{"/gatehouse.invoice.v1.InvoiceService/ApproveInvoice", `{"id":"inv_demo_acme_1"}`},
	{"/gatehouse.support.v1.SupportService/OpenTicket", `{"summary":"revoked"}`},
	{"/gatehouse.support.v1.SupportService/ListTickets", `{}`},
	{"/gatehouse.support.v1.SupportService/CloseTicket", `{"id":"tkt_demo_acme_1"}`},
	{"/gatehouse.support.v1.SupportService/StartImpersonation", `{"ticketId":"tkt_demo_acme_1"}`},
	{"/gatehouse.support.v1.SupportService/EndImpersonation", `{"sessionId":"x"}`},
	{"/gatehouse.support.v1.SupportService/GetCustomerOverview", `{"sessionId":"x"}`},
	{"/gatehouse.support.v1.SupportService/ExportInvoices", `{}`},
}

// TestRevokedTokenIsRefusedAtEveryRoute: billing-bot revokes its own token
// at the issuer (RFC 7009); within a second the gateway, following the
// revocation feed, refuses it on every route with 401 token_revoked, while
// a fresh token of the same client keeps working.
func TestRevokedTokenIsRefusedAtEveryRoute(t *testing.T) {
	// Precondition, not the measurement: the feed is flowing. A test before
	// this one restarts Postgres, and the issuer's feed resumes only once
	// it has reconnected; a first revocation must get through, however
	// long that takes (30 s at most), before one is timed.
	canary := token(t, "billing-bot", "billing-bot-secret", "invoice:read")
	revoke(t, canary)
	if took, ok := refusedWithin(t, canary, 30*time.Second); !ok {
		t.Fatalf("a revoked token was still accepted %s after its revocation: the revocation feed is not flowing", took)
	}

	revoked := token(t, "billing-bot", "billing-bot-secret", "invoice:read", "invoice:write")
	fresh := token(t, "billing-bot", "billing-bot-secret", "invoice:read", "invoice:write")
	if resp, _ := post(t, listProcedure, revoked, "{}"); resp.StatusCode != http.StatusOK {
		t.Fatalf("before revocation: %d", resp.StatusCode)
	}
	revoke(t, revoked)
	// The feed takes a moment; the issue allows one second.
	if took, ok := refusedWithin(t, revoked, time.Second); !ok {
		t.Fatalf("revoked token still accepted %s after the revocation", took)
	}
	for _, r := range gatewayRoutes {
		t.Run(r.procedure[strings.LastIndex(r.procedure, "/")+1:], func(t *testing.T) {
			resp, ce := post(t, r.procedure, revoked, r.body)
			if resp.StatusCode != http.StatusUnauthorized || ce.Code != "unauthenticated" {
				t.Fatalf("got %d %q, want 401 unauthenticated", resp.StatusCode, ce.Code)
			}
			if got := resp.Header.Get("WWW-Authenticate"); !strings.Contains(got, `error="invalid_token"`) {
				t.Errorf("WWW-Authenticate = %q", got)
			}
			if got, _ := errorInfo(t, ce); got != reason.TokenRevoked {
				t.Errorf("reason %q, want token_revoked", got)
			}
		})
	}
	if resp, _ := post(t, listProcedure, fresh, "{}"); resp.StatusCode != http.StatusOK {
		t.Errorf("another token of the same client: %d, want 200", resp.StatusCode)
	}
}

// TestForgedIdentityHeadersAreIgnored: identity headers are the gateway's
// alone. A client naming another subject and tenant still acts as itself:
// it sees its own tenant's invoice and cannot reach another tenant's.
func TestForgedIdentityHeadersAreIgnored(t *testing.T) {
	tok := token(t, "reporting-job", "reporting-job-secret", "invoice:read")
	for _, forged := range []map[string]string{
		{"X-Gatehouse-Subject": "alice", "X-Gatehouse-Tenant": "globex", "X-Gatehouse-Client-Id": "invoice-web"},
		{"X-Gatehouse-Tenant": "globex", "Connection": "X-Gatehouse-Tenant"},
	} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, gh.GatewayURL+"/gatehouse.invoice.v1.InvoiceService/GetInvoice",
			strings.NewReader(`{"id":"inv_demo_acme_1"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok)
		for k, v := range forged {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("with forged headers %v: %d, want 200 as reporting-job of acme", forged, resp.StatusCode)
		}
	}
}

// revoke revokes billing-bot's token at the issuer (RFC 7009).
func revoke(t *testing.T, tok string) {
	t.Helper()
	form := url.Values{"token": {tok}, "token_type_hint": {"access_token"}}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, gh.IssuerURL+"/oauth2/revoke", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("billing-bot", "billing-bot-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %d", resp.StatusCode)
	}
}

// refusedWithin polls ListInvoices with tok until the gateway refuses it
// with 401 token_revoked, for at most limit after now; it returns how long
// that took and whether it happened in time.
func refusedWithin(t *testing.T, tok string, limit time.Duration) (time.Duration, bool) {
	t.Helper()
	start := time.Now()
	for {
		resp, ce := post(t, listProcedure, tok, "{}")
		if resp.StatusCode == http.StatusUnauthorized {
			if r, _ := errorInfo(t, ce); r != reason.TokenRevoked {
				t.Fatalf("reason %q, want token_revoked", r)
			}
			return time.Since(start), true
		}
		if time.Since(start) > limit {
			return time.Since(start), false
		}
		time.Sleep(25 * time.Millisecond)
	}
}
