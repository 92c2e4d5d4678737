package enforce_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/gatehouse/gatehouse/libs/accesstoken"
	"github.com/gatehouse/gatehouse/libs/accesstoken/accesstokentest"
	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
)

// fakePDP answers with a fixed response after a delay (a test double).
type fakePDP struct {
	authzv1connect.UnimplementedDecisionServiceHandler
	resp  *authzv1.CheckResponse
	delay time.Duration
	short bool
}

// BatchCheck answers every item with the fixed response, or with short
// results when short is set (a malformed answer).
func (f *fakePDP) BatchCheck(ctx context.Context, req *connect.Request[authzv1.BatchCheckRequest]) (*connect.Response[authzv1.BatchCheckResponse], error) {
	select {
	case <-time.After(f.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	n := len(req.Msg.GetItems())
	if f.short {
		n--
	}
	results := make([]*authzv1.CheckResponse, max(n, 0))
	for i := range results {
		results[i] = f.resp
	}
	return connect.NewResponse(&authzv1.BatchCheckResponse{Results: results}), nil
}

func (f *fakePDP) Check(ctx context.Context, _ *connect.Request[authzv1.CheckRequest]) (*connect.Response[authzv1.CheckResponse], error) {
	select {
	case <-time.After(f.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return connect.NewResponse(f.resp), nil
}

func newClient(t *testing.T, pdp *fakePDP) *enforce.Client {
	t.Helper()
	_, h := authzv1connect.NewDecisionServiceHandler(pdp)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return enforce.NewClient(authzv1connect.NewDecisionServiceClient(srv.Client(), srv.URL), 100*time.Millisecond)
}

func TestClientCheck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		pdp         *fakePDP
		wantAllowed bool
		wantErr     bool
		wantReason  string
	}{
		{"allow", &fakePDP{resp: &authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_ALLOW, ReasonCode: reason.Allowed}}, true, false, reason.Allowed},
		{"allow with an obligation does not permit", &fakePDP{resp: &authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_ALLOW,
			Obligations: []*authzv1.Obligation{{Type: "step_up"}}}}, false, false, ""},
		{"deny", &fakePDP{resp: &authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_DENY, ReasonCode: reason.TenantMismatch}}, false, false, reason.TenantMismatch},
		{"not applicable denies", &fakePDP{resp: &authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_NOT_APPLICABLE}}, false, false, ""},
		{"indeterminate denies", &fakePDP{resp: &authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_INDETERMINATE}}, false, false, ""},
		{"unspecified is unavailable", &fakePDP{resp: &authzv1.CheckResponse{}}, false, true, reason.PDPUnavailable},
		{"slow is unavailable", &fakePDP{resp: &authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_ALLOW}, delay: time.Second}, false, true, reason.PDPUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, err := newClient(t, tc.pdp).Check(t.Context(), &authzv1.CheckRequest{Action: "invoice:read"})
			if (err != nil) != tc.wantErr || (err != nil && !errors.Is(err, enforce.ErrPDPUnavailable)) {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if d.Allowed() != tc.wantAllowed {
				t.Fatalf("allowed = %v, want %v", d.Allowed(), tc.wantAllowed)
			}
			if tc.wantReason != "" && d.ReasonCode != tc.wantReason {
				t.Fatalf("reason = %q, want %q", d.ReasonCode, tc.wantReason)
			}
		})
	}
}

func TestClientBatchCheck(t *testing.T) {
	t.Parallel()
	allow := &authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_ALLOW, ReasonCode: reason.Allowed}
	reqs := []*authzv1.CheckRequest{{Action: "invoice:read"}, {Action: "invoice:read"}}
	d, err := newClient(t, &fakePDP{resp: allow}).BatchCheck(t.Context(), reqs)
	if err != nil || len(d) != 2 || !d[0].Allowed() || !d[1].Allowed() {
		t.Fatalf("parallel answer: %v %v", d, err)
	}
	for name, pdp := range map[string]*fakePDP{
		"not parallel": {resp: allow, short: true},
		"too slow":     {resp: allow, delay: time.Second},
	} {
		if d, err := newClient(t, pdp).BatchCheck(t.Context(), reqs); !errors.Is(err, enforce.ErrPDPUnavailable) || d != nil {
			t.Errorf("%s: %v %v, want ErrPDPUnavailable and no decisions", name, d, err)
		}
	}
}

