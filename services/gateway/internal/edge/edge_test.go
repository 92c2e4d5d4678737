package edge_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/gatehouse/gatehouse/libs/accesstoken"
	"github.com/gatehouse/gatehouse/libs/accesstoken/accesstokentest"
	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1/invoicev1connect"
	"github.com/gatehouse/gatehouse/services/gateway/internal/edge"
	"github.com/gatehouse/gatehouse/services/gateway/internal/ratelimit"
	"github.com/gatehouse/gatehouse/services/gateway/internal/route"
)

// fakePDP is a test double: it records requests and answers with decide.
type fakePDP struct {
	mu       sync.Mutex
	requests []*authzv1.CheckRequest
	decide   func(*authzv1.CheckRequest) (enforce.Decision, error)
}

func (f *fakePDP) Check(_ context.Context, req *authzv1.CheckRequest) (enforce.Decision, error) {
	f.mu.Lock()
	f.requests = append(f.requests, req)
	f.mu.Unlock()
	return f.decide(req)
}

func (f *fakePDP) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

func (f *fakePDP) last() *authzv1.CheckRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		return nil
	}
	return f.requests[len(f.requests)-1]
}

// upstream is a stand-in invoice service that reports the identity headers
// it received and counts calls.
type upstream struct {
	invoicev1connect.UnimplementedInvoiceServiceHandler
	mu      sync.Mutex
	calls   int
	headers http.Header
}

func (u *upstream) record(h http.Header) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.calls++
	u.headers = h.Clone()
}

func (u *upstream) ListInvoices(_ context.Context, req *connect.Request[invoicev1.ListInvoicesRequest]) (*connect.Response[invoicev1.ListInvoicesResponse], error) {
	u.record(req.Header())
	return connect.NewResponse(&invoicev1.ListInvoicesResponse{Invoices: []*invoicev1.Invoice{{Id: "inv_1", Tenant: req.Header().Get(enforce.HeaderTenant)}}}), nil
}

func (u *upstream) GetInvoice(_ context.Context, req *connect.Request[invoicev1.GetInvoiceRequest]) (*connect.Response[invoicev1.GetInvoiceResponse], error) {
	u.record(req.Header())
	return connect.NewResponse(&invoicev1.GetInvoiceResponse{Invoice: &invoicev1.Invoice{Id: req.Msg.GetId()}}), nil
}

func (u *upstream) CreateInvoice(_ context.Context, req *connect.Request[invoicev1.CreateInvoiceRequest]) (*connect.Response[invoicev1.CreateInvoiceResponse], error) {
	u.record(req.Header())
	return connect.NewResponse(&invoicev1.CreateInvoiceResponse{Invoice: &invoicev1.Invoice{Id: "inv_2"}}), nil
}

func (u *upstream) ApproveInvoice(_ context.Context, req *connect.Request[invoicev1.ApproveInvoiceRequest]) (*connect.Response[invoicev1.ApproveInvoiceResponse], error) {
	u.record(req.Header())
	return connect.NewResponse(&invoicev1.ApproveInvoiceResponse{Invoice: &invoicev1.Invoice{Id: req.Msg.GetId()}}), nil
}

func (u *upstream) callCount() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.calls
}

func (u *upstream) lastHeaders() http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.headers
}

func h2cServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func h2cTransport() *http.Transport {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Transport{Protocols: &p}
}

// revocations is a fake revocation set: it revokes the jtis in revoked and
// reports staleness as set.
type revocations struct {
	mu        sync.Mutex
	revoked   map[string]bool
	staleness time.Duration
}

func (r *revocations) Revoked(c *accesstoken.Claims) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.revoked[c.ID]
}

func (r *revocations) Staleness(time.Time) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.staleness
}

func (r *revocations) revoke(jti string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.revoked == nil {
		r.revoked = map[string]bool{}
	}
	r.revoked[jti] = true
}

