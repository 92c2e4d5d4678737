package cli_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
	"github.com/gatehouse/gatehouse/services/pdp/internal/cli"
)

// Credentials the fake issuer accepts and the token it hands out. None of
// them may ever appear in the CLI's output.
const (
	testClientID = "policy-admin"
	testSecret   = "s3cret-Zq8-never-printed"
	testToken    = "opaque-T0ken-never-printed"
)

var (
	t0 = timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	t1 = timestamppb.New(time.Date(2026, 1, 2, 4, 0, 0, 0, time.UTC))
)

// cannedRollout is what every rollout-changing fake procedure answers.
func cannedRollout() *authzv1.Rollout {
	return &authzv1.Rollout{
		Generation: 7, Active: "r1", Candidate: "r2", Mode: authzv1.RolloutMode_ROLLOUT_MODE_CANARY,
		CanaryPercent: 10, Previous: "r0", UpdatedBy: "alice", UpdatedAt: t0,
	}
}

// fakePDP is a PolicyAdminService and DecisionService with canned answers
// that records every request it receives.
type fakePDP struct {
	authzv1connect.UnimplementedPolicyAdminServiceHandler
	authzv1connect.UnimplementedDecisionServiceHandler

	mu       sync.Mutex
	requests map[string]proto.Message // last request per procedure
	auth     []string                 // Authorization header of every call
	errs     map[string]error         // error to answer per procedure
	block    bool                     // wait for the caller's deadline
	check    *authzv1.CheckResponse   // Check's answer
	report   *authzv1.GetReportResponse
	bundles  []*authzv1.BundleInfo
	history  []*authzv1.HistoryEntry
	created  bool // PushBundle's created
}

func newFakePDP() *fakePDP {
	return &fakePDP{
		requests: map[string]proto.Message{},
		errs:     map[string]error{},
		created:  true,
		check: &authzv1.CheckResponse{
			Decision: authzv1.Decision_DECISION_ALLOW, ReasonCode: "allowed",
			PolicyVersion: "r1", DecisionId: "dec-1",
		},
	}
}

// handle records req under name and returns res or the canned error.
func handle[Req, Res any](ctx context.Context, f *fakePDP, name string, req *connect.Request[Req], res *Res) (*connect.Response[Res], error) {
	f.mu.Lock()
	f.requests[name] = any(req.Msg).(proto.Message)
	f.auth = append(f.auth, req.Header().Get("Authorization"))
	err, block := f.errs[name], f.block
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return nil, connect.NewError(connect.CodeDeadlineExceeded, ctx.Err())
	}
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(res), nil
}

// request returns the last request recorded for name.
func request[T proto.Message](t *testing.T, f *fakePDP, name string) T {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.requests[name]
	if !ok {
		t.Fatalf("no %s request received", name)
	}
	return m.(T)
}

func (f *fakePDP) procedures() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for n := range f.requests {
		names = append(names, n)
	}
	return names
}

func (f *fakePDP) authHeaders() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.auth...)
}

func (f *fakePDP) PushBundle(ctx context.Context, req *connect.Request[authzv1.PushBundleRequest]) (*connect.Response[authzv1.PushBundleResponse], error) {
	sum := sha256.Sum256(req.Msg.GetBundle())
	return handle(ctx, f, "PushBundle", req, &authzv1.PushBundleResponse{
		Bundle: &authzv1.BundleInfo{
			Revision: "r2", Digest: hex.EncodeToString(sum[:]), SizeBytes: int64(len(req.Msg.GetBundle())),
			UploadedBy: "policy-admin", UploadedAt: t0, SigningKeyId: "gatehouse-demo",
		},
		Created: f.created,
	})
}

func (f *fakePDP) ListBundles(ctx context.Context, req *connect.Request[authzv1.ListBundlesRequest]) (*connect.Response[authzv1.ListBundlesResponse], error) {
	return handle(ctx, f, "ListBundles", req, &authzv1.ListBundlesResponse{Bundles: f.bundles})
}

func (f *fakePDP) GetRollout(ctx context.Context, req *connect.Request[authzv1.GetRolloutRequest]) (*connect.Response[authzv1.GetRolloutResponse], error) {
	return handle(ctx, f, "GetRollout", req, &authzv1.GetRolloutResponse{Rollout: cannedRollout()})
}

func (f *fakePDP) StartShadow(ctx context.Context, req *connect.Request[authzv1.StartShadowRequest]) (*connect.Response[authzv1.StartShadowResponse], error) {
	r := cannedRollout()
	r.Mode, r.CanaryPercent, r.Candidate = authzv1.RolloutMode_ROLLOUT_MODE_SHADOW, 0, req.Msg.GetRevision()
	return handle(ctx, f, "StartShadow", req, &authzv1.StartShadowResponse{Rollout: r})
}

