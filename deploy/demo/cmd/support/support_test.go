package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/deploy/demo/internal/signin/signintest"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1/invoicev1connect"
	supportv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/support/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/support/v1/supportv1connect"
)

// output collects what run writes to stdout and stderr, each on its own and
// both in the order written.
type output struct {
	mu                  sync.Mutex
	stdout, stderr, all bytes.Buffer
}

type stream struct {
	o   *output
	own *bytes.Buffer
}

func (s stream) Write(p []byte) (int, error) {
	s.o.mu.Lock()
	defer s.o.mu.Unlock()
	s.o.all.Write(p)
	return s.own.Write(p)
}

// platform is a fake issuer and gateway for one test.
type platform struct {
	issuer  *signintest.Issuer
	gw      *fakeGateway
	gateway string
}

func newPlatform(t *testing.T, gw *fakeGateway) platform {
	t.Helper()
	authTime := time.Now().Add(-time.Minute)
	issuer := signintest.NewIssuer(t, map[string]signintest.Client{
		"invoice-web":     {User: signintest.User{Subject: "bob", ACR: "pwd", AuthTime: authTime, AccessToken: bobToken}},
		"support-console": {Secret: testSecret, User: signintest.User{Subject: "sam", ACR: "mfa", AuthTime: authTime, AccessToken: samToken}},
	})
	mux := http.NewServeMux()
	mux.Handle(supportv1connect.NewSupportServiceHandler(gw))
	mux.Handle(invoicev1connect.NewInvoiceServiceHandler(gw))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return platform{issuer: issuer, gw: gw, gateway: srv.URL}
}

// run runs the command against the platform, signing in through the fake
// browser (-open), and returns its exit code and output.
func (p platform) run(t *testing.T, env map[string]string, args ...string) (int, *output) {
	t.Helper()
	args = append(args, "-issuer", p.issuer.URL, "-gateway", p.gateway, "-open", "-timeout", "30s")
	o := &output{}
	code := run(t.Context(), args, process{
		stdout: stream{o, &o.stdout}, stderr: stream{o, &o.stderr},
		getenv: func(k string) string { return env[k] }, browse: signintest.Browser,
	})
	return code, o
}

// inOrder reports the first of want that out lacks after the ones before it.
func inOrder(out string, want []string) (string, bool) {
	for _, line := range want {
		i := strings.Index(out, line)
		if i < 0 {
			return line, false
		}
		out = out[i+len(line):]
	}
	return "", true
}

