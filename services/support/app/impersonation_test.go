package app_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"

	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	supportv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/support/v1"
	"github.com/gatehouse/gatehouse/services/support/app"
	"github.com/gatehouse/gatehouse/services/support/internal/supporttest"
)

var sessionIDPattern = regexp.MustCompile(`^imp_[A-Z2-7]{26}$`)

func TestStartImpersonation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		access     supportv1.TicketAccess // of a fresh ticket of bob; 0 uses the demo ticket
		req        *supportv1.StartImpersonationRequest
		wantForm   url.Values // the fields that vary
		wantScopes []string
		wantTTL    time.Duration
	}{
		{
			name:       "the ticket's access, the longest session",
			req:        &supportv1.StartImpersonationRequest{TicketId: demoTicket},
			wantForm:   url.Values{"ticket_access": {"read"}, "scope": {"invoice:read"}, "requested_lifetime": {"900"}},
			wantScopes: []string{"invoice:read"},
			wantTTL:    15 * time.Minute,
		},
		{
			name:       "a shorter session",
			req:        &supportv1.StartImpersonationRequest{TicketId: demoTicket, TtlSeconds: 300},
			wantForm:   url.Values{"ticket_access": {"read"}, "scope": {"invoice:read"}, "requested_lifetime": {"300"}},
			wantScopes: []string{"invoice:read"},
			wantTTL:    5 * time.Minute,
		},
		{
			// sam's console token holds invoice:read but not invoice:write:
			// the ticket's write access is asked for only as far as it reaches.
			name:       "a write ticket, an agent who may only read",
			access:     supportv1.TicketAccess_TICKET_ACCESS_WRITE,
			req:        &supportv1.StartImpersonationRequest{TtlSeconds: 60},
			wantForm:   url.Values{"ticket_access": {"write"}, "scope": {"invoice:read"}, "requested_lifetime": {"60"}},
			wantScopes: []string{"invoice:read"},
			wantTTL:    time.Minute,
		},
		{
			name:       "scopes narrowed by the agent, sorted",
			access:     supportv1.TicketAccess_TICKET_ACCESS_WRITE,
			req:        &supportv1.StartImpersonationRequest{TtlSeconds: 900, Scopes: []string{"invoice:write", "invoice:read"}},
			wantForm:   url.Values{"ticket_access": {"write"}, "scope": {"invoice:read invoice:write"}, "requested_lifetime": {"900"}},
			wantScopes: []string{"invoice:read", "invoice:write"},
			wantTTL:    15 * time.Minute,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			ticket, access := demoTicket, "read"
			if tc.access != 0 {
				ticket, access = h.openTicket(bob, "Please fix my invoice", tc.access).GetId(), "write"
				tc.req.TicketId = ticket
			}
			h.pdp.Received()
			hdr, samToken := h.login(sam)
			before := time.Now().Truncate(time.Second)
			resp, err := h.client.StartImpersonation(t.Context(), as(hdr, tc.req))
			if err != nil {
				t.Fatal(err)
			}

			// The exchange the issuer received, field by field.
			exchanges := h.iss.Exchanges()
			if len(exchanges) != 1 {
				t.Fatalf("issuer received %d exchanges, want 1", len(exchanges))
			}
			want := url.Values{
				"grant_type":           {supporttest.GrantTypeTokenExchange},
				"subject_token":        {samToken},
				"subject_token_type":   {supporttest.TokenTypeAccessToken},
				"requested_token_type": {supporttest.TokenTypeAccessToken},
				"requested_subject":    {"bob"},
				"support_ticket":       {ticket},
			}
			for k, v := range tc.wantForm {
				want[k] = v
			}
			if diff := cmp.Diff(want, exchanges[0].Form); diff != "" {
				t.Fatalf("exchange form (-want +got):\n%s", diff)
			}
			if exchanges[0].ClientID != "support-console" {
				t.Fatalf("exchange authenticated as %q, want support-console", exchanges[0].ClientID)
			}

			// The PDP was asked about the ticket first.
			assertChecks(t, h.pdp.Received(), wantCheck(sam, "support:impersonate", ticketResource(ticket, "acme", "open", "bob", access)))

			// The session and the token.
			s := resp.Msg.GetSession()
			if !sessionIDPattern.MatchString(s.GetId()) || s.GetTicketId() != ticket || s.GetTenant() != "acme" || s.GetCustomer() != "bob" ||
				s.GetAgent() != "sam" || !slices.Equal(s.GetScopes(), tc.wantScopes) || s.GetEndTime() != nil {
				t.Fatalf("session %v", s)
			}
			start, expire := s.GetStartTime().AsTime(), s.GetExpireTime().AsTime()
			// exp is whole seconds: the session lasts the ttl, give or take one.
			if start.Before(before) || start.After(time.Now()) || (expire.Sub(start)-tc.wantTTL).Abs() > time.Second {
				t.Fatalf("session from %v to %v, want now for %v", start, expire, tc.wantTTL)
			}
			claims, err := h.iss.Verify(t.Context(), resp.Msg.GetAccessToken())
			if err != nil {
				t.Fatalf("access_token: %v", err)
			}
			if claims.Subject != "bob" || claims.Tenant != "acme" || claims.ClientID != "support-console" || claims.Actor == nil ||
				claims.Actor.Subject != "sam" || !claims.Expiry.Equal(expire) {
				t.Fatalf("access_token claims %+v (act %+v), want bob acted for by sam until %v", claims, claims.Actor, expire)
			}
			if strings.Contains(h.logs.String(), resp.Msg.GetAccessToken()) || strings.Contains(h.logs.String(), samToken) {
				t.Fatal("the service logged a token")
			}
		})
	}
}

