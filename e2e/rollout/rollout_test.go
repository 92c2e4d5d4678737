package rollout

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/gatehouse/gatehouse/e2e/policybundle"
	"github.com/gatehouse/gatehouse/e2e/stack"
	"github.com/gatehouse/gatehouse/libs/enforce"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
)

const (
	policyDir      = "../../policies"
	signingKey     = "../../deploy/policy-signing/demo.key.pem"
	adminClient    = "policy-admin"
	adminSecret    = "policy-admin-secret"
	candidateRev   = "e2e-tighten-viewers"
	canaryPercent  = 10
	convergeWithin = time.Second
)

// replica is one PDP of the stack, called from the host.
type replica struct {
	name     string
	admin    authzv1connect.PolicyAdminServiceClient
	decision authzv1connect.DecisionServiceClient
}

// TestRolloutLifecycle: shadow a tightening of the invoice rules (billing
// viewers may no longer read invoices), check the report's exact
// divergences, canary it to 10% of principals, promote it, roll it back;
// after every step both replicas decide alike within a second.
func TestRolloutLifecycle(t *testing.T) {
	ctx := t.Context()
	replicas := []replica{newReplica(t, "pdp"), newReplica(t, "pdp2")}
	active := manifestRevision(t, policyDir)

	start := rollout(t, replicas[0])
	if start.GetActive() != active || start.GetMode() != authzv1.RolloutMode_ROLLOUT_MODE_NONE {
		t.Fatalf("initial rollout = %v, want %s active and no candidate", start, active)
	}

	// Push through the CLI: it builds and signs the candidate directory.
	out := runCLI(t, 0, "policy", "push", "-dir", candidateDir(t), "-signing-key", signingKey)
	if !strings.Contains(out, candidateRev) {
		t.Fatalf("push output does not name %s:\n%s", candidateRev, out)
	}

	// Shadow: the active bundle keeps deciding; the candidate is compared.
	runCLI(t, 0, "policy", "shadow", candidateRev)
	waitConverged(t, replicas, authzv1.RolloutMode_ROLLOUT_MODE_SHADOW, active, candidateRev, nil, "")
	traffic := []struct {
		principal *authzv1.Principal
		action    string
		times     int
	}{
		{user("bob", "acme", "billing_viewer", "invoice:read"), "invoice:read", 4},       // allow -> deny
		{user("alice", "acme", "billing_approver", "invoice:read"), "invoice:read", 3},   // allow, both
		{client("reporting-job", "acme", "invoice:read"), "invoice:read", 2},             // allow, both
		{user("bob", "acme", "billing_viewer", "invoice:write"), "invoice:write", 1},     // deny, both
		{user("carol", "globex", "billing_approver", "invoice:read"), "invoice:read", 1}, // tenant_mismatch, both
	}
	var sent int64
	for i, tr := range traffic {
		for n := range tr.times {
			r := replicas[(i+n)%len(replicas)]
			d := check(t, r, tr.principal, tr.action)
			if d.GetPolicyVersion() != active {
				t.Fatalf("%s: shadow mode decided by %s, want the active %s", r.name, d.GetPolicyVersion(), active)
			}
			sent++
		}
	}
	report := waitReport(t, replicas[1], sent)
	if report.GetAgreed() != 7 || report.GetDropped() != 0 {
		t.Errorf("report agreed %d, dropped %d; want 7 and 0", report.GetAgreed(), report.GetDropped())
	}
	groups := report.GetGroups()
	if len(groups) != 1 || groups[0].GetTransition() != "allow->deny" || groups[0].GetActiveReasonCode() != "allowed" ||
		groups[0].GetCandidateReasonCode() != "role_not_permitted" || groups[0].GetCount() != 4 {
		t.Fatalf("divergences = %v, want exactly allow->deny allowed->role_not_permitted x4", groups)
	}
	for _, s := range groups[0].GetSamples() {
		if s.GetSubject() != "bob" || s.GetTenant() != "acme" || s.GetAction() != "invoice:read" {
			t.Errorf("sample %v is not one of bob's reads", s)
		}
	}
	if out := runCLI(t, 0, "policy", "report"); !strings.Contains(out, "allow->deny") || !strings.Contains(out, "role_not_permitted") {
		t.Errorf("report output lacks the divergence:\n%s", out)
	}

	// Canary: a stable 10% of principals get the candidate, on every replica.
	runCLI(t, 0, "policy", "canary", "-percent", fmt.Sprint(canaryPercent))
	waitConverged(t, replicas, authzv1.RolloutMode_ROLLOUT_MODE_CANARY, active, candidateRev, probe(t, true), candidateRev)
	inCanary := 0
	for i := range 200 {
		p := user(fmt.Sprintf("viewer-%03d", i), "acme", "billing_viewer", "invoice:read")
		want, wantVersion := authzv1.Decision_DECISION_ALLOW, active
		if canary(p.GetTenant(), p.GetSubject(), canaryPercent) {
			want, wantVersion = authzv1.Decision_DECISION_DENY, candidateRev
			inCanary++
		}
		for _, r := range replicas {
			d := check(t, r, p, "invoice:read")
			if d.GetDecision() != want || d.GetPolicyVersion() != wantVersion {
				t.Fatalf("%s: %s got %s by %s, want %s by %s", r.name, p.GetSubject(), d.GetDecision(), d.GetPolicyVersion(), want, wantVersion)
			}
		}
	}
	if inCanary < 8 || inCanary > 40 {
		t.Errorf("%d of 200 principals in a 10%% canary", inCanary)
	}

	// Promote: the candidate decides for everyone.
	runCLI(t, 0, "policy", "promote", "-expect", candidateRev)
	waitConverged(t, replicas, authzv1.RolloutMode_ROLLOUT_MODE_NONE, candidateRev, "", probe(t, false), candidateRev)
	for _, r := range replicas {
		if d := check(t, r, user("bob", "acme", "billing_viewer", "invoice:read"), "invoice:read"); d.GetDecision() != authzv1.Decision_DECISION_DENY || d.GetPolicyVersion() != candidateRev {
			t.Errorf("%s after promote: bob reads %s by %s", r.name, d.GetDecision(), d.GetPolicyVersion())
		}
	}

	// Roll back: the bundle active before the promotion decides again.
	runCLI(t, 0, "policy", "rollback")
	waitConverged(t, replicas, authzv1.RolloutMode_ROLLOUT_MODE_NONE, active, "", probe(t, true), active)
	for _, r := range replicas {
		if d := check(t, r, user("bob", "acme", "billing_viewer", "invoice:read"), "invoice:read"); d.GetDecision() != authzv1.Decision_DECISION_ALLOW || d.GetPolicyVersion() != active {
			t.Errorf("%s after rollback: bob reads %s by %s", r.name, d.GetDecision(), d.GetPolicyVersion())
		}
	}

	// The history names every step and who took it.
	hist, err := replicas[1].admin.ListHistory(ctx, connect.NewRequest(&authzv1.ListHistoryRequest{Limit: 10}))
	if err != nil {
		t.Fatalf("ListHistory: %v", err)
	}
	var actions []string
	for _, e := range hist.Msg.GetEntries() {
		if e.GetActor() != adminClient && e.GetAction() != "init" {
			t.Errorf("history entry %v: actor %q, want %s", e, e.GetActor(), adminClient)
		}
		actions = append(actions, e.GetAction())
	}
	if want := []string{"rollback", "promote", "canary", "shadow", "init"}; !slices.Equal(actions, want) {
		t.Errorf("history = %v, want %v", actions, want)
	}

	// Every decision and change is in the hash-chained log, intact.
	dsn, err := gh.DatabaseURL(ctx, "pdp")
	if err != nil {
		t.Fatal(err)
	}
	if out := runCLI(t, 0, "audit", "verify", "-database-url", dsn); strings.Contains(out, "password") || strings.Contains(out, "e2e-db-password") {
		t.Errorf("audit verify printed the database password:\n%s", out)
	}
}

