package app_test

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	supportv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/support/v1"
	"github.com/gatehouse/gatehouse/services/support/internal/supporttest"
)

func strAttr(v string) *authzv1.AttributeValue {
	return &authzv1.AttributeValue{Kind: &authzv1.AttributeValue_StringValue{StringValue: v}}
}

// ticketResource is the resource a per-ticket check names.
func ticketResource(id, tenant, status, customer, access string) *authzv1.Resource {
	return &authzv1.Resource{Type: "support", Id: id, Tenant: tenant, Attributes: map[string]*authzv1.AttributeValue{
		"status": strAttr(status), "customer": strAttr(customer), "access": strAttr(access),
	}}
}

// tenantTickets is the collection of every customer's tickets of tenant.
func tenantTickets(tenant string) *authzv1.Resource {
	return &authzv1.Resource{Type: "support", Tenant: tenant, Attributes: map[string]*authzv1.AttributeValue{"customer": strAttr("")}}
}

// ownTickets is the collection of p's own tickets.
func ownTickets(p supporttest.Principal) *authzv1.Resource {
	return &authzv1.Resource{Type: "support", Tenant: p.Tenant, Attributes: map[string]*authzv1.AttributeValue{"customer": strAttr(p.Sub)}}
}

// wantCheck is the CheckRequest the service should send for p (context aside).
func wantCheck(p supporttest.Principal, action string, res *authzv1.Resource) *authzv1.CheckRequest {
	return &authzv1.CheckRequest{
		Principal: &authzv1.Principal{Subject: p.Sub, Tenant: p.Tenant, Roles: p.Roles, Scopes: strings.Fields(p.Scope), ClientId: p.ClientID},
		Action:    action,
		Resource:  res,
	}
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

var ticketIDPattern = regexp.MustCompile(`^tkt_[A-Z2-7]{26}$`)

func TestOpenTicket(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	before := time.Now()
	got := h.openTicket(bob, "  The Umbrella Corp invoice is missing  ", supportv1.TicketAccess_TICKET_ACCESS_WRITE)
	if !ticketIDPattern.MatchString(got.GetId()) {
		t.Fatalf("ticket id %q, want tkt_ and 26 base32 characters", got.GetId())
	}
	if ct := got.GetCreateTime().AsTime(); ct.Before(before.Add(-time.Second)) || ct.After(time.Now()) {
		t.Fatalf("create_time %v, want now", ct)
	}
	want := &supportv1.Ticket{
		Id: got.GetId(), Tenant: "acme", Customer: "bob", Summary: "The Umbrella Corp invoice is missing",
		Status: supportv1.TicketStatus_TICKET_STATUS_OPEN, Access: supportv1.TicketAccess_TICKET_ACCESS_WRITE,
	}
	if diff := cmp.Diff(want, got, protocmp.Transform(), protocmp.IgnoreFields(&supportv1.Ticket{}, "create_time")); diff != "" {
		t.Fatalf("ticket (-want +got):\n%s", diff)
	}
	assertChecks(t, h.pdp.Received(), wantCheck(bob, "support:write", &authzv1.Resource{
		Type: "support", Tenant: "acme", Attributes: map[string]*authzv1.AttributeValue{
			"status": strAttr("open"), "customer": strAttr("bob"), "access": strAttr("write"),
		},
	}))
	if ids := h.listIDs(bob, 0); !slices.Equal(ids, []string{demoTicket, got.GetId()}) {
		t.Fatalf("bob lists %v, want the demo ticket and the new one", ids)
	}
	// Unspecified access is read.
	if got := h.openTicket(alice, "Help", supportv1.TicketAccess_TICKET_ACCESS_UNSPECIFIED); got.GetAccess() != supportv1.TicketAccess_TICKET_ACCESS_READ {
		t.Fatalf("access %v, want READ by default", got.GetAccess())
	}
}

func TestOpenTicketRejects(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	tests := []struct {
		name   string
		p      supporttest.Principal
		req    *supportv1.OpenTicketRequest
		code   connect.Code
		reason string
		asked  bool // whether the PDP is asked
	}{
		{name: "summary missing", p: bob, req: &supportv1.OpenTicketRequest{}, code: connect.CodeInvalidArgument, reason: reason.InvalidRequest},
		{name: "summary blank", p: bob, req: &supportv1.OpenTicketRequest{Summary: " \t "}, code: connect.CodeInvalidArgument, reason: reason.InvalidRequest},
		{name: "summary 501 characters", p: bob, req: &supportv1.OpenTicketRequest{Summary: strings.Repeat("é", 501)}, code: connect.CodeInvalidArgument, reason: reason.InvalidRequest},
		{name: "summary escape character", p: bob, req: &supportv1.OpenTicketRequest{Summary: "Help\x1b[2J"}, code: connect.CodeInvalidArgument, reason: reason.InvalidRequest},
		{name: "summary newline", p: bob, req: &supportv1.OpenTicketRequest{Summary: "line one\nline two"}, code: connect.CodeInvalidArgument, reason: reason.InvalidRequest},
		{name: "summary bidi override", p: bob, req: &supportv1.OpenTicketRequest{Summary: "Help \u202egnp.exe"}, code: connect.CodeInvalidArgument, reason: reason.InvalidRequest},
		{name: "unknown access", p: bob, req: &supportv1.OpenTicketRequest{Summary: "Help", Access: 7}, code: connect.CodeInvalidArgument, reason: reason.InvalidRequest},
		{name: "no support:write scope", p: sam, req: &supportv1.OpenTicketRequest{Summary: "Help"}, code: connect.CodePermissionDenied, reason: reason.InsufficientScope, asked: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.client.OpenTicket(t.Context(), as(h.headers(tc.p), tc.req))
			assertError(t, err, tc.code, tc.reason)
			if got := h.pdp.Received(); (len(got) > 0) != tc.asked {
				t.Fatalf("PDP asked %d times, want asked=%v", len(got), tc.asked)
			}
		})
	}
	if ids := h.listIDs(sam, 0); !slices.Equal(ids, []string{demoTicket}) {
		t.Fatalf("acme has %v, want only the demo ticket (nothing stored)", ids)
	}
}

