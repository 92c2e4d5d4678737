package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/gatehouse/gatehouse/deploy/demo/internal/signin"
	"github.com/gatehouse/gatehouse/libs/enforce"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1/invoicev1connect"
)

// fakeAuthorizer hands out sign-ins in order and records the requests.
type fakeAuthorizer struct {
	signIns  []signin.Result
	errs     []error
	requests []signin.Request
}

func (a *fakeAuthorizer) Authorize(_ context.Context, req signin.Request) (signin.Result, error) {
	i := len(a.requests)
	a.requests = append(a.requests, req)
	if i < len(a.errs) && a.errs[i] != nil {
		return signin.Result{}, a.errs[i]
	}
	if i >= len(a.signIns) {
		return signin.Result{}, errors.New("no more sign-ins")
	}
	return a.signIns[i], nil
}

// fakeInvoices answers ApproveInvoice by bearer token, with the edge's own
// errors (libs/enforce), and records the tokens it saw.
type fakeInvoices struct {
	invoicev1connect.UnimplementedInvoiceServiceHandler
	answers map[string]func(ctx context.Context) error

	mu     sync.Mutex
	tokens []string
}

func (f *fakeInvoices) ApproveInvoice(ctx context.Context, req *connect.Request[invoicev1.ApproveInvoiceRequest]) (*connect.Response[invoicev1.ApproveInvoiceResponse], error) {
	token, _ := enforce.BearerToken(req.Header())
	f.mu.Lock()
	f.tokens = append(f.tokens, token)
	f.mu.Unlock()
	answer, ok := f.answers[token]
	if !ok {
		return nil, enforce.Unauthenticated(ctx, "invalid_token")
	}
	if err := answer(ctx); err != nil {
		return nil, err
	}
	return connect.NewResponse(&invoicev1.ApproveInvoiceResponse{Invoice: &invoicev1.Invoice{
		Id: req.Msg.GetId(), Status: invoicev1.InvoiceStatus_INVOICE_STATUS_APPROVED, ApprovedBy: "alice",
	}}), nil
}

func (f *fakeInvoices) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.tokens)
}

func stepUpDenial(params map[string]string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		return enforce.Denied(ctx, enforce.Decision{
			State: authzv1.Decision_DECISION_DENY, ReasonCode: "step_up_required", DecisionID: "dec-step-up",
			Obligations: []*authzv1.Obligation{{Type: enforce.ObligationStepUp, Params: params}},
		})
	}
}

func approved(context.Context) error { return nil }

func roleDenied(ctx context.Context) error {
	return enforce.Denied(ctx, enforce.Decision{State: authzv1.Decision_DECISION_DENY, ReasonCode: "role_not_permitted", DecisionID: "dec-role"})
}