func TestStartImpersonationRejects(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	closed := h.openTicket(bob, "Closed already", 0).GetId()
	if _, err := h.client.CloseTicket(t.Context(), as(h.headers(bob), &supportv1.CloseTicketRequest{Id: closed})); err != nil {
		t.Fatal(err)
	}
	samNoImpersonate := sam
	samNoImpersonate.Scope = "openid support:read invoice:read"
	notAnAgent := supporttest.Principal{Sub: "mallory", Tenant: "acme", ClientID: "support-console", Scope: sam.Scope, Roles: []string{"billing_viewer"}}
	tooMany := make([]string, 17)
	for i := range tooMany {
		tooMany[i] = "scope:" + string(rune('a'+i))
	}
	tests := []struct {
		name   string
		p      supporttest.Principal
		req    *supportv1.StartImpersonationRequest
		code   connect.Code
		reason string
	}{
		{name: "ttl negative", p: sam, req: &supportv1.StartImpersonationRequest{TicketId: demoTicket, TtlSeconds: -1}, code: connect.CodeInvalidArgument, reason: reason.InvalidRequest},
		{name: "ttl over 15 minutes", p: sam, req: &supportv1.StartImpersonationRequest{TicketId: demoTicket, TtlSeconds: 901}, code: connect.CodeInvalidArgument, reason: reason.InvalidRequest},
		{name: "ticket id empty", p: sam, req: &supportv1.StartImpersonationRequest{}, code: connect.CodeInvalidArgument, reason: reason.InvalidRequest},
		{name: "ticket id malformed", p: sam, req: &supportv1.StartImpersonationRequest{TicketId: "tkt_../../x"}, code: connect.CodeInvalidArgument, reason: reason.InvalidRequest},
		{name: "scope malformed", p: sam, req: &supportv1.StartImpersonationRequest{TicketId: demoTicket, Scopes: []string{"invoice read"}}, code: connect.CodeInvalidArgument, reason: reason.InvalidRequest},
		{name: "scope repeated", p: sam, req: &supportv1.StartImpersonationRequest{TicketId: demoTicket, Scopes: []string{"invoice:read", "invoice:read"}}, code: connect.CodeInvalidArgument, reason: reason.InvalidRequest},
		{name: "too many scopes", p: sam, req: &supportv1.StartImpersonationRequest{TicketId: demoTicket, Scopes: tooMany}, code: connect.CodeInvalidArgument, reason: reason.InvalidRequest},
		{name: "missing ticket", p: sam, req: &supportv1.StartImpersonationRequest{TicketId: "tkt_DOESNOTEXIST"}, code: connect.CodeNotFound, reason: reason.ResourceNotFound},
		{name: "agent of another tenant", p: gina, req: &supportv1.StartImpersonationRequest{TicketId: demoTicket}, code: connect.CodeNotFound, reason: reason.ResourceNotFound},
		{name: "customer, not an agent", p: alice, req: &supportv1.StartImpersonationRequest{TicketId: demoTicket}, code: connect.CodePermissionDenied, reason: reason.InsufficientScope},
		{name: "the ticket's own customer", p: bob, req: &supportv1.StartImpersonationRequest{TicketId: demoTicket}, code: connect.CodePermissionDenied, reason: reason.InsufficientScope},
		{name: "the console's scopes without the agent role", p: notAnAgent, req: &supportv1.StartImpersonationRequest{TicketId: demoTicket}, code: connect.CodePermissionDenied, reason: reason.RoleNotPermitted},
		{name: "agent without support:impersonate", p: samNoImpersonate, req: &supportv1.StartImpersonationRequest{TicketId: demoTicket}, code: connect.CodePermissionDenied, reason: reason.InsufficientScope},
		{name: "closed ticket", p: sam, req: &supportv1.StartImpersonationRequest{TicketId: closed}, code: connect.CodePermissionDenied, reason: reason.NoOpenTicket},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.client.StartImpersonation(t.Context(), as(h.headers(tc.p), tc.req))
			assertError(t, err, tc.code, tc.reason)
		})
	}
	if got := h.iss.Exchanges(); len(got) != 0 {
		t.Fatalf("the issuer received %d exchanges for refused requests", len(got))
	}

	t.Run("another tenant's agent: the PDP hears only of its own tenant", func(t *testing.T) {
		h.pdp.Received()
		_, err := h.client.StartImpersonation(t.Context(), as(h.headers(gina), &supportv1.StartImpersonationRequest{TicketId: demoTicket}))
		assertError(t, err, connect.CodeNotFound, reason.ResourceNotFound)
		assertChecks(t, h.pdp.Received(), wantCheck(gina, "support:read", ownTickets(gina)))
	})

	t.Run("a token someone acts through cannot start one", func(t *testing.T) {
		token := h.iss.Mint(t, sam, map[string]any{"act": map[string]any{"sub": "support-export", "client_id": "support-export"}})
		hdr := h.headers(sam)
		hdr.Set("Authorization", "Bearer "+token)
		_, err := h.client.StartImpersonation(t.Context(), as(hdr, &supportv1.StartImpersonationRequest{TicketId: demoTicket}))
		assertError(t, err, connect.CodePermissionDenied, reason.ReexchangeNotPermitted)
	})

	t.Run("a closed ticket is refused even if the PDP allowed it", func(t *testing.T) {
		h.pdp.Override("support:impersonate", supporttest.Allow())
		defer h.pdp.Override("support:impersonate", nil)
		_, err := h.client.StartImpersonation(t.Context(), as(h.headers(sam), &supportv1.StartImpersonationRequest{TicketId: closed}))
		assertError(t, err, connect.CodeFailedPrecondition, reason.NoOpenTicket)
		if got := h.iss.Exchanges(); len(got) != 0 {
			t.Fatalf("the issuer received %d exchanges", len(got))
		}
	})
}

