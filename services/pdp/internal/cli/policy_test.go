package cli_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/services/pdp/internal/cli"
)

const rolloutTable = `generation  7
mode        canary 10%
active      r1
candidate   r2
previous    r0
updated by  alice
updated at  2026-01-02T03:04:05Z
`

func TestPolicyCommands(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		setup      func(*fakePDP)
		wantStdout string                     // exact
		check      func(*testing.T, *fakePDP) // what the PDP received
	}{
		{
			name:       "status",
			args:       []string{"policy", "status"},
			wantStdout: rolloutTable,
			check: func(t *testing.T, f *fakePDP) {
				request[*authzv1.GetRolloutRequest](t, f, "GetRollout")
			},
		},
		{
			name: "list marks the rollout's revisions",
			args: []string{"policy", "list"},
			setup: func(f *fakePDP) {
				f.bundles = []*authzv1.BundleInfo{
					{Revision: "r2", Digest: strings.Repeat("ab", 32), SizeBytes: 2048, UploadedBy: "alice", UploadedAt: t1, SigningKeyId: "gatehouse-demo"},
					{Revision: "r1", Digest: strings.Repeat("cd", 32), SizeBytes: 1999, UploadedBy: "bob", UploadedAt: t0, SigningKeyId: "gatehouse-demo"},
					{Revision: "r0", Digest: strings.Repeat("ef", 32), SizeBytes: 10, UploadedBy: "bob", UploadedAt: t0, SigningKeyId: "old"},
					{Revision: "q9", Digest: strings.Repeat("01", 32), SizeBytes: 10, UploadedBy: "bob", UploadedAt: t0, SigningKeyId: "old"},
				}
			},
			wantStdout: `REVISION  STATE                   DIGEST        SIZE  SIGNING KEY     UPLOADED BY  UPLOADED AT
r2        candidate (canary 10%)  abababababab  2048  gatehouse-demo  alice        2026-01-02T04:00:00Z
r1        active                  cdcdcdcdcdcd  1999  gatehouse-demo  bob          2026-01-02T03:04:05Z
r0        previous                efefefefefef  10    old             bob          2026-01-02T03:04:05Z
q9        -                       010101010101  10    old             bob          2026-01-02T03:04:05Z
`,
		},
		{
			name: "history",
			args: []string{"policy", "history", "-limit", "2"},
			setup: func(f *fakePDP) {
				f.history = []*authzv1.HistoryEntry{
					{Generation: 8, Action: "promote", FromRevision: "r1", ToRevision: "r2", Actor: "alice", Forced: true, Time: t1},
					{Generation: 7, Action: "canary", FromRevision: "r1", ToRevision: "r2", Actor: "alice", CanaryPercent: 10, Time: t0},
				}
			},
			wantStdout: `GENERATION  TIME                  ACTION   FROM  TO  ACTOR  NOTE
8           2026-01-02T04:00:00Z  promote  r1    r2  alice  forced
7           2026-01-02T03:04:05Z  canary   r1    r2  alice  10%
`,
			check: func(t *testing.T, f *fakePDP) {
				if got := request[*authzv1.ListHistoryRequest](t, f, "ListHistory").GetLimit(); got != 2 {
					t.Errorf("limit = %d, want 2", got)
				}
			},
		},
		{
			name: "shadow",
			args: []string{"policy", "shadow", "r3"},
			wantStdout: "r3 is in shadow beside the active r1; the active bundle decides\n\n" +
				strings.Replace(strings.Replace(rolloutTable, "canary 10%", "shadow", 1), "r2", "r3", 1),
			check: func(t *testing.T, f *fakePDP) {
				if got := request[*authzv1.StartShadowRequest](t, f, "StartShadow").GetRevision(); got != "r3" {
					t.Errorf("revision = %q, want r3", got)
				}
			},
		},
		{
			name:       "canary with the revision before the flag",
			args:       []string{"policy", "canary", "r2", "-percent", "25"},
			wantStdout: "r2 decides for 25% of principals; r1 for the rest\n\n" + strings.Replace(rolloutTable, "10%", "25%", 1),
			check: func(t *testing.T, f *fakePDP) {
				got := request[*authzv1.StartCanaryRequest](t, f, "StartCanary")
				if got.GetRevision() != "r2" || got.GetPercent() != 25 {
					t.Errorf("request = %v, want r2 at 25%%", got)
				}
			},
		},
		{
			name: "canary of the current candidate",
			args: []string{"policy", "canary", "-percent=10"},
			check: func(t *testing.T, f *fakePDP) {
				got := request[*authzv1.StartCanaryRequest](t, f, "StartCanary")
				if got.GetRevision() != "" || got.GetPercent() != 10 {
					t.Errorf("request = %v, want no revision at 10%%", got)
				}
			},
		},
		{
			name: "promote forced with an expected candidate",
			args: []string{"policy", "promote", "-force", "-expect", "r2"},
			wantStdout: `r2 is now the active bundle (previous: r1)

generation  8
mode        none
active      r2
candidate   -
previous    r1
updated by  alice
updated at  2026-01-02T04:00:00Z
`,
			check: func(t *testing.T, f *fakePDP) {
				got := request[*authzv1.PromoteRequest](t, f, "Promote")
				if !got.GetForce() || got.GetExpectedCandidate() != "r2" {
					t.Errorf("request = %v, want forced, expecting r2", got)
				}
			},
		},
		{
			name: "promote is not forced by default",
			args: []string{"policy", "promote"},
			check: func(t *testing.T, f *fakePDP) {
				if got := request[*authzv1.PromoteRequest](t, f, "Promote"); got.GetForce() || got.GetExpectedCandidate() != "" {
					t.Errorf("request = %v, want neither force nor expected candidate", got)
				}
			},
		},
		{
			name: "rollback",
			args: []string{"policy", "rollback"},
			check: func(t *testing.T, f *fakePDP) {
				request[*authzv1.RollbackRequest](t, f, "Rollback")
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			if tc.setup != nil {
				tc.setup(h.pdp)
			}
			res := run(t, h.env(nil), tc.args...)
			if res.code != cli.ExitOK {
				t.Fatalf("exit %d, want 0; stderr:\n%s", res.code, res.stderr)
			}
			if tc.wantStdout != "" && res.stdout != tc.wantStdout {
				t.Errorf("stdout:\n%s\nwant:\n%s", res.stdout, tc.wantStdout)
			}
			if tc.check != nil {
				tc.check(t, h.pdp)
			}
			for _, auth := range h.pdp.authHeaders() {
				if auth != "Bearer "+testToken {
					t.Errorf("Authorization = %q, want the issuer's token", auth)
				}
			}
		})
	}
}

