package app_test

import (
	"encoding/json"
	"maps"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1/invoicev1connect"
)

// alice (billing_approver, acme) through invoice-web, two minutes after
// signing in with her TOTP code.
var alice = principal{sub: "alice", tenant: "acme", clientID: "invoice-web",
	scope: "openid invoice:read invoice:write invoice:approve", roles: []string{"billing_approver"},
	acr: "mfa", authTime: time.Now().Add(-2 * time.Minute)}

// stepUpChallenge is the exact RFC 9470 challenge for the demo policy.
const stepUpChallenge = `Bearer realm="gatehouse", error="insufficient_user_authentication", acr_values="mfa", max_age=300`

// approveResource is what the service tells the PDP about a demo invoice it
// is asked to approve.
func approveResource(id string, amount int64, status string) *authzv1.Resource {
	return &authzv1.Resource{Type: "invoice", Id: id, Tenant: "acme", Attributes: map[string]*authzv1.AttributeValue{
		"amount_cents": intAttr(amount), "currency": strAttr("EUR"), "created_by": strAttr("billing-bot"), "status": strAttr(status),
	}}
}

// status returns the status of invoice id as reporting-job sees it.
func (h *harness) status(id string) invoicev1.InvoiceStatus {
	h.t.Helper()
	resp, err := h.client.GetInvoice(h.t.Context(), as(h.headers(reportingJob), &invoicev1.GetInvoiceRequest{Id: id}))
	if err != nil {
		h.t.Fatalf("GetInvoice %s: %v", id, err)
	}
	h.pdp.received() // not part of what a test asserts
	return resp.Msg.GetInvoice().GetStatus()
}

func TestApproveInvoice(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	before := time.Now().Add(-time.Second)
	resp, err := h.client.ApproveInvoice(t.Context(), as(h.headers(alice), &invoicev1.ApproveInvoiceRequest{Id: "inv_demo_acme_2"}))
	if err != nil {
		t.Fatal(err)
	}
	inv := resp.Msg.GetInvoice()
	if inv.GetId() != "inv_demo_acme_2" || inv.GetStatus() != invoicev1.InvoiceStatus_INVOICE_STATUS_APPROVED ||
		inv.GetApprovedBy() != "alice" || inv.GetApproveTime().AsTime().Before(before) || inv.GetAmountCents() != 2_500_000 {
		t.Fatalf("ApproveInvoice = %v; want inv_demo_acme_2 approved by alice, now", inv)
	}
	// One decision, on the invoice, with the amount and with how and when
	// alice signed in: what the step-up rule needs.
	assertChecks(t, h.pdp.received(), wantCheck(alice, "invoice:approve", approveResource("inv_demo_acme_2", 2_500_000, "draft")))

	got, err := h.client.GetInvoice(t.Context(), as(h.headers(reportingJob), &invoicev1.GetInvoiceRequest{Id: "inv_demo_acme_2"}))
	if err != nil || got.Msg.GetInvoice().GetApprovedBy() != "alice" ||
		!got.Msg.GetInvoice().GetApproveTime().AsTime().Equal(inv.GetApproveTime().AsTime()) {
		t.Fatalf("GetInvoice after approval = %v, %v", got, err)
	}
}

// TestApproveStepUp: the PDP's step_up obligation becomes RFC 9470's 401
// challenge, with the same acr_values and max_age in the ErrorInfo, and the
// invoice stays a draft. The service does not judge acr or auth_time
// itself: it passes the token's claims to the PDP unchanged (the policy's
// answers to these inputs are pinned by the Rego tests and the decision
// corpus), so each case checks what the PDP was told.
func TestApproveStepUp(t *testing.T) {
	t.Parallel()
	now := time.Now()
	tests := []struct {
		name string
		who  principal
	}{
		{name: "password sign-in", who: func() principal { p := alice; p.acr, p.authTime = "pwd", now.Add(-time.Minute); return p }()},
		{name: "stale MFA sign-in", who: func() principal { p := alice; p.authTime = now.Add(-10 * time.Minute); return p }()},
		{name: "no auth_time", who: func() principal { p := alice; p.authTime = time.Time{}; return p }()},
		// A refreshed token is minted now but keeps the grant's acr and
		// auth_time (the issuer never upgrades them): nothing special here,
		// the PDP sees the old sign-in, never the token's iat.
		{name: "token from a refresh of an old grant", who: func() principal {
			p := alice
			p.authTime = now.Add(-3 * time.Hour)
			return p
		}()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.pdp.set("invoice:approve", "acme", stepUp())
			resp := h.postJSON("ApproveInvoice", `{"id":"inv_demo_acme_2"}`, h.headers(tc.who))
			t.Logf("HTTP %d\nWWW-Authenticate: %s\n%s", resp.status, resp.header.Get("WWW-Authenticate"), resp.body)
			resp.assertEdgeError(t, http.StatusUnauthorized, connect.CodeUnauthenticated, reason.StepUpRequired)
			if got := resp.header.Values("WWW-Authenticate"); len(got) != 1 || got[0] != stepUpChallenge {
				t.Fatalf("WWW-Authenticate %q, want %q", got, stepUpChallenge)
			}
			_, info := resp.errorInfo(t)
			assertStepUpInfo(t, info)
			if strings.Contains(string(resp.body), "Umbrella") || strings.Contains(string(resp.body), "2500000") {
				t.Fatalf("the challenge carries invoice data: %s", resp.body)
			}
			assertChecks(t, h.pdp.received(), wantCheck(tc.who, "invoice:approve", approveResource("inv_demo_acme_2", 2_500_000, "draft")))
			if got := h.status("inv_demo_acme_2"); got != invoicev1.InvoiceStatus_INVOICE_STATUS_DRAFT {
				t.Fatalf("after the challenge the invoice is %v, want still a draft", got)
			}
		})
	}
}

