package edge_test

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/services/gateway/internal/breaker"
	"github.com/gatehouse/gatehouse/services/gateway/internal/decisioncache"
	"github.com/gatehouse/gatehouse/services/gateway/internal/edge"
)

const (
	listPath    = "/gatehouse.invoice.v1.InvoiceService/ListInvoices"
	getPath     = "/gatehouse.invoice.v1.InvoiceService/GetInvoice"
	createPath  = "/gatehouse.invoice.v1.InvoiceService/CreateInvoice"
	approvePath = "/gatehouse.invoice.v1.InvoiceService/ApproveInvoice"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func withDecisionCache(t *testing.T, ttl, staleFor time.Duration, now func() time.Time) func(*fixture, *edge.Config) {
	return func(_ *fixture, c *edge.Config) {
		dc, err := decisioncache.New(decisioncache.Config{Size: 100, TTL: ttl, StaleFor: staleFor, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		c.Decisions = dc
	}
}

// TestDecisionCacheAtTheEdge: a repeated plain answer costs one PDP call;
// a step-up challenge is asked for every time; another principal is never
// answered from someone else's entry.
func TestDecisionCacheAtTheEdge(t *testing.T) {
	t.Parallel()
	deny := func(*authzv1.CheckRequest) (enforce.Decision, error) {
		return enforce.Decision{State: authzv1.Decision_DECISION_DENY, ReasonCode: reason.RoleNotPermitted}, nil
	}
	stepUp := func(*authzv1.CheckRequest) (enforce.Decision, error) {
		return enforce.Decision{State: authzv1.Decision_DECISION_DENY, ReasonCode: reason.StepUpRequired,
			Obligations: []*authzv1.Obligation{{Type: enforce.ObligationStepUp, Params: map[string]string{"acr": "mfa", "max_age": "300"}}}}, nil
	}
	tests := []struct {
		name       string
		decide     func(*authzv1.CheckRequest) (enforce.Decision, error)
		subjects   []string
		wantStatus int
		wantCalls  int
	}{
		{"allow is reused", allow, []string{"alice", "alice", "alice"}, http.StatusOK, 1},
		{"deny is reused", deny, []string{"alice", "alice", "alice"}, http.StatusForbidden, 1},
		{"step-up is never reused", stepUp, []string{"alice", "alice", "alice"}, http.StatusUnauthorized, 3},
		{"each principal has its own answer", allow, []string{"alice", "bob", "alice", "bob"}, http.StatusOK, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixtureWith(t, tc.decide, "", withDecisionCache(t, time.Minute, 0, nil))
			for _, sub := range tc.subjects {
				// A fresh token each time: the answer belongs to the
				// principal, not to one token.
				status, body := postJSON(t, f, listPath, f.iss.Mint(t, map[string]any{"sub": sub}, nil), "{}")
				if status != tc.wantStatus {
					t.Fatalf("%s: %d %s, want %d", sub, status, body, tc.wantStatus)
				}
			}
			if n := f.pdp.count(); n != tc.wantCalls {
				t.Fatalf("%d PDP calls, want %d", n, tc.wantCalls)
			}
		})
	}
}

// TestDecisionCacheExpires: past the TTL the PDP is asked again.
func TestDecisionCacheExpires(t *testing.T) {
	t.Parallel()
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	f := newFixtureWith(t, allow, "", withDecisionCache(t, 2*time.Second, 0, c.now))
	tok := f.iss.Mint(t, nil, nil)
	postJSON(t, f, listPath, tok, "{}")
	c.add(time.Second)
	postJSON(t, f, listPath, tok, "{}")
	if n := f.pdp.count(); n != 1 {
		t.Fatalf("%d PDP calls within the TTL, want 1", n)
	}
	c.add(time.Second)
	postJSON(t, f, listPath, tok, "{}")
	if n := f.pdp.count(); n != 2 {
		t.Fatalf("%d PDP calls after the TTL, want 2", n)
	}
}

// TestOpenBreakerDeniesWithoutCallingThePDP: after the PDP failed the
// configured number of times in a row, requests are denied with 503
// pdp_unavailable at once.
func TestOpenBreakerDeniesWithoutCallingThePDP(t *testing.T) {
	t.Parallel()
	down := func(*authzv1.CheckRequest) (enforce.Decision, error) {
		return enforce.Decision{}, enforce.ErrPDPUnavailable
	}
	f := newFixtureWith(t, down, "", func(f *fixture, c *edge.Config) {
		b, err := breaker.New(breaker.Config{PDP: f.pdp, Failures: 2, CoolDown: time.Hour, Logger: discard()})
		if err != nil {
			t.Fatal(err)
		}
		c.PDP = b
	})
	tok := f.iss.Mint(t, nil, nil)
	for i := range 5 {
		status, body := postJSON(t, f, listPath, tok, "{}")
		if status != http.StatusServiceUnavailable || !strings.Contains(body, `"reason":"pdp_unavailable"`) {
			t.Fatalf("request %d: %d %s, want 503 pdp_unavailable", i+1, status, body)
		}
	}
	if n := f.pdp.count(); n != 2 {
		t.Fatalf("the PDP was called %d times, want 2 (then the circuit opened)", n)
	}
	if n := f.upstream.callCount(); n != 0 {
		t.Fatal("a request passed while the PDP was down")
	}
}

// TestStaleAllow: while the PDP is down, a read-only, low-risk route is
// allowed from an ALLOW at most the window old, if the window is set; no
// other route is, and revocation still applies.
func TestStaleAllow(t *testing.T) {
	t.Parallel()
	const window = 30 * time.Second
	tests := []struct {
		name       string
		staleFor   time.Duration
		path       string
		after      time.Duration
		revoke     bool
		wantStatus int
		wantReason string
	}{
		{"low-risk read past the TTL, within the window", window, listPath, 10 * time.Second, false, http.StatusOK, ""},
		{"another low-risk read within the window", window, getPath, window, false, http.StatusOK, ""},
		{"past the window", window, listPath, window + time.Second, false, http.StatusServiceUnavailable, reason.PDPUnavailable},
		{"off by default", 0, listPath, 5 * time.Second, false, http.StatusServiceUnavailable, reason.PDPUnavailable},
		{"standard write", window, createPath, 5 * time.Second, false, http.StatusServiceUnavailable, reason.PDPUnavailable},
		{"sensitive write", window, approvePath, 5 * time.Second, false, http.StatusServiceUnavailable, reason.PDPUnavailable},
		{"revoked token", window, listPath, 5 * time.Second, true, http.StatusUnauthorized, reason.TokenRevoked},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var pdpDown atomic.Bool
			decide := func(req *authzv1.CheckRequest) (enforce.Decision, error) {
				if pdpDown.Load() {
					return enforce.Decision{}, enforce.ErrPDPUnavailable
				}
				return allow(req)
			}
			c := &clock{t: time.Unix(1_800_000_000, 0)}
			f := newFixtureWith(t, decide, "", withDecisionCache(t, 2*time.Second, tc.staleFor, c.now))
			tok := f.iss.Mint(t, map[string]any{"jti": "j1"}, nil)
			body := "{}"
			if tc.path == getPath || tc.path == approvePath {
				body = `{"id": "inv_1"}`
			}
			if status, b := postJSON(t, f, tc.path, tok, body); status != http.StatusOK {
				t.Fatalf("with the PDP up: %d %s", status, b)
			}
			before := f.upstream.callCount()
			pdpDown.Store(true)
			c.add(tc.after)
			if tc.revoke {
				f.revocations.revoke("j1")
			}
			status, b := postJSON(t, f, tc.path, tok, body)
			if status != tc.wantStatus || (tc.wantReason != "" && !strings.Contains(b, `"reason":"`+tc.wantReason+`"`)) {
				t.Fatalf("with the PDP down: %d %s, want %d %s", status, b, tc.wantStatus, tc.wantReason)
			}
			if passed := f.upstream.callCount() > before; passed != (tc.wantStatus == http.StatusOK) {
				t.Fatalf("upstream reached: %v, want %v", passed, tc.wantStatus == http.StatusOK)
			}
		})
	}
}