func TestAdminToken(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	res := run(t, h.env(nil), "-client-id", testClientID, "policy", "status")
	if res.code != cli.ExitOK {
		t.Fatalf("exit %d; stderr:\n%s", res.code, res.stderr)
	}
	got := h.issuer.received()
	want := []tokenRequest{{clientID: testClientID, secret: testSecret, basic: true, grantType: "client_credentials", scope: cli.AdminScope}}
	if !slices.Equal(got, want) {
		t.Errorf("token requests = %+v, want %+v", got, want)
	}
	if auth := h.pdp.authHeaders(); !slices.Equal(auth, []string{"Bearer " + testToken}) {
		t.Errorf("PDP saw Authorization %q, want the bearer token once", auth)
	}
}

func TestClientSecretSources(t *testing.T) {
	t.Parallel()
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wrongFile := filepath.Join(t.TempDir(), "wrong")
	if err := os.WriteFile(wrongFile, []byte("not-the-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		env        map[string]string
		args       []string
		wantCode   int
		wantStderr string
		wantTokens int // token requests the issuer saw
	}{
		{name: "from the environment", wantCode: cli.ExitOK, wantTokens: 1},
		{name: "from a file", env: map[string]string{cli.EnvClientSecret: ""},
			args: []string{"-client-secret-file", secretFile}, wantCode: cli.ExitOK, wantTokens: 1},
		{name: "the file wins over the environment", env: map[string]string{cli.EnvClientSecret: "stale"},
			args: []string{"-client-secret-file", secretFile}, wantCode: cli.ExitOK, wantTokens: 1},
		{name: "missing", env: map[string]string{cli.EnvClientSecret: ""}, wantCode: cli.ExitUsage,
			wantStderr: `gatehouse: this command needs the secret of client "policy-admin": set $GATEHOUSE_CLIENT_SECRET or -client-secret-file` + "\n"},
		{name: "unreadable file", args: []string{"-client-secret-file", filepath.Join(t.TempDir(), "absent")},
			wantCode: cli.ExitFailure, wantStderr: "gatehouse: read -client-secret-file: open "},
		{name: "never a flag", args: []string{"-client-secret", testSecret}, wantCode: cli.ExitUsage,
			wantStderr: "flag provided but not defined: -client-secret\n"},
		{name: "wrong secret is refused by the issuer", args: []string{"-client-secret-file", wrongFile}, wantCode: cli.ExitFailure, wantTokens: 1,
			wantStderr: "refused: invalid_client: Client authentication failed.\n"},
		{name: "another client id", args: []string{"-client-id", "someone-else"}, wantCode: cli.ExitFailure, wantTokens: 1,
			wantStderr: "gatehouse: get a policy:admin token for someone-else from "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			res := run(t, h.env(tc.env), append(tc.args, "policy", "status")...)
			if res.code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stderr:\n%s", res.code, tc.wantCode, res.stderr)
			}
			if !strings.Contains(res.stderr, tc.wantStderr) {
				t.Errorf("stderr:\n%s\nwant it to contain %q", res.stderr, tc.wantStderr)
			}
			if got := len(h.issuer.received()); got != tc.wantTokens {
				t.Errorf("issuer saw %d token requests, want %d", got, tc.wantTokens)
			}
			if tc.wantCode != cli.ExitOK && len(h.pdp.procedures()) > 0 {
				t.Errorf("PDP was called (%v) although the command failed before", h.pdp.procedures())
			}
		})
	}
}

func TestRPCErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		setup      func(*fakePDP)
		wantStderr string // exact
	}{
		{
			name: "refusal with a reason",
			args: []string{"policy", "promote"},
			setup: func(f *fakePDP) {
				f.errs["Promote"] = enforce.Error(context.Background(), connect.CodeFailedPrecondition, reason.ShadowDivergence,
					"the report of r2 shows 3 deny->allow divergences")
			},
			wantStderr: "gatehouse: promote refused: failed_precondition: shadow_divergence: the report of r2 shows 3 deny->allow divergences\n",
		},
		{
			name: "refusal without a reason",
			args: []string{"policy", "shadow", "r9"},
			setup: func(f *fakePDP) {
				f.errs["StartShadow"] = connect.NewError(connect.CodeNotFound, errors.New("no bundle r9"))
			},
			wantStderr: "gatehouse: shadow refused: not_found: no bundle r9\n",
		},
		{
			name: "timeout",
			args: []string{"-timeout", "100ms", "policy", "rollback"},
			setup: func(f *fakePDP) {
				f.block = true
			},
			wantStderr: "gatehouse: rollback failed: deadline_exceeded: no answer within 100ms (see -timeout)\n",
		},
		{
			name:       "unreachable PDP",
			args:       []string{"decide", "-subject", "bob", "-tenant", "acme", "-action", "invoice:read", "-resource", "invoice"},
			env:        map[string]string{cli.EnvPDPURL: "http://127.0.0.1:1"},
			wantStderr: "gatehouse: check failed: unavailable: ",
		},
		{
			name:       "bad PDP URL",
			args:       []string{"-pdp-url", "ftp://u:p@x", "policy", "status"},
			wantStderr: "gatehouse: -pdp-url must be an http(s) URL with a host and no user info\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			if tc.setup != nil {
				tc.setup(h.pdp)
			}
			res := run(t, h.env(tc.env), tc.args...)
			if res.code == cli.ExitOK {
				t.Fatalf("exit 0, want an error; stdout:\n%s", res.stdout)
			}
			if strings.HasSuffix(tc.wantStderr, "\n") && res.stderr != tc.wantStderr ||
				!strings.HasPrefix(res.stderr, tc.wantStderr) {
				t.Errorf("stderr:\n%q\nwant:\n%q", res.stderr, tc.wantStderr)
			}
			if res.stdout != "" {
				t.Errorf("stdout = %q, want nothing", res.stdout)
			}
		})
	}
}