// TestIssuerAnswers: how the issuer's refusals and failures reach the
// agent. Nothing is stored and no session starts.
func TestIssuerAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		refusal *supporttest.Refusal
		down    bool
		slow    bool
		code    connect.Code
		reason  string
	}{
		{name: "policy refusal passes its reason", refusal: &supporttest.Refusal{Status: 400, Error: "invalid_grant", ReasonCode: "scope_not_permitted"}, code: connect.CodePermissionDenied, reason: "scope_not_permitted"},
		{name: "tenant refusal", refusal: &supporttest.Refusal{Status: 400, Error: "invalid_grant", ReasonCode: reason.TenantMismatch}, code: connect.CodePermissionDenied, reason: reason.TenantMismatch},
		{name: "re-exchange refusal", refusal: &supporttest.Refusal{Status: 400, Error: "invalid_grant", ReasonCode: "reexchange_not_permitted"}, code: connect.CodePermissionDenied, reason: "reexchange_not_permitted"},
		{name: "a reason code that is not one is withheld", refusal: &supporttest.Refusal{Status: 400, Error: "invalid_grant", ReasonCode: "Not A Code"}, code: connect.CodeUnauthenticated, reason: reason.InvalidToken},
		{name: "scope wider than the agent's token", refusal: &supporttest.Refusal{Status: 400, Error: "invalid_scope"}, code: connect.CodePermissionDenied, reason: reason.InsufficientScope},
		{name: "the agent's token is revoked at the issuer", refusal: &supporttest.Refusal{Status: 400, Error: "invalid_grant"}, code: connect.CodeUnauthenticated, reason: reason.InvalidToken},
		{name: "wrong client secret", refusal: &supporttest.Refusal{Status: 401, Error: "invalid_client"}, code: connect.CodeUnavailable, reason: reason.IssuerUnavailable},
		{name: "client lacks the grant", refusal: &supporttest.Refusal{Status: 400, Error: "unauthorized_client"}, code: connect.CodeUnavailable, reason: reason.IssuerUnavailable},
		{name: "issuer's PDP down", refusal: &supporttest.Refusal{Status: 503, Error: "temporarily_unavailable", ReasonCode: "pdp_unavailable"}, code: connect.CodeUnavailable, reason: reason.IssuerUnavailable},
		{name: "issuer error", refusal: &supporttest.Refusal{Status: 500, Error: "server_error"}, code: connect.CodeUnavailable, reason: reason.IssuerUnavailable},
		{name: "issuer unreachable", down: true, code: connect.CodeUnavailable, reason: reason.IssuerUnavailable},
		{name: "issuer slower than the deadline", slow: true, code: connect.CodeUnavailable, reason: reason.IssuerUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *app.Config) { c.IssuerTimeout = 300 * time.Millisecond })
			h.iss.Refuse(tc.refusal)
			h.iss.SetDown(tc.down)
			if tc.slow {
				h.iss.SetDelay(2 * time.Second)
			}
			_, err := h.client.StartImpersonation(t.Context(), as(h.headers(sam), &supportv1.StartImpersonationRequest{TicketId: demoTicket}))
			ce := assertError(t, err, tc.code, tc.reason)
			if strings.Contains(ce.Message(), "fake issuer") {
				t.Fatalf("message %q echoes the issuer's description", ce.Message())
			}
			if got := h.iss.Revocations(); len(got) != 0 {
				t.Fatalf("%d revocations, want none (no token was issued)", len(got))
			}
		})
	}
}

