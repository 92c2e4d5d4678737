package app_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/libs/accesstoken/accesstokentest"
	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1/invoicev1connect"
	"github.com/gatehouse/gatehouse/services/invoice/app"
)

func intAttr(v int64) *authzv1.AttributeValue {
	return &authzv1.AttributeValue{Kind: &authzv1.AttributeValue_IntValue{IntValue: v}}
}

func strAttr(v string) *authzv1.AttributeValue {
	return &authzv1.AttributeValue{Kind: &authzv1.AttributeValue_StringValue{StringValue: v}}
}

// wantCheck is the CheckRequest the service should send for p (context aside).
func wantCheck(p principal, action string, res *authzv1.Resource) *authzv1.CheckRequest {
	req := &authzv1.CheckRequest{
		Principal: &authzv1.Principal{Subject: p.sub, Tenant: p.tenant, Roles: p.roles, Scopes: strings.Fields(p.scope), ClientId: p.clientID, Acr: p.acr},
		Action:    action,
		Resource:  res,
	}
	if !p.authTime.IsZero() {
		req.Principal.AuthTime = timestamppb.New(p.authTime.Truncate(time.Second))
	}
	return req
}

// assertChecks compares what the PDP received with want, and checks every
// request's context: the gateway's request id, the peer's address, now.
func assertChecks(t *testing.T, got []*authzv1.CheckRequest, want ...*authzv1.CheckRequest) {
	t.Helper()
	if diff := cmp.Diff(want, got, protocmp.Transform(), protocmp.IgnoreFields(&authzv1.CheckRequest{}, "context")); diff != "" {
		t.Fatalf("PDP requests (-want +got):\n%s", diff)
	}
	for _, r := range got {
		c := r.GetContext()
		if c.GetRequestId() != testRequestID || c.GetSourceIp() != "127.0.0.1" || time.Since(c.GetTime().AsTime()).Abs() > time.Minute {
			t.Fatalf("request context %v, want request_id %q, source_ip 127.0.0.1, time now", c, testRequestID)
		}
	}
}

