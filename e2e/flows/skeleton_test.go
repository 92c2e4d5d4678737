package flows

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1/invoicev1connect"
)

// token gets a client_credentials token from the issuer with a real OAuth client.
func token(t *testing.T, clientID, secret string, scopes ...string) string {
	t.Helper()
	cfg := clientcredentials.Config{
		ClientID:     clientID,
		ClientSecret: secret,
		TokenURL:     gh.IssuerURL + "/oauth2/token",
		Scopes:       scopes,
		AuthStyle:    oauth2.AuthStyleInHeader,
	}
	tok, err := cfg.Token(t.Context())
	if err != nil {
		t.Fatalf("token for %s: %v", clientID, err)
	}
	return tok.AccessToken
}

func invoices(bearer string) invoicev1connect.InvoiceServiceClient {
	return invoicev1connect.NewInvoiceServiceClient(&http.Client{Timeout: 10 * time.Second}, gh.GatewayURL,
		connect.WithInterceptors(bearerInterceptor(bearer)))
}

func bearerInterceptor(bearer string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if bearer != "" {
				req.Header().Set("Authorization", "Bearer "+bearer)
			}
			return next(ctx, req)
		}
	}
}

func TestReportingJobListsAcmeInvoices(t *testing.T) {
	tok := token(t, "reporting-job", "reporting-job-secret", "invoice:read")
	resp, err := invoices(tok).ListInvoices(t.Context(), connect.NewRequest(&invoicev1.ListInvoicesRequest{}))
	if err != nil {
		t.Fatalf("list invoices: %v", err)
	}
	list := resp.Msg.GetInvoices()
	if len(list) == 0 {
		t.Fatal("no invoices: the demo seed has acme invoices")
	}
	for _, inv := range list {
		if inv.GetTenant() != "acme" {
			t.Fatalf("reporting-job (acme) sees invoice %s of tenant %s", inv.GetId(), inv.GetTenant())
		}
	}
}

func TestBillingBotCreatesAndReadsBack(t *testing.T) {
	tok := token(t, "billing-bot", "billing-bot-secret", "invoice:read", "invoice:write")
	c := invoices(tok)
	created, err := c.CreateInvoice(t.Context(), connect.NewRequest(&invoicev1.CreateInvoiceRequest{Customer: "E2E Corp", AmountCents: 4200, Currency: "EUR"}))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	id := created.Msg.GetInvoice().GetId()
	got, err := c.GetInvoice(t.Context(), connect.NewRequest(&invoicev1.GetInvoiceRequest{Id: id}))
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	if got.Msg.GetInvoice().GetTenant() != "acme" || got.Msg.GetInvoice().GetAmountCents() != 4200 || got.Msg.GetInvoice().GetCreatedBy() != "billing-bot" {
		t.Fatalf("read back: %v", got.Msg.GetInvoice())
	}
}

// connectError is the Connect JSON error body.
type connectError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Details []struct {
		Type  string `json:"type"`
		Debug struct {
			Reason   string            `json:"reason"`
			Metadata map[string]string `json:"metadata"`
		} `json:"debug"`
	} `json:"details"`
}

// post sends a Connect JSON request the way curl would.
func post(t *testing.T, procedure, bearer, body string) (*http.Response, connectError) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, gh.GatewayURL+procedure, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var ce connectError
	if resp.StatusCode != http.StatusOK {
		if err := json.Unmarshal(raw, &ce); err != nil {
			t.Fatalf("error body is not Connect JSON: %v: %s", err, raw)
		}
		if strings.Contains(string(raw), bearer) && bearer != "" {
			t.Fatal("error body echoes the token")
		}
	}
	return resp, ce
}

func errorInfo(t *testing.T, ce connectError) (string, map[string]string) {
	t.Helper()
	for _, d := range ce.Details {
		if d.Type == "google.rpc.ErrorInfo" {
			return d.Debug.Reason, d.Debug.Metadata
		}
	}
	t.Fatalf("no ErrorInfo detail in %+v", ce)
	return "", nil
}

const listProcedure = "/gatehouse.invoice.v1.InvoiceService/ListInvoices"