func TestCommands(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withSecret := map[string]string{secretEnv: testSecret}
	agentScopes := "openid support:read support:impersonate invoice:read"
	helpOut := []string{
		"open tickets:\nTICKET           CUSTOMER  STATUS  ACCESS  OPENED                SUMMARY\n",
		"tkt_demo_acme_1  bob       open    read    2026-01-10T09:00:00Z  I cannot find the Umbrella Corp invoice in my list: can you…\n",
		"tkt_ALICE1       alice     open    write   2026-01-11T09:00:00Z  Please fix my address\n",
		"\nimpersonation session:\n",
		"session   imp_TESTSESSION1\n", "ticket    tkt_demo_acme_1\n", "tenant    acme\n", "customer  bob\n", "agent     sam\n",
		"scopes    invoice:read\n", "started   2026-11-26T09:00:00Z\n", "expires   2026-11-26T09:05:00Z (5m0s later)\n",
		"\nimpersonation token claims (decoded for display, not verified):\n",
		"sub     bob\n", "tenant  acme\n", "scope   invoice:read\n", `act     {"client_id":"support-console","sub":"sam"}` + "\n",
		"\nbob's invoices (GetCustomerOverview):\n",
		"INVOICE          CUSTOMER       AMOUNT    CURRENCY  STATUS\n",
		"inv_demo_acme_1  Initech        1200.00   EUR       approved\n",
		"inv_demo_acme_2  Umbrella Corp  25000.00  EUR       draft\n",
		"inv_demo_acme_3  Hooli          480.50    EUR       draft\n",
		"\nListInvoices with the impersonation token: allowed, 3 invoices\n",
		"ApproveInvoice inv_demo_acme_2 with the impersonation token: refused, permission_denied (reason insufficient_scope)\n",
		`  WWW-Authenticate: Bearer realm="gatehouse", error="insufficient_scope", scope="invoice:approve"` + "\n",
		"\nsession imp_TESTSESSION1 ended at 2026-11-26T09:00:42Z\n",
		"ListInvoices with the ended session's token: refused on call 3 (",
		" after the end), unauthenticated (reason token_revoked)\n",
	}
	tests := []struct {
		name string
		gw   *fakeGateway
		env  map[string]string
		args []string
		code int
		// wantStdout and wantStderr must appear in this order.
		wantStdout, wantStderr []string
		// wantClient and wantScope: the one sign-in.
		wantClient, wantScope string
		wantBasic             bool
		// wantStarted, wantEnds, wantApprovals: the impersonation calls.
		wantStarted, wantEnds int
		wantApprovals         []string
		// check is a further check of the fake gateway.
		check func(t *testing.T, gw *fakeGateway)
	}{
		{
			name: "open: bob opens a ticket with write access",
			gw:   &fakeGateway{},
			args: []string{"open", "-summary", "  Where is my invoice?  ", "-access", "write"},
			wantStdout: []string{
				"ticket    tkt_NEWTICKET1\ncustomer  bob\ntenant    acme\nstatus    open\naccess    write\n",
			},
			wantStderr: []string{
				"signing in to invoice-web (scopes openid invoice:read support:write)\n", "open this URL: ", "waiting for the sign-in at http://127.0.0.1:",
				"signed in as bob (acr \"pwd\")\n", "opening a ticket (OpenTicket) ...\n",
			},
			wantClient: "invoice-web", wantScope: "openid invoice:read support:write",
			check: func(t *testing.T, gw *fakeGateway) {
				if len(gw.opened) != 1 || gw.opened[0].GetSummary() != "Where is my invoice?" || gw.opened[0].GetAccess() != supportv1.TicketAccess_TICKET_ACCESS_WRITE {
					t.Errorf("OpenTicket requests %v, want one with the trimmed summary and write access", gw.opened)
				}
			},
		},
		{
			name:       "help: sam helps bob, end to end",
			gw:         &fakeGateway{staleCalls: 2},
			env:        withSecret,
			args:       []string{"help", "-ticket", demoTicketID},
			wantStdout: helpOut,
			wantStderr: []string{
				"signing in to support-console (scopes " + agentScopes + ")\n", "open this URL: ",
				"signed in as sam (acr \"mfa\")\n",
				"listing the open tickets of your tenant (ListTickets) ...\n",
				"starting an impersonation session on tkt_demo_acme_1 for 5m0s (StartImpersonation) ...\n",
				"reading bob's invoices through the support service (GetCustomerOverview) ...\n",
				"listing invoices through the gateway with the impersonation token (ListInvoices) ...\n",
				"approving inv_demo_acme_2 through the gateway with the impersonation token (ApproveInvoice); it must be refused ...\n",
				"ending the session (EndImpersonation) ...\n",
				"listing invoices through the gateway with the ended session's token until it is refused (at most 3s) ...\n",
			},
			wantClient: "support-console", wantScope: agentScopes, wantBasic: true,
			wantStarted: 1, wantEnds: 1, wantApprovals: []string{"inv_demo_acme_2"},
			check: func(t *testing.T, gw *fakeGateway) {
				if gw.started[0].GetTicketId() != demoTicketID || gw.started[0].GetTtlSeconds() != 300 {
					t.Errorf("StartImpersonation %v, want the ticket and ttl_seconds 300", gw.started[0])
				}
				if gw.afterEnd != 3 {
					t.Errorf("ListInvoices after the end: %d calls, want 3 (two still accepted, then refused)", gw.afterEnd)
				}
			},
		},
		{
			name:       "help: the secret from -client-secret-file, the ttl from -ttl",
			gw:         &fakeGateway{},
			args:       []string{"help", "-ticket", demoTicketID, "-client-secret-file", secretFile, "-ttl", "90s"},
			wantStdout: []string{"ListInvoices with the ended session's token: refused on call 1 ("},
			wantClient: "support-console", wantScope: agentScopes, wantBasic: true,
			wantStarted: 1, wantEnds: 1, wantApprovals: []string{"inv_demo_acme_2"},
			check: func(t *testing.T, gw *fakeGateway) {
				if gw.started[0].GetTtlSeconds() != 90 {
					t.Errorf("ttl_seconds %d, want 90", gw.started[0].GetTtlSeconds())
				}
			},
		},
		{
			name:       "help: an approval that goes through is a failure, and the session is ended",
			gw:         &fakeGateway{approveAllowed: true},
			env:        withSecret,
			args:       []string{"help", "-ticket", demoTicketID},
			code:       1,
			wantStderr: []string{"ended session imp_TESTSESSION1 after the failure\n", "support: " + errApproved.Error() + ": ApproveInvoice inv_demo_acme_2 went through\n"},
			wantClient: "support-console", wantScope: agentScopes, wantBasic: true,
			wantStarted: 1, wantEnds: 1, wantApprovals: []string{"inv_demo_acme_2"},
		},
		{
			name:       "help: a token the gateway still accepts after 3s is a failure",
			gw:         &fakeGateway{neverRevoke: true},
			env:        withSecret,
			args:       []string{"help", "-ticket", demoTicketID},
			code:       1,
			wantStdout: []string{"session imp_TESTSESSION1 ended at "},
			wantStderr: []string{"support: the gateway still accepts the ended session's token after 3s\n"},
			wantClient: "support-console", wantScope: agentScopes, wantBasic: true,
			wantStarted: 1, wantEnds: 1, wantApprovals: []string{"inv_demo_acme_2"},
		},
		{
			name: "help: a failure while impersonating ends the session",
			gw:   &fakeGateway{overviewFails: true},
			env:  withSecret,
			args: []string{"help", "-ticket", demoTicketID},
			code: 1,
			wantStderr: []string{
				"ended session imp_TESTSESSION1 after the failure\n",
				"support: GetCustomerOverview: unavailable: a dependency is unavailable; the request was denied (reason upstream_unavailable)\n",
			},
			wantClient: "support-console", wantScope: agentScopes, wantBasic: true,
			wantStarted: 1, wantEnds: 1,
		},
		{
			name: "help: a ticket that is not there",
			gw:   &fakeGateway{},
			env:  withSecret,
			args: []string{"help", "-ticket", "tkt_NOPE"},
			code: 1,
			wantStderr: []string{
				"tkt_NOPE is not among them; asking for it anyway\n",
				"support: StartImpersonation: not_found: no such ticket (reason resource_not_found)\n",
			},
			wantClient: "support-console", wantScope: agentScopes, wantBasic: true,
			wantStarted: 1,
		},
		{
			name:       "help: a wrong client secret",
			gw:         &fakeGateway{},
			env:        map[string]string{secretEnv: "not-the-console-secret"},
			args:       []string{"help", "-ticket", demoTicketID},
			code:       1,
			wantStderr: []string{"support: sign in to support-console: exchange the code: "},
		},
		{
			name: "export: bob's invoices, read by support-export acting for him",
			gw:   &fakeGateway{},
			args: []string{"export"},
			wantStdout: []string{
				"actor     support-export\ninvoices  3\n",
				"INVOICE          CUSTOMER       AMOUNT    CURRENCY  STATUS\n",
				"inv_demo_acme_3  Hooli          480.50    EUR       draft\n",
			},
			wantStderr: []string{"signing in to invoice-web (scopes openid invoice:read)\n", "running the support export job (ExportInvoices) ...\n"},
			wantClient: "invoice-web", wantScope: "openid invoice:read",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := newPlatform(t, tc.gw)

			code, out := p.run(t, tc.env, tc.args...)

			t.Logf("output:\n%s", out.all.String())
			if code != tc.code {
				t.Fatalf("exit code %d, want %d", code, tc.code)
			}
			if line, ok := inOrder(out.stdout.String(), tc.wantStdout); !ok {
				t.Errorf("stdout lacks %q (after the lines before it):\n%s", line, out.stdout.String())
			}
			if line, ok := inOrder(out.stderr.String(), tc.wantStderr); !ok {
				t.Errorf("stderr lacks %q (after the lines before it):\n%s", line, out.stderr.String())
			}
			if strings.Contains(out.stdout.String(), "open this URL") {
				t.Errorf("progress on stdout:\n%s", out.stdout.String())
			}
			for _, secret := range []string{bobToken, samToken, impToken, impSignature, testSecret, "not-the-console-secret"} {
				if strings.Contains(out.all.String(), secret) {
					t.Errorf("the output shows a token or the client secret %q", secret)
				}
			}
			if tc.wantClient != "" {
				auths := p.issuer.Authorizations()
				if len(auths) != 1 || auths[0].ClientID != tc.wantClient || auths[0].Scope != tc.wantScope {
					t.Errorf("authorizations %+v, want one of %s with %q", auths, tc.wantClient, tc.wantScope)
				}
				if reqs := p.issuer.TokenRequests(); !slices.Equal(reqs, []signintest.TokenRequest{{ClientID: tc.wantClient, Basic: tc.wantBasic}}) {
					t.Errorf("token requests %+v, want one of %s (client_secret_basic %t)", reqs, tc.wantClient, tc.wantBasic)
				}
			}
			started, ends, approvals, _ := tc.gw.counts()
			if started != tc.wantStarted || ends != tc.wantEnds || !slices.Equal(approvals, tc.wantApprovals) {
				t.Errorf("StartImpersonation %d, EndImpersonation %d, ApproveInvoice %q; want %d, %d, %q",
					started, ends, approvals, tc.wantStarted, tc.wantEnds, tc.wantApprovals)
			}
			if tc.check != nil {
				tc.gw.mu.Lock()
				defer tc.gw.mu.Unlock()
				tc.check(t, tc.gw)
			}
		})
	}
}