func TestReport(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.pdp.report = &authzv1.GetReportResponse{
		Active: "r1", Candidate: "r2", Compared: 1200, Agreed: 1180, AgreementRate: 1180.0 / 1200, Dropped: 4,
		Groups: []*authzv1.DivergenceGroup{
			{Transition: "allow->deny", ActiveReasonCode: "allowed", CandidateReasonCode: "role_not_permitted", Count: 15,
				Samples: []*authzv1.DivergenceSample{
					{DecisionId: "d-1", Subject: "bob", Tenant: "acme", Action: "invoice:approve", Resource: "invoice/inv-1", Time: t0},
					{DecisionId: "d-22", Subject: "alice", Tenant: "acme", Action: "invoice:approve", Resource: "invoice/inv-1002", Time: t1},
				}},
			{Transition: "deny->allow", ActiveReasonCode: "tenant_mismatch", CandidateReasonCode: "allowed", Count: 5,
				Samples: []*authzv1.DivergenceSample{
					{DecisionId: "d-3", Subject: "carol", Tenant: "globex", Action: "invoice:read", Resource: "invoice/inv-1001", Time: t0},
				}},
		},
	}
	res := run(t, h.env(nil), "policy", "report", "r2", "-samples", "2")
	if res.code != cli.ExitOK {
		t.Fatalf("exit %d; stderr:\n%s", res.code, res.stderr)
	}
	want := `active     r1
candidate  r2
compared   1200
agreed     1180
agreement  98.33%
dropped    4

TRANSITION   ACTIVE REASON    CANDIDATE REASON    COUNT
allow->deny  allowed          role_not_permitted  15
deny->allow  tenant_mismatch  allowed             5

samples of allow->deny (allowed -> role_not_permitted):
  TIME                  DECISION ID  SUBJECT  TENANT  ACTION           RESOURCE
  2026-01-02T03:04:05Z  d-1          bob      acme    invoice:approve  invoice/inv-1
  2026-01-02T04:00:00Z  d-22         alice    acme    invoice:approve  invoice/inv-1002

samples of deny->allow (tenant_mismatch -> allowed):
  TIME                  DECISION ID  SUBJECT  TENANT  ACTION        RESOURCE
  2026-01-02T03:04:05Z  d-3          carol    globex  invoice:read  invoice/inv-1001

5 deny->allow divergences: promote is refused unless forced
`
	if res.stdout != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", res.stdout, want)
	}
	got := request[*authzv1.GetReportRequest](t, h.pdp, "GetReport")
	if got.GetCandidate() != "r2" || got.GetSamplesPerGroup() != 2 {
		t.Errorf("request = %v, want candidate r2 with 2 samples", got)
	}
}