// assertStepUpInfo checks the ErrorInfo of a step-up challenge.
func assertStepUpInfo(t *testing.T, info *errdetails.ErrorInfo) {
	t.Helper()
	meta := maps.Clone(info.GetMetadata())
	if id, ok := meta["trace_id"]; ok && !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(id) {
		t.Fatalf("trace_id %q", id)
	}
	delete(meta, "trace_id")
	want := map[string]string{"acr_values": "mfa", "max_age": "300", "decision_id": "dec-step-up"}
	if info.GetReason() != reason.StepUpRequired || info.GetDomain() != enforce.ErrorDomain || !maps.Equal(meta, want) {
		t.Fatalf("ErrorInfo %v, want reason %s, metadata %v", info, reason.StepUpRequired, want)
	}
}

// TestApproveStepUpOverGRPC: gRPC clients get the same code and ErrorInfo.
func TestApproveStepUpOverGRPC(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.pdp.set("invoice:approve", "acme", stepUp())
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	client := invoicev1connect.NewInvoiceServiceClient(&http.Client{Transport: &http.Transport{Protocols: &protocols}}, h.url, connect.WithGRPC())
	_, err := client.ApproveInvoice(t.Context(), as(h.headers(alice), &invoicev1.ApproveInvoiceRequest{Id: "inv_demo_acme_2"}))
	ce := assertError(t, err, connect.CodeUnauthenticated, reason.StepUpRequired)
	t.Logf("gRPC error: %v\nmeta: %v\ndetails: %v", ce, ce.Meta(), ce.Details())
	var info *errdetails.ErrorInfo
	for _, d := range ce.Details() {
		if v, derr := d.Value(); derr == nil {
			info, _ = v.(*errdetails.ErrorInfo)
		}
	}
	if info == nil {
		t.Fatal("no ErrorInfo over gRPC")
	}
	assertStepUpInfo(t, info)
	if got := ce.Meta().Get("WWW-Authenticate"); got != "" && got != stepUpChallenge {
		t.Fatalf("WWW-Authenticate over gRPC %q", got)
	}
}

func TestApproveOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ok := h.postJSON("ApproveInvoice", `{"id":"inv_demo_acme_1"}`, h.headers(alice))
	t.Logf("HTTP %d\n%s", ok.status, ok.body)
	var first struct {
		Invoice struct{ Status, ApprovedBy, ApproveTime string }
	}
	if err := json.Unmarshal(ok.body, &first); err != nil || ok.status != http.StatusOK ||
		first.Invoice.Status != "INVOICE_STATUS_APPROVED" || first.Invoice.ApprovedBy != "alice" {
		t.Fatalf("first approval: %d %s (%v)", ok.status, ok.body, err)
	}
	h.pdp.received()
	resp := h.postJSON("ApproveInvoice", `{"id":"inv_demo_acme_1"}`, h.headers(alice))
	t.Logf("HTTP %d\n%s", resp.status, resp.body)
	resp.assertEdgeError(t, http.StatusBadRequest, connect.CodeFailedPrecondition, reason.AlreadyApproved)
	// The PDP decided first: the state is told only to who may approve.
	assertChecks(t, h.pdp.received(), wantCheck(alice, "invoice:approve", approveResource("inv_demo_acme_1", 120_000, "approved")))

	got, err := h.client.GetInvoice(t.Context(), as(h.headers(reportingJob), &invoicev1.GetInvoiceRequest{Id: "inv_demo_acme_1"}))
	firstTime, perr := time.Parse(time.RFC3339Nano, first.Invoice.ApproveTime)
	if perr != nil {
		t.Fatal(perr)
	}
	if err != nil || !got.Msg.GetInvoice().GetApproveTime().AsTime().Equal(firstTime) {
		t.Fatalf("GetInvoice = %v, %v; the first approval must stand", got, err)
	}

	t.Run("denied caller learns nothing", func(t *testing.T) {
		h.pdp.set("invoice:approve", "acme", deny(reason.RoleNotPermitted))
		resp := h.postJSON("ApproveInvoice", `{"id":"inv_demo_acme_1"}`, h.headers(alice))
		resp.assertEdgeError(t, http.StatusForbidden, connect.CodePermissionDenied, reason.RoleNotPermitted)
	})
}