func TestClientUnreachable(t *testing.T) {
	t.Parallel()
	c := enforce.NewClient(authzv1connect.NewDecisionServiceClient(http.DefaultClient, "http://127.0.0.1:1"), 0)
	d, err := c.Check(t.Context(), &authzv1.CheckRequest{})
	if !errors.Is(err, enforce.ErrPDPUnavailable) || d.Allowed() {
		t.Fatalf("unreachable PDP must deny: %v %+v", err, d)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	tests := []struct {
		name       string
		err        *connect.Error
		code       connect.Code
		reason     string
		authHeader string
	}{
		{"missing token", enforce.Unauthenticated(ctx, reason.MissingToken), connect.CodeUnauthenticated, reason.MissingToken, `error="invalid_token"`},
		{"insufficient scope", enforce.Denied(ctx, enforce.Decision{ReasonCode: reason.InsufficientScope, RequiredScopes: []string{"invoice:read"}}), connect.CodePermissionDenied, reason.InsufficientScope, `error="insufficient_scope", scope="invoice:read"`},
		{"tenant mismatch has no challenge", enforce.Denied(ctx, enforce.Decision{ReasonCode: reason.TenantMismatch}), connect.CodePermissionDenied, reason.TenantMismatch, ""},
		{"empty reason denies with evaluation_error", enforce.Denied(ctx, enforce.Decision{}), connect.CodePermissionDenied, reason.EvaluationError, ""},
		{"unavailable", enforce.Unavailable(ctx, reason.PDPUnavailable), connect.CodeUnavailable, reason.PDPUnavailable, ""},
		{"step up", enforce.Denied(ctx, enforce.Decision{State: authzv1.Decision_DECISION_DENY, ReasonCode: reason.StepUpRequired,
			Obligations: []*authzv1.Obligation{{Type: enforce.ObligationStepUp, Params: map[string]string{"acr": "mfa", "max_age": "300"}}}}),
			connect.CodeUnauthenticated, reason.StepUpRequired, `error="insufficient_user_authentication", acr_values="mfa", max_age=300`},
		{"allow with step up is a challenge, not a pass", enforce.Denied(ctx, enforce.Decision{State: authzv1.Decision_DECISION_ALLOW,
			Obligations: []*authzv1.Obligation{{Type: enforce.ObligationStepUp, Params: map[string]string{"acr": "mfa"}}}}),
			connect.CodeUnauthenticated, reason.StepUpRequired, `error="insufficient_user_authentication", acr_values="mfa"`},
		{"allow with an unknown obligation", enforce.Denied(ctx, enforce.Decision{State: authzv1.Decision_DECISION_ALLOW,
			Obligations: []*authzv1.Obligation{{Type: "redact"}}}), connect.CodePermissionDenied, reason.UnsupportedObligation, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.err.Code() != tc.code || enforce.ReasonOf(tc.err) != tc.reason {
				t.Fatalf("got %v / %q", tc.err.Code(), enforce.ReasonOf(tc.err))
			}
			if tc.reason == reason.InsufficientScope && !strings.Contains(fmt.Sprint(tc.err.Details()[0].Value()), "invoice:read") {
				t.Fatal("the required scope is not in the ErrorInfo metadata")
			}
			got := tc.err.Meta().Get("WWW-Authenticate")
			if tc.authHeader == "" && got != "" || !strings.Contains(got, tc.authHeader) {
				t.Fatalf("WWW-Authenticate = %q, want it to contain %q", got, tc.authHeader)
			}
		})
	}
}

