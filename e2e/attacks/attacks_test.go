package attacks

import (
	"context"
	"encoding/json"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/e2e/attacks/catalogue"
)

// newTarget is the stack as the catalogue sees it, one for the package: it
// keeps the users' sign-ins, and a TOTP user can sign in once per 30 s step.
var newTarget = sync.OnceValue(func() *catalogue.Target {
	pdp, err := gh.URL(context.Background(), "pdp")
	if err != nil {
		panic(err) // the stack is up: its PDP has a published port
	}
	return &catalogue.Target{GatewayURL: gh.GatewayURL, IssuerURL: gh.IssuerURL, PDPURL: pdp, HTTP: gh.HTTPClient(),
		TOTP: gh.TOTPCode, IssuerKey: gh.IssuerSigningKey}
})

// TestControls runs the genuine twins of the attacks first: each must
// succeed, or the attacks' refusals would prove nothing.
func TestControls(t *testing.T) {
	target := newTarget()
	for _, s := range catalogue.Controls() {
		t.Run(s.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			start := time.Now()
			resp, err := s.Send(ctx, target)
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			check(t, s.Expect, resp, time.Since(start))
		})
	}
}

// TestAttackScenarios sends every scenario of the catalogue to the stack.
// The subtests run one at a time: a scenario's "nothing changed" check
// compares state that another scenario running at the same time could
// legitimately change.
func TestAttackScenarios(t *testing.T) {
	target := newTarget()
	for _, s := range catalogue.Scenarios() {
		t.Run(s.Name, func(t *testing.T) {
			// A sign-in with TOTP may wait up to 30 s for a fresh code.
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			var before string
			if s.State != nil {
				var err error
				if before, err = s.State.Read(ctx, target); err != nil {
					t.Fatalf("%s before: %v", s.State.Name, err)
				}
			}
			start := time.Now()
			resp, err := s.Send(ctx, target)
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			check(t, s.Expect, resp, time.Since(start))
			if s.Verify != nil && resp.Status == s.Expect.Status {
				if err := s.Verify.Check(ctx, target, resp); err != nil {
					t.Errorf("%s: %v", s.Verify.Name, err)
				}
			}
			if s.State != nil {
				after, err := s.State.Read(ctx, target)
				if err != nil {
					t.Fatalf("%s after: %v", s.State.Name, err)
				}
				if after != before {
					t.Errorf("%s changed:\nbefore %s\nafter  %s", s.State.Name, before, after)
				}
			}
		})
	}
}

// check compares the answer with the expected outcome; took is how long
// the attack took to get it (Send's run).
func check(t *testing.T, want catalogue.Outcome, resp *catalogue.Response, took time.Duration) {
	t.Helper()
	if resp.Sent != "" && len(resp.Sent) > 16 && strings.Contains(string(resp.Body), resp.Sent) {
		t.Error("the answer echoes the token")
	}
	if want.Dropped > 0 {
		// A slow client's Send returns when the server closed the
		// connection, or hangs up itself after the bound.
		if took > want.Dropped {
			t.Errorf("the server kept the connection open for %v, want it closed within %v", took.Round(time.Millisecond), want.Dropped)
		}
		if resp.Status != 0 && resp.Status != want.Status {
			t.Errorf("the server answered %d before closing, want %d or no answer; body %.300s", resp.Status, want.Status, redact(resp.Body))
		}
		return
	}
	if resp.Status != want.Status {
		t.Errorf("HTTP status %d, want %d; body %.300s", resp.Status, want.Status, redact(resp.Body))
	}
	loc := resp.Header.Get("Location")
	if u, err := url.Parse(loc); err == nil && u.Query().Has("code") {
		t.Errorf("the answer redirects with an authorization code: %s", redirectPath(loc))
	}
	if want.OAuthError != "" && want.Location != "" {
		// The authorization endpoint's refusal: a redirect to the client
		// with the error in its query (RFC 6749 section 4.1.2.1).
		u, err := url.Parse(loc)
		if err != nil || u.Path != want.Location || u.Query().Get("error") != want.OAuthError {
			t.Errorf("Location %q, want an error redirect to %s with error %q", redirectPath(loc), want.Location, want.OAuthError)
		}
		return
	}
	if want.OAuthError != "" {
		var oe struct {
			Error       string `json:"error"`
			ReasonCode  string `json:"reason_code"`
			AccessToken string `json:"access_token"`
		}
		if err := json.Unmarshal(resp.Body, &oe); err != nil || oe.Error != want.OAuthError {
			t.Errorf("OAuth error %q (%v), want %q; body %.300s", oe.Error, err, want.OAuthError, redact(resp.Body))
		}
		if want.Reason != "" && oe.ReasonCode != want.Reason {
			t.Errorf("reason_code %q, want %q", oe.ReasonCode, want.Reason)
		}
		if oe.AccessToken != "" {
			t.Error("a refusal issued an access token")
		}
		return
	}
	if want.Code != "" {
		var ce catalogue.ConnectError
		if err := json.Unmarshal(resp.Body, &ce); err != nil {
			t.Fatalf("the answer is not a Connect JSON error: %v: %.300s", err, redact(resp.Body))
		}
		reason := want.Reason
		if reason == catalogue.NoErrorInfo {
			reason = ""
		}
		if ce.Code != want.Code || ce.Reason() != reason {
			t.Errorf("Connect code %q reason %q, want %q and %q", ce.Code, ce.Reason(), want.Code, reason)
		}
	}
	if redirectPath(loc) != want.Location {
		t.Errorf("Location %q, want the path %q", loc, want.Location)
	}
	got := resp.Header.Get("WWW-Authenticate")
	switch {
	case want.Challenge != "" && !strings.Contains(got, want.Challenge):
		t.Errorf("WWW-Authenticate %q, want it to contain %s", got, want.Challenge)
	case want.Challenge == "" && got != "":
		t.Errorf("WWW-Authenticate %q, want none", got)
	}
}

// redirectPath is the path a Location header points to ("" without one).
func redirectPath(loc string) string {
	if loc == "" {
		return ""
	}
	u, err := url.Parse(loc)
	if err != nil {
		return "unparsable: " + loc
	}
	return u.Path
}

// jwtPattern matches a compact JWS.
var jwtPattern = regexp.MustCompile(`eyJ[\w-]*\.[\w-]*\.[\w-]*`)

// redact keeps tokens out of failure messages.
func redact(body []byte) []byte {
	return jwtPattern.ReplaceAll(body, []byte("<jwt>"))
}
