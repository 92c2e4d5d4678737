package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1/invoicev1connect"
	supportv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/support/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/support/v1/supportv1connect"
)

// The tokens of the fake platform. None of them may ever be printed.
const (
	bobToken = "at-bob-0f8e7d6c5b4a"
	samToken = "at-sam-1a2b3c4d5e6f"
	// impSignature is the impersonation token's signature part.
	impSignature = "imp-signature-9z8y7x"
	testSecret   = "test-console-secret-42"
	sessionID    = "imp_TESTSESSION1"
	demoTicketID = "tkt_demo_acme_1"
)

// impToken is the impersonation token: a JWT whose payload the client
// decodes for display (the fake never verifies it, nor does the client).
var impToken = func() string {
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			panic(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(map[string]string{"alg": "ES256", "typ": "at+jwt", "kid": "k1"}) + "." + enc(map[string]any{
		"iss": "http://localhost:8080", "sub": "bob", "tenant": "acme", "client_id": "support-console", "scope": "invoice:read",
		"roles": []string{"billing_viewer"}, "act": map[string]string{"sub": "sam", "client_id": "support-console"},
	}) + "." + impSignature
}()

var sessionStart = time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)

func demoInvoices() []*invoicev1.Invoice {
	return []*invoicev1.Invoice{
		{Id: "inv_demo_acme_1", Tenant: "acme", Customer: "Initech", AmountCents: 120000, Currency: "EUR", Status: invoicev1.InvoiceStatus_INVOICE_STATUS_APPROVED},
		{Id: "inv_demo_acme_2", Tenant: "acme", Customer: "Umbrella Corp", AmountCents: 2500000, Currency: "EUR", Status: invoicev1.InvoiceStatus_INVOICE_STATUS_DRAFT},
		{Id: "inv_demo_acme_3", Tenant: "acme", Customer: "Hooli", AmountCents: 48050, Currency: "EUR", Status: invoicev1.InvoiceStatus_INVOICE_STATUS_DRAFT},
	}
}

// fakeGateway answers like the gateway in front of the support and invoice
// services: bob (bobToken) is a customer, sam (samToken) an agent, and the
// impersonation session on demoTicketID gives impToken, which may list
// invoices but not approve them, and which the gateway refuses
// (token_revoked) staleCalls calls after the session ended.
type fakeGateway struct {
	supportv1connect.UnimplementedSupportServiceHandler
	invoicev1connect.UnimplementedInvoiceServiceHandler

	// approveAllowed: the gateway wrongly lets impToken approve.
	approveAllowed bool
	// neverRevoke: the gateway never hears of the revocation.
	neverRevoke bool
	// overviewFails: GetCustomerOverview answers unavailable.
	overviewFails bool
	// staleCalls: ListInvoices calls still accepted after the end.
	staleCalls int

	mu        sync.Mutex
	opened    []*supportv1.OpenTicketRequest
	started   []*supportv1.StartImpersonationRequest
	ends      int
	approvals []string
	afterEnd  int
}

func (f *fakeGateway) caller(ctx context.Context, h http.Header, want string) error {
	if token, _ := enforce.BearerToken(h); token != want {
		return enforce.Unauthenticated(ctx, reason.InvalidToken)
	}
	return nil
}

func (f *fakeGateway) OpenTicket(ctx context.Context, req *connect.Request[supportv1.OpenTicketRequest]) (*connect.Response[supportv1.OpenTicketResponse], error) {
	if err := f.caller(ctx, req.Header(), bobToken); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.opened = append(f.opened, req.Msg)
	f.mu.Unlock()
	access := req.Msg.GetAccess()
	if access == supportv1.TicketAccess_TICKET_ACCESS_UNSPECIFIED {
		access = supportv1.TicketAccess_TICKET_ACCESS_READ
	}
	return connect.NewResponse(&supportv1.OpenTicketResponse{Ticket: &supportv1.Ticket{
		Id: "tkt_NEWTICKET1", Tenant: "acme", Customer: "bob", Summary: req.Msg.GetSummary(),
		Status: supportv1.TicketStatus_TICKET_STATUS_OPEN, Access: access, CreateTime: timestamppb.New(sessionStart),
	}}), nil
}

func (f *fakeGateway) ListTickets(ctx context.Context, req *connect.Request[supportv1.ListTicketsRequest]) (*connect.Response[supportv1.ListTicketsResponse], error) {
	if err := f.caller(ctx, req.Header(), samToken); err != nil {
		return nil, err
	}
	if req.Msg.GetStatus() != supportv1.TicketStatus_TICKET_STATUS_OPEN {
		return nil, enforce.Error(ctx, connect.CodeInvalidArgument, reason.InvalidRequest, "the fake lists open tickets only")
	}
	// Two pages: the client must follow next_page_token.
	if req.Msg.GetPageToken() == "" {
		return connect.NewResponse(&supportv1.ListTicketsResponse{NextPageToken: "page-2", Tickets: []*supportv1.Ticket{{
			Id: demoTicketID, Tenant: "acme", Customer: "bob",
			Summary: "I cannot find the Umbrella Corp invoice in my list: can you check my account?",
			Status:  supportv1.TicketStatus_TICKET_STATUS_OPEN, Access: supportv1.TicketAccess_TICKET_ACCESS_READ,
			CreateTime: timestamppb.New(time.Date(2026, 1, 10, 9, 0, 0, 0, time.UTC)),
		}}}), nil
	}
	return connect.NewResponse(&supportv1.ListTicketsResponse{Tickets: []*supportv1.Ticket{{
		Id: "tkt_ALICE1", Tenant: "acme", Customer: "alice", Summary: "Please fix my address",
		Status: supportv1.TicketStatus_TICKET_STATUS_OPEN, Access: supportv1.TicketAccess_TICKET_ACCESS_WRITE,
		CreateTime: timestamppb.New(time.Date(2026, 1, 11, 9, 0, 0, 0, time.UTC)),
	}}}), nil
}