// TestBadBundlesAreRefused: nothing unsigned, wrongly signed or broken is
// stored, and the rollout does not move.
func TestBadBundlesAreRefused(t *testing.T) {
	r := newReplica(t, "pdp")
	before := rollout(t, r)
	tests := []struct {
		name   string
		bundle []byte
		reason string
	}{
		{"not a tarball", []byte("not a bundle"), "bundle_invalid"},
		{"empty", nil, "bundle_invalid"},
		{"over 4 MiB", bytes.Repeat([]byte{0}, 4<<20+1), "bundle_too_large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.admin.PushBundle(t.Context(), connect.NewRequest(&authzv1.PushBundleRequest{Bundle: tc.bundle}))
			if got := enforce.ReasonOf(err); got != tc.reason {
				t.Errorf("PushBundle error %v: reason %q, want %q", err, got, tc.reason)
			}
		})
	}
	// Without a token, or with a token lacking policy:admin, nothing works.
	anon := authzv1connect.NewPolicyAdminServiceClient(gh.HTTPClient(), "http://pdp:8081")
	if _, err := anon.GetRollout(t.Context(), connect.NewRequest(&authzv1.GetRolloutRequest{})); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("GetRollout without a token: %v, want unauthenticated", err)
	}
	if after := rollout(t, r); after.GetGeneration() != before.GetGeneration() {
		t.Errorf("rollout moved from generation %d to %d", before.GetGeneration(), after.GetGeneration())
	}
}