func TestApproveWithStepUp(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	mfa := map[string]string{"acr": "mfa", "max_age": "300"}
	alice := func(token, acr string, age time.Duration) signin.Result {
		return signin.Result{Subject: "alice", ACR: acr, AuthTime: now.Add(-age), AccessToken: token}
	}
	tests := []struct {
		name     string
		grpc     bool
		signIns  []signin.Result
		authErrs []error
		answers  map[string]func(context.Context) error
		// wantRequests are the authorization requests, in order.
		wantRequests []signin.Request
		// wantTokens are the tokens ApproveInvoice saw, in order.
		wantTokens []string
		wantErr    error
		// wantOut must appear in the output, in this order.
		wantOut []string
	}{
		{
			name:         "a fresh MFA sign-in is not challenged",
			signIns:      []signin.Result{alice("tok-fresh", "mfa", 30*time.Second)},
			answers:      map[string]func(context.Context) error{"tok-fresh": approved},
			wantRequests: []signin.Request{{}},
			wantTokens:   []string{"tok-fresh"},
			wantOut:      []string{`signed in as alice: acr "mfa", auth_time 2026-11-26T09:59:30Z (30s ago)`, "approving inv-1 ..."},
		},
		{
			name:         "challenged: re-authorizes with acr_values and max_age, retries",
			signIns:      []signin.Result{alice("tok-old", "mfa", 7*time.Minute), alice("tok-new", "mfa", 2*time.Second)},
			answers:      map[string]func(context.Context) error{"tok-old": stepUpDenial(mfa), "tok-new": approved},
			wantRequests: []signin.Request{{}, {ACRValues: "mfa", MaxAge: 300, HasMaxAge: true}},
			wantTokens:   []string{"tok-old", "tok-new"},
			wantOut: []string{
				`signed in as alice: acr "mfa", auth_time 2026-11-26T09:53:00Z (7m0s ago)`,
				"step-up challenge: unauthenticated",
				`  WWW-Authenticate: Bearer realm="gatehouse", error="insufficient_user_authentication", acr_values="mfa", max_age=300`,
				`  it asks for acr_values=mfa max_age=300; this sign-in has acr "mfa" and is 7m0s old`,
				"re-authorizing with acr_values=mfa max_age=300",
				`signed in as alice: acr "mfa", auth_time 2026-11-26T09:59:58Z (2s ago)`,
				"retrying the approval with the new token ...",
			},
		},
		{
			name:         "over gRPC the challenge comes from the ErrorInfo",
			grpc:         true,
			signIns:      []signin.Result{alice("tok-pwd", "pwd", time.Minute), alice("tok-mfa", "mfa", time.Second)},
			answers:      map[string]func(context.Context) error{"tok-pwd": stepUpDenial(mfa), "tok-mfa": approved},
			wantRequests: []signin.Request{{}, {ACRValues: "mfa", MaxAge: 300, HasMaxAge: true}},
			wantTokens:   []string{"tok-pwd", "tok-mfa"},
			wantOut:      []string{"step-up challenge: unauthenticated", `  it asks for acr_values=mfa max_age=300; this sign-in has acr "pwd"`},
		},
		{
			name:         "no max_age and the acr already met: prompt=login",
			signIns:      []signin.Result{alice("tok-a", "mfa", time.Hour), alice("tok-b", "mfa", time.Second)},
			answers:      map[string]func(context.Context) error{"tok-a": stepUpDenial(map[string]string{"acr": "mfa"}), "tok-b": approved},
			wantRequests: []signin.Request{{}, {ACRValues: "mfa", Prompt: "login"}},
			wantTokens:   []string{"tok-a", "tok-b"},
			wantOut:      []string{"re-authorizing with acr_values=mfa prompt=login"},
		},
		{
			name:         "another user signs in for the step-up: no retry",
			signIns:      []signin.Result{alice("tok-alice", "mfa", time.Hour), {Subject: "bob", ACR: "mfa", AuthTime: now, AccessToken: "tok-bob"}},
			answers:      map[string]func(context.Context) error{"tok-alice": stepUpDenial(mfa), "tok-bob": approved},
			wantRequests: []signin.Request{{}, {ACRValues: "mfa", MaxAge: 300, HasMaxAge: true}},
			wantTokens:   []string{"tok-alice"},
			wantErr:      errOtherUser,
		},
		{
			name:         "the issuer gave a password-only sign-in: no retry",
			signIns:      []signin.Result{alice("tok-1", "pwd", time.Hour), alice("tok-2", "pwd", time.Second)},
			answers:      map[string]func(context.Context) error{"tok-1": stepUpDenial(mfa), "tok-2": approved},
			wantRequests: []signin.Request{{}, {ACRValues: "mfa", MaxAge: 300, HasMaxAge: true}},
			wantTokens:   []string{"tok-1"},
			wantErr:      errStepUpNotMet,
		},
		{
			name:         "the issuer gave an old sign-in: no retry",
			signIns:      []signin.Result{alice("tok-1", "mfa", time.Hour), alice("tok-2", "mfa", 301*time.Second)},
			answers:      map[string]func(context.Context) error{"tok-1": stepUpDenial(mfa), "tok-2": approved},
			wantRequests: []signin.Request{{}, {ACRValues: "mfa", MaxAge: 300, HasMaxAge: true}},
			wantTokens:   []string{"tok-1"},
			wantErr:      errStepUpNotMet,
		},
		{
			name:         "challenged again after the step-up: no loop",
			signIns:      []signin.Result{alice("tok-1", "mfa", time.Hour), alice("tok-2", "mfa", time.Second)},
			answers:      map[string]func(context.Context) error{"tok-1": stepUpDenial(mfa), "tok-2": stepUpDenial(mfa)},
			wantRequests: []signin.Request{{}, {ACRValues: "mfa", MaxAge: 300, HasMaxAge: true}},
			wantTokens:   []string{"tok-1", "tok-2"},
			wantErr:      errStillChallenged,
		},
		{
			name:         "a denial that is no challenge ends it",
			signIns:      []signin.Result{{Subject: "bob", ACR: "pwd", AuthTime: now, AccessToken: "tok-bob"}},
			answers:      map[string]func(context.Context) error{"tok-bob": roleDenied},
			wantRequests: []signin.Request{{}},
			wantTokens:   []string{"tok-bob"},
			wantErr:      &connect.Error{},
			wantOut:      []string{"approving inv-1 ..."},
		},
		{
			name:         "the step-up sign-in fails",
			signIns:      []signin.Result{alice("tok-1", "mfa", time.Hour)},
			authErrs:     []error{nil, signin.ErrAuthorization},
			answers:      map[string]func(context.Context) error{"tok-1": stepUpDenial(mfa)},
			wantRequests: []signin.Request{{}, {ACRValues: "mfa", MaxAge: 300, HasMaxAge: true}},
			wantTokens:   []string{"tok-1"},
			wantErr:      signin.ErrAuthorization,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			invoices := &fakeInvoices{answers: tc.answers}
			mux := http.NewServeMux()
			mux.Handle(invoicev1connect.NewInvoiceServiceHandler(invoices))
			srv := httptest.NewUnstartedServer(mux)
			srv.EnableHTTP2 = true
			srv.StartTLS()
			defer srv.Close()
			var opts []connect.ClientOption
			if tc.grpc {
				opts = append(opts, connect.WithGRPC())
			}
			client := invoicev1connect.NewInvoiceServiceClient(srv.Client(), srv.URL, opts...)
			auth := &fakeAuthorizer{signIns: tc.signIns, errs: tc.authErrs}
			var out bytes.Buffer

			inv, err := approveWithStepUp(t.Context(), &out, auth, client, "inv-1", func() time.Time { return now })

			switch want := tc.wantErr.(type) {
			case nil:
				if err != nil || inv.GetId() != "inv-1" || inv.GetStatus() != invoicev1.InvoiceStatus_INVOICE_STATUS_APPROVED {
					t.Fatalf("approveWithStepUp = %v, %v; want the approved invoice\n%s", inv, err, out.String())
				}
			case *connect.Error:
				if !errors.As(err, &want) || !strings.Contains(err.Error(), "reason role_not_permitted") {
					t.Fatalf("error %v, want the Connect error with its reason", err)
				}
			default:
				if !errors.Is(err, want) {
					t.Fatalf("error %v, want %v\n%s", err, want, out.String())
				}
			}
			if !slices.Equal(auth.requests, tc.wantRequests) {
				t.Errorf("authorization requests %+v, want %+v", auth.requests, tc.wantRequests)
			}
			if got := invoices.seen(); !slices.Equal(got, tc.wantTokens) {
				t.Errorf("ApproveInvoice saw tokens %q, want %q", got, tc.wantTokens)
			}
			rest := out.String()
			for _, line := range tc.wantOut {
				i := strings.Index(rest, line)
				if i < 0 {
					t.Fatalf("output lacks %q (after the lines before it):\n%s", line, out.String())
				}
				rest = rest[i+len(line):]
			}
			if tc.grpc && strings.Contains(out.String(), "WWW-Authenticate") {
				t.Errorf("a WWW-Authenticate line over gRPC, whose trailers cannot carry it:\n%s", out.String())
			}
			for _, s := range tc.signIns {
				if strings.Contains(out.String(), s.AccessToken) {
					t.Errorf("the output shows an access token:\n%s", out.String())
				}
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    config
		wantErr string
	}{
		{
			name: "defaults",
			args: []string{"-invoice", "inv_demo_acme_2"},
			want: config{issuer: "http://localhost:8080", gateway: "http://localhost:8000", invoiceID: "inv_demo_acme_2",
				scopes: []string{"openid", "invoice:read", "invoice:approve"}, clientID: "invoice-web", timeout: 10 * time.Minute},
		},
		{
			name: "everything",
			args: []string{"-issuer", "https://id.example", "-gateway", "https://api.example/", "-invoice", "inv-9",
				"-scope", "openid  invoice:approve", "-port", "53412", "-open", "-timeout", "1m", "-client-id", "other"},
			want: config{issuer: "https://id.example", gateway: "https://api.example/", invoiceID: "inv-9",
				scopes: []string{"openid", "invoice:approve"}, clientID: "other", port: 53412, open: true, timeout: time.Minute},
		},
		{name: "no invoice", args: nil, wantErr: "-invoice is required"},
		{name: "no openid", args: []string{"-invoice", "i", "-scope", "invoice:approve"}, wantErr: "-scope must include openid"},
		{name: "issuer not a URL", args: []string{"-invoice", "i", "-issuer", "localhost:8080"}, wantErr: `-issuer "localhost:8080" is not an http(s) URL`},
		{name: "gateway not http", args: []string{"-invoice", "i", "-gateway", "ftp://x"}, wantErr: `-gateway "ftp://x" is not an http(s) URL`},
		{name: "bad port", args: []string{"-invoice", "i", "-port", "70000"}, wantErr: "-port 70000 is not a port"},
		{name: "extra argument", args: []string{"-invoice", "i", "approve"}, wantErr: "unexpected arguments"},
		{name: "unknown flag", args: []string{"-invoice", "i", "-token", "x"}, wantErr: "flag provided but not defined"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			got, err := parseFlags(tc.args, &stderr)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.issuer != tc.want.issuer || got.gateway != tc.want.gateway || got.invoiceID != tc.want.invoiceID ||
				!slices.Equal(got.scopes, tc.want.scopes) || got.clientID != tc.want.clientID || got.port != tc.want.port ||
				got.open != tc.want.open || got.timeout != tc.want.timeout {
				t.Errorf("config %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestRunExitCodes(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"-h"}, &stdout, &stderr); code != 0 || !strings.Contains(stderr.String(), "usage: stepup") {
		t.Errorf("-h: exit %d, stderr %q; want 0 and the usage", code, stderr.String())
	}
	stderr.Reset()
	if code := run(t.Context(), nil, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "-invoice is required") {
		t.Errorf("no flags: exit %d, stderr %q; want 2", code, stderr.String())
	}
	// An issuer that is not there: exit 1 before any sign-in.
	stderr.Reset()
	stdout.Reset()
	if code := run(t.Context(), []string{"-invoice", "i", "-issuer", "http://127.0.0.1:1", "-timeout", "5s"}, &stdout, &stderr); code != 1 ||
		!strings.Contains(stderr.String(), "discover the issuer") || stdout.Len() != 0 {
		t.Errorf("unreachable issuer: exit %d, stdout %q, stderr %q; want 1, nothing, the discovery error", code, stdout.String(), stderr.String())
	}
}
