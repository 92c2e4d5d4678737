package app_test

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/libs/accesstoken/accesstokentest"
	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	"github.com/gatehouse/gatehouse/libs/revocation/revocationtest"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1/invoicev1connect"
	revocationv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1/revocationv1connect"
	"github.com/gatehouse/gatehouse/services/gateway/app"
)

const (
	feedClientID     = "gateway"
	feedClientSecret = "gateway-secret" //nolint:gosec // the demo seed's, for a test feed
	listPath         = "/gatehouse.invoice.v1.InvoiceService/ListInvoices"
	approvePath      = "/gatehouse.invoice.v1.InvoiceService/ApproveInvoice"
)

type allowingPDP struct {
	authzv1connect.UnimplementedDecisionServiceHandler
}

func (allowingPDP) Check(context.Context, *connect.Request[authzv1.CheckRequest]) (*connect.Response[authzv1.CheckResponse], error) {
	return connect.NewResponse(&authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_ALLOW, ReasonCode: reason.Allowed, DecisionId: "d1"}), nil
}

type invoices struct {
	invoicev1connect.UnimplementedInvoiceServiceHandler
}

func (invoices) ListInvoices(context.Context, *connect.Request[invoicev1.ListInvoicesRequest]) (*connect.Response[invoicev1.ListInvoicesResponse], error) {
	return connect.NewResponse(&invoicev1.ListInvoicesResponse{}), nil
}

func (invoices) ApproveInvoice(_ context.Context, req *connect.Request[invoicev1.ApproveInvoiceRequest]) (*connect.Response[invoicev1.ApproveInvoiceResponse], error) {
	return connect.NewResponse(&invoicev1.ApproveInvoiceResponse{Invoice: &invoicev1.Invoice{Id: req.Msg.GetId()}}), nil
}

// h2cServer serves h over HTTP/1.1 and cleartext HTTP/2, as libs/serve
// does, with a /readyz that answers 200.
func h2cServer(t *testing.T, pattern string, h http.Handler) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(pattern, h)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	srv := httptest.NewUnstartedServer(mux)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

type stack struct {
	iss     *accesstokentest.Issuer
	feed    *revocationtest.Feed
	gateway *httptest.Server
}

