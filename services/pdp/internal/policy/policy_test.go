package policy_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"

	"github.com/gatehouse/gatehouse/services/pdp/internal/bundle"
	"github.com/gatehouse/gatehouse/services/pdp/internal/bundle/bundletest"
	"github.com/gatehouse/gatehouse/services/pdp/internal/decision"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policy"
)

const (
	// policyDir is the repository's policy bundle.
	policyDir = "../../../../policies"
	// demoKeyDir holds the demo signing key the repository's bundle is
	// signed with.
	demoKeyDir = "../../../../deploy/policy-signing"
)

// compileDir signs the directory bundle dir with the test key, opens and
// compiles it: the path every bundle takes before it decides.
func compileDir(tb testing.TB, dir string) (*policy.Engine, error) {
	tb.Helper()
	kp := bundletest.Shared(tb)
	tarball, err := bundle.Build(dir, kp.Signer)
	if err != nil {
		return nil, err
	}
	b, err := bundle.Open(tarball, kp.Verifier)
	if err != nil {
		return nil, err
	}
	return policy.Compile(tb.Context(), b)
}

// mustCompileDir is compileDir for bundles that must compile.
func mustCompileDir(tb testing.TB, dir string) *policy.Engine {
	tb.Helper()
	e, err := compileDir(tb, dir)
	if err != nil {
		tb.Fatalf("compile %s: %v", dir, err)
	}
	return e
}

// TestRegoPolicies runs the bundle's own Rego tests (the ones `opa test
// policies/` runs), so `go test` covers them too.
func TestRegoPolicies(t *testing.T) {
	t.Parallel()
	// .signatures.json is the bundle's signature, not data.
	notSignatures := func(_ string, info fs.FileInfo, _ int) bool { return info.Name() == ".signatures.json" }
	modules, store, err := tester.Load([]string{policyDir}, notSignatures)
	if err != nil {
		t.Fatalf("load policies: %v", err)
	}
	txn, err := store.NewTransaction(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Abort(t.Context(), txn)
	ch, err := tester.NewRunner().SetStore(store).SetModules(modules).RaiseBuiltinErrors(true).RunTests(t.Context(), txn)
	if err != nil {
		t.Fatalf("run policy tests: %v", err)
	}
	n := 0
	for r := range ch {
		n++
		if !r.Pass() {
			t.Errorf("%s.%s (%s): fail=%v skip=%v error=%v", r.Package, r.Name, r.Location, r.Fail, r.Skip, r.Error)
		}
	}
	// Guards against a loader change silently finding no tests.
	if n < 20 {
		t.Errorf("ran %d Rego tests, want at least 20", n)
	}
}

func TestCompileRepositoryBundle(t *testing.T) {
	t.Parallel()
	e := mustCompileDir(t, policyDir)
	if got := e.PolicyVersion(); got == "" {
		t.Error("PolicyVersion is empty, want the .manifest revision")
	}
}

// TestRepositoryBundleIsSigned checks that the committed
// .signatures.json is fresh: the policies as committed verify with the
// demo key (re-sign with SignDir after changing them).
func TestRepositoryBundleIsSigned(t *testing.T) {
	t.Parallel()
	pub, err := os.ReadFile(demoKeyDir + "/demo.pub.pem")
	if err != nil {
		t.Fatal(err)
	}
	v, err := bundle.NewVerifier("gatehouse-demo", pub)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundle.LoadDir(policyDir, v)
	if err != nil {
		t.Fatalf("LoadDir(policies) with the demo key: %v (re-sign policies/ after changing it)", err)
	}
	e, err := policy.Compile(t.Context(), b)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	if e.PolicyVersion() != b.Revision || b.SigningKeyID != "gatehouse-demo" {
		t.Errorf("PolicyVersion %q, key %q; want %q, gatehouse-demo", e.PolicyVersion(), b.SigningKeyID, b.Revision)
	}
}

func TestCompileFails(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		dir  string
		want string
	}{
		{"missing directory", "testdata/does-not-exist", "bundle directory"},
		{"file, not directory", "policy_test.go", "is not a directory"},
		{"no revision", "testdata/norevision", "no revision"},
		{"syntax error", "testdata/syntax", "read bundle"},
		{"forbidden builtin", "testdata/httpsend", "http.send"},
		{"decision undefined", "testdata/undefined", "must yield a decision"},
		{"decision rule missing", "testdata/nodecision", "must yield a decision"},
		{"policy claims indeterminate", "testdata/indeterminate", "must yield a decision"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, err := compileDir(t, tc.dir)
			if err == nil {
				t.Fatalf("compile %s = %v, nil; want an error", tc.dir, e)
			}
			if !errors.Is(err, bundle.ErrInvalid) {
				t.Errorf("compile %s error = %q, want it to wrap bundle.ErrInvalid", tc.dir, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("compile %s error = %q, want it to mention %q", tc.dir, err, tc.want)
			}
		})
	}
}

