package edge_test

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
	"github.com/gatehouse/gatehouse/services/gateway/internal/decisioncache"
	"github.com/gatehouse/gatehouse/services/gateway/internal/edge"
	"github.com/gatehouse/gatehouse/services/gateway/internal/tokencache"
)

// withCaches puts a verified-token cache and a decision cache in front of
// the fixture's verifier and PDP, as the app does.
func withCaches(t *testing.T) func(*fixture, *edge.Config) {
	return func(f *fixture, c *edge.Config) {
		tc, err := tokencache.New(tokencache.Config{Verifier: f.verifier, Size: 100, TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		dc, err := decisioncache.New(decisioncache.Config{Size: 100, TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		c.Verifier, c.Decisions = tc, dc
	}
}

// TestRevokedTokenIsRejected: a revoked token is refused with 401
// token_revoked and the invalid_token challenge, even when the token and
// the decision were cached by an earlier request; another token of the
// same client still passes.
func TestRevokedTokenIsRejected(t *testing.T) {
	t.Parallel()
	for name, edit := range map[string]func(*testing.T) func(*fixture, *edge.Config){
		"without caches": func(*testing.T) func(*fixture, *edge.Config) { return nil },
		"with caches":    withCaches,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newFixtureWith(t, allow, "", edit(t))
			jti := "jti-to-revoke"
			tok := f.iss.Mint(t, map[string]any{"jti": jti}, nil)
			if _, err := listWithToken(t, f.client(), tok, nil); err != nil {
				t.Fatalf("before revocation: %v", err)
			}
			verifications, checks := f.verifier.calls.Load(), f.pdp.count()
			f.revocations.revoke(jti)
			_, err := listWithToken(t, f.client(), tok, nil)
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != connect.CodeUnauthenticated || enforce.ReasonOf(err) != reason.TokenRevoked {
				t.Fatalf("revoked token: got %v, want unauthenticated token_revoked", err)
			}
			if got := ce.Meta().Get("WWW-Authenticate"); got != `Bearer realm="gatehouse", error="invalid_token"` {
				t.Fatalf("WWW-Authenticate %q", got)
			}
			if n := f.upstream.callCount(); n != 1 {
				t.Fatalf("upstream calls %d, want only the one before revocation", n)
			}
			if name == "with caches" && f.verifier.calls.Load() != verifications {
				t.Fatal("the cached token was verified again: the test would not show that revocation beats the cache")
			}
			if f.pdp.count() != checks {
				t.Fatal("a revoked token reached the PDP")
			}
			if _, err := listWithToken(t, f.client(), f.iss.Mint(t, nil, nil), nil); err != nil {
				t.Fatalf("another token of the same client: %v", err)
			}
		})
	}
}

// TestRevokedTokenOnEveryRoute: revocation applies to every configured
// route, whatever its risk class.
func TestRevokedTokenOnEveryRoute(t *testing.T) {
	t.Parallel()
	f := newFixture(t, allow, "")
	tok := f.iss.Mint(t, map[string]any{"jti": "revoked"}, nil)
	f.revocations.revoke("revoked")
	for _, path := range []string{
		"/gatehouse.invoice.v1.InvoiceService/ApproveInvoice",
		"/gatehouse.invoice.v1.InvoiceService/CreateInvoice",
		"/gatehouse.invoice.v1.InvoiceService/GetInvoice",
		"/gatehouse.invoice.v1.InvoiceService/ListInvoices",
	} {
		status, body := postJSON(t, f, path, tok, "{}")
		if status != http.StatusUnauthorized || !strings.Contains(body, `"reason":"token_revoked"`) {
			t.Errorf("%s: %d %s, want 401 token_revoked", path, status, body)
		}
	}
	if n := f.upstream.callCount(); n != 0 {
		t.Fatalf("%d revoked requests reached the upstream", n)
	}
}

// TestStaleFeedFailsClosedOnSensitiveRoutesOnly: past the staleness limit
// a sensitive route answers 503 revocation_feed_stale; low and standard
// routes still pass; within the limit the sensitive route passes too.
func TestStaleFeedFailsClosedOnSensitiveRoutesOnly(t *testing.T) {
	t.Parallel()
	const limit = 30 * time.Second
	approve := "/gatehouse.invoice.v1.InvoiceService/ApproveInvoice"
	create := "/gatehouse.invoice.v1.InvoiceService/CreateInvoice"
	list := "/gatehouse.invoice.v1.InvoiceService/ListInvoices"
	tests := []struct {
		name       string
		staleness  time.Duration
		path       string
		wantStatus int
		wantReason string
	}{
		{"fresh feed, sensitive", 0, approve, http.StatusOK, ""},
		{"at the limit, sensitive", limit, approve, http.StatusOK, ""},
		{"past the limit, sensitive", limit + time.Millisecond, approve, http.StatusServiceUnavailable, reason.RevocationFeedStale},
		{"never heard, sensitive", time.Duration(1<<63 - 1), approve, http.StatusServiceUnavailable, reason.RevocationFeedStale},
		{"past the limit, standard", time.Hour, create, http.StatusOK, ""},
		{"past the limit, low", time.Hour, list, http.StatusOK, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixtureWith(t, allow, "", func(_ *fixture, c *edge.Config) { c.MaxStaleness = limit })
			f.revocations.setStaleness(tc.staleness)
			status, body := postJSON(t, f, tc.path, f.iss.Mint(t, nil, nil), "{}")
			if status != tc.wantStatus || (tc.wantReason != "" && !strings.Contains(body, `"reason":"`+tc.wantReason+`"`)) {
				t.Fatalf("%d %s, want %d %s", status, body, tc.wantStatus, tc.wantReason)
			}
			if tc.wantStatus != http.StatusOK {
				if !strings.Contains(body, `"code":"unavailable"`) {
					t.Fatalf("body %s, want code unavailable", body)
				}
				if n := f.upstream.callCount(); n != 0 {
					t.Fatal("a denied request reached the upstream")
				}
				if f.pdp.count() != 0 {
					t.Fatal("the PDP was asked although the route was refused first")
				}
			}
		})
	}
}

// TestStaleFeedOverGRPC: a gRPC client sees the same error and reason.
func TestStaleFeedOverGRPC(t *testing.T) {
	t.Parallel()
	f := newFixture(t, allow, "")
	f.revocations.setStaleness(time.Hour)
	req := connect.NewRequest(&invoicev1.ApproveInvoiceRequest{Id: "inv_1"})
	req.Header().Set("Authorization", "Bearer "+f.iss.Mint(t, nil, nil))
	_, err := f.client(connect.WithGRPC()).ApproveInvoice(t.Context(), req)
	if connect.CodeOf(err) != connect.CodeUnavailable || enforce.ReasonOf(err) != reason.RevocationFeedStale {
		t.Fatalf("got %v", err)
	}
}

// postJSON posts body to path with a bearer token (if any) in Connect's
// JSON form and returns the status and body.
func postJSON(t *testing.T, f *fixture, path, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, f.gateway.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