func newReplica(t *testing.T, name string) replica {
	t.Helper()
	client := gh.HTTPClient()
	ctx := context.WithValue(t.Context(), oauth2.HTTPClient, client)
	cc := clientcredentials.Config{
		ClientID: adminClient, ClientSecret: adminSecret,
		TokenURL: stack.IssuerID + "/oauth2/token", Scopes: []string{"policy:admin"},
	}
	admin := oauth2.NewClient(ctx, cc.TokenSource(ctx))
	base := "http://" + name + ":8081"
	return replica{
		name:     name,
		admin:    authzv1connect.NewPolicyAdminServiceClient(admin, base),
		decision: authzv1connect.NewDecisionServiceClient(client, base),
	}
}

func rollout(t *testing.T, r replica) *authzv1.Rollout {
	t.Helper()
	resp, err := r.admin.GetRollout(t.Context(), connect.NewRequest(&authzv1.GetRolloutRequest{}))
	if err != nil {
		t.Fatalf("%s GetRollout: %v", r.name, err)
	}
	return resp.Msg.GetRollout()
}

// waitConverged checks the shared rollout state, then waits until every
// replica serves its generation (GetRollout's served_generation) and, when
// probe is set, decides probe with wantVersion.
func waitConverged(t *testing.T, replicas []replica, mode authzv1.RolloutMode, active, candidate string, probe *authzv1.Principal, wantVersion string) {
	t.Helper()
	changed := time.Now()
	state := rollout(t, replicas[0])
	if state.GetMode() != mode || state.GetActive() != active || state.GetCandidate() != candidate {
		t.Fatalf("rollout = %v, want mode %s active %q candidate %q", state, mode, active, candidate)
	}
	for _, r := range replicas {
		for {
			resp, err := r.admin.GetRollout(t.Context(), connect.NewRequest(&authzv1.GetRolloutRequest{}))
			if err != nil {
				t.Fatalf("%s GetRollout: %v", r.name, err)
			}
			if resp.Msg.GetServedGeneration() >= state.GetGeneration() {
				break
			}
			if time.Since(changed) > convergeWithin {
				t.Fatalf("%s serves generation %d %s after the change to %d", r.name, resp.Msg.GetServedGeneration(), convergeWithin, state.GetGeneration())
			}
			time.Sleep(20 * time.Millisecond)
		}
		if probe != nil {
			if d := check(t, r, probe, "invoice:read"); d.GetPolicyVersion() != wantVersion {
				t.Fatalf("%s serves the new generation but decides with %s, want %s", r.name, d.GetPolicyVersion(), wantVersion)
			}
		}
	}
}

// probe returns a billing viewer inside (or outside) the canary share.
func probe(t *testing.T, in bool) *authzv1.Principal {
	t.Helper()
	for i := range 1000 {
		p := user(fmt.Sprintf("probe-%d", i), "acme", "billing_viewer", "invoice:read")
		if canary(p.GetTenant(), p.GetSubject(), canaryPercent) == in {
			return p
		}
	}
	t.Fatal("no probe principal found")
	return nil
}