func (r *revocations) setStaleness(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.staleness = d
}

// countingVerifier counts verifications that reach the real verifier.
type countingVerifier struct {
	v     edge.Verifier
	calls atomic.Int64
}

func (c *countingVerifier) Verify(ctx context.Context, raw string) (*accesstoken.Claims, error) {
	c.calls.Add(1)
	return c.v.Verify(ctx, raw)
}

type fixture struct {
	iss         *accesstokentest.Issuer
	pdp         *fakePDP
	upstream    *upstream
	verifier    *countingVerifier
	revocations *revocations
	gateway     *httptest.Server
}

func allow(*authzv1.CheckRequest) (enforce.Decision, error) {
	return enforce.Decision{State: authzv1.Decision_DECISION_ALLOW, ReasonCode: reason.Allowed, DecisionID: "d1"}, nil
}

func newFixture(t *testing.T, decide func(*authzv1.CheckRequest) (enforce.Decision, error), upstreamURL string) *fixture {
	t.Helper()
	return newFixtureWith(t, decide, upstreamURL, nil)
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newFixtureWith builds a gateway with the built-in route table, a real
// verifier (counted) against a test issuer, a fake PDP deciding with
// decide, and no revocations; edit adjusts the configuration, with the
// fixture's parts already in place.
func newFixtureWith(t *testing.T, decide func(*authzv1.CheckRequest) (enforce.Decision, error), upstreamURL string, edit func(*fixture, *edge.Config)) *fixture {
	t.Helper()
	f := &fixture{iss: accesstokentest.NewIssuer(t), pdp: &fakePDP{decide: decide}, upstream: &upstream{}, revocations: &revocations{}}
	if upstreamURL == "" {
		_, h := invoicev1connect.NewInvoiceServiceHandler(f.upstream)
		upstreamURL = h2cServer(t, h).URL
	}
	jwks, _ := accesstoken.NewJWKS(accesstoken.JWKSConfig{URL: f.iss.JWKSURL()})
	v, _ := accesstoken.NewVerifier(accesstoken.Config{Issuer: f.iss.URL, Audience: accesstokentest.Audience, Keys: jwks})
	f.verifier = &countingVerifier{v: v}
	table, err := route.Default(route.Upstreams())
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(upstreamURL)
	cfg := edge.Config{
		Routes: table, Verifier: f.verifier, Revocations: f.revocations, PDP: f.pdp,
		Upstreams: map[string]*url.URL{route.UpstreamInvoice: u, route.UpstreamSupport: u},
		Transport: h2cTransport(), MaxBodyBytes: 1 << 10,
		Logger: discard(),
	}
	if edit != nil {
		edit(f, &cfg)
	}
	h, err := edge.NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.gateway = h2cServer(t, h)
	return f
}

func (f *fixture) client(opts ...connect.ClientOption) invoicev1connect.InvoiceServiceClient {
	return invoicev1connect.NewInvoiceServiceClient(&http.Client{Transport: h2cTransport()}, f.gateway.URL, opts...)
}

func listWithToken(t *testing.T, c invoicev1connect.InvoiceServiceClient, token string, extra http.Header) (*connect.Response[invoicev1.ListInvoicesResponse], error) {
	t.Helper()
	req := connect.NewRequest(&invoicev1.ListInvoicesRequest{})
	if token != "" {
		req.Header().Set("Authorization", "Bearer "+token)
	}
	for k, vs := range extra {
		for _, v := range vs {
			req.Header().Add(k, v)
		}
	}
	return c.ListInvoices(t.Context(), req)
}

func TestAllowedRequestReachesUpstreamWithVerifiedIdentity(t *testing.T) {
	t.Parallel()
	for name, opts := range map[string][]connect.ClientOption{
		"connect": nil,
		"grpc":    {connect.WithGRPC()},
		"json":    {connect.WithProtoJSON()},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, allow, "")
			forged := http.Header{enforce.HeaderTenant: {"globex"}, enforce.HeaderSubject: {"admin"}, enforce.HeaderRequestID: {"chosen-by-client"}}
			resp, err := listWithToken(t, f.client(opts...), f.iss.Mint(t, nil, nil), forged)
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.Msg.GetInvoices()[0].GetTenant(); got != "acme" {
				t.Fatalf("upstream saw tenant %q, want the token's acme (forged header must be stripped)", got)
			}
			h := f.upstream.lastHeaders()
			if h.Get(enforce.HeaderSubject) != "reporting-job" || len(h.Values(enforce.HeaderTenant)) != 1 || h.Get("Authorization") == "" {
				t.Fatalf("upstream identity headers: %v", h)
			}
			if id := h.Get(enforce.HeaderRequestID); id == "" || id == "chosen-by-client" || id != resp.Header().Get(enforce.HeaderRequestID) {
				t.Fatalf("upstream request id %q (response %q): must be the gateway's own", id, resp.Header().Get(enforce.HeaderRequestID))
			}
			req := f.pdp.last()
			if req.GetAction() != "invoice:read" || req.GetResource().GetType() != "invoice" || req.GetResource().GetTenant() != "acme" ||
				req.GetPrincipal().GetSubject() != "reporting-job" || req.GetContext().GetRequestId() == "" {
				t.Fatalf("PDP request: %v", req)
			}
		})
	}
}