func TestReportingJobListsAcmeInvoices(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	resp, err := h.client.ListInvoices(t.Context(), as(h.headers(reportingJob), &invoicev1.ListInvoicesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	want := []*invoicev1.Invoice{
		{Id: "inv_demo_acme_1", Tenant: "acme", Customer: "Initech", AmountCents: 120_000, Currency: "EUR"},
		{Id: "inv_demo_acme_2", Tenant: "acme", Customer: "Umbrella Corp", AmountCents: 2_500_000, Currency: "EUR"},
		{Id: "inv_demo_acme_3", Tenant: "acme", Customer: "Hooli", AmountCents: 48_050, Currency: "EUR"},
	}
	if diff := cmp.Diff(want, resp.Msg.GetInvoices(), protocmp.Transform(),
		protocmp.IgnoreFields(&invoicev1.Invoice{}, "status", "created_by", "create_time")); diff != "" {
		t.Fatalf("invoices (-want +got):\n%s", diff)
	}
	if resp.Msg.GetNextPageToken() != "" {
		t.Fatalf("next_page_token %q on the only page", resp.Msg.GetNextPageToken())
	}
	assertChecks(t, h.pdp.received(),
		wantCheck(reportingJob, "invoice:read", &authzv1.Resource{Type: "invoice", Tenant: "acme"}),
		wantCheck(reportingJob, "invoice:read", invoiceResource("inv_demo_acme_1", "acme", 120_000, "billing-bot")),
		wantCheck(reportingJob, "invoice:read", invoiceResource("inv_demo_acme_2", "acme", 2_500_000, "billing-bot")),
		wantCheck(reportingJob, "invoice:read", invoiceResource("inv_demo_acme_3", "acme", 48_050, "billing-bot")))
}

// invoiceResource is the resource a per-invoice check names.
func invoiceResource(id, tenant string, amount int64, createdBy string) *authzv1.Resource {
	return &authzv1.Resource{Type: "invoice", Id: id, Tenant: tenant, Attributes: map[string]*authzv1.AttributeValue{
		"amount_cents": {Kind: &authzv1.AttributeValue_IntValue{IntValue: amount}},
		"created_by":   {Kind: &authzv1.AttributeValue_StringValue{StringValue: createdBy}},
		"status":       {Kind: &authzv1.AttributeValue_StringValue{StringValue: "draft"}},
	}}
}

// TestListLeavesOutWhatThePDPDenies: a per-invoice denial (BatchCheck)
// removes that invoice from the page and nothing else.
func TestListLeavesOutWhatThePDPDenies(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.pdp.hide("inv_demo_acme_2")
	if got := h.listIDs(reportingJob); !slices.Equal(got, []string{"inv_demo_acme_1", "inv_demo_acme_3"}) {
		t.Fatalf("lists %v, want the invoice the PDP denies left out", got)
	}
}

func TestGetAsksPDPAboutTheInvoice(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	resp, err := h.client.GetInvoice(t.Context(), as(h.headers(reportingJob), &invoicev1.GetInvoiceRequest{Id: "inv_demo_acme_2"}))
	if err != nil {
		t.Fatal(err)
	}
	inv := resp.Msg.GetInvoice()
	if inv.GetCustomer() != "Umbrella Corp" || inv.GetAmountCents() != 2_500_000 || inv.GetStatus() != invoicev1.InvoiceStatus_INVOICE_STATUS_DRAFT ||
		inv.GetCreatedBy() != "billing-bot" || !inv.GetCreateTime().AsTime().Equal(time.Date(2026, 1, 6, 9, 0, 0, 0, time.UTC)) {
		t.Fatalf("GetInvoice = %v", inv)
	}
	assertChecks(t, h.pdp.received(), wantCheck(reportingJob, "invoice:read", &authzv1.Resource{
		Type: "invoice", Id: "inv_demo_acme_2", Tenant: "acme",
		Attributes: map[string]*authzv1.AttributeValue{
			"amount_cents": intAttr(2_500_000), "created_by": strAttr("billing-bot"), "status": strAttr("draft"),
		},
	}))
}

func TestOtherTenantCannotSeeAcmeInvoices(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	t.Run("get", func(t *testing.T) {
		_, err := h.client.GetInvoice(t.Context(), as(h.headers(carol), &invoicev1.GetInvoiceRequest{Id: "inv_demo_acme_1"}))
		ce := assertError(t, err, connect.CodeNotFound, reason.ResourceNotFound)
		if strings.Contains(ce.Message(), "acme") || strings.Contains(ce.Message(), "inv_demo") {
			t.Fatalf("message %q leaks the resource", ce.Message())
		}
		// globex's decision is about globex's collection, never acme's invoice.
		assertChecks(t, h.pdp.received(), wantCheck(carol, "invoice:read", &authzv1.Resource{Type: "invoice", Tenant: "globex"}))
	})
	t.Run("get unknown id answers alike", func(t *testing.T) {
		_, err := h.client.GetInvoice(t.Context(), as(h.headers(carol), &invoicev1.GetInvoiceRequest{Id: "inv_never_existed"}))
		assertError(t, err, connect.CodeNotFound, reason.ResourceNotFound)
		h.pdp.received()
	})
	t.Run("list", func(t *testing.T) {
		if got := h.listIDs(carol); !slices.Equal(got, []string{"inv_demo_globex_1"}) {
			t.Fatalf("globex lists %v, want only its own invoice", got)
		}
		got := h.pdp.received()
		if len(got) != 2 || got[1].GetResource().GetId() != "inv_demo_globex_1" {
			t.Fatalf("PDP requests %v: want globex's collection, then its one invoice", got)
		}
		assertChecks(t, got[:1], wantCheck(carol, "invoice:read", &authzv1.Resource{Type: "invoice", Tenant: "globex"}))
	})
	t.Run("own invoice", func(t *testing.T) {
		resp, err := h.client.GetInvoice(t.Context(), as(h.headers(carol), &invoicev1.GetInvoiceRequest{Id: "inv_demo_globex_1"}))
		if err != nil || resp.Msg.GetInvoice().GetCustomer() != "Soylent" {
			t.Fatalf("carol Get own invoice = %v, %v", resp, err)
		}
	})
}

// TestCreateLandsInCallersTenant posts Connect JSON, as curl through the
// gateway would. The request has no tenant (or id, or creator) field; a
// client that adds them anyway is ignored: the invoice lands in the token's
// tenant.
func TestCreateLandsInCallersTenant(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	body := `{"customer":" Initech ","amountCents":"12345","currency":"EUR","tenant":"globex","id":"inv_chosen","createdBy":"mallory"}`
	resp := h.postJSON("CreateInvoice", body, h.headers(billingBot))
	if resp.status != http.StatusOK || !strings.HasPrefix(resp.header.Get("Content-Type"), "application/json") {
		t.Fatalf("status %d %s: %s", resp.status, resp.header.Get("Content-Type"), resp.body)
	}
	var created struct {
		Invoice struct {
			ID, Tenant, Customer, AmountCents, Currency, Status, CreatedBy, CreateTime string
		}
	}
	if err := json.Unmarshal(resp.body, &created); err != nil {
		t.Fatal(err)
	}
	inv := created.Invoice
	if inv.Tenant != "acme" || inv.CreatedBy != "billing-bot" || inv.Customer != "Initech" || inv.AmountCents != "12345" ||
		inv.Status != "INVOICE_STATUS_DRAFT" || !regexp.MustCompile(`^inv_[A-Z2-7]{26}$`).MatchString(inv.ID) {
		t.Fatalf("created %+v; want a fresh id in acme, created by billing-bot", inv)
	}
	assertChecks(t, h.pdp.received(), wantCheck(billingBot, "invoice:write", &authzv1.Resource{
		Type: "invoice", Tenant: "acme",
		Attributes: map[string]*authzv1.AttributeValue{"amount_cents": intAttr(12345), "currency": strAttr("EUR")},
	}))

	if got := h.listIDs(reportingJob); !slices.Contains(got, inv.ID) || len(got) != 4 {
		t.Fatalf("acme lists %v, want the demo invoices and %s", got, inv.ID)
	}
	if got := h.listIDs(carol); slices.Contains(got, inv.ID) || slices.Contains(got, "inv_chosen") {
		t.Fatalf("globex lists %v; the invoice must not land there", got)
	}
}

func TestPDPDenials(t *testing.T) {
	t.Parallel()
	createBody := `{"customer":"Initech","amountCents":"100","currency":"EUR"}`
	tests := []struct {
		name      string
		action    string
		decision  *authzv1.CheckResponse
		procedure string
		body      string
		reason    string
		wwwAuth   string // expected WWW-Authenticate; "" = none
	}{
		{name: "role not permitted on get", action: "invoice:read", decision: deny(reason.RoleNotPermitted),
			procedure: "GetInvoice", body: `{"id":"inv_demo_acme_1"}`, reason: reason.RoleNotPermitted},
		{name: "role not permitted on list", action: "invoice:read", decision: deny(reason.RoleNotPermitted),
			procedure: "ListInvoices", body: `{}`, reason: reason.RoleNotPermitted},
		{name: "tenant mismatch on create", action: "invoice:write", decision: deny(reason.TenantMismatch),
			procedure: "CreateInvoice", body: createBody, reason: reason.TenantMismatch},
		{name: "insufficient scope on create", action: "invoice:write", decision: deny(reason.InsufficientScope, "invoice:write"),
			procedure: "CreateInvoice", body: createBody, reason: reason.InsufficientScope,
			wwwAuth: `Bearer realm="gatehouse", error="insufficient_scope", scope="invoice:write"`},
		{name: "not applicable", action: "invoice:write", decision: &authzv1.CheckResponse{
			Decision: authzv1.Decision_DECISION_NOT_APPLICABLE, ReasonCode: reason.NoApplicablePolicy},
			procedure: "CreateInvoice", body: createBody, reason: reason.NoApplicablePolicy},
		{name: "indeterminate", action: "invoice:read", decision: &authzv1.CheckResponse{
			Decision: authzv1.Decision_DECISION_INDETERMINATE, ReasonCode: reason.MissingAttribute},
			procedure: "GetInvoice", body: `{"id":"inv_demo_acme_1"}`, reason: reason.MissingAttribute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.pdp.set(tc.action, "acme", tc.decision)
			resp := h.postJSON(tc.procedure, tc.body, h.headers(billingBot))
			resp.assertEdgeError(t, http.StatusForbidden, connect.CodePermissionDenied, tc.reason)
			if got := resp.header.Get("WWW-Authenticate"); got != tc.wwwAuth {
				t.Fatalf("WWW-Authenticate %q, want %q", got, tc.wwwAuth)
			}
			if strings.Contains(string(resp.body), "Initech") || strings.Contains(string(resp.body), "amountCents") {
				t.Fatalf("denial carries invoice data: %s", resp.body)
			}
			if tc.action == "invoice:write" {
				if got := h.listIDs(reportingJob); !slices.Equal(got, acmeDemoIDs) {
					t.Fatalf("after a denied create acme lists %v, want only the demo invoices", got)
				}
			}
		})
	}
}

func TestPDPUnavailableDenies(t *testing.T) {
	t.Parallel()
	calls := []struct {
		procedure, body string
	}{
		{procedure: "CreateInvoice", body: `{"customer":"Initech","amountCents":"100","currency":"EUR"}`},
		{procedure: "GetInvoice", body: `{"id":"inv_demo_acme_1"}`},
		{procedure: "ListInvoices", body: `{}`},
	}
	tests := []struct {
		name      string
		timeout   time.Duration
		breakPDP  func(*testPDP)
		repairPDP func(*testPDP)
	}{
		{name: "connection dropped", timeout: 5 * time.Second,
			breakPDP: func(p *testPDP) { p.setDown(true) }, repairPDP: func(p *testPDP) { p.setDown(false) }},
		{name: "slower than the timeout", timeout: time.Second,
			breakPDP: func(p *testPDP) { p.setDelay(10 * time.Second) }, repairPDP: func(p *testPDP) { p.setDelay(0) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *app.Config) { c.PDPTimeout = tc.timeout })
			tc.breakPDP(h.pdp)
			for _, call := range calls {
				start := time.Now()
				resp := h.postJSON(call.procedure, call.body, h.headers(billingBot))
				resp.assertEdgeError(t, http.StatusServiceUnavailable, connect.CodeUnavailable, reason.PDPUnavailable)
				if strings.Contains(string(resp.body), "invoice\"") || strings.Contains(string(resp.body), "Initech") {
					t.Fatalf("%s: denial carries data: %s", call.procedure, resp.body)
				}
				if elapsed := time.Since(start); elapsed > tc.timeout+3*time.Second {
					t.Fatalf("%s: took %v with a %v PDP timeout", call.procedure, elapsed, tc.timeout)
				}
			}
			tc.repairPDP(h.pdp)
			if got := h.listIDs(reportingJob); !slices.Equal(got, acmeDemoIDs) {
				t.Fatalf("after the outage acme lists %v, want only the demo invoices (nothing created)", got)
			}
		})
	}
	t.Run("no PDP listening", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, func(c *app.Config) { c.PDPURL = "http://127.0.0.1:1" })
		_, err := h.client.GetInvoice(t.Context(), as(h.headers(reportingJob), &invoicev1.GetInvoiceRequest{Id: "inv_demo_acme_1"}))
		assertError(t, err, connect.CodeUnavailable, reason.PDPUnavailable)
	})
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, kid := h.iss.SigningKey()
	bearer := func(tok string) string { return "Bearer " + tok }
	mint := func(overrides map[string]any) string {
		claims := map[string]any{"sub": billingBot.sub, "tenant": billingBot.tenant, "client_id": billingBot.clientID, "scope": billingBot.scope}
		for k, v := range overrides {
			claims[k] = v
		}
		return h.iss.Mint(t, claims, nil)
	}
	forgedClaims := h.iss.Claims()
	forgedClaims["sub"], forgedClaims["client_id"], forgedClaims["scope"] = "billing-bot", "billing-bot", "invoice:read invoice:write"

	tests := []struct {
		name   string
		edit   func(http.Header)
		status int
		code   connect.Code
		reason string
	}{
		{name: "missing token", edit: func(hd http.Header) { hd.Del("Authorization") },
			status: http.StatusUnauthorized, code: connect.CodeUnauthenticated, reason: reason.MissingToken},
		{name: "basic scheme", edit: func(hd http.Header) { hd.Set("Authorization", "Basic YmlsbGluZy1ib3Q6eA==") },
			status: http.StatusUnauthorized, code: connect.CodeUnauthenticated, reason: reason.MissingToken},
		{name: "two authorization headers", edit: func(hd http.Header) { hd.Add("Authorization", bearer(mint(nil))) },
			status: http.StatusUnauthorized, code: connect.CodeUnauthenticated, reason: reason.MissingToken},
		{name: "garbage token", edit: func(hd http.Header) { hd.Set("Authorization", "Bearer not.a.jwt") },
			status: http.StatusUnauthorized, code: connect.CodeUnauthenticated, reason: reason.InvalidToken},
		{name: "forged signature", edit: func(hd http.Header) {
			hd.Set("Authorization", bearer(accesstokentest.Sign(t, jose.ES256, otherKey, kid, forgedClaims, nil)))
		}, status: http.StatusUnauthorized, code: connect.CodeUnauthenticated, reason: reason.InvalidToken},
		{name: "HMAC with a guessable key", edit: func(hd http.Header) {
			hd.Set("Authorization", bearer(accesstokentest.Sign(t, jose.HS256, []byte("0123456789abcdef0123456789abcdef"), kid, forgedClaims, nil)))
		}, status: http.StatusUnauthorized, code: connect.CodeUnauthenticated, reason: reason.InvalidToken},
		{name: "expired", edit: func(hd http.Header) {
			hd.Set("Authorization", bearer(mint(map[string]any{"exp": time.Now().Add(-time.Hour).Unix(), "iat": time.Now().Add(-2 * time.Hour).Unix()})))
		}, status: http.StatusUnauthorized, code: connect.CodeUnauthenticated, reason: reason.InvalidToken},
		{name: "other audience", edit: func(hd http.Header) {
			hd.Set("Authorization", bearer(mint(map[string]any{"aud": []string{"someone-else"}})))
		}, status: http.StatusUnauthorized, code: connect.CodeUnauthenticated, reason: reason.InvalidToken},
		{name: "other issuer", edit: func(hd http.Header) {
			hd.Set("Authorization", bearer(mint(map[string]any{"iss": "http://evil.example"})))
		}, status: http.StatusUnauthorized, code: connect.CodeUnauthenticated, reason: reason.InvalidToken},
		{name: "tenant header disagrees", edit: func(hd http.Header) { hd.Set(enforce.HeaderTenant, "globex") },
			status: http.StatusForbidden, code: connect.CodePermissionDenied, reason: reason.IdentityMismatch},
		{name: "subject header disagrees", edit: func(hd http.Header) { hd.Set(enforce.HeaderSubject, "alice") },
			status: http.StatusForbidden, code: connect.CodePermissionDenied, reason: reason.IdentityMismatch},
		{name: "client header disagrees", edit: func(hd http.Header) { hd.Set(enforce.HeaderClientID, "reporting-job") },
			status: http.StatusForbidden, code: connect.CodePermissionDenied, reason: reason.IdentityMismatch},
		{name: "tenant header twice", edit: func(hd http.Header) { hd.Add(enforce.HeaderTenant, "globex") },
			status: http.StatusForbidden, code: connect.CodePermissionDenied, reason: reason.IdentityMismatch},
		{name: "identity headers missing", edit: func(hd http.Header) {
			for _, name := range enforce.IdentityHeaders() {
				hd.Del(name)
			}
		}, status: http.StatusForbidden, code: connect.CodePermissionDenied, reason: reason.IdentityMismatch},
		{name: "tenant header missing", edit: func(hd http.Header) { hd.Del(enforce.HeaderTenant) },
			status: http.StatusForbidden, code: connect.CodePermissionDenied, reason: reason.IdentityMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hdr := h.headers(billingBot)
			tc.edit(hdr)
			resp := h.postJSON("CreateInvoice", `{"customer":"Initech","amountCents":"100","currency":"EUR"}`, hdr)
			resp.assertEdgeError(t, tc.status, tc.code, tc.reason)
			wwwAuth := resp.header.Get("WWW-Authenticate")
			if tc.status == http.StatusUnauthorized && wwwAuth != `Bearer realm="gatehouse", error="invalid_token"` {
				t.Fatalf("WWW-Authenticate %q, want Bearer error=\"invalid_token\"", wwwAuth)
			}
			if got := h.pdp.received(); len(got) != 0 {
				t.Fatalf("the PDP was asked %d times for an unauthenticated request", len(got))
			}
		})
	}
	if got := h.listIDs(reportingJob); !slices.Equal(got, acmeDemoIDs) {
		t.Fatalf("acme lists %v, want only the demo invoices", got)
	}
}