func (f *fakeGateway) session(end bool) *supportv1.ImpersonationSession {
	s := &supportv1.ImpersonationSession{
		Id: sessionID, TicketId: demoTicketID, Tenant: "acme", Customer: "bob", Agent: "sam", Scopes: []string{"invoice:read"},
		StartTime: timestamppb.New(sessionStart), ExpireTime: timestamppb.New(sessionStart.Add(5 * time.Minute)),
	}
	if end {
		s.EndTime = timestamppb.New(sessionStart.Add(42 * time.Second))
	}
	return s
}

func (f *fakeGateway) StartImpersonation(ctx context.Context, req *connect.Request[supportv1.StartImpersonationRequest]) (*connect.Response[supportv1.StartImpersonationResponse], error) {
	if err := f.caller(ctx, req.Header(), samToken); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.started = append(f.started, req.Msg)
	f.mu.Unlock()
	if req.Msg.GetTicketId() != demoTicketID {
		return nil, enforce.Error(ctx, connect.CodeNotFound, reason.ResourceNotFound, "no such ticket")
	}
	return connect.NewResponse(&supportv1.StartImpersonationResponse{Session: f.session(false), AccessToken: impToken}), nil
}

func (f *fakeGateway) GetCustomerOverview(ctx context.Context, req *connect.Request[supportv1.GetCustomerOverviewRequest]) (*connect.Response[supportv1.GetCustomerOverviewResponse], error) {
	if err := f.caller(ctx, req.Header(), samToken); err != nil {
		return nil, err
	}
	if f.overviewFails {
		return nil, enforce.Unavailable(ctx, reason.UpstreamUnavailable)
	}
	if req.Msg.GetSessionId() != sessionID {
		return nil, enforce.Error(ctx, connect.CodeNotFound, reason.ResourceNotFound, "no such session")
	}
	return connect.NewResponse(&supportv1.GetCustomerOverviewResponse{Session: f.session(false), Invoices: demoInvoices()}), nil
}

func (f *fakeGateway) EndImpersonation(ctx context.Context, req *connect.Request[supportv1.EndImpersonationRequest]) (*connect.Response[supportv1.EndImpersonationResponse], error) {
	if err := f.caller(ctx, req.Header(), samToken); err != nil {
		return nil, err
	}
	if req.Msg.GetSessionId() != sessionID {
		return nil, enforce.Error(ctx, connect.CodeNotFound, reason.ResourceNotFound, "no such session")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ends > 0 {
		return nil, enforce.Error(ctx, connect.CodeFailedPrecondition, reason.NotImpersonating, "the session ended")
	}
	f.ends++
	return connect.NewResponse(&supportv1.EndImpersonationResponse{Session: f.session(true)}), nil
}

func (f *fakeGateway) ExportInvoices(ctx context.Context, req *connect.Request[supportv1.ExportInvoicesRequest]) (*connect.Response[supportv1.ExportInvoicesResponse], error) {
	if err := f.caller(ctx, req.Header(), bobToken); err != nil {
		return nil, err
	}
	return connect.NewResponse(&supportv1.ExportInvoicesResponse{Actor: "support-export", Invoices: demoInvoices()}), nil
}

func (f *fakeGateway) ListInvoices(ctx context.Context, req *connect.Request[invoicev1.ListInvoicesRequest]) (*connect.Response[invoicev1.ListInvoicesResponse], error) {
	if err := f.caller(ctx, req.Header(), impToken); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ends > 0 {
		f.afterEnd++
		if !f.neverRevoke && f.afterEnd > f.staleCalls {
			return nil, enforce.Unauthenticated(ctx, reason.TokenRevoked)
		}
	}
	return connect.NewResponse(&invoicev1.ListInvoicesResponse{Invoices: demoInvoices()}), nil
}

func (f *fakeGateway) ApproveInvoice(ctx context.Context, req *connect.Request[invoicev1.ApproveInvoiceRequest]) (*connect.Response[invoicev1.ApproveInvoiceResponse], error) {
	if err := f.caller(ctx, req.Header(), impToken); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.approvals = append(f.approvals, req.Msg.GetId())
	f.mu.Unlock()
	if !f.approveAllowed {
		return nil, enforce.Denied(ctx, enforce.Decision{
			State: authzv1.Decision_DECISION_DENY, ReasonCode: reason.InsufficientScope,
			RequiredScopes: []string{"invoice:approve"}, DecisionID: "dec-approve",
		})
	}
	return connect.NewResponse(&invoicev1.ApproveInvoiceResponse{Invoice: &invoicev1.Invoice{
		Id: req.Msg.GetId(), Status: invoicev1.InvoiceStatus_INVOICE_STATUS_APPROVED, ApprovedBy: "bob",
	}}), nil
}

// counts returns what the fake recorded.
func (f *fakeGateway) counts() (started, ends int, approvals []string, afterEnd int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.started), f.ends, append([]string(nil), f.approvals...), f.afterEnd
}
