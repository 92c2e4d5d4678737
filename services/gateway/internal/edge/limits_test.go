package edge_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"testing/iotest"

	"connectrpc.com/connect"

	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
	"github.com/gatehouse/gatehouse/services/gateway/internal/edge"
)

// TestSizeLimits: oversized headers, declared bodies and Authorization
// headers are refused before any token work (the verifier is never
// called); the same request within the limits gets as far as the token.
func TestSizeLimits(t *testing.T) {
	t.Parallel()
	limits := func(_ *fixture, c *edge.Config) {
		c.MaxHeaderBytes = 4 << 10
		c.MaxAuthorizationBytes = 2 << 10
		c.MaxBodyBytes = 1 << 10
	}
	tests := []struct {
		name         string
		header       http.Header
		body         string
		wantStatus   int
		wantReason   string
		wantVerified bool
	}{
		{"headers over the limit", http.Header{"X-Padding": {strings.Repeat("p", 5<<10)}}, "{}",
			http.StatusBadRequest, reason.InvalidRequest, false},
		{"many small headers over the limit", manyHeaders(200, 30), "{}",
			http.StatusBadRequest, reason.InvalidRequest, false},
		{"headers within the limit", http.Header{"X-Padding": {strings.Repeat("p", 3<<10)}}, "{}",
			http.StatusUnauthorized, reason.MissingToken, false},
		{"declared body over the limit", nil, `{"pageToken": "` + strings.Repeat("x", 2<<10) + `"}`,
			http.StatusBadRequest, reason.InvalidRequest, false},
		{"Authorization over the limit", http.Header{"Authorization": {"Bearer " + strings.Repeat("a", 3<<10)}}, "{}",
			http.StatusUnauthorized, reason.InvalidToken, false},
		{"Authorization within the limit", http.Header{"Authorization": {"Bearer " + strings.Repeat("a", 1<<10)}}, "{}",
			http.StatusUnauthorized, reason.InvalidToken, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixtureWith(t, allow, "", limits)
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, f.gateway.URL+listPath, strings.NewReader(tc.body))
			for k, vs := range tc.header {
				req.Header[k] = vs
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus || !strings.Contains(string(b), `"reason":"`+tc.wantReason+`"`) {
				t.Fatalf("%d %s, want %d %s", resp.StatusCode, b, tc.wantStatus, tc.wantReason)
			}
			if verified := f.verifier.calls.Load() > 0; verified != tc.wantVerified {
				t.Fatalf("verifier called: %v, want %v", verified, tc.wantVerified)
			}
			if f.upstream.callCount() != 0 {
				t.Fatal("the request reached the upstream")
			}
		})
	}
}

func manyHeaders(n, size int) http.Header {
	h := http.Header{}
	for i := range n {
		h.Set("X-Pad-"+strings.Repeat("a", 3)+string(rune('a'+i%26))+string(rune('a'+i/26)), strings.Repeat("v", size))
	}
	return h
}

// TestStreamedBodyOverTheLimit: a body without a declared length (gRPC
// over HTTP/2) is cut at the limit and refused as invalid, never passed
// upstream whole.
func TestStreamedBodyOverTheLimit(t *testing.T) {
	t.Parallel()
	f := newFixture(t, allow, "")
	req := connect.NewRequest(&invoicev1.ListInvoicesRequest{PageToken: strings.Repeat("x", 4<<10)})
	req.Header().Set("Authorization", "Bearer "+f.iss.Mint(t, nil, nil))
	_, err := f.client(connect.WithGRPC()).ListInvoices(t.Context(), req)
	if connect.CodeOf(err) != connect.CodeInvalidArgument || enforce.ReasonOf(err) != reason.InvalidRequest {
		t.Fatalf("got %v (reason %q), want invalid_argument invalid_request", err, enforce.ReasonOf(err))
	}
	if n := f.upstream.callCount(); n != 0 {
		t.Fatalf("oversized body reached the handler (%d calls)", n)
	}
}

// TestBrokenClientBodyIsTheClientsFault: a request body that breaks off
// (the server's body deadline, libs/serve, passed; the client vanished)
// is answered 400 invalid_request, not blamed on the upstream.
func TestBrokenClientBodyIsTheClientsFault(t *testing.T) {
	t.Parallel()
	f := newFixture(t, allow, "")
	body := io.MultiReader(strings.NewReader(`{"pageToken":"`), iotest.ErrReader(os.ErrDeadlineExceeded))
	req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/gatehouse.invoice.v1.InvoiceService/ListInvoices", body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+f.iss.Mint(t, nil, nil))
	rec := httptest.NewRecorder()
	f.gateway.Config.Handler.ServeHTTP(rec, req)
	var got struct {
		Code string `json:"code"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || rec.Code != http.StatusBadRequest || got.Code != "invalid_argument" ||
		!strings.Contains(rec.Body.String(), reason.InvalidRequest) {
		t.Fatalf("%d %s, want 400 invalid_argument %s", rec.Code, rec.Body, reason.InvalidRequest)
	}
}
