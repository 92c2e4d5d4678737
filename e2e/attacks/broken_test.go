package attacks

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/e2e/attacks/catalogue"
	"github.com/gatehouse/gatehouse/e2e/stack"
	"github.com/gatehouse/gatehouse/libs/accesstoken"
	"github.com/gatehouse/gatehouse/libs/enforce"
	gateway "github.com/gatehouse/gatehouse/services/gateway/app"
)

// TestBrokenVerifierFailsTheSuite shows that the catalogue catches a broken
// build: it runs the gateway in this process, wired exactly as its main
// wires it and pointed at the stack's issuer and PDP, but with a token
// verifier whose audience check is disabled, and sends the catalogue's
// wrong-audience scenario (a token the issuer's key signed for another API,
// with the right scope) through it. The attack must succeed there (the
// request reaches the invoice upstream as the token's subject, and the
// answer is not the one the catalogue expects, so TestAttackScenarios would
// fail), while the same in-process gateway with the real verifier, and the
// stack's gateway, refuse it as the catalogue expects.
func TestBrokenVerifierFailsTheSuite(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	scenario := scenarioNamed(t, catalogue.WrongAudienceSigned)
	upstream := &recordingUpstream{}
	// The gateway speaks HTTP/2 without TLS (h2c) to its upstreams.
	invoices := httptest.NewUnstartedServer(upstream)
	invoices.Config.Protocols = new(http.Protocols)
	invoices.Config.Protocols.SetHTTP1(true)
	invoices.Config.Protocols.SetUnencryptedHTTP2(true)
	invoices.Start()
	defer invoices.Close()

	honest := inProcessGateway(t, ctx, invoices.URL)
	broken := inProcessGateway(t, ctx, invoices.URL, gateway.WithTokenVerifier(audienceBlind))

	for _, c := range []struct {
		name    string
		url     string
		refused bool
	}{
		{"the stack's gateway", gh.GatewayURL, true},
		{"the in-process gateway with the real verifier", honest, true},
		{"the in-process gateway without the audience check", broken, false},
	} {
		before := upstream.count()
		target := newTarget().WithGateway(c.url)
		resp, err := scenario.Send(ctx, target)
		if err != nil {
			t.Fatalf("%s: send: %v", c.name, err)
		}
		reached := upstream.count() - before
		if !c.refused {
			// The attack succeeded: the answer is the upstream's, and the
			// catalogue's check of this scenario fails.
			if resp.Status != http.StatusOK || reached != 1 || resp.Status == scenario.Expect.Status {
				t.Errorf("%s: status %d, upstream reached %d times; want the attack to get through (200, once), which the catalogue's expected %d fails; body %.300s",
					c.name, resp.Status, reached, scenario.Expect.Status, redact(resp.Body))
			}
			if got := upstream.lastSubject(); got != "reporting-job" {
				t.Errorf("%s: the upstream saw subject %q, want the token's reporting-job", c.name, got)
			}
			continue
		}
		if resp.Status != scenario.Expect.Status || reached != 0 {
			t.Errorf("%s: status %d (want %d), upstream reached %d times (want 0)", c.name, resp.Status, scenario.Expect.Status, reached)
		}
		var ce catalogue.ConnectError
		if err := json.Unmarshal(resp.Body, &ce); err != nil || ce.Reason() != scenario.Expect.Reason {
			t.Errorf("%s: reason %q (%v), want %q", c.name, ce.Reason(), err, scenario.Expect.Reason)
		}
	}
}

// audienceBlind is the broken build: a verifier that checks everything
// but the audience, by verifying each token against the audience the token
// itself names.
func audienceBlind(cfg accesstoken.Config) (gateway.TokenVerifier, error) {
	if _, err := accesstoken.NewVerifier(cfg); err != nil {
		return nil, err
	}
	return verifierFunc(func(ctx context.Context, raw string) (*accesstoken.Claims, error) {
		blind := cfg
		blind.Audience = claimedAudience(raw)
		v, err := accesstoken.NewVerifier(blind)
		if err != nil {
			return nil, accesstoken.ErrAudience
		}
		return v.Verify(ctx, raw)
	}), nil
}

type verifierFunc func(ctx context.Context, raw string) (*accesstoken.Claims, error)

func (f verifierFunc) Verify(ctx context.Context, raw string) (*accesstoken.Claims, error) {
	return f(ctx, raw)
}

// claimedAudience is the first aud of raw's unverified payload, "" if none.
func claimedAudience(raw string) string {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var claims struct {
		Aud json.RawMessage `json:"aud"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return ""
	}
	var one string
	if json.Unmarshal(claims.Aud, &one) == nil {
		return one
	}
	var many []string
	if json.Unmarshal(claims.Aud, &many) == nil && len(many) > 0 {
		return many[0]
	}
	return ""
}

// inProcessGateway serves a gateway built by the gateway's own wiring
// (services/gateway/app), configured as the stack's gateway but with every
// upstream at upstreamURL, and returns its base URL.
func inProcessGateway(t *testing.T, ctx context.Context, upstreamURL string, opts ...gateway.Option) string {
	t.Helper()
	pdp, err := gh.URL(ctx, "pdp")
	if err != nil {
		t.Fatal(err)
	}
	var cfg gateway.Config
	cfg.RegisterFlags(flag.NewFlagSet("gateway", flag.ContinueOnError)) // the flags' defaults
	cfg.Issuer = stack.IssuerID
	cfg.JWKSURL = gh.IssuerURL + "/.well-known/jwks.json"
	cfg.RevocationFeedURL = gh.IssuerURL
	cfg.RevocationClientSecret = "gateway-secret"
	cfg.PDPURL = pdp
	cfg.InvoiceURL, cfg.SupportURL = upstreamURL, upstreamURL
	app, err := gateway.New(ctx, cfg, slog.New(slog.DiscardHandler), opts...)
	if err != nil {
		t.Fatalf("gateway: %v", err)
	}
	t.Cleanup(func() {
		if err := app.Close(); err != nil {
			t.Errorf("gateway close: %v", err)
		}
	})
	srv := httptest.NewServer(app.Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

// recordingUpstream stands in for the invoice service: it answers every
// request with an empty list and remembers who the gateway said called.
type recordingUpstream struct {
	mu       sync.Mutex
	n        int
	subjects []string
}

func (u *recordingUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	if !strings.HasPrefix(r.URL.Path, "/gatehouse.") { // the gateway's readiness probe
		return
	}
	u.mu.Lock()
	u.n++
	u.subjects = append(u.subjects, r.Header.Get(enforce.HeaderSubject))
	u.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"invoices":[]}`))
}

func (u *recordingUpstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.n
}

func (u *recordingUpstream) lastSubject() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.subjects) == 0 {
		return ""
	}
	return u.subjects[len(u.subjects)-1]
}

// scenarioNamed is the catalogue's scenario of that name.
func scenarioNamed(t *testing.T, name string) catalogue.Scenario {
	t.Helper()
	for _, s := range catalogue.Scenarios() {
		if s.Name == name {
			return s
		}
	}
	t.Fatal(errors.New("no scenario " + name))
	return catalogue.Scenario{}
}