func TestListTickets(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	bobs := h.openTicket(bob, "Bob's second", 0).GetId()
	alices := h.openTicket(alice, "Alice's", 0).GetId()
	carols := h.openTicket(carol, "Carol's", 0).GetId()
	h.pdp.Received()

	tests := []struct {
		name string
		p    supporttest.Principal
		want []string
	}{
		{name: "an agent sees the tenant's tickets", p: sam, want: []string{demoTicket, bobs, alices}},
		{name: "a customer sees their own", p: bob, want: []string{demoTicket, bobs}},
		{name: "another customer sees their own", p: alice, want: []string{alices}},
		{name: "another tenant's customer sees their own only", p: carol, want: []string{carols}},
		{name: "another tenant's agent sees nothing of acme", p: gina, want: []string{carols}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := h.listIDs(tc.p, 0); !slices.Equal(got, tc.want) {
				t.Fatalf("%s lists %v, want %v", tc.p.Sub, got, tc.want)
			}
		})
	}

	t.Run("what the PDP is asked", func(t *testing.T) {
		h.pdp.Received()
		h.listIDs(bob, 0)
		assertChecks(t, h.pdp.Received(),
			wantCheck(bob, "support:read", tenantTickets("acme")), // denied: not an agent
			wantCheck(bob, "support:read", ownTickets(bob)),
			wantCheck(bob, "support:read", ticketResource(demoTicket, "acme", "open", "bob", "read")),
			wantCheck(bob, "support:read", ticketResource(bobs, "acme", "open", "bob", "read")))
		h.listIDs(sam, 0)
		got := h.pdp.Received()
		if len(got) != 4 || !cmp.Equal(got[0].GetResource(), tenantTickets("acme"), protocmp.Transform()) {
			t.Fatalf("an agent's listing asked %d checks (%v), want the tenant-wide one and one per ticket", len(got), got)
		}
	})

	t.Run("a ticket the PDP denies is left out", func(t *testing.T) {
		h.pdp.Hide(alices)
		defer h.pdp.Unhide(alices)
		if got := h.listIDs(sam, 0); !slices.Equal(got, []string{demoTicket, bobs}) {
			t.Fatalf("sam lists %v, want alice's ticket left out", got)
		}
	})

	t.Run("status filter", func(t *testing.T) {
		if _, err := h.client.CloseTicket(t.Context(), as(h.headers(bob), &supportv1.CloseTicketRequest{Id: bobs})); err != nil {
			t.Fatal(err)
		}
		if got := h.listIDs(sam, supportv1.TicketStatus_TICKET_STATUS_OPEN); !slices.Equal(got, []string{demoTicket, alices}) {
			t.Fatalf("open tickets %v", got)
		}
		if got := h.listIDs(sam, supportv1.TicketStatus_TICKET_STATUS_CLOSED); !slices.Equal(got, []string{bobs}) {
			t.Fatalf("closed tickets %v", got)
		}
	})

	t.Run("pages", func(t *testing.T) {
		var got []string
		token := ""
		for range 4 {
			resp, err := h.client.ListTickets(t.Context(), as(h.headers(sam), &supportv1.ListTicketsRequest{PageSize: 1, PageToken: token}))
			if err != nil {
				t.Fatal(err)
			}
			for _, tk := range resp.Msg.GetTickets() {
				got = append(got, tk.GetId())
			}
			if token = resp.Msg.GetNextPageToken(); token == "" {
				break
			}
		}
		if !slices.Equal(got, []string{demoTicket, bobs, alices}) || token != "" {
			t.Fatalf("paged through %v (next %q), want all three tickets", got, token)
		}
	})

	t.Run("invalid input", func(t *testing.T) {
		for _, req := range []*supportv1.ListTicketsRequest{
			{PageSize: -1},
			{PageToken: "not a token"},
			{PageToken: "djEuMS5pbnZfeA"}, // v1.1.inv_x: a cursor on an invoice id
			{Status: 9},
		} {
			_, err := h.client.ListTickets(t.Context(), as(h.headers(sam), req))
			assertError(t, err, connect.CodeInvalidArgument, reason.InvalidRequest)
		}
	})

	t.Run("neither an agent nor a customer", func(t *testing.T) {
		outsider := supporttest.Principal{Sub: "reporting-job", Tenant: "acme", ClientID: "reporting-job", Scope: "invoice:read"}
		_, err := h.client.ListTickets(t.Context(), as(h.headers(outsider), &supportv1.ListTicketsRequest{}))
		assertError(t, err, connect.CodePermissionDenied, reason.InsufficientScope)
	})
}