func TestGatewayHeadersOptional(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *app.Config) { c.RequireGatewayHeaders = false })
	t.Run("absent headers are accepted", func(t *testing.T) {
		hdr := http.Header{"Authorization": {"Bearer " + h.token(reportingJob)}}
		if _, err := h.client.GetInvoice(t.Context(), as(hdr, &invoicev1.GetInvoiceRequest{Id: "inv_demo_acme_1"})); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("present headers must still match", func(t *testing.T) {
		hdr := h.headers(reportingJob)
		hdr.Set(enforce.HeaderTenant, "globex")
		_, err := h.client.GetInvoice(t.Context(), as(hdr, &invoicev1.GetInvoiceRequest{Id: "inv_demo_acme_1"}))
		assertError(t, err, connect.CodePermissionDenied, reason.IdentityMismatch)
	})
}

func TestCreateRejectsInvalidInput(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	tests := []struct {
		name string
		req  *invoicev1.CreateInvoiceRequest
	}{
		{name: "customer missing", req: &invoicev1.CreateInvoiceRequest{AmountCents: 100, Currency: "EUR"}},
		{name: "customer blank", req: &invoicev1.CreateInvoiceRequest{Customer: " \t ", AmountCents: 100, Currency: "EUR"}},
		{name: "customer too long", req: &invoicev1.CreateInvoiceRequest{Customer: strings.Repeat("x", 201), AmountCents: 100, Currency: "EUR"}},
		{name: "customer control character", req: &invoicev1.CreateInvoiceRequest{Customer: "Ini\x1btech", AmountCents: 100, Currency: "EUR"}},
		{name: "amount zero", req: &invoicev1.CreateInvoiceRequest{Customer: "Initech", Currency: "EUR"}},
		{name: "amount negative", req: &invoicev1.CreateInvoiceRequest{Customer: "Initech", AmountCents: -100, Currency: "EUR"}},
		{name: "amount too large", req: &invoicev1.CreateInvoiceRequest{Customer: "Initech", AmountCents: 1_000_000_000_001, Currency: "EUR"}},
		{name: "currency missing", req: &invoicev1.CreateInvoiceRequest{Customer: "Initech", AmountCents: 100}},
		{name: "currency lower case", req: &invoicev1.CreateInvoiceRequest{Customer: "Initech", AmountCents: 100, Currency: "eur"}},
		{name: "currency too long", req: &invoicev1.CreateInvoiceRequest{Customer: "Initech", AmountCents: 100, Currency: "EURO"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.client.CreateInvoice(t.Context(), as(h.headers(billingBot), tc.req))
			assertError(t, err, connect.CodeInvalidArgument, reason.InvalidRequest)
			if got := h.pdp.received(); len(got) != 0 {
				t.Fatalf("the PDP was asked about invalid input: %v", got)
			}
		})
	}
	if got := h.listIDs(reportingJob); !slices.Equal(got, acmeDemoIDs) {
		t.Fatalf("acme lists %v, want only the demo invoices (nothing stored)", got)
	}
	t.Run("oversized request", func(t *testing.T) {
		_, err := h.client.CreateInvoice(t.Context(), as(h.headers(billingBot),
			&invoicev1.CreateInvoiceRequest{Customer: strings.Repeat("x", 70<<10), AmountCents: 100, Currency: "EUR"}))
		var ce *connect.Error
		if !errors.As(err, &ce) || ce.Code() != connect.CodeResourceExhausted {
			t.Fatalf("70 KiB request: %v, want resource_exhausted", err)
		}
	})
	t.Run("get with a malformed id", func(t *testing.T) {
		_, err := h.client.GetInvoice(t.Context(), as(h.headers(reportingJob), &invoicev1.GetInvoiceRequest{Id: "../../etc/passwd"}))
		assertError(t, err, connect.CodeInvalidArgument, reason.InvalidRequest)
	})
}

func TestListPagination(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	list := func(size int32, token string) (*invoicev1.ListInvoicesResponse, error) {
		resp, err := h.client.ListInvoices(t.Context(), as(h.headers(reportingJob), &invoicev1.ListInvoicesRequest{PageSize: size, PageToken: token}))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	}
	t.Run("pages", func(t *testing.T) {
		first, err := list(2, "")
		if err != nil {
			t.Fatal(err)
		}
		second, err := list(2, first.GetNextPageToken())
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, inv := range append(first.GetInvoices(), second.GetInvoices()...) {
			got = append(got, inv.GetId())
		}
		if !slices.Equal(got, acmeDemoIDs) || first.GetNextPageToken() == "" || second.GetNextPageToken() != "" {
			t.Fatalf("pages %v (tokens %q, %q), want %v over two pages", got, first.GetNextPageToken(), second.GetNextPageToken(), acmeDemoIDs)
		}
	})
	t.Run("acme token is harmless for globex", func(t *testing.T) {
		first, err := list(1, "")
		if err != nil {
			t.Fatal(err)
		}
		resp, err := h.client.ListInvoices(t.Context(), as(h.headers(carol), &invoicev1.ListInvoicesRequest{PageToken: first.GetNextPageToken()}))
		if err != nil {
			t.Fatal(err)
		}
		for _, inv := range resp.Msg.GetInvoices() {
			if inv.GetTenant() != "globex" {
				t.Fatalf("globex listed %s of %s", inv.GetId(), inv.GetTenant())
			}
		}
	})
	bad := []struct {
		name  string
		size  int32
		token string
	}{
		{name: "negative page size", size: -1},
		{name: "token not base64", token: "%%%"},
		{name: "token of garbage", token: "aGVsbG8"},
		{name: "token with a bad id", token: "djEuMTAwMC4nOyBEUk9QIFRBQkxFIGludm9pY2VzOyAtLQ"},
		{name: "token far too long", token: strings.Repeat("A", 1000)},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := list(tc.size, tc.token)
			assertError(t, err, connect.CodeInvalidArgument, reason.InvalidRequest)
		})
	}
}

