package adminrpc_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/gatehouse/gatehouse/libs/accesstoken"
	"github.com/gatehouse/gatehouse/libs/accesstoken/accesstokentest"
	"github.com/gatehouse/gatehouse/libs/audit"
	auditmemory "github.com/gatehouse/gatehouse/libs/audit/memory"
	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
	"github.com/gatehouse/gatehouse/services/pdp/internal/adminrpc"
	"github.com/gatehouse/gatehouse/services/pdp/internal/bundle"
	"github.com/gatehouse/gatehouse/services/pdp/internal/decision"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policystore"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policystore/memory"
	"github.com/gatehouse/gatehouse/services/pdp/internal/rollout"
)

// secretPolicyText stands for policy source an error might quote; it must
// never reach the client.
const secretPolicyText = "allow if input.user == \"root\""

// checker is a fake BundleChecker: "rev=<r>[;...]" is a valid bundle of
// revision r; a few other contents fail the way bundle.Open does.
type checker struct{ calls atomic.Int64 }

func (c *checker) Check(_ context.Context, tarball []byte) (policystore.Bundle, error) {
	c.calls.Add(1)
	content := string(tarball)
	switch content {
	case "unsigned":
		return policystore.Bundle{}, fmt.Errorf("%w: no .signatures.json", bundle.ErrUnsigned)
	case "badsig":
		return policystore.Bundle{}, fmt.Errorf("%w: key id other", bundle.ErrSignature)
	case "huge":
		return policystore.Bundle{}, fmt.Errorf("%w: content over 16 MiB", bundle.ErrTooLarge)
	case "garbage":
		return policystore.Bundle{}, errors.New("compile: rego_parse_error: " + secretPolicyText)
	}
	rev, ok := strings.CutPrefix(content, "rev=")
	if !ok {
		return policystore.Bundle{}, fmt.Errorf("%w: not a bundle", bundle.ErrInvalid)
	}
	rev, _, _ = strings.Cut(rev, ";")
	sum := sha256.Sum256(tarball)
	return policystore.Bundle{Revision: rev, Digest: hex.EncodeToString(sum[:]), Tarball: tarball, SigningKeyID: "gatehouse-demo"}, nil
}

// fakeEval is what the test Manager loads: its version is all it has.
type fakeEval struct{ version string }

func (f fakeEval) Evaluate(context.Context, decision.Request) (decision.Decision, error) {
	return decision.Decision{State: decision.Deny, ReasonCode: reason.RoleNotPermitted, PolicyVersion: f.version}, nil
}
func (f fakeEval) PolicyVersion() string { return f.version }

type fixture struct {
	store   *memory.Store
	events  *auditmemory.Store
	check   *checker
	manager *rollout.Manager
	client  authzv1connect.PolicyAdminServiceClient
	grpc    authzv1connect.PolicyAdminServiceClient
	iss     *accesstokentest.Issuer
	admin   string // a token with policy:admin
}

type fixtureOpts struct {
	store   func(policystore.Store) policystore.Store
	emitter func(audit.Emitter) audit.Emitter
}

