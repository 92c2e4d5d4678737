package edge_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/gatehouse/gatehouse/libs/enforce"
	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
)

// TestForgedIdentityHeadersAreReplaced: whatever identity headers a client
// sends, in whatever case or number, or names in Connection to have them
// dropped, the upstream sees exactly one of each, with the token's values.
func TestForgedIdentityHeadersAreReplaced(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		header map[string][]string // sent as is (no canonicalization)
	}{
		{"forged subject", map[string][]string{enforce.HeaderSubject: {"admin"}}},
		{"forged tenant", map[string][]string{enforce.HeaderTenant: {"globex"}}},
		{"forged client id", map[string][]string{enforce.HeaderClientID: {"billing-bot"}}},
		{"all forged at once", map[string][]string{enforce.HeaderSubject: {"admin"}, enforce.HeaderTenant: {"globex"}, enforce.HeaderClientID: {"billing-bot"}}},
		{"lower-case names", map[string][]string{"x-gatehouse-tenant": {"globex"}, "x-gatehouse-subject": {"admin"}}},
		{"repeated values", map[string][]string{enforce.HeaderTenant: {"globex", "acme", "initech"}}},
		{"empty value", map[string][]string{enforce.HeaderTenant: {""}}},
		{"request id chosen by the client", map[string][]string{enforce.HeaderRequestID: {"chosen-by-client"}}},
		{"Connection names the identity headers", map[string][]string{
			"Connection": {"X-Gatehouse-Tenant, X-Gatehouse-Subject, X-Gatehouse-Client-Id, X-Request-Id"},
		}},
		{"Connection names them and forged copies are sent", map[string][]string{
			"Connection":          {"keep-alive, X-Gatehouse-Tenant"},
			enforce.HeaderTenant:  {"globex"},
			enforce.HeaderSubject: {"admin"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, allow, "")
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, f.gateway.URL+listPath, strings.NewReader("{}"))
			for k, vs := range tc.header {
				req.Header[k] = vs
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+f.iss.Mint(t, nil, nil))
			resp, err := http.DefaultClient.Do(req) // HTTP/1.1: Connection is honoured by proxies
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			assertIdentity(t, f.upstream.lastHeaders(), resp.Header.Get(enforce.HeaderRequestID))
		})
	}
}

// TestForgedIdentityHeadersOverGRPC: the same over HTTP/2 with a gRPC
// client, where headers travel in HPACK and Connection does not exist.
func TestForgedIdentityHeadersOverGRPC(t *testing.T) {
	t.Parallel()
	f := newFixture(t, allow, "")
	req := connect.NewRequest(&invoicev1.ListInvoicesRequest{})
	req.Header().Set("Authorization", "Bearer "+f.iss.Mint(t, nil, nil))
	req.Header()[strings.ToLower(enforce.HeaderTenant)] = []string{"globex"}
	req.Header().Add(enforce.HeaderSubject, "admin")
	req.Header().Add(enforce.HeaderClientID, "billing-bot")
	resp, err := f.client(connect.WithGRPC()).ListInvoices(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	assertIdentity(t, f.upstream.lastHeaders(), resp.Header().Get(enforce.HeaderRequestID))
}

func assertIdentity(t *testing.T, h http.Header, responseRequestID string) {
	t.Helper()
	for name, want := range map[string]string{
		enforce.HeaderSubject:  "reporting-job",
		enforce.HeaderTenant:   "acme",
		enforce.HeaderClientID: "reporting-job",
	} {
		if got := h.Values(name); len(got) != 1 || got[0] != want {
			t.Errorf("upstream %s = %q, want exactly [%q]", name, got, want)
		}
	}
	if got := h.Values(enforce.HeaderRequestID); len(got) != 1 || got[0] == "chosen-by-client" || got[0] != responseRequestID {
		t.Errorf("upstream request id %q, want the gateway's own %q", got, responseRequestID)
	}
}
