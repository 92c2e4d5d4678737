package app_test

import (
	"bytes"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/gatehouse/gatehouse/libs/enforce"
	supportv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/support/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/support/v1/supportv1connect"
	"github.com/gatehouse/gatehouse/services/support/app"
	"github.com/gatehouse/gatehouse/services/support/internal/supporttest"
)

// Principals of the tests (supporttest has the demo's), plus a second acme
// agent.
var (
	sam   = supporttest.Sam
	bob   = supporttest.Bob
	alice = supporttest.Alice
	carol = supporttest.Carol
	gina  = supporttest.Gina
	tom   = supporttest.Principal{Sub: "tom", Tenant: "acme", ClientID: "support-console", Scope: sam.Scope, Roles: []string{"support_agent"}}
)

// demoTicket is the demo seed's ticket: bob's, acme, read access, open.
const demoTicket = "tkt_demo_acme_1"

// testRequestID is the X-Request-Id the harness's gateway headers carry.
const testRequestID = "req-0123456789"

// harness is one support service (memory store, demo seed) served
// in-process, with the fake issuer, PDP and invoice service.
type harness struct {
	t      *testing.T
	iss    *supporttest.Issuer
	pdp    *supporttest.PDP
	inv    *supporttest.Invoices
	url    string
	http   *http.Client // speaks HTTP/1.1 and, for gRPC, h2c
	client supportv1connect.SupportServiceClient
	logs   *syncBuffer
}

// testConfig is the configuration of a service using the fakes.
func testConfig(iss *supporttest.Issuer, pdp *supporttest.PDP, inv *supporttest.Invoices) app.Config {
	return app.Config{
		Store:                 app.StoreMemory,
		Issuer:                iss.Keys.URL,
		IssuerURL:             iss.URL,
		JWKSURL:               iss.Keys.JWKSURL(),
		Audience:              supporttest.Audience,
		PDPURL:                pdp.URL,
		PDPTimeout:            5 * time.Second, // generous: -race on two cores
		InvoiceURL:            inv.URL,
		IssuerTimeout:         5 * time.Second,
		InvoiceTimeout:        5 * time.Second,
		IssuerClientSecret:    supporttest.ClientSecret("support-console"),
		ExportClientSecret:    supporttest.ClientSecret("support-export"),
		RequireGatewayHeaders: true,
		Demo:                  true,
	}
}

// newHarness starts a service; opts adjust its configuration.
func newHarness(t *testing.T, opts ...func(*app.Config)) *harness {
	t.Helper()
	iss := supporttest.NewIssuer(t)
	pdp := supporttest.NewPDP(t)
	inv := supporttest.NewInvoices(t, iss)
	cfg := testConfig(iss, pdp, inv)
	for _, opt := range opts {
		opt(&cfg)
	}
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := app.New(t.Context(), cfg, logger)
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	srv := httptest.NewUnstartedServer(a.Handler())
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("service log:\n%s", logs.String())
		}
	})
	return &harness{
		t: t, iss: iss, pdp: pdp, inv: inv, url: srv.URL, http: srv.Client(), logs: logs,
		client: supportv1connect.NewSupportServiceClient(srv.Client(), srv.URL),
	}
}

// login mints an access token for p and returns what the gateway forwards
// for it: the bearer token and the identity headers that match it.
func (h *harness) login(p supporttest.Principal) (http.Header, string) {
	h.t.Helper()
	token := h.iss.Mint(h.t, p, nil)
	return http.Header{
		"Authorization":         {"Bearer " + token},
		enforce.HeaderSubject:   {p.Sub},
		enforce.HeaderTenant:    {p.Tenant},
		enforce.HeaderClientID:  {p.ClientID},
		enforce.HeaderRequestID: {testRequestID},
	}, token
}

// headers is login without the token.
func (h *harness) headers(p supporttest.Principal) http.Header {
	h.t.Helper()
	hdr, _ := h.login(p)
	return hdr
}

// as returns req carrying hdr.
func as[T any](hdr http.Header, msg *T) *connect.Request[T] {
	req := connect.NewRequest(msg)
	for k, vs := range hdr {
		for _, v := range vs {
			req.Header().Add(k, v)
		}
	}
	return req
}

// assertError checks a Connect client error's code and ErrorInfo reason.
func assertError(t *testing.T, err error, code connect.Code, reasonCode string) *connect.Error {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v, want a Connect %s error with reason %q", err, code, reasonCode)
	}
	if ce.Code() != code || enforce.ReasonOf(err) != reasonCode {
		t.Fatalf("error %s reason %q (%v), want %s reason %q", ce.Code(), enforce.ReasonOf(err), err, code, reasonCode)
	}
	if strings.Contains(ce.Message(), "eyJ") {
		t.Fatalf("error message echoes a token: %q", ce.Message())
	}
	return ce
}

// openTicket opens a ticket as p and returns it.
func (h *harness) openTicket(p supporttest.Principal, summary string, access supportv1.TicketAccess) *supportv1.Ticket {
	h.t.Helper()
	resp, err := h.client.OpenTicket(h.t.Context(), as(h.headers(p), &supportv1.OpenTicketRequest{Summary: summary, Access: access}))
	if err != nil {
		h.t.Fatalf("OpenTicket as %s: %v", p.Sub, err)
	}
	return resp.Msg.GetTicket()
}

// impersonate starts a session as agent on ticket and returns the
// response.
func (h *harness) impersonate(agent supporttest.Principal, ticket string) *supportv1.StartImpersonationResponse {
	h.t.Helper()
	resp, err := h.client.StartImpersonation(h.t.Context(), as(h.headers(agent), &supportv1.StartImpersonationRequest{TicketId: ticket}))
	if err != nil {
		h.t.Fatalf("StartImpersonation as %s on %s: %v", agent.Sub, ticket, err)
	}
	return resp.Msg
}

// listIDs lists the ticket ids p can see (one page of 100).
func (h *harness) listIDs(p supporttest.Principal, status supportv1.TicketStatus) []string {
	h.t.Helper()
	resp, err := h.client.ListTickets(h.t.Context(), as(h.headers(p), &supportv1.ListTicketsRequest{PageSize: 100, Status: status}))
	if err != nil {
		h.t.Fatalf("ListTickets as %s: %v", p.Sub, err)
	}
	var ids []string
	for _, t := range resp.Msg.GetTickets() {
		ids = append(ids, t.GetId())
	}
	return ids
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