// newFixture serves a Handler over an in-memory store initialized with
// bundle v1, with a started rollout.Manager as the local replica.
func newFixture(t *testing.T, opts fixtureOpts) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{store: memory.New(), events: auditmemory.New(), check: &checker{}, iss: accesstokentest.NewIssuer(t)}
	var store policystore.Store = f.store
	if opts.store != nil {
		store = opts.store(store)
	}
	var emitter audit.Emitter = audit.NewSyncEmitter(f.events)
	if opts.emitter != nil {
		emitter = opts.emitter(emitter)
	}

	m, err := rollout.NewManager(f.store, func(_ context.Context, b policystore.Bundle) (decision.Evaluator, error) {
		return fakeEval{version: b.Revision}, nil
	}, rollout.Options{PollInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	v1, _ := f.check.Check(ctx, []byte("rev=v1"))
	if err := m.Bootstrap(ctx, v1, "pdp"); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	f.manager = m

	jwks, err := accesstoken.NewJWKS(accesstoken.JWKSConfig{URL: f.iss.JWKSURL()})
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := accesstoken.NewVerifier(accesstoken.Config{Issuer: f.iss.URL, Audience: accesstokentest.Audience, Keys: jwks})
	if err != nil {
		t.Fatal(err)
	}
	h, err := adminrpc.NewHandler(adminrpc.Deps{
		Store: store, Check: f.check, Auth: verifier, Audit: emitter, Local: m,
		Now: func() time.Time { return time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC) },
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(authzv1connect.NewPolicyAdminServiceHandler(h, connect.WithReadMaxBytes(adminrpc.MaxRequestBytes)))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	f.client = authzv1connect.NewPolicyAdminServiceClient(srv.Client(), srv.URL)
	f.grpc = authzv1connect.NewPolicyAdminServiceClient(srv.Client(), srv.URL, connect.WithGRPC())
	f.admin = f.token(t, "policy:admin")
	return f
}

// token mints an access token of operator "ops-alice" with scope.
func (f *fixture) token(t *testing.T, scope string) string {
	t.Helper()
	return f.iss.Mint(t, map[string]any{"sub": "ops-alice", "client_id": "gatehouse-cli", "tenant": "acme", "scope": scope}, nil)
}

// req wraps msg with tok as bearer token ("" sends none).
func req[T any](tok string, msg *T) *connect.Request[T] {
	r := connect.NewRequest(msg)
	if tok != "" {
		r.Header().Set("Authorization", "Bearer "+tok)
	}
	return r
}

// wantError checks err's Connect code and ErrorInfo reason.
func wantError(t *testing.T, err error, code connect.Code, why string) {
	t.Helper()
	if err == nil {
		t.Fatalf("succeeded, want %s %s", code, why)
	}
	if got := connect.CodeOf(err); got != code {
		t.Fatalf("code %s (%v), want %s", got, err, code)
	}
	if got := enforce.ReasonOf(err); got != why {
		t.Fatalf("reason %q (%v), want %q", got, err, why)
	}
}

// policyEvents returns the policy.changed audit events, oldest first.
func (f *fixture) policyEvents(t *testing.T) []audit.Event {
	t.Helper()
	evs, err := f.events.List(context.Background(), audit.Query{Type: audit.TypePolicyChanged, Limit: audit.MaxListLimit})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func (f *fixture) push(t *testing.T, content string) *authzv1.PushBundleResponse {
	t.Helper()
	resp, err := f.client.PushBundle(context.Background(), req(f.admin, &authzv1.PushBundleRequest{Bundle: []byte(content)}))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg
}

// procedures calls every procedure with a token, for the checks all share.
func procedures(c authzv1connect.PolicyAdminServiceClient) map[string]func(ctx context.Context, tok string) error {
	return map[string]func(context.Context, string) error{
		"PushBundle": func(ctx context.Context, tok string) error {
			_, err := c.PushBundle(ctx, req(tok, &authzv1.PushBundleRequest{Bundle: []byte("rev=v7")}))
			return err
		},
		"ListBundles": func(ctx context.Context, tok string) error {
			_, err := c.ListBundles(ctx, req(tok, &authzv1.ListBundlesRequest{}))
			return err
		},
		"GetRollout": func(ctx context.Context, tok string) error {
			_, err := c.GetRollout(ctx, req(tok, &authzv1.GetRolloutRequest{}))
			return err
		},
		"StartShadow": func(ctx context.Context, tok string) error {
			_, err := c.StartShadow(ctx, req(tok, &authzv1.StartShadowRequest{Revision: "v2"}))
			return err
		},
		"StartCanary": func(ctx context.Context, tok string) error {
			_, err := c.StartCanary(ctx, req(tok, &authzv1.StartCanaryRequest{Revision: "v2", Percent: 10}))
			return err
		},
		"Promote": func(ctx context.Context, tok string) error {
			_, err := c.Promote(ctx, req(tok, &authzv1.PromoteRequest{Force: true}))
			return err
		},
		"Rollback": func(ctx context.Context, tok string) error {
			_, err := c.Rollback(ctx, req(tok, &authzv1.RollbackRequest{}))
			return err
		},
		"GetReport": func(ctx context.Context, tok string) error {
			_, err := c.GetReport(ctx, req(tok, &authzv1.GetReportRequest{Candidate: "v2"}))
			return err
		},
		"ListHistory": func(ctx context.Context, tok string) error {
			_, err := c.ListHistory(ctx, req(tok, &authzv1.ListHistoryRequest{}))
			return err
		},
	}
}

func TestEveryProcedureNeedsAnAdminToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, fixtureOpts{})
	f.push(t, "rev=v2")
	expired := f.iss.Mint(t, map[string]any{
		"sub": "ops-alice", "scope": adminrpc.Scope,
		"iat": time.Now().Add(-time.Hour).Unix(), "nbf": time.Now().Add(-time.Hour).Unix(), "exp": time.Now().Add(-50 * time.Minute).Unix(),
	}, nil)
	tokens := []struct {
		name, tok string
		code      connect.Code
		reason    string
		challenge string
	}{
		{"no token", "", connect.CodeUnauthenticated, reason.MissingToken, `error="invalid_token"`},
		{"garbage token", "not-a-jwt", connect.CodeUnauthenticated, reason.InvalidToken, `error="invalid_token"`},
		{"expired token", expired, connect.CodeUnauthenticated, reason.InvalidToken, `error="invalid_token"`},
		{"without policy:admin", f.token(t, "invoice:read policy:read"), connect.CodePermissionDenied, reason.InsufficientScope, `scope="policy:admin"`},
	}
	for name, call := range procedures(f.client) {
		for _, tc := range tokens {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				err := call(context.Background(), tc.tok)
				wantError(t, err, tc.code, tc.reason)
				var ce *connect.Error
				if errors.As(err, &ce) && !strings.Contains(ce.Meta().Get("WWW-Authenticate"), tc.challenge) {
					t.Errorf("WWW-Authenticate = %q, want %s", ce.Meta().Get("WWW-Authenticate"), tc.challenge)
				}
			})
		}
	}
	t.Run("gRPC", func(t *testing.T) {
		t.Parallel()
		wantError(t, procedures(f.grpc)["GetRollout"](context.Background(), ""), connect.CodeUnauthenticated, reason.MissingToken)
		if err := procedures(f.grpc)["GetRollout"](context.Background(), f.admin); err != nil {
			t.Errorf("GetRollout over gRPC: %v", err)
		}
	})
	t.Cleanup(func() {
		// Nothing the refused calls asked for happened.
		if evs := f.policyEvents(t); len(evs) != 1 || evs[0].Action != "policy:push" {
			t.Errorf("audit events = %+v, want only the fixture's push", evs)
		}
		if st, _ := f.store.Rollout(context.Background()); st.Generation != 1 {
			t.Errorf("rollout changed: %+v", st)
		}
	})
}