func TestEndImpersonation(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	started := h.impersonate(sam, demoTicket)
	id := started.GetSession().GetId()
	h.pdp.Received()

	for _, tc := range []struct {
		name   string
		p      supporttest.Principal
		id     string
		code   connect.Code
		reason string
	}{
		{name: "malformed id", p: sam, id: "tkt_demo_acme_1", code: connect.CodeInvalidArgument, reason: reason.InvalidRequest},
		{name: "missing session", p: sam, id: "imp_DOESNOTEXIST", code: connect.CodeNotFound, reason: reason.ResourceNotFound},
		{name: "another agent's session", p: tom, id: id, code: connect.CodeNotFound, reason: reason.ResourceNotFound},
		{name: "another tenant's agent", p: gina, id: id, code: connect.CodeNotFound, reason: reason.ResourceNotFound},
		{name: "the customer", p: bob, id: id, code: connect.CodeNotFound, reason: reason.ResourceNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.client.EndImpersonation(t.Context(), as(h.headers(tc.p), &supportv1.EndImpersonationRequest{SessionId: tc.id}))
			assertError(t, err, tc.code, tc.reason)
		})
	}
	if got := h.iss.Revocations(); len(got) != 0 {
		t.Fatalf("%d revocations before the agent ended the session", len(got))
	}

	t.Run("an issuer that cannot revoke changes nothing", func(t *testing.T) {
		h.iss.SetDown(true)
		defer h.iss.SetDown(false)
		_, err := h.client.EndImpersonation(t.Context(), as(h.headers(sam), &supportv1.EndImpersonationRequest{SessionId: id}))
		assertError(t, err, connect.CodeUnavailable, reason.IssuerUnavailable)
		h.iss.SetDown(false)
		if _, err := h.client.GetCustomerOverview(t.Context(), as(h.headers(sam), &supportv1.GetCustomerOverviewRequest{SessionId: id})); err != nil {
			t.Fatalf("the session no longer works after a failed end: %v", err)
		}
	})

	h.pdp.Received()
	before := time.Now().Truncate(time.Microsecond)
	resp, err := h.client.EndImpersonation(t.Context(), as(h.headers(sam), &supportv1.EndImpersonationRequest{SessionId: id}))
	if err != nil {
		t.Fatal(err)
	}
	if s := resp.Msg.GetSession(); s.GetId() != id || s.GetEndTime().AsTime().Before(before) || s.GetEndTime().AsTime().After(time.Now()) {
		t.Fatalf("ended session %v, want end_time now", s)
	}
	assertChecks(t, h.pdp.Received(), wantCheck(sam, "support:impersonate", ticketResource(demoTicket, "acme", "open", "bob", "read")))
	revoked := h.iss.Revocations()
	want := url.Values{"token": {started.GetAccessToken()}, "token_type_hint": {"access_token"}}
	if len(revoked) != 1 || revoked[0].ClientID != "support-console" || !cmp.Equal(revoked[0].Form, want) {
		t.Fatalf("revocations %+v, want the impersonation token revoked once by support-console", revoked)
	}

	_, err = h.client.EndImpersonation(t.Context(), as(h.headers(sam), &supportv1.EndImpersonationRequest{SessionId: id}))
	assertError(t, err, connect.CodeFailedPrecondition, reason.NotImpersonating)
	_, err = h.client.GetCustomerOverview(t.Context(), as(h.headers(sam), &supportv1.GetCustomerOverviewRequest{SessionId: id}))
	assertError(t, err, connect.CodeFailedPrecondition, reason.NotImpersonating)
	if got := h.iss.Revocations(); len(got) != 1 {
		t.Fatalf("%d revocations, want still one", len(got))
	}
}