func TestCompileRefusesNoBundle(t *testing.T) {
	t.Parallel()
	for _, b := range []*bundle.Bundle{nil, {Revision: "r1"}} {
		if e, err := policy.Compile(t.Context(), b); !errors.Is(err, bundle.ErrInvalid) {
			t.Errorf("Compile(%+v) = %v, %v; want bundle.ErrInvalid", b, e, err)
		}
	}
}

func TestCompileCancelled(t *testing.T) {
	t.Parallel()
	b := bundletest.Open(t, "testdata/badshape")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	e, err := policy.Compile(ctx, b)
	if err == nil {
		t.Fatalf("Compile = %v, nil; want the context's error", e)
	}
	if errors.Is(err, bundle.ErrInvalid) {
		t.Errorf("Compile error = %q: a cancelled compile says nothing about the bundle", err)
	}
}

// TestCompileSameBundleConcurrently: a verified bundle may be compiled
// again (another replica's rollout, a shadow engine) while in use.
func TestCompileSameBundleConcurrently(t *testing.T) {
	t.Parallel()
	b := bundletest.Open(t, policyDir)
	var wg sync.WaitGroup
	engines := make([]*policy.Engine, 4)
	errs := make([]error, len(engines))
	for i := range engines {
		wg.Go(func() { engines[i], errs[i] = policy.Compile(t.Context(), b) })
	}
	wg.Wait()
	for i, e := range engines {
		if errs[i] != nil {
			t.Fatalf("Compile #%d: %v", i, errs[i])
		}
		d, err := e.Evaluate(t.Context(), request("invoice:write"))
		if err != nil || d.PolicyVersion != b.Revision {
			t.Errorf("engine #%d Evaluate = %+v, %v; want a decision at %s", i, d, err, b.Revision)
		}
	}
}

// request returns a valid normalized request for action.
func request(action string) decision.Request {
	typ, _, _ := strings.Cut(action, ":")
	return decision.Request{
		Principal: decision.Principal{Subject: "alice", Tenant: "acme", ClientID: "invoice-web"},
		Action:    action,
		Resource:  decision.Resource{Type: typ, Tenant: "acme"},
	}
}

func TestEvaluateRejectsMalformedAnswers(t *testing.T) {
	t.Parallel()
	e := mustCompileDir(t, "testdata/badshape")
	for _, action := range []string{"bad:state", "bad:code", "bad:message", "bad:scopes", "bad:obligation", "bad:param", "bad:object"} {
		t.Run(action, func(t *testing.T) {
			t.Parallel()
			d, err := e.Evaluate(t.Context(), request(action))
			if !errors.Is(err, policy.ErrUnexpectedResult) {
				t.Errorf("Evaluate = %+v, %v; want ErrUnexpectedResult", d, err)
			}
		})
	}
	t.Run("builtin error", func(t *testing.T) {
		t.Parallel()
		if d, err := e.Evaluate(t.Context(), request("bad:builtin")); err == nil {
			t.Errorf("Evaluate = %+v, nil; want the builtin's error", d)
		}
	})
}

func TestEvaluateObligations(t *testing.T) {
	t.Parallel()
	e := mustCompileDir(t, "testdata/badshape")
	d, err := e.Evaluate(t.Context(), request("good:obligation"))
	if err != nil {
		t.Fatalf("Evaluate: %v", err)
	}
	if d.State != decision.Deny || d.ReasonCode != "step_up_required" || d.PolicyVersion != "test.1" {
		t.Errorf("Evaluate = %+v, want deny step_up_required at test.1", d)
	}
	if len(d.Obligations) != 1 || d.Obligations[0].Type != "step_up" ||
		d.Obligations[0].Params["acr"] != "mfa" || d.Obligations[0].Params["max_age"] != "300" {
		t.Errorf("Obligations = %+v, want one step_up with acr mfa and max_age 300", d.Obligations)
	}
}