func TestNoTokenIs401WithChallenge(t *testing.T) {
	resp, ce := post(t, listProcedure, "", "{}")
	if resp.StatusCode != http.StatusUnauthorized || ce.Code != "unauthenticated" {
		t.Fatalf("got %d %q, want 401 unauthenticated", resp.StatusCode, ce.Code)
	}
	if got := resp.Header.Get("WWW-Authenticate"); !strings.Contains(got, `Bearer`) || !strings.Contains(got, `error="invalid_token"`) {
		t.Fatalf("WWW-Authenticate = %q", got)
	}
	r, meta := errorInfo(t, ce)
	if r != reason.MissingToken || len(meta["trace_id"]) != 32 {
		t.Fatalf("ErrorInfo reason %q metadata %v, want missing_token and a trace_id", r, meta)
	}
}

func TestMissingScopeIs403InsufficientScope(t *testing.T) {
	tok := token(t, "reporting-job", "reporting-job-secret", "invoice:read")
	resp, ce := post(t, "/gatehouse.invoice.v1.InvoiceService/CreateInvoice", tok, `{"customer":"X","amountCents":"100","currency":"EUR"}`)
	if resp.StatusCode != http.StatusForbidden || ce.Code != "permission_denied" {
		t.Fatalf("got %d %q, want 403 permission_denied", resp.StatusCode, ce.Code)
	}
	want := `error="insufficient_scope", scope="invoice:write"`
	if got := resp.Header.Get("WWW-Authenticate"); !strings.Contains(got, want) {
		t.Fatalf("WWW-Authenticate = %q, want it to contain %s", got, want)
	}
	if r, _ := errorInfo(t, ce); r != reason.InsufficientScope {
		t.Fatalf("reason %q", r)
	}
}

func TestForgedTokenIs401(t *testing.T) {
	tok := token(t, "reporting-job", "reporting-job-secret", "invoice:read")
	parts := strings.Split(tok, ".")
	forged := parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2]))
	resp, ce := post(t, listProcedure, forged, "{}")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("forged token: %d", resp.StatusCode)
	}
	if r, _ := errorInfo(t, ce); r != reason.InvalidToken {
		t.Fatalf("reason %q", r)
	}
}

func TestWrongSecretIsRefusedByIssuer(t *testing.T) {
	cfg := clientcredentials.Config{ClientID: "reporting-job", ClientSecret: "wrong", TokenURL: gh.IssuerURL + "/oauth2/token"}
	_, err := cfg.Token(t.Context())
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_client" {
		t.Fatalf("got %v, want invalid_client", err)
	}
}

// TestPDPStoppedDeniesThenRecovers stops the PDP container: requests are
// denied with 503, never passed; after a restart they succeed again. It runs
// last in this file: Go runs a package's tests in source order.
func TestPDPStoppedDeniesThenRecovers(t *testing.T) {
	tok := token(t, "reporting-job", "reporting-job-secret", "invoice:read")
	if err := gh.Stop(t.Context(), "pdp"); err != nil {
		t.Fatal(err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			_ = gh.StartService(context.Background(), "pdp")
		}
	})
	for range 3 {
		resp, ce := post(t, listProcedure, tok, "{}")
		if resp.StatusCode != http.StatusServiceUnavailable || ce.Code != "unavailable" {
			t.Fatalf("with the PDP down: %d %q, want 503 unavailable", resp.StatusCode, ce.Code)
		}
		if r, _ := errorInfo(t, ce); r != reason.PDPUnavailable {
			t.Fatalf("reason %q", r)
		}
	}
	if err := gh.StartService(t.Context(), "pdp"); err != nil {
		t.Fatal(err)
	}
	restarted = true
	resp, _ := post(t, listProcedure, tok, "{}")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after the PDP restarted: %d", resp.StatusCode)
	}
}

// TestLogsHoldNoSecrets scans every container's output, after the flows
// above ran, for tokens, client secrets and the database password.
func TestLogsHoldNoSecrets(t *testing.T) {
	logs, err := gh.Logs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	forbidden := []string{"reporting-job-secret", "billing-bot-secret", "support-console-secret", "e2e-db-password", "eyJ"}
	for name, out := range logs {
		if len(out) == 0 && name != "postgres" {
			t.Errorf("%s wrote no logs at all: the scan would prove nothing", name)
		}
		for _, f := range forbidden {
			if strings.Contains(string(out), f) {
				t.Errorf("%s logs contain %q", name, f)
			}
		}
	}
}