func TestPushBundle(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		bundle     []byte
		code       connect.Code
		reason     string
		notChecked bool
	}{
		{name: "unsigned", bundle: []byte("unsigned"), code: connect.CodeInvalidArgument, reason: reason.BundleUnsigned},
		{name: "bad signature", bundle: []byte("badsig"), code: connect.CodeInvalidArgument, reason: reason.BundleSignatureInvalid},
		{name: "content too large", bundle: []byte("huge"), code: connect.CodeInvalidArgument, reason: reason.BundleTooLarge},
		{name: "tarball too large", bundle: make([]byte, policystore.MaxBundleBytes+1), code: connect.CodeInvalidArgument, reason: reason.BundleTooLarge, notChecked: true},
		{name: "does not compile", bundle: []byte("garbage"), code: connect.CodeInvalidArgument, reason: reason.BundleInvalid},
		{name: "not a bundle", bundle: []byte("hello"), code: connect.CodeInvalidArgument, reason: reason.BundleInvalid},
		{name: "revision stored with other content", bundle: []byte("rev=v1;edited"), code: connect.CodeAlreadyExists, reason: reason.RevisionConflict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, fixtureOpts{})
			_, err := f.client.PushBundle(context.Background(), req(f.admin, &authzv1.PushBundleRequest{Bundle: tc.bundle}))
			wantError(t, err, tc.code, tc.reason)
			if strings.Contains(err.Error(), "root") {
				t.Errorf("error %q quotes the policy", err)
			}
			if checked := f.check.calls.Load() > 1; checked == tc.notChecked { // the fixture checked v1
				t.Errorf("checker called: %v", checked)
			}
			if infos, _ := f.store.ListBundles(context.Background()); len(infos) != 1 {
				t.Errorf("%d bundles stored, want only v1", len(infos))
			}
			if evs := f.policyEvents(t); len(evs) != 0 {
				t.Errorf("audit events: %+v", evs)
			}
		})
	}

	t.Run("stored once, pushed twice", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, fixtureOpts{})
		first := f.push(t, "rev=v2")
		b := first.GetBundle()
		sum := sha256.Sum256([]byte("rev=v2"))
		if !first.GetCreated() || b.GetRevision() != "v2" || b.GetDigest() != hex.EncodeToString(sum[:]) ||
			b.GetSizeBytes() != 6 || b.GetUploadedBy() != "ops-alice" || b.GetSigningKeyId() != "gatehouse-demo" || b.GetUploadedAt() == nil {
			t.Errorf("first push = %+v", first)
		}
		again := f.push(t, "rev=v2")
		if again.GetCreated() || again.GetBundle().GetUploadedAt().AsTime() != b.GetUploadedAt().AsTime() {
			t.Errorf("second push = %+v, want created false and the first upload", again)
		}
		evs := f.policyEvents(t)
		if len(evs) != 1 {
			t.Fatalf("%d audit events, want 1 (the second push changed nothing)", len(evs))
		}
		e := evs[0]
		if e.Action != "policy:push" || e.Resource != "policy/v2" || e.PolicyVersion != "v2" || e.Subject != "ops-alice" ||
			e.ClientID != "gatehouse-cli" || e.Tenant != "acme" || e.Attributes["to"] != "v2" || e.Attributes["digest"] != b.GetDigest() {
			t.Errorf("audit event = %+v", e)
		}
	})
}

func TestRolloutLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, fixtureOpts{})
	c, admin := f.client, f.admin
	f.push(t, "rev=v2")

	// Nothing staged yet.
	_, err := c.GetReport(ctx, req(admin, &authzv1.GetReportRequest{}))
	wantError(t, err, connect.CodeFailedPrecondition, reason.RolloutConflict)
	_, err = c.Promote(ctx, req(admin, &authzv1.PromoteRequest{}))
	wantError(t, err, connect.CodeFailedPrecondition, reason.RolloutConflict)
	_, err = c.StartCanary(ctx, req(admin, &authzv1.StartCanaryRequest{Percent: 10}))
	wantError(t, err, connect.CodeFailedPrecondition, reason.RolloutConflict)
	_, err = c.StartShadow(ctx, req(admin, &authzv1.StartShadowRequest{Revision: "v9"}))
	wantError(t, err, connect.CodeNotFound, reason.UnknownRevision)
	_, err = c.StartShadow(ctx, req(admin, &authzv1.StartShadowRequest{Revision: "v1"}))
	wantError(t, err, connect.CodeFailedPrecondition, reason.RolloutConflict)
	_, err = c.StartShadow(ctx, req(admin, &authzv1.StartShadowRequest{}))
	wantError(t, err, connect.CodeInvalidArgument, reason.InvalidRequest)

	// Shadow v2.
	shadow, err := c.StartShadow(ctx, req(admin, &authzv1.StartShadowRequest{Revision: "v2"}))
	if err != nil {
		t.Fatal(err)
	}
	if r := shadow.Msg.GetRollout(); r.GetMode() != authzv1.RolloutMode_ROLLOUT_MODE_SHADOW || r.GetActive() != "v1" ||
		r.GetCandidate() != "v2" || r.GetGeneration() != 2 || r.GetUpdatedBy() != "ops-alice" || r.GetUpdatedAt() == nil {
		t.Errorf("shadow rollout = %+v", r)
	}
	if st := f.manager.State(); st.Generation != 2 {
		t.Errorf("the local replica serves generation %d when StartShadow answered, want 2", st.Generation)
	}

	// The shadower's comparisons: 8 agreed, 2 deny->allow, 1 allow->deny.
	var comps []policystore.Comparison
	add := func(n int, active, activeReason, cand, candReason string) {
		for range n {
			comps = append(comps, policystore.Comparison{
				DecisionID: fmt.Sprintf("d%d", len(comps)), ActiveDecision: active, ActiveReason: activeReason,
				CandidateDecision: cand, CandidateReason: candReason, Subject: "bob", Tenant: "acme",
				Action: "invoice:approve", Resource: "invoice/inv_1", Time: time.Now(),
			})
		}
	}
	add(8, "allow", reason.Allowed, "allow", reason.Allowed)
	add(2, "deny", reason.RoleNotPermitted, "allow", reason.Allowed)
	add(1, "allow", reason.Allowed, "deny", reason.TenantMismatch)
	if err := f.store.RecordComparisons(ctx, "v1", "v2", comps, 4); err != nil {
		t.Fatal(err)
	}

	rep, err := c.GetReport(ctx, req(admin, &authzv1.GetReportRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	m := rep.Msg
	if m.GetActive() != "v1" || m.GetCandidate() != "v2" || m.GetCompared() != 11 || m.GetAgreed() != 8 || m.GetDropped() != 4 ||
		m.GetAgreementRate() != 8.0/11 || len(m.GetGroups()) != 2 {
		t.Fatalf("report = %+v", m)
	}
	if g := m.GetGroups()[0]; g.GetTransition() != "deny->allow" || g.GetCount() != 2 || g.GetActiveReasonCode() != reason.RoleNotPermitted ||
		g.GetCandidateReasonCode() != reason.Allowed || len(g.GetSamples()) != 2 || g.GetSamples()[0].GetSubject() != "bob" {
		t.Errorf("first group = %+v", g)
	}
	one, err := c.GetReport(ctx, req(admin, &authzv1.GetReportRequest{Candidate: "v2", SamplesPerGroup: 1}))
	if err != nil || len(one.Msg.GetGroups()[0].GetSamples()) != 1 {
		t.Errorf("samples_per_group 1: %v, %+v", err, one)
	}
	if _, err := c.GetReport(ctx, req(admin, &authzv1.GetReportRequest{SamplesPerGroup: 1000})); err != nil {
		t.Errorf("samples_per_group over the maximum: %v, want it capped", err)
	}
	_, err = c.GetReport(ctx, req(admin, &authzv1.GetReportRequest{SamplesPerGroup: -1}))
	wantError(t, err, connect.CodeInvalidArgument, reason.InvalidRequest)
	none, err := c.GetReport(ctx, req(admin, &authzv1.GetReportRequest{Candidate: "v3"}))
	if err != nil || none.Msg.GetCompared() != 0 || none.Msg.GetAgreementRate() != 1 {
		t.Errorf("report of a candidate never compared: %v, %+v; want rate 1", err, none)
	}

	// Canary.
	for _, p := range []int32{0, -1, 101} {
		_, err = c.StartCanary(ctx, req(admin, &authzv1.StartCanaryRequest{Percent: p}))
		wantError(t, err, connect.CodeInvalidArgument, reason.InvalidRequest)
	}
	_, err = c.StartCanary(ctx, req(admin, &authzv1.StartCanaryRequest{Revision: "v1", Percent: 10}))
	wantError(t, err, connect.CodeFailedPrecondition, reason.RolloutConflict)
	canary, err := c.StartCanary(ctx, req(admin, &authzv1.StartCanaryRequest{Percent: 25}))
	if err != nil {
		t.Fatal(err)
	}
	if r := canary.Msg.GetRollout(); r.GetMode() != authzv1.RolloutMode_ROLLOUT_MODE_CANARY || r.GetCandidate() != "v2" || r.GetCanaryPercent() != 25 {
		t.Errorf("canary rollout = %+v", r)
	}

	// Promotion: refused for the deny->allow divergences, then forced.
	_, err = c.Promote(ctx, req(admin, &authzv1.PromoteRequest{ExpectedCandidate: "v3"}))
	wantError(t, err, connect.CodeFailedPrecondition, reason.RolloutConflict)
	_, err = c.Promote(ctx, req(admin, &authzv1.PromoteRequest{ExpectedCandidate: "v2"}))
	wantError(t, err, connect.CodeFailedPrecondition, reason.ShadowDivergence)
	if st, _ := f.store.Rollout(ctx); st.Active != "v1" || st.Candidate != "v2" {
		t.Errorf("refused promotion changed the rollout: %+v", st)
	}
	promoted, err := c.Promote(ctx, req(admin, &authzv1.PromoteRequest{ExpectedCandidate: "v2", Force: true}))
	if err != nil {
		t.Fatal(err)
	}
	if r := promoted.Msg.GetRollout(); r.GetActive() != "v2" || r.GetPrevious() != "v1" || r.GetCandidate() != "" ||
		r.GetMode() != authzv1.RolloutMode_ROLLOUT_MODE_NONE || r.GetCanaryPercent() != 0 {
		t.Errorf("promoted rollout = %+v", r)
	}
	if st := f.manager.State(); st.Active != "v2" {
		t.Errorf("the local replica serves %q when Promote answered, want v2", st.Active)
	}

	// Rollback to the previous revision, then nothing is left to roll back.
	back, err := c.Rollback(ctx, req(admin, &authzv1.RollbackRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if r := back.Msg.GetRollout(); r.GetActive() != "v1" || r.GetPrevious() != "" || r.GetMode() != authzv1.RolloutMode_ROLLOUT_MODE_NONE {
		t.Errorf("rolled back rollout = %+v", r)
	}
	_, err = c.Rollback(ctx, req(admin, &authzv1.RollbackRequest{}))
	wantError(t, err, connect.CodeFailedPrecondition, reason.RolloutConflict)

	// Rollback withdraws a staged candidate; the active one stays.
	if _, err := c.StartShadow(ctx, req(admin, &authzv1.StartShadowRequest{Revision: "v2"})); err != nil {
		t.Fatal(err)
	}
	withdrawn, err := c.Rollback(ctx, req(admin, &authzv1.RollbackRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if r := withdrawn.Msg.GetRollout(); r.GetActive() != "v1" || r.GetCandidate() != "" || r.GetMode() != authzv1.RolloutMode_ROLLOUT_MODE_NONE {
		t.Errorf("withdrawn rollout = %+v", r)
	}

	// The history and the audit log tell the same story.
	type step struct{ action, from, to string }
	want := []step{
		{"rollback", "v2", "v1"}, {"shadow", "v1", "v2"}, {"rollback", "v2", "v1"},
		{"promote", "v1", "v2"}, {"canary", "v1", "v2"}, {"shadow", "v1", "v2"}, {"init", "", "v1"},
	}
	hist, err := c.ListHistory(ctx, req(admin, &authzv1.ListHistoryRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	entries := hist.Msg.GetEntries()
	if len(entries) != len(want) {
		t.Fatalf("%d history entries, want %d", len(entries), len(want))
	}
	for i, e := range entries {
		if (step{e.GetAction(), e.GetFromRevision(), e.GetToRevision()}) != want[i] || e.GetGeneration() != int64(len(want)-i) || e.GetTime() == nil {
			t.Errorf("history[%d] = %+v, want %+v", i, e, want[i])
		}
	}
	if e := entries[3]; !e.GetForced() || e.GetActor() != "ops-alice" {
		t.Errorf("promotion entry = %+v, want forced by ops-alice", e)
	}
	if e := entries[4]; e.GetCanaryPercent() != 25 {
		t.Errorf("canary entry = %+v, want 25%%", e)
	}
	if two, err := c.ListHistory(ctx, req(admin, &authzv1.ListHistoryRequest{Limit: 2})); err != nil || len(two.Msg.GetEntries()) != 2 {
		t.Errorf("limit 2: %v, %d entries", err, len(two.Msg.GetEntries()))
	}

	evs := f.policyEvents(t)
	wantEvents := []struct{ action, from, to string }{
		{"policy:push", "", "v2"}, {"policy:shadow", "v1", "v2"}, {"policy:canary", "v1", "v2"}, {"policy:promote", "v1", "v2"},
		{"policy:rollback", "v2", "v1"}, {"policy:shadow", "v1", "v2"}, {"policy:rollback", "v2", "v1"},
	}
	if len(evs) != len(wantEvents) {
		t.Fatalf("%d policy.changed events, want %d: %+v", len(evs), len(wantEvents), evs)
	}
	for i, e := range evs {
		w := wantEvents[i]
		if e.Action != w.action || e.Attributes["from"] != w.from || e.Attributes["to"] != w.to ||
			e.Resource != "policy/"+w.to || e.PolicyVersion != w.to || e.Subject != "ops-alice" || e.ClientID != "gatehouse-cli" || e.Tenant != "acme" {
			t.Errorf("event %d = %+v, want %+v", i, e, w)
		}
		forced := e.Action == "policy:promote"
		if (e.Attributes["forced"] == "true") != forced {
			t.Errorf("event %d forced = %q", i, e.Attributes["forced"])
		}
	}
	if e := evs[3]; e.Attributes["generation"] != "4" || e.Attributes["loosening_divergences"] != "2" {
		t.Errorf("promotion event attributes = %v", e.Attributes)
	}
	if e := evs[2]; e.Attributes["canary_percent"] != "25" {
		t.Errorf("canary event attributes = %v", e.Attributes)
	}

	bundles, err := c.ListBundles(ctx, req(admin, &authzv1.ListBundlesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if b := bundles.Msg.GetBundles(); len(b) != 2 || b[0].GetRevision() != "v2" || b[1].GetRevision() != "v1" {
		t.Errorf("bundles = %+v, want v2 then v1", b)
	}
	got, err := c.GetRollout(ctx, req(admin, &authzv1.GetRolloutRequest{}))
	if err != nil || got.Msg.GetRollout().GetGeneration() != 7 || got.Msg.GetRollout().GetActive() != "v1" {
		t.Errorf("GetRollout = %v, %+v", err, got)
	}
	// Each change awaited this replica, so it serves the shared generation.
	if got.Msg.GetServedGeneration() != 7 {
		t.Errorf("served generation = %d, want 7", got.Msg.GetServedGeneration())
	}
}

func TestPromotionWithoutDivergenceIsNotForced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, fixtureOpts{})
	f.push(t, "rev=v2")
	if _, err := f.client.StartShadow(ctx, req(f.admin, &authzv1.StartShadowRequest{Revision: "v2"})); err != nil {
		t.Fatal(err)
	}
	// A tightening (allow->deny) does not block a promotion.
	comps := []policystore.Comparison{{DecisionID: "d1", ActiveDecision: "allow", ActiveReason: reason.Allowed,
		CandidateDecision: "deny", CandidateReason: reason.RoleNotPermitted, Time: time.Now()}}
	if err := f.store.RecordComparisons(ctx, "v1", "v2", comps, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.Promote(ctx, req(f.admin, &authzv1.PromoteRequest{Force: true})); err != nil {
		t.Fatal(err)
	}
	evs := f.policyEvents(t)
	if e := evs[len(evs)-1]; e.Action != "policy:promote" || e.Attributes["forced"] != "" {
		t.Errorf("promotion event = %+v, want not forced", e)
	}
}

// barrierStore, once armed, holds every UpdateRollout until the test
// releases them, so that concurrent changes all read the same generation
// first.
type barrierStore struct {
	policystore.Store
	armed   atomic.Bool
	arrived chan struct{}
	release chan struct{}
}

func (s *barrierStore) UpdateRollout(ctx context.Context, expected int64, next policystore.Rollout, change policystore.Change) (policystore.Rollout, error) {
	if s.armed.Load() {
		s.arrived <- struct{}{}
		<-s.release
	}
	return s.Store.UpdateRollout(ctx, expected, next, change)
}

func TestConcurrentPromotionsOneWins(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	barrier := &barrierStore{arrived: make(chan struct{}, 2), release: make(chan struct{})}
	f := newFixture(t, fixtureOpts{store: func(s policystore.Store) policystore.Store {
		barrier.Store = s
		return barrier
	}})
	f.push(t, "rev=v2")
	if _, err := f.client.StartShadow(ctx, req(f.admin, &authzv1.StartShadowRequest{Revision: "v2"})); err != nil {
		t.Fatal(err)
	}

	barrier.armed.Store(true)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = f.client.Promote(ctx, req(f.admin, &authzv1.PromoteRequest{ExpectedCandidate: "v2"}))
		})
	}
	<-barrier.arrived
	<-barrier.arrived
	close(barrier.release)
	wg.Wait()

	var won, lost int
	for _, err := range errs {
		if err == nil {
			won++
			continue
		}
		wantError(t, err, connect.CodeAborted, reason.RolloutConflict)
		lost++
	}
	if won != 1 || lost != 1 {
		t.Fatalf("%d promotions succeeded and %d aborted, want 1 and 1", won, lost)
	}
	if st, _ := f.store.Rollout(ctx); st.Generation != 3 || st.Active != "v2" {
		t.Errorf("rollout = %+v, want one promotion", st)
	}
	if n := len(f.policyEvents(t)); n != 3 { // push, shadow, one promote
		t.Errorf("%d audit events, want 3", n)
	}
}

type failingStore struct{ policystore.Store }

func (failingStore) Rollout(context.Context) (policystore.Rollout, error) {
	return policystore.Rollout{}, errors.New("connection refused")
}

type failingEmitter struct{}

func (failingEmitter) Record(context.Context, audit.Event) error {
	return errors.New("audit store down")
}

func TestFailures(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("store unavailable", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, fixtureOpts{store: func(s policystore.Store) policystore.Store { return failingStore{s} }})
		_, err := f.client.GetRollout(ctx, req(f.admin, &authzv1.GetRolloutRequest{}))
		wantError(t, err, connect.CodeUnavailable, reason.UpstreamUnavailable)
		if strings.Contains(err.Error(), "connection refused") {
			t.Errorf("error %q leaks the cause", err)
		}
	})

	t.Run("audit failure does not undo a change", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, fixtureOpts{emitter: func(audit.Emitter) audit.Emitter { return failingEmitter{} }})
		f.push(t, "rev=v2")
		if _, err := f.client.StartShadow(ctx, req(f.admin, &authzv1.StartShadowRequest{Revision: "v2"})); err != nil {
			t.Fatalf("StartShadow = %v, want success: the change is stored", err)
		}
		if st, _ := f.store.Rollout(ctx); st.Candidate != "v2" {
			t.Errorf("rollout = %+v", st)
		}
	})

	t.Run("repeating a step is not a change", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, fixtureOpts{})
		f.push(t, "rev=v2")
		for range 2 {
			if _, err := f.client.StartShadow(ctx, req(f.admin, &authzv1.StartShadowRequest{Revision: "v2"})); err != nil {
				t.Fatal(err)
			}
			if _, err := f.client.StartCanary(ctx, req(f.admin, &authzv1.StartCanaryRequest{Percent: 5})); err != nil {
				t.Fatal(err)
			}
		}
		// shadow, canary, shadow again (from canary: a change), canary again.
		if st, _ := f.store.Rollout(ctx); st.Generation != 5 {
			t.Errorf("generation %d, want 5", st.Generation)
		}
		if _, err := f.client.StartCanary(ctx, req(f.admin, &authzv1.StartCanaryRequest{Percent: 5})); err != nil {
			t.Fatal(err)
		}
		if st, _ := f.store.Rollout(ctx); st.Generation != 5 {
			t.Errorf("generation %d after the same canary again, want 5", st.Generation)
		}
	})
}
