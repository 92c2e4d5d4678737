package app_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	supportv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/support/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/support/v1/supportv1connect"
	"github.com/gatehouse/gatehouse/services/support/app"
)

// TestGRPC runs the impersonation flow over gRPC (HTTP/2 cleartext), as
// gRPC clients behind the gateway do; errors keep their code and ErrorInfo
// in the trailers.
func TestGRPC(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	client := supportv1connect.NewSupportServiceClient(&http.Client{Transport: &http.Transport{Protocols: &protocols}}, h.url, connect.WithGRPC())

	start, err := client.StartImpersonation(t.Context(), as(h.headers(sam), &supportv1.StartImpersonationRequest{TicketId: demoTicket, TtlSeconds: 120}))
	if err != nil {
		t.Fatal(err)
	}
	id := start.Msg.GetSession().GetId()
	overview, err := client.GetCustomerOverview(t.Context(), as(h.headers(sam), &supportv1.GetCustomerOverviewRequest{SessionId: id}))
	if err != nil || len(overview.Msg.GetInvoices()) != 3 {
		t.Fatalf("overview over gRPC: %v, %v", overview, err)
	}
	if _, err := client.EndImpersonation(t.Context(), as(h.headers(sam), &supportv1.EndImpersonationRequest{SessionId: id})); err != nil {
		t.Fatal(err)
	}
	_, err = client.GetCustomerOverview(t.Context(), as(h.headers(sam), &supportv1.GetCustomerOverviewRequest{SessionId: id}))
	assertError(t, err, connect.CodeFailedPrecondition, reason.NotImpersonating)
	_, err = client.StartImpersonation(t.Context(), as(h.headers(gina), &supportv1.StartImpersonationRequest{TicketId: demoTicket}))
	assertError(t, err, connect.CodeNotFound, reason.ResourceNotFound)
	_, err = client.ListTickets(t.Context(), as(http.Header{}, &supportv1.ListTicketsRequest{}))
	assertError(t, err, connect.CodeUnauthenticated, reason.MissingToken)
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	expired := h.iss.Mint(t, sam, map[string]any{"exp": 1, "iat": 0, "nbf": 0})
	tests := []struct {
		name   string
		hdr    func() http.Header
		code   connect.Code
		reason string
	}{
		{name: "no token", hdr: func() http.Header { return http.Header{} }, code: connect.CodeUnauthenticated, reason: reason.MissingToken},
		{name: "expired token", hdr: func() http.Header {
			hdr := h.headers(sam)
			hdr.Set("Authorization", "Bearer "+expired)
			return hdr
		}, code: connect.CodeUnauthenticated, reason: reason.InvalidToken},
		{name: "garbage token", hdr: func() http.Header {
			hdr := h.headers(sam)
			hdr.Set("Authorization", "Bearer not.a.token")
			return hdr
		}, code: connect.CodeUnauthenticated, reason: reason.InvalidToken},
		{name: "identity headers of someone else", hdr: func() http.Header {
			hdr := h.headers(sam)
			hdr.Set(enforce.HeaderSubject, "bob")
			return hdr
		}, code: connect.CodePermissionDenied, reason: reason.IdentityMismatch},
		{name: "identity headers missing", hdr: func() http.Header {
			hdr := h.headers(sam)
			hdr.Del(enforce.HeaderTenant)
			return hdr
		}, code: connect.CodePermissionDenied, reason: reason.IdentityMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.client.StartImpersonation(t.Context(), as(tc.hdr(), &supportv1.StartImpersonationRequest{TicketId: demoTicket}))
			assertError(t, err, tc.code, tc.reason)
		})
	}
	if got := h.pdp.Received(); len(got) != 0 {
		t.Fatalf("the PDP was asked %d times for unauthenticated requests", len(got))
	}
	if got := h.iss.Exchanges(); len(got) != 0 {
		t.Fatalf("the issuer received %d exchanges for unauthenticated requests", len(got))
	}
}

func TestGatewayHeadersOptional(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *app.Config) { c.RequireGatewayHeaders = false })
	hdr, _ := h.login(sam)
	for _, name := range enforce.IdentityHeaders() {
		hdr.Del(name)
	}
	if _, err := h.client.ListTickets(t.Context(), as(hdr, &supportv1.ListTicketsRequest{})); err != nil {
		t.Fatalf("without identity headers: %v", err)
	}
	hdr.Set(enforce.HeaderTenant, "globex")
	_, err := h.client.ListTickets(t.Context(), as(hdr, &supportv1.ListTicketsRequest{}))
	assertError(t, err, connect.CodePermissionDenied, reason.IdentityMismatch)
}