// waitReport polls the shadow report until it counts n comparisons (the
// shadow evaluation is asynchronous and batched), then returns it.
func waitReport(t *testing.T, r replica, n int64) *authzv1.GetReportResponse {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := r.admin.GetReport(t.Context(), connect.NewRequest(&authzv1.GetReportRequest{SamplesPerGroup: 5}))
		if err != nil {
			t.Fatalf("GetReport: %v", err)
		}
		if got := resp.Msg.GetCompared(); got >= n {
			if got != n {
				t.Fatalf("report compared %d requests, want %d", got, n)
			}
			return resp.Msg
		}
		if time.Now().After(deadline) {
			t.Fatalf("report compared %d of %d requests after 15s", resp.Msg.GetCompared(), n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func check(t *testing.T, r replica, p *authzv1.Principal, action string) *authzv1.CheckResponse {
	t.Helper()
	resp, err := r.decision.Check(t.Context(), connect.NewRequest(&authzv1.CheckRequest{
		Principal: p,
		Action:    action,
		Resource:  &authzv1.Resource{Type: "invoice", Id: "inv-1001", Tenant: "acme"},
		Context:   &authzv1.RequestContext{RequestId: "e2e-" + p.GetSubject()},
	}))
	if err != nil {
		t.Fatalf("%s Check: %v", r.name, err)
	}
	return resp.Msg
}

func user(subject, tenant, role, scope string) *authzv1.Principal {
	return &authzv1.Principal{Subject: subject, Tenant: tenant, ClientId: "invoice-web", Roles: []string{role}, Scopes: []string{scope}}
}

func client(id, tenant, scope string) *authzv1.Principal {
	return &authzv1.Principal{Subject: id, ClientId: id, Tenant: tenant, Scopes: []string{scope}}
}

// canary is the PDP's documented canary rule (docs/policy-rollouts.md):
// FNV-1a 64 over tenant, a zero byte and subject, modulo 100, below the
// percentage.
func canary(tenant, subject string, percent int) bool {
	h := fnv.New64a()
	_, _ = h.Write([]byte(tenant))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(subject))
	return h.Sum64()%100 < uint64(percent)
}

// runCLI runs the gatehouse CLI against the stack and returns its stdout;
// the exit code must be want.
func runCLI(t *testing.T, want int, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	pdpURL, err := gh.URL(ctx, "pdp")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, cliPath, args...)
	cmd.Env = append(os.Environ(),
		"GATEHOUSE_PDP_URL="+pdpURL,
		"GATEHOUSE_ISSUER_URL="+gh.IssuerURL,
		"GATEHOUSE_CLIENT_ID="+adminClient,
		"GATEHOUSE_CLIENT_SECRET="+adminSecret,
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	code := 0
	if exit := (*exec.ExitError)(nil); errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("gatehouse %v: %v", args, err)
	}
	if code != want {
		t.Fatalf("gatehouse %v exited %d, want %d\nstdout:\n%s\nstderr:\n%s", args, code, want, stdout.String(), stderr.String())
	}
	if strings.Contains(stdout.String()+stderr.String(), adminSecret) {
		t.Fatalf("gatehouse %v printed the client secret", args)
	}
	return stdout.String()
}

// candidateDir copies the repository's policies (without tests, test data
// and signature) into a temporary directory, names it candidateRev, and
// takes invoice:read away from the billing_viewer role.
func candidateDir(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	if err := policybundle.Copy(policyDir, dst); err != nil {
		t.Fatal(err)
	}
	editJSON(t, filepath.Join(dst, ".manifest"), func(m map[string]any) { m["revision"] = candidateRev })
	editJSON(t, filepath.Join(dst, "gatehouse", "data.json"), func(m map[string]any) {
		role := m["roles"].(map[string]any)["billing_viewer"].(map[string]any)
		perms := role["permissions"].([]any)
		role["permissions"] = slices.DeleteFunc(perms, func(p any) bool { return p == "invoice:read" })
	})
	return dst
}

func editJSON(t *testing.T, path string, edit func(map[string]any)) {
	t.Helper()
	if err := policybundle.EditJSON(path, func(m map[string]any) error { edit(m); return nil }); err != nil {
		t.Fatal(err)
	}
}

func manifestRevision(t *testing.T, dir string) string {
	t.Helper()
	rev, err := policybundle.Revision(dir)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}
