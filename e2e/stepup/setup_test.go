package stepup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/e2e/policybundle"
	"github.com/gatehouse/gatehouse/e2e/stack"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1/invoicev1connect"
)

const (
	policyDir  = "../../policies"
	signingKey = "../../deploy/policy-signing/demo.key.pem"

	// maxAge is the step-up's max_age in this package's policy, in
	// seconds (the repository's is 300).
	maxAge = 10
	// stepUpRevision names the bundle with that max_age.
	stepUpRevision = "e2e-step-up-max-age-10"
	// largeAmount is 25,000.00: above the 10,000.00 threshold.
	largeAmount = 2500000

	adminClient = "policy-admin"
	adminSecret = "policy-admin-secret"
	webClientID = "invoice-web"

	alicePassword   = "alice-demo-password"
	aliceTOTPSecret = "JBSWY3DPEHPK3PXPALICE234"
	bobPassword     = "bob-demo-password"
)

var (
	policyOnce sync.Once
	errPolicy  error
)

// shortMaxAge makes the stack's PDP decide with the repository's policy
// but a step-up max_age of maxAge seconds: it copies policies/, sets
// max_age_seconds and a new revision, and pushes, shadows and promotes it
// with the gatehouse CLI, once for the package. It then checks the PDP the
// services use decides with it.
func shortMaxAge(t *testing.T) {
	t.Helper()
	policyOnce.Do(func() { errPolicy = promoteShortMaxAge(t) })
	if errPolicy != nil {
		t.Fatalf("promote the policy with max_age %d: %v", maxAge, errPolicy)
	}
}

func promoteShortMaxAge(t *testing.T) error {
	dir, err := os.MkdirTemp("", "gatehouse-stepup-policy")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := policybundle.Copy(policyDir, dir); err != nil {
		return err
	}
	if err := policybundle.SetRevision(dir, stepUpRevision); err != nil {
		return err
	}
	if err := policybundle.EditJSON(filepath.Join(dir, "gatehouse", "invoice", "data.json"), func(m map[string]any) error {
		params, ok := m["approval_step_up"].(map[string]any)
		if !ok || params["max_age_seconds"] == nil {
			return errors.New("gatehouse/invoice/data.json has no approval_step_up.max_age_seconds")
		}
		params["max_age_seconds"] = maxAge
		return nil
	}); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"policy", "push", "-dir", dir, "-signing-key", signingKey},
		{"policy", "shadow", stepUpRevision},
		{"policy", "promote", "-expect", stepUpRevision},
	} {
		if _, err := runGatehouse(t.Context(), args...); err != nil {
			return err
		}
	}
	// The replica that took the promotion answers once it serves it: the
	// PDP the services call decides with the new bundle now.
	pdp := authzv1connect.NewDecisionServiceClient(gh.HTTPClient(), "http://pdp:8081")
	now := time.Now()
	resp, err := pdp.Check(t.Context(), connect.NewRequest(&authzv1.CheckRequest{
		Principal: &authzv1.Principal{
			Subject: "alice", Tenant: "acme", ClientId: webClientID, Roles: []string{"billing_approver"},
			Scopes: []string{"invoice:approve"}, Acr: "mfa", AuthTime: timestamppb.New(now.Add(-(maxAge + 1) * time.Second)),
		},
		Action: "invoice:approve",
		Resource: &authzv1.Resource{Type: "invoice", Id: "inv-probe", Tenant: "acme", Attributes: map[string]*authzv1.AttributeValue{
			"amount_cents": {Kind: &authzv1.AttributeValue_IntValue{IntValue: largeAmount}},
		}},
		Context: &authzv1.RequestContext{Time: timestamppb.New(now), RequestId: "e2e-step-up-probe"},
	}))
	if err != nil {
		return fmt.Errorf("probe Check: %w", err)
	}
	d := resp.Msg
	if d.GetPolicyVersion() != stepUpRevision || d.GetReasonCode() != "step_up_required" || len(d.GetObligations()) != 1 ||
		d.GetObligations()[0].GetParams()["max_age"] != fmt.Sprint(maxAge) {
		return fmt.Errorf("probe: a sign-in %ds old decides %s/%s %v by %s; want step_up_required with max_age %d by %s",
			maxAge+1, d.GetDecision(), d.GetReasonCode(), d.GetObligations(), d.GetPolicyVersion(), maxAge, stepUpRevision)
	}
	return nil
}