func TestDenials(t *testing.T) {
	t.Parallel()
	deny := func(code string, scopes ...string) func(*authzv1.CheckRequest) (enforce.Decision, error) {
		return func(*authzv1.CheckRequest) (enforce.Decision, error) {
			return enforce.Decision{State: authzv1.Decision_DECISION_DENY, ReasonCode: code, RequiredScopes: scopes}, nil
		}
	}
	pdpDown := func(*authzv1.CheckRequest) (enforce.Decision, error) {
		return enforce.Decision{}, enforce.ErrPDPUnavailable
	}
	notApplicable := func(*authzv1.CheckRequest) (enforce.Decision, error) {
		return enforce.Decision{State: authzv1.Decision_DECISION_NOT_APPLICABLE, ReasonCode: reason.NoApplicablePolicy}, nil
	}
	tests := []struct {
		name       string
		decide     func(*authzv1.CheckRequest) (enforce.Decision, error)
		token      func(f *fixture) string
		wantCode   connect.Code
		wantReason string
		wantAuth   string
	}{
		{"no token", allow, func(*fixture) string { return "" }, connect.CodeUnauthenticated, reason.MissingToken, `Bearer realm="gatehouse", error="invalid_token"`},
		{"garbage token", allow, func(*fixture) string { return "abc.def.ghi" }, connect.CodeUnauthenticated, reason.InvalidToken, `error="invalid_token"`},
		{"expired token", allow, func(f *fixture) string { return f.iss.Mint(t, map[string]any{"exp": 1}, nil) }, connect.CodeUnauthenticated, reason.InvalidToken, `error="invalid_token"`},
		{"wrong audience", allow, func(f *fixture) string { return f.iss.Mint(t, map[string]any{"aud": "other"}, nil) }, connect.CodeUnauthenticated, reason.InvalidToken, `error="invalid_token"`},
		{"insufficient scope", deny(reason.InsufficientScope, "invoice:read"), func(f *fixture) string { return f.iss.Mint(t, nil, nil) }, connect.CodePermissionDenied, reason.InsufficientScope, `error="insufficient_scope", scope="invoice:read"`},
		{"tenant mismatch", deny(reason.TenantMismatch), func(f *fixture) string { return f.iss.Mint(t, nil, nil) }, connect.CodePermissionDenied, reason.TenantMismatch, ""},
		{"not applicable denies", notApplicable, func(f *fixture) string { return f.iss.Mint(t, nil, nil) }, connect.CodePermissionDenied, reason.NoApplicablePolicy, ""},
		{"pdp unavailable denies", pdpDown, func(f *fixture) string { return f.iss.Mint(t, nil, nil) }, connect.CodeUnavailable, reason.PDPUnavailable, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tc.decide, "")
			_, err := listWithToken(t, f.client(), tc.token(f), nil)
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != tc.wantCode {
				t.Fatalf("got %v, want code %v", err, tc.wantCode)
			}
			if got := enforce.ReasonOf(err); got != tc.wantReason {
				t.Fatalf("reason %q, want %q", got, tc.wantReason)
			}
			if got := ce.Meta().Get("WWW-Authenticate"); got != tc.wantAuth && !strings.Contains(got, tc.wantAuth) || (tc.wantAuth == "" && got != "") {
				t.Fatalf("WWW-Authenticate %q, want %q", got, tc.wantAuth)
			}
			if n := f.upstream.callCount(); n != 0 {
				t.Fatalf("a denied request reached the upstream (%d calls)", n)
			}
		})
	}
}