func TestApproveOtherTenantsInvoice(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	carolMFA := carol
	carolMFA.scope, carolMFA.acr, carolMFA.authTime = "invoice:read invoice:approve", "mfa", time.Now()
	for _, id := range []string{"inv_demo_acme_2", "inv_never_existed"} {
		resp := h.postJSON("ApproveInvoice", `{"id":"`+id+`"}`, h.headers(carolMFA))
		resp.assertEdgeError(t, http.StatusNotFound, connect.CodeNotFound, reason.ResourceNotFound)
		if strings.Contains(string(resp.body), "acme") {
			t.Fatalf("the answer names the tenant: %s", resp.body)
		}
		// Only globex's own collection is asked about, never acme's invoice.
		assertChecks(t, h.pdp.received(), wantCheck(carolMFA, "invoice:read", &authzv1.Resource{Type: "invoice", Tenant: "globex"}))
	}
	if got := h.status("inv_demo_acme_2"); got != invoicev1.InvoiceStatus_INVOICE_STATUS_DRAFT {
		t.Fatalf("acme's invoice is %v, want still a draft", got)
	}
}

func TestApproveDenials(t *testing.T) {
	t.Parallel()
	noApproveScope := alice
	noApproveScope.scope = "openid invoice:read invoice:write"
	bob := principal{sub: "bob", tenant: "acme", clientID: "invoice-web", scope: "openid invoice:read invoice:approve",
		roles: []string{"billing_viewer"}, acr: "pwd", authTime: time.Now()}
	tests := []struct {
		name     string
		who      principal
		decision *authzv1.CheckResponse
		status   int
		code     connect.Code
		reason   string
		wwwAuth  string
	}{
		{name: "missing scope", who: noApproveScope, decision: deny(reason.InsufficientScope, "invoice:approve"),
			status: http.StatusForbidden, code: connect.CodePermissionDenied, reason: reason.InsufficientScope,
			wwwAuth: `Bearer realm="gatehouse", error="insufficient_scope", scope="invoice:approve"`},
		{name: "billing viewer", who: bob, decision: deny(reason.RoleNotPermitted),
			status: http.StatusForbidden, code: connect.CodePermissionDenied, reason: reason.RoleNotPermitted},
		{name: "not applicable", who: alice, decision: &authzv1.CheckResponse{
			Decision: authzv1.Decision_DECISION_NOT_APPLICABLE, ReasonCode: reason.NoApplicablePolicy},
			status: http.StatusForbidden, code: connect.CodePermissionDenied, reason: reason.NoApplicablePolicy},
		{name: "allow with an obligation the service cannot fulfil", who: alice, decision: &authzv1.CheckResponse{
			Decision: authzv1.Decision_DECISION_ALLOW, ReasonCode: reason.Allowed, Obligations: []*authzv1.Obligation{{Type: "redact"}}},
			status: http.StatusForbidden, code: connect.CodePermissionDenied, reason: reason.UnsupportedObligation},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.pdp.set("invoice:approve", "acme", tc.decision)
			resp := h.postJSON("ApproveInvoice", `{"id":"inv_demo_acme_2"}`, h.headers(tc.who))
			resp.assertEdgeError(t, tc.status, tc.code, tc.reason)
			if got := resp.header.Get("WWW-Authenticate"); got != tc.wwwAuth {
				t.Fatalf("WWW-Authenticate %q, want %q", got, tc.wwwAuth)
			}
			assertChecks(t, h.pdp.received(), wantCheck(tc.who, "invoice:approve", approveResource("inv_demo_acme_2", 2_500_000, "draft")))
			if got := h.status("inv_demo_acme_2"); got != invoicev1.InvoiceStatus_INVOICE_STATUS_DRAFT {
				t.Fatalf("after a denial the invoice is %v, want still a draft", got)
			}
		})
	}
	t.Run("malformed id", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		resp := h.postJSON("ApproveInvoice", `{"id":"inv_demo_acme_2'; --"}`, h.headers(alice))
		resp.assertEdgeError(t, http.StatusBadRequest, connect.CodeInvalidArgument, reason.InvalidRequest)
		if got := h.pdp.received(); len(got) != 0 {
			t.Fatalf("the PDP was asked about a malformed id: %v", got)
		}
	})
	t.Run("no token", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		hdr := h.headers(alice)
		hdr.Del("Authorization")
		resp := h.postJSON("ApproveInvoice", `{"id":"inv_demo_acme_2"}`, hdr)
		resp.assertEdgeError(t, http.StatusUnauthorized, connect.CodeUnauthenticated, reason.MissingToken)
	})
}