func (f *fakePDP) StartCanary(ctx context.Context, req *connect.Request[authzv1.StartCanaryRequest]) (*connect.Response[authzv1.StartCanaryResponse], error) {
	r := cannedRollout()
	r.CanaryPercent = req.Msg.GetPercent()
	return handle(ctx, f, "StartCanary", req, &authzv1.StartCanaryResponse{Rollout: r})
}

func (f *fakePDP) Promote(ctx context.Context, req *connect.Request[authzv1.PromoteRequest]) (*connect.Response[authzv1.PromoteResponse], error) {
	r := &authzv1.Rollout{Generation: 8, Active: "r2", Previous: "r1", Mode: authzv1.RolloutMode_ROLLOUT_MODE_NONE, UpdatedBy: "alice", UpdatedAt: t1}
	return handle(ctx, f, "Promote", req, &authzv1.PromoteResponse{Rollout: r})
}

func (f *fakePDP) Rollback(ctx context.Context, req *connect.Request[authzv1.RollbackRequest]) (*connect.Response[authzv1.RollbackResponse], error) {
	r := &authzv1.Rollout{Generation: 9, Active: "r1", Previous: "r2", Mode: authzv1.RolloutMode_ROLLOUT_MODE_NONE, UpdatedBy: "alice", UpdatedAt: t1}
	return handle(ctx, f, "Rollback", req, &authzv1.RollbackResponse{Rollout: r})
}

func (f *fakePDP) GetReport(ctx context.Context, req *connect.Request[authzv1.GetReportRequest]) (*connect.Response[authzv1.GetReportResponse], error) {
	return handle(ctx, f, "GetReport", req, f.report)
}

func (f *fakePDP) ListHistory(ctx context.Context, req *connect.Request[authzv1.ListHistoryRequest]) (*connect.Response[authzv1.ListHistoryResponse], error) {
	return handle(ctx, f, "ListHistory", req, &authzv1.ListHistoryResponse{Entries: f.history})
}

func (f *fakePDP) Check(ctx context.Context, req *connect.Request[authzv1.CheckRequest]) (*connect.Response[authzv1.CheckResponse], error) {
	return handle(ctx, f, "Check", req, f.check)
}

// tokenRequest is what the fake issuer's token endpoint received.
type tokenRequest struct {
	clientID, secret string
	basic            bool
	grantType, scope string
}

// fakeIssuer is a token endpoint that accepts testClientID/testSecret with
// client_secret_basic and answers with testToken.
type fakeIssuer struct {
	mu       sync.Mutex
	requests []tokenRequest
}

func (fi *fakeIssuer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.ParseForm() != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	id, secret, basic := r.BasicAuth()
	tr := tokenRequest{clientID: id, secret: secret, basic: basic, grantType: r.PostForm.Get("grant_type"), scope: r.PostForm.Get("scope")}
	fi.mu.Lock()
	fi.requests = append(fi.requests, tr)
	fi.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if !basic || id != testClientID || secret != testSecret {
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_client", "error_description": "Client authentication failed."})
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": testToken, "token_type": "Bearer", "expires_in": 300, "scope": tr.scope})
}

func (fi *fakeIssuer) received() []tokenRequest {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	return append([]tokenRequest(nil), fi.requests...)
}

// harness serves a fakePDP and a fakeIssuer on one httptest server.
type harness struct {
	pdp    *fakePDP
	issuer *fakeIssuer
	url    string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{pdp: newFakePDP(), issuer: &fakeIssuer{}}
	mux := http.NewServeMux()
	mux.Handle(authzv1connect.NewPolicyAdminServiceHandler(h.pdp))
	mux.Handle(authzv1connect.NewDecisionServiceHandler(h.pdp))
	mux.Handle("/oauth2/token", h.issuer)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	h.url = srv.URL
	return h
}

// env returns the harness's environment with overrides; an empty value
// removes the variable.
func (h *harness) env(overrides map[string]string) func(string) string {
	env := map[string]string{
		cli.EnvPDPURL:       h.url,
		cli.EnvIssuerURL:    h.url,
		cli.EnvClientSecret: testSecret,
	}
	for k, v := range overrides {
		env[k] = v
	}
	return func(k string) string { return env[k] }
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs the CLI with env and checks that no secret leaked into its
// output, whatever the outcome.
func run(t *testing.T, env func(string) string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := cli.Run(t.Context(), args, env, &stdout, &stderr)
	res := result{code: code, stdout: stdout.String(), stderr: stderr.String()}
	for _, secret := range []string{testSecret, testToken} {
		if strings.Contains(res.stdout+res.stderr, secret) {
			t.Errorf("gatehouse %s: output contains a secret:\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), res.stdout, res.stderr)
		}
	}
	return res
}