func TestCloseTicketEndsItsSessions(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	first := h.impersonate(sam, demoTicket)
	second := h.impersonate(tom, demoTicket)
	other := h.impersonate(sam, h.openTicket(bob, "Another problem", 0).GetId())

	if _, err := h.client.CloseTicket(t.Context(), as(h.headers(bob), &supportv1.CloseTicketRequest{Id: demoTicket})); err != nil {
		t.Fatal(err)
	}
	var revoked []string
	for _, r := range h.iss.Revocations() {
		if r.ClientID != "support-console" || r.Form.Get("token_type_hint") != "access_token" {
			t.Fatalf("revocation %+v", r)
		}
		revoked = append(revoked, r.Form.Get("token"))
	}
	slices.Sort(revoked)
	want := []string{first.GetAccessToken(), second.GetAccessToken()}
	slices.Sort(want)
	if !slices.Equal(revoked, want) {
		t.Fatalf("closing revoked %d tokens, want exactly the two sessions' of the ticket", len(revoked))
	}
	for _, tc := range []struct {
		agent supporttest.Principal
		id    string
	}{{sam, first.GetSession().GetId()}, {tom, second.GetSession().GetId()}} {
		_, err := h.client.GetCustomerOverview(t.Context(), as(h.headers(tc.agent), &supportv1.GetCustomerOverviewRequest{SessionId: tc.id}))
		assertError(t, err, connect.CodeFailedPrecondition, reason.NotImpersonating)
		// Ending a session of a closed ticket: the PDP refuses (the ticket
		// is not open), and the session is over anyway.
		_, err = h.client.EndImpersonation(t.Context(), as(h.headers(tc.agent), &supportv1.EndImpersonationRequest{SessionId: tc.id}))
		assertError(t, err, connect.CodePermissionDenied, reason.NoOpenTicket)
	}
	if _, err := h.client.GetCustomerOverview(t.Context(), as(h.headers(sam), &supportv1.GetCustomerOverviewRequest{SessionId: other.GetSession().GetId()})); err != nil {
		t.Fatalf("a session on another ticket: %v", err)
	}
}