// TestStepUpChallenge pins RFC 9470's challenge: the exact WWW-Authenticate
// value, and the same acr_values and max_age in the ErrorInfo metadata (gRPC
// clients never see the header: it travels in trailers there).
func TestStepUpChallenge(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		state    authzv1.Decision
		params   map[string]string
		wantAuth string
		wantMeta map[string]string
	}{
		{name: "acr and max_age", state: authzv1.Decision_DECISION_DENY,
			params:   map[string]string{"acr": "mfa", "max_age": "300"},
			wantAuth: `Bearer realm="gatehouse", error="insufficient_user_authentication", acr_values="mfa", max_age=300`,
			wantMeta: map[string]string{"decision_id": "dec-1", "acr_values": "mfa", "max_age": "300"}},
		{name: "several acr values", state: authzv1.Decision_DECISION_DENY,
			params:   map[string]string{"acr": "phr mfa", "max_age": "0"},
			wantAuth: `Bearer realm="gatehouse", error="insufficient_user_authentication", acr_values="phr mfa", max_age=0`,
			wantMeta: map[string]string{"decision_id": "dec-1", "acr_values": "phr mfa", "max_age": "0"}},
		{name: "only max_age", state: authzv1.Decision_DECISION_DENY,
			params:   map[string]string{"max_age": "60"},
			wantAuth: `Bearer realm="gatehouse", error="insufficient_user_authentication", max_age=60`,
			wantMeta: map[string]string{"decision_id": "dec-1", "max_age": "60"}},
		{name: "a max_age that is not a non-negative integer is left out", state: authzv1.Decision_DECISION_DENY,
			params:   map[string]string{"acr": "mfa", "max_age": "-5"},
			wantAuth: `Bearer realm="gatehouse", error="insufficient_user_authentication", acr_values="mfa"`,
			wantMeta: map[string]string{"decision_id": "dec-1", "acr_values": "mfa"}},
		{name: "quotes cannot break out of acr_values", state: authzv1.Decision_DECISION_DENY,
			params:   map[string]string{"acr": "mfa\", error=\"x", "max_age": "5m"},
			wantAuth: `Bearer realm="gatehouse", error="insufficient_user_authentication", acr_values="mfa, error=x"`,
			wantMeta: map[string]string{"decision_id": "dec-1", "acr_values": "mfa, error=x"}},
		{name: "an allow with a step_up obligation challenges too", state: authzv1.Decision_DECISION_ALLOW,
			params:   map[string]string{"acr": "mfa", "max_age": "300"},
			wantAuth: `Bearer realm="gatehouse", error="insufficient_user_authentication", acr_values="mfa", max_age=300`,
			wantMeta: map[string]string{"decision_id": "dec-1", "acr_values": "mfa", "max_age": "300"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := enforce.Decision{State: tc.state, ReasonCode: reason.StepUpRequired, DecisionID: "dec-1",
				Obligations: []*authzv1.Obligation{{Type: enforce.ObligationStepUp, Params: tc.params}}}
			if d.Allowed() {
				t.Fatal("a decision with a step_up obligation permits")
			}
			err := enforce.Denied(t.Context(), d)
			if err.Code() != connect.CodeUnauthenticated {
				t.Fatalf("code %v, want unauthenticated", err.Code())
			}
			if got := err.Meta().Values("WWW-Authenticate"); len(got) != 1 || got[0] != tc.wantAuth {
				t.Fatalf("WWW-Authenticate %q, want %q", got, tc.wantAuth)
			}
			info := errorInfo(t, err)
			if info.GetReason() != reason.StepUpRequired || info.GetDomain() != enforce.ErrorDomain {
				t.Fatalf("ErrorInfo reason %q domain %q", info.GetReason(), info.GetDomain())
			}
			if !maps.Equal(info.GetMetadata(), tc.wantMeta) {
				t.Fatalf("ErrorInfo metadata %v, want %v", info.GetMetadata(), tc.wantMeta)
			}
		})
	}
}

// errorInfo returns err's ErrorInfo detail.
func errorInfo(t *testing.T, err *connect.Error) *errdetails.ErrorInfo {
	t.Helper()
	for _, d := range err.Details() {
		v, verr := d.Value()
		if verr != nil {
			t.Fatal(verr)
		}
		if info, ok := v.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	t.Fatalf("%v has no ErrorInfo", err)
	return nil
}

func TestBearerToken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		values []string
		want   string
		ok     bool
	}{
		{"bearer", []string{"Bearer abc"}, "abc", true},
		{"case-insensitive scheme", []string{"bearer abc"}, "abc", true},
		{"none", nil, "", false},
		{"basic", []string{"Basic abc"}, "", false},
		{"empty token", []string{"Bearer "}, "", false},
		{"two headers", []string{"Bearer a", "Bearer b"}, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{}
			for _, v := range tc.values {
				h.Add("Authorization", v)
			}
			got, ok := enforce.BearerToken(h)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("got %q %v", got, ok)
			}
		})
	}
}