func TestCloseTicket(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		by   supporttest.Principal
	}{
		{name: "by its customer", by: bob},
		{name: "by an agent", by: sam},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			before := time.Now().Truncate(time.Microsecond)
			resp, err := h.client.CloseTicket(t.Context(), as(h.headers(tc.by), &supportv1.CloseTicketRequest{Id: demoTicket}))
			if err != nil {
				t.Fatal(err)
			}
			got := resp.Msg.GetTicket()
			if got.GetStatus() != supportv1.TicketStatus_TICKET_STATUS_CLOSED || got.GetClosedBy() != tc.by.Sub ||
				got.GetCloseTime().AsTime().Before(before) || got.GetCustomer() != "bob" {
				t.Fatalf("closed ticket %v, want closed by %s now", got, tc.by.Sub)
			}
			assertChecks(t, h.pdp.Received(), wantCheck(tc.by, "support:read", ticketResource(demoTicket, "acme", "open", "bob", "read")))
			_, err = h.client.CloseTicket(t.Context(), as(h.headers(tc.by), &supportv1.CloseTicketRequest{Id: demoTicket}))
			assertError(t, err, connect.CodeFailedPrecondition, reason.NoOpenTicket)
		})
	}
}

func TestCloseTicketRejects(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	tests := []struct {
		name   string
		p      supporttest.Principal
		id     string
		code   connect.Code
		reason string
	}{
		{name: "malformed id", p: bob, id: "inv_demo_acme_1", code: connect.CodeInvalidArgument, reason: reason.InvalidRequest},
		{name: "empty id", p: bob, id: "", code: connect.CodeInvalidArgument, reason: reason.InvalidRequest},
		{name: "missing ticket", p: bob, id: "tkt_DOESNOTEXIST", code: connect.CodeNotFound, reason: reason.ResourceNotFound},
		{name: "another tenant's customer", p: carol, id: demoTicket, code: connect.CodeNotFound, reason: reason.ResourceNotFound},
		{name: "another tenant's agent", p: gina, id: demoTicket, code: connect.CodeNotFound, reason: reason.ResourceNotFound},
		{name: "another customer of the tenant", p: alice, id: demoTicket, code: connect.CodePermissionDenied, reason: reason.RoleNotPermitted},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h.pdp.Received()
			_, err := h.client.CloseTicket(t.Context(), as(h.headers(tc.p), &supportv1.CloseTicketRequest{Id: tc.id}))
			ce := assertError(t, err, tc.code, tc.reason)
			if tc.code == connect.CodeNotFound {
				if ce.Message() != "no such ticket" {
					t.Fatalf("message %q: another tenant's ticket must read exactly like a missing one", ce.Message())
				}
				// The PDP heard only of the caller's own tickets, never of
				// the acme ticket.
				assertChecks(t, h.pdp.Received(), wantCheck(tc.p, "support:read", ownTickets(tc.p)))
			}
		})
	}
	if got := h.listIDs(sam, supportv1.TicketStatus_TICKET_STATUS_OPEN); !slices.Equal(got, []string{demoTicket}) {
		t.Fatalf("open acme tickets %v, want the demo ticket still open", got)
	}
}

func TestTicketTimesSurviveTheWire(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	resp, err := h.client.ListTickets(t.Context(), as(h.headers(sam), &supportv1.ListTicketsRequest{}))
	if err != nil || len(resp.Msg.GetTickets()) != 1 {
		t.Fatalf("ListTickets = %v, %v; want the demo ticket", resp, err)
	}
	want := timestamppb.New(time.Date(2026, 1, 10, 9, 0, 0, 0, time.UTC))
	if tk := resp.Msg.GetTickets()[0]; !cmp.Equal(tk.GetCreateTime(), want, protocmp.Transform()) || tk.GetCloseTime() != nil {
		t.Fatalf("demo ticket times %v / %v, want create %v and no close", tk.GetCreateTime(), tk.GetCloseTime(), want)
	}
}