func TestCustomerOverview(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	started := h.impersonate(sam, demoTicket)
	id := started.GetSession().GetId()
	h.pdp.Received()

	resp, err := h.client.GetCustomerOverview(t.Context(), as(h.headers(sam), &supportv1.GetCustomerOverviewRequest{SessionId: id}))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Msg.GetSession().GetId() != id || len(resp.Msg.GetInvoices()) != 3 || resp.Msg.GetInvoices()[0].GetId() != "inv_acme_1" {
		t.Fatalf("overview %v", resp.Msg)
	}
	assertChecks(t, h.pdp.Received(), wantCheck(sam, "support:read", ticketResource(demoTicket, "acme", "open", "bob", "read")))
	calls := h.inv.Calls()
	if len(calls) != 1 {
		t.Fatalf("invoice service called %d times, want 1", len(calls))
	}
	c := calls[0]
	if c.Token != started.GetAccessToken() {
		t.Fatal("the invoice service was not called with the impersonation token")
	}
	if c.Claims.Subject != "bob" || c.Claims.Tenant != "acme" || c.Claims.ClientID != "support-console" || c.Claims.Actor == nil ||
		c.Claims.Actor.Subject != "sam" || c.RequestID != testRequestID || c.PageSize != 100 || c.PageToken != "" {
		t.Fatalf("invoice call %+v (act %+v)", c, c.Claims.Actor)
	}

	for _, tc := range []struct {
		name   string
		p      supporttest.Principal
		id     string
		code   connect.Code
		reason string
	}{
		{name: "malformed id", p: sam, id: "", code: connect.CodeInvalidArgument, reason: reason.InvalidRequest},
		{name: "another agent's session", p: tom, id: id, code: connect.CodeNotFound, reason: reason.ResourceNotFound},
		{name: "another tenant's agent", p: gina, id: id, code: connect.CodeNotFound, reason: reason.ResourceNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.client.GetCustomerOverview(t.Context(), as(h.headers(tc.p), &supportv1.GetCustomerOverviewRequest{SessionId: tc.id}))
			assertError(t, err, tc.code, tc.reason)
		})
	}

	t.Run("the invoice service's answers", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			answer *connect.Error
			code   connect.Code
			reason string
		}{
			{name: "denied", answer: deniedBy(reason.InsufficientScope), code: connect.CodePermissionDenied, reason: reason.InsufficientScope},
			{name: "token refused", answer: connect.NewError(connect.CodeUnauthenticated, errors.New("revoked")), code: connect.CodePermissionDenied, reason: reason.InvalidToken},
			{name: "down", answer: connect.NewError(connect.CodeUnavailable, errors.New("down")), code: connect.CodeUnavailable, reason: reason.UpstreamUnavailable},
		} {
			t.Run(tc.name, func(t *testing.T) {
				h.inv.Refuse(tc.answer)
				defer h.inv.Refuse(nil)
				_, err := h.client.GetCustomerOverview(t.Context(), as(h.headers(sam), &supportv1.GetCustomerOverviewRequest{SessionId: id}))
				assertError(t, err, tc.code, tc.reason)
			})
		}
	})
}

// deniedBy is a permission_denied answer with reason code, as the invoice
// service (enforce.Denied) gives.
func deniedBy(code string) *connect.Error {
	return enforce.Error(context.Background(), connect.CodePermissionDenied, code, "not permitted")
}

func TestPDPUnavailableDenies(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		set  func(*supporttest.PDP)
	}{
		{name: "down", set: func(p *supporttest.PDP) { p.SetDown(true) }},
		{name: "slow", set: func(p *supporttest.PDP) { p.SetDelay(time.Second) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *app.Config) { c.PDPTimeout = 200 * time.Millisecond })
			tc.set(h.pdp)
			_, err := h.client.StartImpersonation(t.Context(), as(h.headers(sam), &supportv1.StartImpersonationRequest{TicketId: demoTicket}))
			assertError(t, err, connect.CodeUnavailable, reason.PDPUnavailable)
			_, err = h.client.ListTickets(t.Context(), as(h.headers(bob), &supportv1.ListTicketsRequest{}))
			assertError(t, err, connect.CodeUnavailable, reason.PDPUnavailable)
			if got := h.iss.Exchanges(); len(got) != 0 {
				t.Fatalf("the issuer received %d exchanges without a decision", len(got))
			}
		})
	}
}

// TestActorChainReachesThePDP: a call made with an impersonation token
// (the console acting as bob) is decided with sam in the actor chain, so
// the PDP's decision events show who really acted.
func TestActorChainReachesThePDP(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	token := h.impersonate(sam, demoTicket).GetAccessToken()
	h.pdp.Received()
	hdr := http.Header{
		"Authorization":         {"Bearer " + token},
		enforce.HeaderSubject:   {"bob"},
		enforce.HeaderTenant:    {"acme"},
		enforce.HeaderClientID:  {"support-console"},
		enforce.HeaderRequestID: {testRequestID},
	}
	// The impersonation token carries invoice:read only: it cannot read
	// tickets, even bob's own.
	_, err := h.client.ListTickets(t.Context(), as(hdr, &supportv1.ListTicketsRequest{}))
	assertError(t, err, connect.CodePermissionDenied, reason.InsufficientScope)
	checks := h.pdp.Received()
	if len(checks) == 0 {
		t.Fatal("the PDP was not asked")
	}
	for _, c := range checks {
		if c.GetPrincipal().GetSubject() != "bob" {
			t.Fatalf("principal %v, want bob", c.GetPrincipal())
		}
		assertActorChain(t, c.GetPrincipal(), "sam")
	}
}

// assertActorChain checks the principal the PDP saw carries the chain.
func assertActorChain(t *testing.T, p *authzv1.Principal, want ...string) {
	t.Helper()
	var got []string
	for _, a := range p.GetActorChain() {
		got = append(got, a.GetSubject())
	}
	if !slices.Equal(got, want) {
		t.Fatalf("actor chain %v, want %v", got, want)
	}
}