// TestGRPC runs calls over gRPC (HTTP/2 cleartext), as gRPC clients behind
// the gateway do; errors keep their code and ErrorInfo in the trailers.
func TestGRPC(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	client := invoicev1connect.NewInvoiceServiceClient(&http.Client{Transport: &http.Transport{Protocols: &protocols}}, h.url, connect.WithGRPC())

	resp, err := client.GetInvoice(t.Context(), as(h.headers(reportingJob), &invoicev1.GetInvoiceRequest{Id: "inv_demo_acme_3"}))
	if err != nil {
		t.Fatal(err)
	}
	if inv := resp.Msg.GetInvoice(); inv.GetCustomer() != "Hooli" || inv.GetAmountCents() != 48_050 || inv.GetTenant() != "acme" {
		t.Fatalf("GetInvoice over gRPC = %v", inv)
	}
	_, err = client.GetInvoice(t.Context(), as(h.headers(carol), &invoicev1.GetInvoiceRequest{Id: "inv_demo_acme_3"}))
	assertError(t, err, connect.CodeNotFound, reason.ResourceNotFound)

	h.pdp.set("invoice:write", "acme", deny(reason.InsufficientScope, "invoice:write"))
	_, err = client.CreateInvoice(t.Context(), as(h.headers(billingBot), &invoicev1.CreateInvoiceRequest{Customer: "Initech", AmountCents: 1, Currency: "EUR"}))
	// The reason travels in the ErrorInfo. WWW-Authenticate does not: gRPC
	// sends error metadata as HTTP/2 trailers, and net/http drops
	// authentication fields from trailers (RFC 9110 section 6.5.1).
	assertError(t, err, connect.CodePermissionDenied, reason.InsufficientScope)
	_, err = client.ListInvoices(t.Context(), as(http.Header{}, &invoicev1.ListInvoicesRequest{}))
	assertError(t, err, connect.CodeUnauthenticated, reason.MissingToken)
}