func TestEvaluateHonoursDeadline(t *testing.T) {
	t.Parallel()
	e := mustCompileDir(t, "testdata/slow")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	d, err := e.Evaluate(ctx, request("slow:loop"))
	if err == nil {
		t.Fatalf("Evaluate = %+v, nil; want a cancellation error", d)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Evaluate returned after %s, want soon after the 20ms deadline", elapsed)
	}
}

func TestInput(t *testing.T) {
	t.Parallel()
	authTime := time.Date(2026, 11, 25, 10, 0, 0, 0, time.FixedZone("CET", 3600))
	req := decision.Request{
		Principal: decision.Principal{
			Subject: "bob", Tenant: "acme", ClientID: "invoice-web", ACR: "mfa",
			Roles: []string{"billing_viewer"}, Scopes: []string{"invoice:read", "openid"},
			AuthTime:   authTime,
			ActorChain: []decision.Actor{{Subject: "sam", ClientID: "support-console"}},
		},
		Action: "invoice:read",
		Resource: decision.Resource{Type: "invoice", ID: "inv-1", Tenant: "acme", Attributes: map[string]any{
			"amount_cents": int64(12000), "currency": "EUR", "paid": false, "rate": 0.5,
		}},
		Context: decision.RequestContext{RequestID: "req-1", SourceIP: "192.0.2.1"},
	}
	want := ast.MustParseTerm(`{
		"principal": {
			"subject": "bob", "tenant": "acme", "client_id": "invoice-web", "acr": "mfa",
			"roles": ["billing_viewer"], "scopes": ["invoice:read", "openid"],
			"auth_time": "2026-11-25T09:00:00Z",
			"actor_chain": [{"subject": "sam", "client_id": "support-console"}]
		},
		"action": "invoice:read",
		"resource": {"type": "invoice", "id": "inv-1", "tenant": "acme", "attributes": {
			"amount_cents": 12000, "currency": "EUR", "paid": false, "rate": 0.5
		}},
		"context": {"request_id": "req-1", "source_ip": "192.0.2.1"}
	}`).Value
	if got := policy.Input(req); got.Compare(want) != 0 {
		t.Errorf("Input =\n%v\nwant\n%v", got, want)
	}
}

func TestEvaluateRepositoryBundle(t *testing.T) {
	t.Parallel()
	e := mustCompileDir(t, policyDir)
	client := decision.Request{
		Principal: decision.Principal{Subject: "reporting-job", ClientID: "reporting-job", Tenant: "acme", Scopes: []string{"invoice:read"}},
		Action:    "invoice:write",
		Resource:  decision.Resource{Type: "invoice", ID: "inv-1", Tenant: "acme"},
	}
	d, err := e.Evaluate(t.Context(), client)
	if err != nil {
		t.Fatalf("Evaluate: %v", err)
	}
	if d.State != decision.Deny || d.ReasonCode != "insufficient_scope" || !slices.Equal(d.RequiredScopes, []string{"invoice:write"}) {
		t.Errorf("Evaluate = %+v, want deny insufficient_scope requiring invoice:write", d)
	}
	if d.PolicyVersion != e.PolicyVersion() {
		t.Errorf("PolicyVersion = %q, want %q", d.PolicyVersion, e.PolicyVersion())
	}
}

// BenchmarkEvaluate measures one policy evaluation of an allowed user
// request (input conversion, Rego, result parsing), with the tracing that
// finds out whether the decision depends on the request time (the
// default) and without it (WithoutTimeReads, for a PDP without a cache).
func BenchmarkEvaluate(b *testing.B) {
	req := decision.Request{
		Principal: decision.Principal{Subject: "bob", ClientID: "invoice-web", Tenant: "acme",
			Roles: []string{"billing_viewer"}, Scopes: []string{"invoice:read", "openid"}},
		Action:   "invoice:read",
		Resource: decision.Resource{Type: "invoice", ID: "inv-1", Tenant: "acme"},
	}
	for _, bc := range []struct {
		name string
		opts []policy.Option
	}{
		{"time-reads", nil},
		{"without-time-reads", []policy.Option{policy.WithoutTimeReads()}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e, err := policy.Compile(b.Context(), bundletest.Open(b, policyDir), bc.opts...)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				d, err := e.Evaluate(b.Context(), req)
				if err != nil || d.State != decision.Allow {
					b.Fatalf("Evaluate = %+v, %v; want allow", d, err)
				}
			}
		})
	}
}
