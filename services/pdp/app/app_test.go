package app_test

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	"github.com/gatehouse/gatehouse/libs/telemetry"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
	"github.com/gatehouse/gatehouse/services/pdp/app"
	"github.com/gatehouse/gatehouse/services/pdp/internal/decisionrpc"
)

// policyDir is the repository's policy bundle.
const policyDir = "../../../policies"

func testConfig() app.Config {
	var cfg app.Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	cfg.PolicyDir = policyDir
	cfg.Store = app.StoreMemory
	cfg.BundleKeyFile = "../../../deploy/policy-signing/demo.pub.pem"
	cfg.BundleKeyID = "gatehouse-demo"
	return cfg
}

// startPDP serves a PDP over HTTPS with HTTP/2 (as gRPC needs) for the test.
func startPDP(tb testing.TB) (*httptest.Server, *app.App) {
	tb.Helper()
	a, err := app.New(tb.Context(), testConfig(), telemetry.NewLogger(io.Discard, app.ServiceName, slog.LevelInfo))
	if err != nil {
		tb.Fatalf("app.New: %v", err)
	}
	tb.Cleanup(func() {
		if err := a.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	srv := httptest.NewUnstartedServer(a.Handler())
	srv.EnableHTTP2 = true
	srv.StartTLS()
	tb.Cleanup(srv.Close)
	return srv, a
}

// manifestRevision reads the revision the PDP must report.
func manifestRevision(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(policyDir + "/.manifest")
	if err != nil {
		t.Fatalf("read manifest: %v", err)
	}
	var m struct{ Revision string }
	if err := json.Unmarshal(raw, &m); err != nil || m.Revision == "" {
		t.Fatalf("manifest revision: %q, %v", m.Revision, err)
	}
	return m.Revision
}

// Demo-seed principals (DESIGN.md).
func reportingJob() *authzv1.Principal {
	return &authzv1.Principal{Subject: "reporting-job", ClientId: "reporting-job", Tenant: "acme", Scopes: []string{"invoice:read"}}
}

func bob() *authzv1.Principal {
	return &authzv1.Principal{Subject: "bob", ClientId: "invoice-web", Tenant: "acme",
		Roles: []string{"billing_viewer"}, Scopes: []string{"openid", "invoice:read", "invoice:write"}}
}

func carol() *authzv1.Principal {
	return &authzv1.Principal{Subject: "carol", ClientId: "invoice-web", Tenant: "globex",
		Roles: []string{"billing_approver"}, Scopes: []string{"invoice:read", "invoice:write", "invoice:approve"}}
}

func invoice(tenant string) *authzv1.Resource {
	return &authzv1.Resource{Type: "invoice", Id: "inv-1001", Tenant: tenant}
}

func check(p *authzv1.Principal, action string, r *authzv1.Resource) *authzv1.CheckRequest {
	return &authzv1.CheckRequest{Principal: p, Action: action, Resource: r,
		Context: &authzv1.RequestContext{RequestId: "req-1", SourceIp: "192.0.2.10"}}
}

var decisionID = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestCheck(t *testing.T) {
	t.Parallel()
	srv, _ := startPDP(t)
	revision := manifestRevision(t)

	manyScopes := make([]string, 65)
	for i := range manyScopes {
		manyScopes[i] = "scope" + strings.Repeat("x", i)
	}
	withScopes := func(p *authzv1.Principal, scopes []string) *authzv1.Principal { p.Scopes = scopes; return p }

	tests := []struct {
		name       string
		req        *authzv1.CheckRequest
		want       authzv1.Decision
		wantReason string
		wantScopes []string
	}{
		{"client acting for itself reads", check(reportingJob(), "invoice:read", invoice("acme")),
			authzv1.Decision_DECISION_ALLOW, reason.Allowed, nil},
		{"billing_viewer reads", check(bob(), "invoice:read", invoice("acme")),
			authzv1.Decision_DECISION_ALLOW, reason.Allowed, nil},
		{"billing_viewer lists (collection, no resource tenant)", check(bob(), "invoice:read", &authzv1.Resource{Type: "invoice"}),
			authzv1.Decision_DECISION_ALLOW, reason.Allowed, nil},
		{"cross-tenant user", check(carol(), "invoice:read", invoice("acme")),
			authzv1.Decision_DECISION_DENY, reason.TenantMismatch, nil},
		{"cross-tenant client", check(reportingJob(), "invoice:read", invoice("globex")),
			authzv1.Decision_DECISION_DENY, reason.TenantMismatch, nil},
		{"client lacks scope", check(reportingJob(), "invoice:write", invoice("acme")),
			authzv1.Decision_DECISION_DENY, reason.InsufficientScope, []string{"invoice:write"}},
		{"billing_viewer writes", check(bob(), "invoice:write", invoice("acme")),
			authzv1.Decision_DECISION_DENY, reason.RoleNotPermitted, nil},
		{"approve one invoice without its amount", check(carol(), "invoice:approve", invoice("globex")),
			authzv1.Decision_DECISION_DENY, reason.MissingAttribute, nil},
		{"invoice action no policy covers", check(bob(), "invoice:delete", invoice("acme")),
			authzv1.Decision_DECISION_NOT_APPLICABLE, reason.NoApplicablePolicy, nil},
		{"unknown resource type", check(bob(), "ledger:read", &authzv1.Resource{Type: "ledger"}),
			authzv1.Decision_DECISION_NOT_APPLICABLE, reason.NoApplicablePolicy, nil},
		{"empty request", &authzv1.CheckRequest{},
			authzv1.Decision_DECISION_INDETERMINATE, reason.MissingAttribute, nil},
		{"no subject", check(&authzv1.Principal{Tenant: "acme"}, "invoice:read", invoice("acme")),
			authzv1.Decision_DECISION_INDETERMINATE, reason.MissingAttribute, nil},
		{"no resource", check(bob(), "invoice:read", nil),
			authzv1.Decision_DECISION_INDETERMINATE, reason.MissingAttribute, nil},
		{"malformed action", check(bob(), "invoice.read", invoice("acme")),
			authzv1.Decision_DECISION_INDETERMINATE, reason.InvalidAttribute, nil},
		{"type differs from action", check(bob(), "invoice:read", &authzv1.Resource{Type: "support", Tenant: "acme"}),
			authzv1.Decision_DECISION_INDETERMINATE, reason.InvalidAttribute, nil},
		{"control character", check(bob(), "invoice:read", &authzv1.Resource{Type: "invoice", Id: "inv\x1b[2J", Tenant: "acme"}),
			authzv1.Decision_DECISION_INDETERMINATE, reason.InvalidAttribute, nil},
		{"over-long subject", check(&authzv1.Principal{Subject: strings.Repeat("s", 257), Tenant: "acme"}, "invoice:read", invoice("acme")),
			authzv1.Decision_DECISION_INDETERMINATE, reason.InvalidAttribute, nil},
		{"too many scopes", check(withScopes(bob(), manyScopes), "invoice:read", invoice("acme")),
			authzv1.Decision_DECISION_INDETERMINATE, reason.InvalidAttribute, nil},
		{"attribute without value", check(bob(), "invoice:read", &authzv1.Resource{Type: "invoice", Tenant: "acme",
			Attributes: map[string]*authzv1.AttributeValue{"amount": {}}}),
			authzv1.Decision_DECISION_INDETERMINATE, reason.InvalidAttribute, nil},
	}

	protocols := []struct {
		name string
		opts []connect.ClientOption
	}{
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
		{"connect-json", []connect.ClientOption{connect.WithProtoJSON()}},
	}
	for _, proto := range protocols {
		client := authzv1connect.NewDecisionServiceClient(srv.Client(), srv.URL, proto.opts...)
		for _, tc := range tests {
			t.Run(proto.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				resp, err := client.Check(t.Context(), connect.NewRequest(tc.req))
				if err != nil {
					t.Fatalf("Check: %v (decisions are answers, never errors)", err)
				}
				m := resp.Msg
				if m.GetDecision() != tc.want || m.GetReasonCode() != tc.wantReason {
					t.Errorf("Check = %s %s (%q), want %s %s", m.GetDecision(), m.GetReasonCode(), m.GetMessage(), tc.want, tc.wantReason)
				}
				if !slices.Equal(m.GetRequiredScopes(), tc.wantScopes) {
					t.Errorf("required_scopes = %v, want %v", m.GetRequiredScopes(), tc.wantScopes)
				}
				if !decisionID.MatchString(m.GetDecisionId()) {
					t.Errorf("decision_id = %q, want 32 hex digits", m.GetDecisionId())
				}
				if m.GetPolicyVersion() != revision {
					t.Errorf("policy_version = %q, want %q", m.GetPolicyVersion(), revision)
				}
				if tc.want == authzv1.Decision_DECISION_INDETERMINATE && m.GetMessage() == "" {
					t.Error("INDETERMINATE without a message")
				}
			})
		}
	}
}

func TestCheckRejectsMalformedBodies(t *testing.T) {
	t.Parallel()
	srv, _ := startPDP(t)
	tests := []struct {
		name     string
		body     string
		wantCode string
	}{
		{"not JSON", `{"principal": {`, connect.CodeInvalidArgument.String()},
		{"wrong field type", `{"action": 7}`, connect.CodeInvalidArgument.String()},
		{"over the 1 MiB request limit", `{"action": "` + strings.Repeat("a", decisionrpc.MaxRequestBytes) + `"}`, connect.CodeResourceExhausted.String()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost,
				srv.URL+authzv1connect.DecisionServiceCheckProcedure, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatalf("POST: %v", err)
			}
			defer resp.Body.Close()
			var body struct{ Code string }
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("decode error body: %v", err)
			}
			if body.Code != tc.wantCode {
				t.Errorf("status %d code %q, want code %q", resp.StatusCode, body.Code, tc.wantCode)
			}
		})
	}
}