// TestHTTPStatusAndBody checks the raw wire form a curl user sees.
func TestHTTPStatusAndBody(t *testing.T) {
	t.Parallel()
	f := newFixture(t, allow, "")
	tests := []struct {
		name       string
		method     string
		path       string
		token      bool
		wantStatus int
		wantBody   string
	}{
		{"no token", http.MethodPost, "/gatehouse.invoice.v1.InvoiceService/ListInvoices", false, http.StatusUnauthorized, `"code":"unauthenticated"`},
		{"unknown route", http.MethodPost, "/gatehouse.admin.v1.AdminService/DropAll", true, http.StatusForbidden, `"code":"permission_denied"`},
		{"path confusion", http.MethodPost, "/gatehouse.invoice.v1.InvoiceService/ListInvoices/../CreateInvoice", true, http.StatusForbidden, `"code":"permission_denied"`},
		{"GET on a write procedure", http.MethodGet, "/gatehouse.invoice.v1.InvoiceService/CreateInvoice", true, http.StatusNotImplemented, `"code":"unimplemented"`},
		{"allowed", http.MethodPost, "/gatehouse.invoice.v1.InvoiceService/ListInvoices", true, http.StatusOK, `"invoices"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, _ := http.NewRequestWithContext(t.Context(), tc.method, f.gateway.URL+tc.path, strings.NewReader("{}"))
			req.URL.Opaque = tc.path // keep the path exactly as sent
			req.Header.Set("Content-Type", "application/json")
			if tc.token {
				req.Header.Set("Authorization", "Bearer "+f.iss.Mint(t, nil, nil))
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus || !strings.Contains(string(body), tc.wantBody) {
				t.Fatalf("got %d %s, want %d with %s", resp.StatusCode, body, tc.wantStatus, tc.wantBody)
			}
			if strings.Contains(string(body), "Bearer ey") {
				t.Fatal("response echoes the token")
			}
		})
	}
}

func TestUpstreamDownIsUnavailable(t *testing.T) {
	t.Parallel()
	f := newFixture(t, allow, "http://127.0.0.1:1")
	_, err := listWithToken(t, f.client(), f.iss.Mint(t, nil, nil), nil)
	if connect.CodeOf(err) != connect.CodeUnavailable || enforce.ReasonOf(err) != reason.UpstreamUnavailable {
		t.Fatalf("got %v", err)
	}
}

func TestOversizedBodyIsRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t, allow, "")
	req := connect.NewRequest(&invoicev1.ListInvoicesRequest{PageToken: strings.Repeat("x", 4<<10)})
	req.Header().Set("Authorization", "Bearer "+f.iss.Mint(t, nil, nil))
	if _, err := f.client().ListInvoices(t.Context(), req); err == nil {
		t.Fatal("oversized body accepted")
	}
	if n := f.upstream.callCount(); n != 0 {
		t.Fatalf("oversized body reached the handler (%d calls)", n)
	}
}

// TestRateLimits: past its burst a source address, then a client, gets 429
// with Retry-After; rotating headers (every forwarded-for variant, request
// ids, a forged client id, user agents) or fresh tokens of the same client
// do not buy a new bucket.
func TestRateLimits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		edit  func(*fixture, *edge.Config)
		token func(f *fixture, i int) string
	}{
		{"per source address, even without a token", func(_ *fixture, c *edge.Config) {
			c.SourceLimit = ratelimit.New(ratelimit.Config{Rate: 0.001, Burst: 3})
		}, func(*fixture, int) string { return "" }},
		{"per source address, whatever client's token", func(_ *fixture, c *edge.Config) {
			c.SourceLimit = ratelimit.New(ratelimit.Config{Rate: 0.001, Burst: 3})
		}, func(f *fixture, i int) string {
			id := fmt.Sprintf("client-%d", i)
			return f.iss.Mint(t, map[string]any{"client_id": id, "sub": id}, nil)
		}},
		{"per client, whatever the token", func(_ *fixture, c *edge.Config) {
			c.ClientLimit = ratelimit.New(ratelimit.Config{Rate: 0.001, Burst: 3})
		}, func(f *fixture, i int) string {
			// A fresh jti each time, and a user acting through the client.
			return f.iss.Mint(t, map[string]any{"sub": fmt.Sprintf("user-%d", i)}, nil)
		}},
	}
	rotated := func(i int) http.Header {
		return http.Header{
			"X-Forwarded-For":       {fmt.Sprintf("198.51.100.%d", i)},
			"X-Forwarded-Host":      {fmt.Sprintf("h%d.example", i)},
			"X-Real-Ip":             {fmt.Sprintf("203.0.113.%d", i)},
			"Forwarded":             {fmt.Sprintf("for=192.0.2.%d", i)},
			"True-Client-Ip":        {fmt.Sprintf("192.0.2.%d", 100+i)},
			"Cf-Connecting-Ip":      {fmt.Sprintf("192.0.2.%d", 200+i)},
			"X-Client-Ip":           {fmt.Sprintf("10.0.0.%d", i)},
			enforce.HeaderClientID:  {fmt.Sprintf("forged-client-%d", i)},
			enforce.HeaderRequestID: {fmt.Sprintf("rotated-%d", i)},
			"User-Agent":            {fmt.Sprintf("agent/%d", i)},
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixtureWith(t, allow, "", tc.edit)
			var last *http.Response
			for i := range 4 {
				req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, f.gateway.URL+"/gatehouse.invoice.v1.InvoiceService/ListInvoices", strings.NewReader("{}"))
				req.Header = rotated(i)
				req.Header.Set("Content-Type", "application/json")
				if tok := tc.token(f, i); tok != "" {
					req.Header.Set("Authorization", "Bearer "+tok)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if i < 3 && resp.StatusCode == http.StatusTooManyRequests {
					t.Fatalf("request %d limited within the burst", i+1)
				}
				last = resp
			}
			if last.StatusCode != http.StatusTooManyRequests || last.Header.Get("Retry-After") == "" {
				t.Fatalf("4th request: %d Retry-After=%q, want 429 with Retry-After", last.StatusCode, last.Header.Get("Retry-After"))
			}
		})
	}
}

func TestNewHandlerRequiresRevocations(t *testing.T) {
	t.Parallel()
	table, err := route.Default(route.Upstreams())
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("http://127.0.0.1:1")
	_, err = edge.NewHandler(edge.Config{
		Routes: table, Verifier: &countingVerifier{}, PDP: &fakePDP{decide: allow},
		Upstreams: map[string]*url.URL{route.UpstreamInvoice: u, route.UpstreamSupport: u}, Transport: h2cTransport(), Logger: discard(),
	})
	if err == nil {
		t.Fatal("a handler without revocations was built: it would never reject a revoked token")
	}
}