func TestReportWithoutDivergences(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.pdp.report = &authzv1.GetReportResponse{Active: "r1", Candidate: "r2", Compared: 0, AgreementRate: 1}
	res := run(t, h.env(nil), "policy", "report")
	if res.code != cli.ExitOK {
		t.Fatalf("exit %d; stderr:\n%s", res.code, res.stderr)
	}
	if !strings.HasSuffix(res.stdout, "agreement  100.00%\ndropped    0\n\nno divergences\n") {
		t.Errorf("stdout:\n%s", res.stdout)
	}
	if got := request[*authzv1.GetReportRequest](t, h.pdp, "GetReport"); got.GetCandidate() != "" || got.GetSamplesPerGroup() != 0 {
		t.Errorf("request = %v, want the defaults", got)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		wantStderr string
	}{
		{"no command", nil, "usage: gatehouse [global flags] COMMAND [flags]"},
		{"unknown command", []string{"frobnicate", "-x"}, `gatehouse: unknown command "frobnicate"`},
		{"unknown policy command", []string{"policy", "frobnicate"}, `gatehouse: unknown command "policy frobnicate"`},
		{"policy alone", []string{"policy"}, `gatehouse: unknown command "policy"`},
		{"unknown global flag", []string{"-nope", "policy", "status"}, "flag provided but not defined: -nope"},
		{"zero timeout", []string{"-timeout", "0s", "policy", "status"}, "gatehouse: -timeout must be positive"},
		{"shadow without revision", []string{"policy", "shadow"}, "gatehouse: policy shadow: REVISION is required\nusage: gatehouse policy shadow REVISION\n"},
		{"shadow with two revisions", []string{"policy", "shadow", "r1", "r2"}, `gatehouse: policy shadow: unexpected argument "r2"`},
		{"canary without percent", []string{"policy", "canary", "r2"}, "gatehouse: policy canary: -percent must be within 1..100"},
		{"canary over 100", []string{"policy", "canary", "-percent", "101"}, "gatehouse: policy canary: -percent must be within 1..100"},
		{"canary percent not a number", []string{"policy", "canary", "-percent", "ten"}, `invalid value "ten" for flag -percent`},
		{"history limit too large", []string{"policy", "history", "-limit", "501"}, "gatehouse: policy history: -limit must be within 1..500"},
		{"report too many samples", []string{"policy", "report", "-samples", "21"}, "gatehouse: policy report: -samples must be within 1..20"},
		{"status takes no arguments", []string{"policy", "status", "now"}, `gatehouse: policy status: unexpected argument "now"`},
		{"push with neither dir nor bundle", []string{"policy", "push"}, "gatehouse: policy push: give either -dir (with -signing-key) or -bundle"},
		{"push with both", []string{"policy", "push", "-dir", "p", "-bundle", "b"}, "gatehouse: policy push: give either -dir (with -signing-key) or -bundle"},
		{"push bundle with key", []string{"policy", "push", "-bundle", "b", "-signing-key", "k"}, "gatehouse: policy push: -signing-key goes with -dir"},
		{"build without output", []string{"policy", "build", "-dir", "p", "-signing-key", "k"}, "gatehouse: policy build: -o is required"},
		{"sign without key", []string{"policy", "sign", "-dir", "p"}, "gatehouse: policy sign: -signing-key is required"},
		{"decide without subject", []string{"decide", "-tenant", "acme", "-action", "invoice:read", "-resource", "invoice"}, "gatehouse: decide: -subject is required"},
		{"decide without resource type", []string{"decide", "-subject", "bob", "-tenant", "acme", "-action", "invoice:read", "-resource", "/inv-1"}, "gatehouse: decide: -resource must be TYPE or TYPE/ID"},
		{"decide attr without value", []string{"decide", "-attr", "amount"}, `invalid value "amount" for flag -attr: want key=value`},
		{"decide attr twice", []string{"decide", "-attr", "a=1", "-attr", "a=2"}, `invalid value "a=2" for flag -attr: attribute "a" given twice`},
		{"audit verify without database", []string{"audit", "verify"}, "gatehouse: audit verify: -database-url or $GATEHOUSE_DATABASE_URL is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			res := run(t, h.env(nil), tc.args...)
			if res.code != cli.ExitUsage {
				t.Errorf("exit %d, want %d", res.code, cli.ExitUsage)
			}
			if !strings.Contains(res.stderr, tc.wantStderr) {
				t.Errorf("stderr:\n%s\nwant it to contain %q", res.stderr, tc.wantStderr)
			}
			if len(h.issuer.received()) > 0 || len(h.pdp.procedures()) > 0 {
				t.Errorf("a usage error reached the network")
			}
		})
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-h"}, {"help"}, {"policy", "canary", "-h"}, {"decide", "-help"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			t.Parallel()
			res := run(t, func(string) string { return "" }, args...)
			if res.code != cli.ExitOK {
				t.Errorf("exit %d, want 0", res.code)
			}
			if !strings.Contains(res.stderr, "usage: gatehouse") {
				t.Errorf("stderr:\n%s\nwant a usage", res.stderr)
			}
		})
	}
}