func TestAuthenticator(t *testing.T) {
	t.Parallel()
	iss := accesstokentest.NewIssuer(t)
	jwks, _ := accesstoken.NewJWKS(accesstoken.JWKSConfig{URL: iss.JWKSURL()})
	v, _ := accesstoken.NewVerifier(accesstoken.Config{Issuer: iss.URL, Audience: accesstokentest.Audience, Keys: jwks})
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	token := iss.Mint(t, nil, nil)
	good := func() http.Header {
		h := http.Header{}
		h.Set("Authorization", "Bearer "+token)
		h.Set(enforce.HeaderSubject, "reporting-job")
		h.Set(enforce.HeaderTenant, "acme")
		h.Set(enforce.HeaderClientID, "reporting-job")
		return h
	}
	tests := []struct {
		name    string
		require bool
		edit    func(http.Header)
		reason  string
	}{
		{"matching headers", true, func(http.Header) {}, ""},
		{"no token", true, func(h http.Header) { h.Del("Authorization") }, reason.MissingToken},
		{"forged token", true, func(h http.Header) { h.Set("Authorization", "Bearer "+token+"x") }, reason.InvalidToken},
		{"tenant header of another tenant", true, func(h http.Header) { h.Set(enforce.HeaderTenant, "globex") }, reason.IdentityMismatch},
		{"duplicated subject header", true, func(h http.Header) { h.Add(enforce.HeaderSubject, "alice") }, reason.IdentityMismatch},
		{"headers required but absent", true, func(h http.Header) { h.Del(enforce.HeaderTenant) }, reason.IdentityMismatch},
		{"headers optional and absent", false, func(h http.Header) { h.Del(enforce.HeaderTenant) }, ""},
		{"headers optional but wrong", false, func(h http.Header) { h.Set(enforce.HeaderSubject, "alice") }, reason.IdentityMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := good()
			tc.edit(h)
			claims, err := enforce.NewAuthenticator(v, logger, tc.require).Authenticate(t.Context(), h)
			if got := enforce.ReasonOf(err); got != tc.reason {
				t.Fatalf("reason %q, want %q (err %v)", got, tc.reason, err)
			}
			if tc.reason == "" && (claims == nil || claims.Tenant != "acme") {
				t.Fatalf("claims not returned: %+v", claims)
			}
		})
	}
}

func TestPrincipal(t *testing.T) {
	t.Parallel()
	c := &accesstoken.Claims{Subject: "alice", Tenant: "acme", ClientID: "support-console", Scopes: []string{"invoice:read"},
		AuthTime: time.Unix(1700000000, 0), Actor: &accesstoken.Actor{Subject: "sam", Actor: &accesstoken.Actor{Subject: "bot"}}}
	p := enforce.Principal(c)
	if p.GetSubject() != "alice" || p.GetAuthTime().GetSeconds() != 1700000000 || len(p.GetActorChain()) != 2 || p.GetActorChain()[1].GetSubject() != "bot" {
		t.Fatalf("principal: %v", p)
	}
}

func TestRequestIDs(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]bool{
		"abc-DEF_123": true, strings.Repeat("a", 64): true, enforce.NewRequestID(): true,
		"": false, strings.Repeat("a", 65): false, "id with spaces": false, "id\"q": false, "ünï": false,
	} {
		if got := enforce.ValidRequestID(s); got != want {
			t.Errorf("ValidRequestID(%q) = %v, want %v", s, got, want)
		}
	}
	if a, b := enforce.NewRequestID(), enforce.NewRequestID(); a == b {
		t.Fatal("two request ids are equal")
	}
	for addr, want := range map[string]string{"192.0.2.1:443": "192.0.2.1", "[2001:db8::1]:80": "2001:db8::1", "192.0.2.1": "192.0.2.1"} {
		if got := enforce.RemoteIP(addr); got != want {
			t.Errorf("RemoteIP(%q) = %q, want %q", addr, got, want)
		}
	}
}