func TestRequestContextForThePDP(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	generated := regexp.MustCompile(`^[0-9a-f]{32}$`)
	tests := []struct {
		name   string
		header string
		keep   bool
	}{
		{name: "gateway id kept", header: "abc-DEF_123", keep: true},
		{name: "64 characters kept", header: strings.Repeat("a", 64), keep: true},
		{name: "65 characters replaced", header: strings.Repeat("a", 65)},
		{name: "unsafe characters replaced", header: "id\"with spaces"},
		{name: "absent replaced", header: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hdr := h.headers(reportingJob)
			hdr.Set(enforce.HeaderRequestID, tc.header)
			if _, err := h.client.ListInvoices(t.Context(), as(hdr, &invoicev1.ListInvoicesRequest{})); err != nil {
				t.Fatal(err)
			}
			got := h.pdp.received()
			if len(got) != 4 { // the collection, then each of acme's three invoices
				t.Fatalf("PDP asked %d times", len(got))
			}
			if got[0].GetContext().GetRequestId() != got[3].GetContext().GetRequestId() {
				t.Fatal("the per-invoice checks carry another request id than the collection check")
			}
			id := got[0].GetContext().GetRequestId()
			if tc.keep && id != tc.header || !tc.keep && !generated.MatchString(id) {
				t.Fatalf("request_id %q for header %q (keep=%v)", id, tc.header, tc.keep)
			}
		})
	}
}