func TestRunUsage(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withSecret := map[string]string{secretEnv: testSecret}
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		code       int
		wantStderr string
	}{
		{name: "no command", code: 2, wantStderr: "support: a command is required: open, help or export"},
		{name: "-h", args: []string{"-h"}, code: 0, wantStderr: "usage: support <command> [flags]"},
		{name: "a command's -h", args: []string{"help", "-h"}, code: 0, wantStderr: "usage: support help [flags]"},
		{name: "unknown command", args: []string{"approve"}, code: 2, wantStderr: `unknown command "approve"`},
		{name: "open without a summary", args: []string{"open", "-summary", "  "}, code: 2, wantStderr: "-summary is required"},
		{name: "open with another access", args: []string{"open", "-summary", "x", "-access", "admin"}, code: 2, wantStderr: `-access "admin" is neither read nor write`},
		{name: "help without a ticket", args: []string{"help"}, env: withSecret, code: 2, wantStderr: "-ticket is required"},
		{name: "help with a long ttl", args: []string{"help", "-ticket", "t", "-ttl", "16m"}, env: withSecret, code: 2, wantStderr: "-ttl 16m0s is not whole seconds from 1s to 15m0s"},
		{name: "help with a fractional ttl", args: []string{"help", "-ticket", "t", "-ttl", "1500ms"}, env: withSecret, code: 2, wantStderr: "-ttl 1.5s is not whole seconds"},
		{name: "help without a secret", args: []string{"help", "-ticket", "t"}, code: 2, wantStderr: errNoSecret.Error()},
		{name: "help with a missing secret file", args: []string{"help", "-ticket", "t", "-client-secret-file", filepath.Join(dir, "nope")}, code: 1, wantStderr: "read -client-secret-file"},
		{name: "help with an empty secret file", args: []string{"help", "-ticket", "t", "-client-secret-file", empty}, env: withSecret, code: 1, wantStderr: "is empty"},
		{name: "extra arguments", args: []string{"export", "now"}, code: 2, wantStderr: `unexpected arguments ["now"]`},
		{name: "issuer not a URL", args: []string{"export", "-issuer", "localhost:8080"}, code: 2, wantStderr: `-issuer "localhost:8080" is not an http(s) URL`},
		{name: "bad port", args: []string{"export", "-port", "70000"}, code: 2, wantStderr: "-port 70000 is not a port"},
		{name: "unknown flag", args: []string{"open", "-summary", "x", "-token", "t"}, code: 2, wantStderr: "flag provided but not defined: -token"},
		{name: "an issuer that is not there", args: []string{"export", "-issuer", "http://127.0.0.1:1", "-timeout", "5s"}, code: 1, wantStderr: "support: discover the issuer http://127.0.0.1:1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), tc.args, process{
				stdout: &stdout, stderr: &stderr, getenv: func(k string) string { return tc.env[k] },
				browse: func(string) error { t.Error("a browser was opened"); return nil },
			})
			if code != tc.code || !strings.Contains(stderr.String(), tc.wantStderr) || stdout.Len() != 0 {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, nothing, %q", code, stdout.String(), stderr.String(), tc.code, tc.wantStderr)
			}
			if strings.Contains(stderr.String(), testSecret) {
				t.Errorf("stderr shows the secret: %q", stderr.String())
			}
		})
	}
}

func TestDecodeClaims(t *testing.T) {
	c, err := decodeClaims(impToken)
	if err != nil || c.Sub != "bob" || c.Tenant != "acme" || c.Scope != "invoice:read" || !strings.Contains(string(c.Act), `"sub":"sam"`) {
		t.Fatalf("decodeClaims = %+v, %v", c, err)
	}
	for _, bad := range []string{"opaque-token-abc", "a.!!!.c", "a.bm90IGpzb24.c"} {
		if _, err := decodeClaims(bad); err == nil || strings.Contains(err.Error(), bad) {
			t.Errorf("decodeClaims(%q) = %v, want an error that does not show the token", bad, err)
		}
	}
}