func TestEndpoints(t *testing.T) {
	t.Parallel()
	srv, _ := startPDP(t)
	client := authzv1connect.NewDecisionServiceClient(srv.Client(), srv.URL)
	// The same question twice in a row: a miss, then (almost always in the
	// same second) a hit; either way both results are counted.
	for range 2 {
		if _, err := client.Check(t.Context(), connect.NewRequest(check(bob(), "invoice:read", invoice("acme")))); err != nil {
			t.Fatalf("Check: %v", err)
		}
	}
	tests := []struct {
		path     string
		wantBody string
	}{
		{"/healthz", "ok"},
		{"/readyz", "ready"},
		// The series docs/pdp.md documents.
		{"/metrics", `gatehouse_pdp_decisions_total{decided_by="active",decision="allow"`},
		{"/metrics", "gatehouse_pdp_decision_duration_seconds_bucket"},
		{"/metrics", "gatehouse_pdp_cache_lookups_total"},
		{"/metrics", "gatehouse_audit_queue_depth"},
		{"/metrics", "gatehouse_pdp_rollout_generation"},
		{"/metrics", "gatehouse_pdp_shadow_queue_depth"},
	}
	for _, tc := range tests {
		t.Run(tc.path+" "+tc.wantBody, func(t *testing.T) {
			t.Parallel()
			resp, err := srv.Client().Get(srv.URL + tc.path)
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), tc.wantBody) {
				t.Errorf("GET %s = %d %q, want 200 containing %q", tc.path, resp.StatusCode, body, tc.wantBody)
			}
		})
	}
}

