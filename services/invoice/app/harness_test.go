package app_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"

	"github.com/gatehouse/gatehouse/libs/accesstoken/accesstokentest"
	"github.com/gatehouse/gatehouse/libs/enforce"
	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1/invoicev1connect"
	"github.com/gatehouse/gatehouse/services/invoice/app"
)

// principal is who a test token is minted for.
type principal struct {
	sub, tenant, clientID, scope string
	roles                        []string
	// acr and authTime are how and when the user signed in (the acr and
	// auth_time claims); empty and zero leave the claims out.
	acr      string
	authTime time.Time
}

// Principals of the demo seed (DESIGN.md).
var (
	reportingJob = principal{sub: "reporting-job", tenant: "acme", clientID: "reporting-job", scope: "invoice:read"}
	billingBot   = principal{sub: "billing-bot", tenant: "acme", clientID: "billing-bot", scope: "invoice:read invoice:write"}
	carol        = principal{sub: "carol", tenant: "globex", clientID: "invoice-web", scope: "invoice:read invoice:write", roles: []string{"billing_approver"}}
)

// testRequestID is the X-Request-Id the harness's gateway headers carry.
const testRequestID = "req-0123456789"

// Demo invoice ids, in list order.
var acmeDemoIDs = []string{"inv_demo_acme_1", "inv_demo_acme_2", "inv_demo_acme_3"}

// harness is one invoice service (memory store, demo seed) served
// in-process, with a fake issuer for tokens and the PDP test double.
type harness struct {
	t      *testing.T
	iss    *accesstokentest.Issuer
	pdp    *testPDP
	url    string
	http   *http.Client // speaks HTTP/1.1 and, for gRPC, h2c
	client invoicev1connect.InvoiceServiceClient
}

// newHarness starts a service; opts adjust its configuration.
func newHarness(t *testing.T, opts ...func(*app.Config)) *harness {
	t.Helper()
	iss := accesstokentest.NewIssuer(t)
	pdp := newTestPDP(t)
	cfg := app.Config{
		Store:                 app.StoreMemory,
		Issuer:                iss.URL,
		JWKSURL:               iss.JWKSURL(),
		Audience:              accesstokentest.Audience,
		PDPURL:                pdp.URL,
		PDPTimeout:            5 * time.Second, // generous: -race on two cores
		RequireGatewayHeaders: true,
		Demo:                  true,
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
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
	return &harness{
		t: t, iss: iss, pdp: pdp, url: srv.URL, http: srv.Client(),
		client: invoicev1connect.NewInvoiceServiceClient(srv.Client(), srv.URL),
	}
}

// token mints a valid access token for p.
func (h *harness) token(p principal) string {
	h.t.Helper()
	claims := map[string]any{"sub": p.sub, "tenant": p.tenant, "client_id": p.clientID, "scope": p.scope}
	if p.roles != nil {
		claims["roles"] = p.roles
	}
	if p.acr != "" {
		claims["acr"] = p.acr
	}
	if !p.authTime.IsZero() {
		claims["auth_time"] = p.authTime.Unix()
	}
	return h.iss.Mint(h.t, claims, nil)
}

// headers are what the gateway forwards for p: its bearer token and the
// identity headers that match it.
func (h *harness) headers(p principal) http.Header {
	h.t.Helper()
	return http.Header{
		"Authorization":         {"Bearer " + h.token(p)},
		enforce.HeaderSubject:   {p.sub},
		enforce.HeaderTenant:    {p.tenant},
		enforce.HeaderClientID:  {p.clientID},
		enforce.HeaderRequestID: {testRequestID},
	}
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

// rawResponse is an HTTP answer of the service.
type rawResponse struct {
	status int
	header http.Header
	body   []byte
}

// postJSON calls procedure with Connect's JSON encoding over plain HTTP
// POST, as curl would.
func (h *harness) postJSON(procedure, body string, hdr http.Header) rawResponse {
	h.t.Helper()
	req, err := http.NewRequestWithContext(h.t.Context(), http.MethodPost,
		h.url+"/gatehouse.invoice.v1.InvoiceService/"+procedure, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.http.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return rawResponse{status: resp.StatusCode, header: resp.Header, body: b}
}

// connectErrorJSON is the Connect protocol's JSON error body.
type connectErrorJSON struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Details []struct {
		Type  string `json:"type"`
		Value string `json:"value"`
	} `json:"details"`
}

// errorInfo decodes the ErrorInfo detail of a Connect JSON error body.
func (r rawResponse) errorInfo(t *testing.T) (code string, info *errdetails.ErrorInfo) {
	t.Helper()
	var e connectErrorJSON
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	for _, d := range e.Details {
		if d.Type != "google.rpc.ErrorInfo" {
			continue
		}
		raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(d.Value, "="))
		if err != nil {
			t.Fatalf("detail value: %v", err)
		}
		info = &errdetails.ErrorInfo{}
		if err := proto.Unmarshal(raw, info); err != nil {
			t.Fatalf("detail: %v", err)
		}
		return e.Code, info
	}
	t.Fatalf("error body %s has no ErrorInfo", r.body)
	return "", nil
}

// assertEdgeError checks a raw answer's HTTP status, Connect code and
// ErrorInfo reason.
func (r rawResponse) assertEdgeError(t *testing.T, status int, code connect.Code, reasonCode string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d (body %s)", r.status, status, r.body)
	}
	gotCode, info := r.errorInfo(t)
	if gotCode != code.String() || info.GetReason() != reasonCode || info.GetDomain() != enforce.ErrorDomain {
		t.Fatalf("error %s reason %q (domain %q), want %s reason %q", gotCode, info.GetReason(), info.GetDomain(), code, reasonCode)
	}
	if bytes.Contains(r.body, []byte("eyJ")) {
		t.Fatalf("error body echoes a token: %s", r.body)
	}
}

// assertError checks a Connect client error's code and ErrorInfo reason.
func assertError(t *testing.T, err error, code connect.Code, reasonCode string) *connect.Error {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v, want a Connect %s error", err, code)
	}
	if ce.Code() != code || enforce.ReasonOf(err) != reasonCode {
		t.Fatalf("error %s reason %q (%v), want %s reason %q", ce.Code(), enforce.ReasonOf(err), err, code, reasonCode)
	}
	return ce
}

// listIDs lists every invoice p can see (demo-sized: one page).
func (h *harness) listIDs(p principal) []string {
	h.t.Helper()
	resp, err := h.client.ListInvoices(h.t.Context(), as(h.headers(p), &invoicev1.ListInvoicesRequest{PageSize: 100}))
	if err != nil {
		h.t.Fatalf("ListInvoices as %s: %v", p.sub, err)
	}
	var ids []string
	for _, inv := range resp.Msg.GetInvoices() {
		ids = append(ids, inv.GetId())
	}
	return ids
}