// runGatehouse runs the gatehouse CLI as policy-admin against the stack's
// PDP "pdp" and returns its stdout.
func runGatehouse(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	pdpURL, err := gh.URL(ctx, "pdp")
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, gatehouseCLI, args...)
	cmd.Env = append(os.Environ(),
		"GATEHOUSE_PDP_URL="+pdpURL,
		"GATEHOUSE_ISSUER_URL="+gh.IssuerURL,
		"GATEHOUSE_CLIENT_ID="+adminClient,
		"GATEHOUSE_CLIENT_SECRET="+adminSecret,
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("gatehouse %v: %w\nstdout:\n%s\nstderr:\n%s", args, err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// billingBot is the invoice API as billing-bot (client credentials,
// invoice:read invoice:write) through the gateway: it creates the invoices
// the tests approve and reads them back.
func billingBot(t *testing.T) invoicev1connect.InvoiceServiceClient {
	t.Helper()
	ctx := context.WithValue(t.Context(), oauth2.HTTPClient, gh.HTTPClient())
	cc := clientcredentials.Config{
		ClientID: "billing-bot", ClientSecret: "billing-bot-secret",
		TokenURL: stack.IssuerID + "/oauth2/token", Scopes: []string{"invoice:read", "invoice:write"},
	}
	return invoicev1connect.NewInvoiceServiceClient(oauth2.NewClient(ctx, cc.TokenSource(ctx)), gh.GatewayURL)
}

// createInvoice creates a draft of amountCents EUR in acme: approvals are
// permanent, so every approval in this package is of an invoice it created
// (never the demo seed's).
func createInvoice(t *testing.T, amountCents int64, customer string) string {
	t.Helper()
	resp, err := billingBot(t).CreateInvoice(t.Context(), connect.NewRequest(&invoicev1.CreateInvoiceRequest{
		Customer: customer, AmountCents: amountCents, Currency: "EUR",
	}))
	if err != nil {
		t.Fatalf("CreateInvoice as billing-bot: %v", err)
	}
	inv := resp.Msg.GetInvoice()
	if inv.GetStatus() != invoicev1.InvoiceStatus_INVOICE_STATUS_DRAFT || inv.GetTenant() != "acme" || inv.GetAmountCents() != amountCents {
		t.Fatalf("created %v, want an acme draft of %d", inv, amountCents)
	}
	return inv.GetId()
}

// invoice reads an invoice back as billing-bot.
func invoice(t *testing.T, id string) *invoicev1.Invoice {
	t.Helper()
	resp, err := billingBot(t).GetInvoice(t.Context(), connect.NewRequest(&invoicev1.GetInvoiceRequest{Id: id}))
	if err != nil {
		t.Fatalf("GetInvoice %s as billing-bot: %v", id, err)
	}
	return resp.Msg.GetInvoice()
}

// issuerProxy is an HTTP proxy for processes started by the tests: the
// stepup CLI gets it as HTTP_PROXY and so reaches the issuer at its
// identifier http://issuer:8080 (discovery, token endpoint, JWKS), as the
// services in the stack do. Go clients never proxy loopback addresses, so
// the CLI's calls to the gateway's published port go direct.
func issuerProxy(t *testing.T) string {
	t.Helper()
	rp := &httputil.ReverseProxy{
		// A proxy request's URL is absolute and its Host the target's:
		// forward both unchanged; the stack's transport dials issuer:8080
		// to the issuer's published port.
		Rewrite:   func(*httputil.ProxyRequest) {},
		Transport: gh.HTTPClient().Transport,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !r.URL.IsAbs() || r.Method == http.MethodConnect {
			http.Error(w, "only absolute http:// requests are proxied", http.StatusBadRequest)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// gatewayCall is one raw HTTP request to the gateway, for the tests that
// check the exact answer.
type gatewayCall struct {
	procedure string
	token     string
	body      string
	// header is added to the request (e.g. forged identity headers).
	header http.Header
}

// gatewayAnswer is the gateway's raw answer.
type gatewayAnswer struct {
	status int
	header http.Header
	body   []byte
}

// do sends c as Connect JSON and returns the answer.
func (c gatewayCall) do(t *testing.T) gatewayAnswer {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, gh.GatewayURL+"/gatehouse.invoice.v1.InvoiceService/"+c.procedure, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range c.header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := gh.HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("%s: %v", c.procedure, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("%s: %v", c.procedure, err)
	}
	return gatewayAnswer{status: resp.StatusCode, header: resp.Header, body: body}
}

// approveCall is ApproveInvoice of id with token.
func approveCall(id, token string) gatewayCall {
	return gatewayCall{procedure: "ApproveInvoice", token: token, body: fmt.Sprintf(`{"id":%q}`, id)}
}