// newStack runs the whole gateway, as app.New wires it, in front of a
// fake PDP that allows everything, a fake invoice service and a fake
// revocation feed.
func newStack(t *testing.T, feedOpts revocationtest.FeedOptions, edit func(*app.Config)) *stack {
	t.Helper()
	s := &stack{iss: accesstokentest.NewIssuer(t), feed: revocationtest.NewFeed(feedOpts)}
	pdpPath, pdpHandler := authzv1connect.NewDecisionServiceHandler(allowingPDP{})
	invPath, invHandler := invoicev1connect.NewInvoiceServiceHandler(invoices{})
	feedPath, feedHandler := revocationv1connect.NewRevocationFeedServiceHandler(s.feed)
	feedURL := h2cServer(t, feedPath, feedHandler)
	t.Cleanup(s.feed.Close) // runs before the server's Close, which waits for streams

	var cfg app.Config
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	cfg.Issuer, cfg.JWKSURL, cfg.Audience = s.iss.URL, s.iss.JWKSURL(), accesstokentest.Audience
	cfg.PDPURL = h2cServer(t, pdpPath, pdpHandler)
	cfg.InvoiceURL = h2cServer(t, invPath, invHandler)
	cfg.RevocationFeedURL = feedURL
	cfg.RevocationClientSecret = feedClientSecret
	if edit != nil {
		edit(&cfg)
	}
	a, err := app.New(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	s.gateway = httptest.NewServer(a.Handler())
	t.Cleanup(func() {
		s.gateway.Close()
		if err := a.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func (s *stack) post(t *testing.T, path, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, s.gateway.URL+path, strings.NewReader(`{"id": "inv_1"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (s *stack) ready(t *testing.T) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, s.gateway.URL+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// eventually polls cond every 10 ms until it holds or within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRevokedTokenRejectedWithinOneSecond: the wired gateway follows the
// feed; a token revoked at the issuer is refused within one second, also
// after it was cached, while other tokens pass.
func TestRevokedTokenRejectedWithinOneSecond(t *testing.T) {
	t.Parallel()
	s := newStack(t, revocationtest.FeedOptions{ClientID: feedClientID, ClientSecret: feedClientSecret, Heartbeat: 100 * time.Millisecond}, nil)
	eventually(t, 5*time.Second, "ready once the feed is heard", func() bool { return s.ready(t) == http.StatusOK })

	tok := s.iss.Mint(t, map[string]any{"jti": "jti-1"}, nil)
	other := s.iss.Mint(t, nil, nil)
	for _, path := range []string{listPath, approvePath} {
		if status, body := s.post(t, path, tok); status != http.StatusOK {
			t.Fatalf("%s before revocation: %d %s", path, status, body)
		}
	}
	revokedAt := time.Now()
	s.feed.Publish(&revocationv1.Event{Kind: revocationv1.Kind_KIND_TOKEN, Id: "jti-1", Jtis: []string{"jti-1"},
		RevokedAt: timestamppb.New(revokedAt), ExpiresAt: timestamppb.New(revokedAt.Add(5 * time.Minute))})
	eventually(t, time.Second, "the revoked token refused", func() bool {
		status, body := s.post(t, listPath, tok)
		return status == http.StatusUnauthorized && strings.Contains(body, `"reason":"`+reason.TokenRevoked+`"`)
	})
	if status, body := s.post(t, approvePath, tok); status != http.StatusUnauthorized {
		t.Fatalf("revoked token on the sensitive route: %d %s", status, body)
	}
	if status, body := s.post(t, listPath, other); status != http.StatusOK {
		t.Fatalf("another token: %d %s", status, body)
	}
}

// TestSilentFeedFailsSensitiveRoutesClosed: when the feed stops talking,
// sensitive routes answer 503 revocation_feed_stale past the limit, and
// the others still pass.
func TestSilentFeedFailsSensitiveRoutesClosed(t *testing.T) {
	t.Parallel()
	s := newStack(t, revocationtest.FeedOptions{ClientID: feedClientID, ClientSecret: feedClientSecret},
		func(c *app.Config) { c.RevocationMaxStaleness = 300 * time.Millisecond })
	// Only the first heartbeat comes; then the feed is silent.
	tok := s.iss.Mint(t, nil, nil)
	eventually(t, 5*time.Second, "the sensitive route stale", func() bool {
		status, body := s.post(t, approvePath, tok)
		return status == http.StatusServiceUnavailable && strings.Contains(body, `"reason":"`+reason.RevocationFeedStale+`"`)
	})
	if status, body := s.post(t, listPath, tok); status != http.StatusOK {
		t.Fatalf("low-risk route with a stale feed: %d %s", status, body)
	}
	eventually(t, 5*time.Second, "the sensitive route back after a heartbeat", func() bool {
		s.feed.Heartbeat()
		status, _ := s.post(t, approvePath, tok)
		return status == http.StatusOK
	})
}

// TestRefusedFeedCredentials: a gateway the feed refuses is not ready, and
// its sensitive routes fail closed from the start.
func TestRefusedFeedCredentials(t *testing.T) {
	t.Parallel()
	s := newStack(t, revocationtest.FeedOptions{ClientID: feedClientID, ClientSecret: "another-secret"}, nil)
	if _, err := s.feed.AwaitRequests(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	if status := s.ready(t); status != http.StatusServiceUnavailable {
		t.Fatalf("readyz %d, want 503 while the feed was never heard", status)
	}
	tok := s.iss.Mint(t, nil, nil)
	if status, body := s.post(t, approvePath, tok); status != http.StatusServiceUnavailable || !strings.Contains(body, reason.RevocationFeedStale) {
		t.Fatalf("sensitive route: %d %s", status, body)
	}
	if status, body := s.post(t, listPath, tok); status != http.StatusOK {
		t.Fatalf("low-risk route: %d %s", status, body)
	}
}

// TestFeedOff: with -revocation-feed=false (development) no secret is
// needed, and sensitive routes are refused.
func TestFeedOff(t *testing.T) {
	t.Parallel()
	s := newStack(t, revocationtest.FeedOptions{}, func(c *app.Config) {
		c.RevocationFeed = false
		c.RevocationClientSecret = ""
	})
	tok := s.iss.Mint(t, nil, nil)
	if status, _ := s.post(t, approvePath, tok); status != http.StatusServiceUnavailable {
		t.Fatalf("sensitive route with the feed off: %d, want 503", status)
	}
	if status, _ := s.post(t, listPath, tok); status != http.StatusOK {
		t.Fatalf("low-risk route with the feed off: %d", status)
	}
	if n := len(s.feed.Requests()); n != 0 {
		t.Fatalf("%d subscriptions with the feed off", n)
	}
}

func TestConfigRefused(t *testing.T) {
	t.Parallel()
	routes := filepath.Join(t.TempDir(), "routes.json")
	if err := os.WriteFile(routes, []byte(`{"routes": [{"path": "/x"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		edit func(*app.Config)
		want string
	}{
		{"no feed secret", func(c *app.Config) { c.RevocationClientSecret = "" }, app.EnvRevocationClientSecret},
		{"no staleness limit", func(c *app.Config) { c.RevocationMaxStaleness = 0 }, "-revocation-max-staleness"},
		{"invalid route table", func(c *app.Config) { c.Routes = routes }, "route table"},
		{"decision cache TTL too long", func(c *app.Config) { c.DecisionCacheTTL = time.Hour }, "TTL"},
		{"stale-allow window too long", func(c *app.Config) { c.PDPStaleAllow = time.Hour }, "stale-allow"},
		{"zero breaker failures", func(c *app.Config) { c.PDPBreakerFailures = 0 }, "-pdp-breaker-failures"},
		{"bad feed URL", func(c *app.Config) { c.RevocationFeedURL = "issuer:8080" }, "revocation feed URL"},
		{"no header limit", func(c *app.Config) { c.MaxHeaderBytes = 0 }, "-max-header-bytes"},
		{"zero JWKS max age", func(c *app.Config) { c.JWKSMaxAge = 0 }, "-jwks-max-age"},
		{"JWKS max age over an hour", func(c *app.Config) { c.JWKSMaxAge = 2 * time.Hour }, "-jwks-max-age"},
		{"JWKS refetch interval under a second", func(c *app.Config) { c.JWKSMinRefetchInterval = 100 * time.Millisecond }, "-jwks-min-refetch-interval"},
		{"JWKS refetch interval above max age", func(c *app.Config) {
			c.JWKSMaxAge, c.JWKSMinRefetchInterval = 2*time.Second, 5*time.Second
		}, "must not exceed -jwks-max-age"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var cfg app.Config
			fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
			cfg.RegisterFlags(fs)
			if err := fs.Parse(nil); err != nil {
				t.Fatal(err)
			}
			cfg.RevocationClientSecret = feedClientSecret
			tc.edit(&cfg)
			a, err := app.New(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err == nil {
				_ = a.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name %q", err, tc.want)
			}
		})
	}
}

// TestJWKSTimingsReachTheKeyCache: -jwks-max-age and
// -jwks-min-refetch-interval configure the gateway's key cache. With the
// defaults (5m, 10s) neither condition below could hold within five seconds
// of the first fetch.
func TestJWKSTimingsReachTheKeyCache(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// after runs once the gateway is ready (its key set loaded).
		after func(t *testing.T, s *stack)
		// done reports whether the cache did what the timing promises.
		done func(t *testing.T, s *stack, before int64, status int, body string) bool
	}{
		{
			name:  "a set older than the max age is refreshed, no unknown kid needed",
			after: func(*testing.T, *stack) {},
			done: func(t *testing.T, s *stack, before int64, status int, body string) bool {
				if status != http.StatusOK {
					t.Fatalf("token of the known key: %d %s", status, body)
				}
				return s.iss.Fetches.Load() > before
			},
		},
		{
			name:  "an unknown kid is fetched once the refetch interval has passed",
			after: func(t *testing.T, s *stack) { s.iss.Rotate(t, "test-key-2") },
			done:  func(_ *testing.T, _ *stack, _ int64, status int, _ string) bool { return status == http.StatusOK },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newStack(t, revocationtest.FeedOptions{ClientID: feedClientID, ClientSecret: feedClientSecret, Heartbeat: 100 * time.Millisecond},
				func(c *app.Config) {
					c.JWKSMaxAge, c.JWKSMinRefetchInterval = time.Second, time.Second
					c.SourceRate, c.ClientRate = 0, 0 // polled every 10 ms
				})
			eventually(t, 5*time.Second, "ready", func() bool { return s.ready(t) == http.StatusOK })
			before := s.iss.Fetches.Load()
			tc.after(t, s)
			eventually(t, 5*time.Second, tc.name, func() bool {
				// A fresh token each time: the verified-token cache must not answer.
				status, body := s.post(t, listPath, s.iss.Mint(t, nil, nil))
				return tc.done(t, s, before, status, body)
			})
		})
	}
}

// TestRevocationErrorBodies pins the exact wire form of the two revocation
// errors that docs/gateway.md shows.
func TestRevocationErrorBodies(t *testing.T) {
	t.Parallel()
	s := newStack(t, revocationtest.FeedOptions{ClientID: feedClientID, ClientSecret: feedClientSecret, Heartbeat: 100 * time.Millisecond}, nil)
	eventually(t, 5*time.Second, "ready", func() bool { return s.ready(t) == http.StatusOK })
	tok := s.iss.Mint(t, map[string]any{"jti": "jti-2"}, nil)
	now := time.Now()
	s.feed.Publish(&revocationv1.Event{Kind: revocationv1.Kind_KIND_TOKEN, Id: "jti-2", Jtis: []string{"jti-2"},
		RevokedAt: timestamppb.New(now), ExpiresAt: timestamppb.New(now.Add(time.Minute))})
	var resp *http.Response
	var body string
	eventually(t, time.Second, "revoked", func() bool {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, s.gateway.URL+listPath, strings.NewReader("{}"))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok)
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		resp, body = r, string(b)
		return r.StatusCode == http.StatusUnauthorized
	})
	if got := resp.Header.Get("WWW-Authenticate"); got != `Bearer realm="gatehouse", error="invalid_token"` {
		t.Fatalf("WWW-Authenticate %q", got)
	}
	for _, want := range []string{`"code":"unauthenticated"`, `"message":"a valid bearer access token is required"`,
		`"reason":"token_revoked"`, `"domain":"` + enforce.ErrorDomain + `"`} {
		if !strings.Contains(body, want) {
			t.Errorf("body %s lacks %s", body, want)
		}
	}
}