func TestHealthAndMetrics(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		t.Run(path, func(t *testing.T) {
			resp, err := h.http.Get(h.url + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: %d", path, resp.StatusCode)
			}
		})
	}
	t.Run("not ready without the issuer's keys", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, func(c *app.Config) { c.JWKSURL = "http://127.0.0.1:1/.well-known/jwks.json" })
		resp, err := h.http.Get(h.url + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("/readyz %d, want 503", resp.StatusCode)
		}
	})
}

// TestMalformedBodiesChangeNothing sends bodies no client library would: the
// answer is invalid_argument (HTTP 400) and nothing is stored.
func TestMalformedBodiesChangeNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	tests := []struct {
		name        string
		contentType string
		body        string
	}{
		{"truncated JSON", "application/json", `{"customer":"Initech","amountCents":"100`},
		{"JSON of the wrong type", "application/json", `{"customer":["Initech"],"amountCents":"100","currency":"EUR"}`},
		{"garbage protobuf", "application/proto", "\xff\xff\xff\xff\x0f\x01"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost,
				h.url+"/gatehouse.invoice.v1.InvoiceService/CreateInvoice", strings.NewReader(tc.body))
			req.Header = h.headers(billingBot)
			req.Header.Set("Content-Type", tc.contentType)
			resp, err := h.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"code":"invalid_argument"`) {
				t.Fatalf("got %d %s, want 400 invalid_argument", resp.StatusCode, body)
			}
		})
	}
	if got := h.listIDs(reportingJob); !slices.Equal(got, acmeDemoIDs) {
		t.Fatalf("acme lists %v, want only the demo invoices (nothing stored)", got)
	}
}

// TestTenantInTheBodyIsIgnored: the request has no tenant field; one sent
// anyway (mass assignment) is an unknown field, which protobuf JSON ignores
// for forward compatibility, and the invoice lands in the token's tenant.
func TestTenantInTheBodyIsIgnored(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, h.url+"/gatehouse.invoice.v1.InvoiceService/CreateInvoice",
		strings.NewReader(`{"customer":"Initech","amountCents":"100","currency":"EUR","tenant":"globex","createdBy":"carol"}`))
	req.Header = h.headers(billingBot)
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"tenant":"acme"`) || !strings.Contains(string(body), `"createdBy":"billing-bot"`) {
		t.Fatalf("got %d %s, want the invoice in acme created by billing-bot", resp.StatusCode, body)
	}
}