// TestNoTokenIsLogged runs every RPC and then looks for any token in the
// service's log (JWTs start with "eyJ").
func TestNoTokenIsLogged(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id := h.impersonate(sam, demoTicket).GetSession().GetId()
	ctx := t.Context()
	calls := []func() error{
		func() error {
			_, err := h.client.GetCustomerOverview(ctx, as(h.headers(sam), &supportv1.GetCustomerOverviewRequest{SessionId: id}))
			return err
		},
		func() error {
			_, err := h.client.ExportInvoices(ctx, as(h.headers(bob), &supportv1.ExportInvoicesRequest{}))
			return err
		},
		func() error {
			_, err := h.client.EndImpersonation(ctx, as(h.headers(sam), &supportv1.EndImpersonationRequest{SessionId: id}))
			return err
		},
		func() error {
			_, err := h.client.OpenTicket(ctx, as(h.headers(bob), &supportv1.OpenTicketRequest{Summary: "Another"}))
			return err
		},
		func() error {
			_, err := h.client.CloseTicket(ctx, as(h.headers(bob), &supportv1.CloseTicketRequest{Id: demoTicket}))
			return err
		},
	}
	for i, call := range calls {
		if err := call(); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	h.iss.Refuse(nil)
	h.iss.SetDown(true)
	if _, err := h.client.ExportInvoices(ctx, as(h.headers(bob), &supportv1.ExportInvoicesRequest{})); err == nil {
		t.Fatal("export with the issuer down succeeded")
	}
	if logs := h.logs.String(); strings.Contains(logs, "eyJ") || strings.Contains(logs, "support-console-secret") || strings.Contains(logs, "support-export-secret") {
		t.Fatalf("the service logged a token or a secret:\n%s", logs)
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

// TestTenantInTheBodyIsIgnored: OpenTicket has no tenant or customer
// field; ones sent anyway (mass assignment) are unknown fields, which
// protobuf JSON ignores, and the ticket is the caller's, in their tenant.
func TestTenantInTheBodyIsIgnored(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, h.url+"/gatehouse.support.v1.SupportService/OpenTicket",
		strings.NewReader(`{"summary":"Help","tenant":"globex","customer":"carol","status":"TICKET_STATUS_CLOSED"}`))
	req.Header = h.headers(bob)
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var got struct {
		Ticket struct{ Tenant, Customer, Status string }
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &got) != nil ||
		got.Ticket.Tenant != "acme" || got.Ticket.Customer != "bob" || got.Ticket.Status != "TICKET_STATUS_OPEN" {
		t.Fatalf("got %d %s, want bob's open ticket in acme", resp.StatusCode, body)
	}
}

// catalogPath is the permission catalog, the one definition of the actions
// the PDP's policies know (see docs/permissions.md).
const catalogPath = "../../../policies/gatehouse/data.json"

// TestRPCsUseCatalogActions calls every SupportService RPC and fails when
// one asks the PDP nothing, or asks about an action the catalog does not
// define. A new RPC fails the test until it is added to calls.
func TestRPCsUseCatalogActions(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(catalogPath)
	if err != nil {
		t.Fatal(err)
	}
	var catalog struct {
		Actions map[string]json.RawMessage `json:"actions"`
	}
	if err := json.Unmarshal(data, &catalog); err != nil || len(catalog.Actions) == 0 {
		t.Fatalf("%s: %v (%d actions)", catalogPath, err, len(catalog.Actions))
	}
	calls := map[string]func(t *testing.T, h *harness) error{
		"OpenTicket": func(t *testing.T, h *harness) error {
			_, err := h.client.OpenTicket(t.Context(), as(h.headers(bob), &supportv1.OpenTicketRequest{Summary: "Help"}))
			return err
		},
		"ListTickets": func(t *testing.T, h *harness) error {
			_, err := h.client.ListTickets(t.Context(), as(h.headers(bob), &supportv1.ListTicketsRequest{}))
			return err
		},
		"CloseTicket": func(t *testing.T, h *harness) error {
			_, err := h.client.CloseTicket(t.Context(), as(h.headers(sam), &supportv1.CloseTicketRequest{Id: demoTicket}))
			return err
		},
		"StartImpersonation": func(t *testing.T, h *harness) error {
			_, err := h.client.StartImpersonation(t.Context(), as(h.headers(sam), &supportv1.StartImpersonationRequest{TicketId: demoTicket}))
			return err
		},
		"EndImpersonation": func(t *testing.T, h *harness) error {
			id := h.impersonate(sam, demoTicket).GetSession().GetId()
			h.pdp.Received()
			_, err := h.client.EndImpersonation(t.Context(), as(h.headers(sam), &supportv1.EndImpersonationRequest{SessionId: id}))
			return err
		},
		"GetCustomerOverview": func(t *testing.T, h *harness) error {
			id := h.impersonate(sam, demoTicket).GetSession().GetId()
			h.pdp.Received()
			_, err := h.client.GetCustomerOverview(t.Context(), as(h.headers(sam), &supportv1.GetCustomerOverviewRequest{SessionId: id}))
			return err
		},
		"ExportInvoices": func(t *testing.T, h *harness) error {
			_, err := h.client.ExportInvoices(t.Context(), as(h.headers(bob), &supportv1.ExportInvoicesRequest{}))
			return err
		},
	}
	methods := supportv1.File_gatehouse_support_v1_support_proto.Services().ByName("SupportService").Methods()
	exposed := map[string]bool{}
	for i := range methods.Len() {
		name := string(methods.Get(i).Name())
		exposed[name] = true
		call, ok := calls[name]
		if !ok {
			t.Errorf("RPC %s is not called by this test: add it to calls", name)
			continue
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			if err := call(t, h); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			checks := h.pdp.Received()
			if len(checks) == 0 {
				t.Fatalf("%s asked the PDP nothing", name)
			}
			for _, c := range checks {
				if _, ok := catalog.Actions[c.GetAction()]; !ok {
					t.Errorf("%s asks the PDP about %q, which %s does not define", name, c.GetAction(), catalogPath)
				}
				// The PDP refuses a resource type other than the action's prefix.
				if prefix, _, _ := strings.Cut(c.GetAction(), ":"); c.GetResource().GetType() != prefix {
					t.Errorf("%s asks %s about resource type %q, want %q", name, c.GetAction(), c.GetResource().GetType(), prefix)
				}
			}
		})
	}
	for name := range calls {
		if !exposed[name] {
			t.Errorf("calls has %s, which SupportService does not expose", name)
		}
	}
}