func TestNewFails(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(*app.Config)
		want   string
	}{
		{"missing policy dir", func(c *app.Config) { c.PolicyDir = "testdata/no-such-dir" }, "testdata/no-such-dir"},
		{"policy dir is not a signed bundle", func(c *app.Config) { c.PolicyDir = "." }, "not signed"},
		{"policy dir signed with another key", func(c *app.Config) { c.BundleKeyID = "another-key" }, "signature"},
		{"no verification key", func(c *app.Config) { c.BundleKeyFile = "" }, "bundle-verification-key"},
		{"unreadable verification key", func(c *app.Config) { c.BundleKeyFile = "testdata/no-such-key.pem" }, "bundle verification key"},
		{"postgres without a database", func(c *app.Config) { c.Store = app.StorePostgres }, "database-url is required"},
		{"unknown store", func(c *app.Config) { c.Store = "floppy" }, "store must be"},
		{"slow rollout poll", func(c *app.Config) { c.RolloutPoll = 2 * time.Second }, "rollout-poll"},
		{"empty policy dir", func(c *app.Config) { c.PolicyDir = "" }, "policy-dir is required"},
		{"zero eval timeout", func(c *app.Config) { c.EvalTimeout = 0 }, "eval-timeout"},
		{"unknown exporter", func(c *app.Config) { c.Telemetry.Exporter = "carrier-pigeon" }, "exporter"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig()
			tc.mutate(&cfg)
			a, err := app.New(t.Context(), cfg, slog.New(slog.DiscardHandler))
			if err == nil {
				_ = a.Close()
				t.Fatal("New succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New error = %q, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestRegisterFlagsDefaults(t *testing.T) {
	t.Parallel()
	var cfg app.Config
	cfg.RegisterFlags(flag.NewFlagSet("pdp", flag.ContinueOnError))
	want := app.Config{
		HTTPAddr: ":8081", PolicyDir: "policies", Store: app.StorePostgres,
		Issuer: "http://localhost:8080", AdminAudience: "gatehouse-pdp", EvalTimeout: 100 * time.Millisecond,
		CacheSize: 10000, DecisionLogQueue: 8192, ShadowQueue: 4096, RolloutPoll: 500 * time.Millisecond,
		Telemetry: telemetry.Config{Exporter: "none"},
	}
	if cfg != want {
		t.Errorf("defaults = %+v, want %+v", cfg, want)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	t.Parallel()
	// A port of our own, so the test can tell when the PDP is up: the
	// context must end while it serves, not while it still compiles its
	// bundle (which takes a while under -race on a busy machine).
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.HTTPAddr = addr
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, cfg, slog.New(slog.DiscardHandler)) }()

	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("Run returned before it was ready: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the PDP did not become ready within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil after the context ends", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15s of the context ending")
	}
}
