package interaction_test

import (
	"fmt"
	"maps"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/interaction"
)

const (
	sprayedPassword = "Winter2030!"
	msgThrottled    = "Too many attempts from your network. Try again in"
)

// fail posts one failed password attempt (an unknown user) from b's login
// page p and returns the answer.
func (b *browser) fail(p page, i int) page {
	b.t.Helper()
	return b.post(interaction.PathLogin, formOf(b.t, p, "username", fmt.Sprintf("user%02d", i), "password", sprayedPassword))
}

// mustBeThrottled fails unless p is the throttled login (or code) page
// with Retry-After retryAfter.
func (p page) mustBeThrottled(t *testing.T, retryAfter string) page {
	t.Helper()
	p.mustStatus(t, http.StatusTooManyRequests)
	if got := p.Header.Get("Retry-After"); got != retryAfter {
		t.Errorf("Retry-After = %q, want %q", got, retryAfter)
	}
	if !strings.Contains(p.Body, msgThrottled) || !strings.Contains(p.Body, `role="alert"`) {
		t.Errorf("throttled page lacks the message:\n%s", p.Body)
	}
	return p
}

func TestThrottlePasswordSpraying(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.newBrowser(t) // through the test server: the peer is 127.0.0.1
	p := b.get(authorizePath("openid")).mustBeAt(t, interaction.PathLogin)
	for i := range interaction.DefaultLoginFailureBurst {
		p = b.fail(p, i).mustStatus(t, http.StatusUnauthorized)
	}
	if n := h.lookups.Load(); n != interaction.DefaultLoginFailureBurst {
		t.Fatalf("user lookups after %d failures = %d", interaction.DefaultLoginFailureBurst, n)
	}

	// The 11th attempt, at a real account, is refused unchecked: no lookup,
	// no failure recorded against bob.
	p = b.post(interaction.PathLogin, formOf(t, p, "username", "bob", "password", sprayedPassword)).
		mustBeThrottled(t, "6").mustBeAt(t, interaction.PathLogin)
	if !strings.Contains(p.Body, msgThrottled+" 1 minute.") || !strings.Contains(p.Body, `id="login-form"`) ||
		!strings.Contains(p.Body, "Invoice Web") || strings.Contains(p.Body, sprayedPassword) {
		t.Fatalf("throttled login page:\n%s", p.Body)
	}
	// Neither the right password nor a rotated X-Forwarded-For gets through.
	p = b.post(interaction.PathLogin, formOf(t, p, "username", "bob", "password", bobPassword)).mustBeThrottled(t, "6")
	p = b.post(interaction.PathLogin, formOf(t, p, "username", "bob", "password", bobPassword),
		"X-Forwarded-For", "203.0.113.9", "X-Real-Ip", "203.0.113.9").mustBeThrottled(t, "6")
	if n := h.lookups.Load(); n != interaction.DefaultLoginFailureBurst {
		t.Fatalf("the authenticator ran while throttled: %d user lookups", n)
	}
	if b.signedIn() {
		t.Fatal("signed in while throttled")
	}
	if u, err := h.users.GetUser(t.Context(), "bob"); err != nil || u.FailedAttempts != 0 {
		t.Fatalf("bob = %+v, %v: want no failure recorded", u, err)
	}

	if n := len(h.rec.Events(interaction.AuditLoginFailed)); n != interaction.DefaultLoginFailureBurst {
		t.Errorf("login.failed events = %d, want %d", n, interaction.DefaultLoginFailureBurst)
	}
	ev := h.rec.Events(interaction.AuditLoginThrottled)
	if len(ev) != 1 || ev[0].Attrs["source"] != "127.0.0.1" || ev[0].Attrs["step"] != "password" || ev[0].Attrs["client_id"] != "invoice-web" {
		t.Fatalf("login.throttled events = %+v, want one (per run of refusals) for 127.0.0.1", ev)
	}
	for k, v := range ev[0].Attrs {
		if strings.Contains(v, "bob") || strings.Contains(v, "Winter") || strings.Contains(v, "demo-password") {
			t.Fatalf("audit attr %s=%q holds typed input", k, v)
		}
	}

	// Another source is unaffected.
	other := h.newBrowserAt(t, "198.51.100.7:40000")
	other.signIn("bob", bobPassword, authorizePath("openid")).mustStatus(t, http.StatusOK).mustBeAt(t, interaction.PathConsent)

	// One interval later the throttled source has one attempt again.
	h.clock.Advance(interaction.DefaultLoginFailureInterval)
	b.post(interaction.PathLogin, formOf(t, p, "username", "bob", "password", bobPassword)).mustBeAt(t, interaction.PathConsent)
}

func TestThrottleSuccessesDoNotCount(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.newBrowserAt(t, "192.0.2.10:1234")
	p := b.get(interaction.PathLogin).mustStatus(t, http.StatusOK)
	for i := range interaction.DefaultLoginFailureBurst - 1 {
		p = b.fail(p, i).mustStatus(t, http.StatusUnauthorized)
	}
	// A busy network's honest users sign in many times: no token spent.
	for range 3 * interaction.DefaultLoginFailureBurst {
		b.post(interaction.PathLogin, formOf(t, p, "username", "bob", "password", bobPassword)).
			mustStatus(t, http.StatusOK).mustBeAt(t, interaction.PathAccountConsents)
		p = b.get(interaction.PathLogin).mustStatus(t, http.StatusOK)
	}
	p = b.fail(p, 9).mustStatus(t, http.StatusUnauthorized)
	b.fail(p, 10).mustBeThrottled(t, "6")
}

func TestThrottleRefill(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		burst      int
		interval   time.Duration
		retryAfter string
		message    string
	}{
		{name: "defaults", retryAfter: "6", message: msgThrottled + " 1 minute."},
		{name: "slow refill", burst: 2, interval: 150 * time.Second, retryAfter: "150", message: msgThrottled + " 3 minutes."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *interaction.Config) {
				c.LoginFailureBurst, c.LoginFailureInterval = tc.burst, tc.interval
			})
			burst, interval := tc.burst, tc.interval
			if burst == 0 {
				burst, interval = interaction.DefaultLoginFailureBurst, interaction.DefaultLoginFailureInterval
			}
			b := h.newBrowserAt(t, "192.0.2.20:1234")
			p := b.get(interaction.PathLogin).mustStatus(t, http.StatusOK)
			for i := range burst {
				p = b.fail(p, i).mustStatus(t, http.StatusUnauthorized)
			}
			p = b.fail(p, burst).mustBeThrottled(t, tc.retryAfter)
			if !strings.Contains(p.Body, tc.message) {
				t.Fatalf("throttled page lacks %q:\n%s", tc.message, p.Body)
			}
			h.clock.Advance(interval - time.Second)
			p = b.fail(p, burst).mustBeThrottled(t, "1")
			h.clock.Advance(time.Second)
			p = b.fail(p, burst).mustStatus(t, http.StatusUnauthorized)
			p = b.fail(p, burst).mustBeThrottled(t, tc.retryAfter)
			// A full window later, a whole burst again.
			h.clock.Advance(time.Duration(burst) * interval)
			for i := range burst {
				p = b.fail(p, i).mustStatus(t, http.StatusUnauthorized)
			}
			b.fail(p, burst).mustBeThrottled(t, tc.retryAfter)
			if n := h.lookups.Load(); n != int64(2*burst+1) {
				t.Fatalf("user lookups = %d, want %d (only admitted attempts)", n, 2*burst+1)
			}
		})
	}
}

func TestThrottleSources(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, first, second string
		shared              bool
		label               string
	}{
		{name: "same IPv6 /64", first: "[2001:db8:1:2::1]:1000", second: "[2001:db8:1:2:ffff:ffff:ffff:fffe]:2000", shared: true, label: "2001:db8:1:2::/64"},
		{name: "neighbouring IPv6 /64", first: "[2001:db8:1:2::1]:1000", second: "[2001:db8:1:3::1]:1000", label: "2001:db8:1:2::/64"},
		{name: "same IPv4, other port", first: "192.0.2.1:1000", second: "192.0.2.1:2000", shared: true, label: "192.0.2.1"},
		{name: "IPv4-mapped IPv6 is IPv4", first: "192.0.2.1:1000", second: "[::ffff:192.0.2.1]:2000", shared: true, label: "192.0.2.1"},
		{name: "neighbouring IPv4", first: "192.0.2.1:1000", second: "192.0.2.2:1000", label: "192.0.2.1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *interaction.Config) { c.LoginFailureBurst = 1 })
			first := h.newBrowserAt(t, tc.first)
			p := first.get(interaction.PathLogin).mustStatus(t, http.StatusOK)
			first.fail(first.fail(p, 0).mustStatus(t, http.StatusUnauthorized), 1).mustBeThrottled(t, "6")
			if ev := h.rec.Events(interaction.AuditLoginThrottled); len(ev) != 1 || ev[0].Attrs["source"] != tc.label {
				t.Fatalf("login.throttled events = %+v, want source %s", ev, tc.label)
			}

			second := h.newBrowserAt(t, tc.second)
			got := second.fail(second.get(interaction.PathLogin), 2)
			if tc.shared {
				got.mustBeThrottled(t, "6")
			} else {
				got.mustStatus(t, http.StatusUnauthorized)
			}
		})
	}
}

func TestThrottleCode(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *interaction.Config) { c.LoginFailureBurst = 2 })
	b := h.newBrowserAt(t, "192.0.2.30:1234")
	login := b.get(authorizePath("openid")).mustBeAt(t, interaction.PathLogin)
	// The right password gives its token back: two wrong codes still fit.
	mfa := b.post(interaction.PathLogin, formOf(t, login, "username", "alice", "password", alicePassword)).mustBeAt(t, interaction.PathMFA)
	for range 2 {
		mfa = b.post(interaction.PathMFA, formOf(t, mfa, "code", "000000")).mustStatus(t, http.StatusUnauthorized)
	}
	p := b.post(interaction.PathMFA, formOf(t, mfa, "code", h.totpCode(t))).mustBeThrottled(t, "6").mustBeAt(t, interaction.PathMFA)
	if !strings.Contains(p.Body, `id="mfa-form"`) {
		t.Fatalf("throttled code page lacks the code form:\n%s", p.Body)
	}
	if b.signedIn() {
		t.Fatal("signed in while throttled")
	}
	if u, err := h.users.GetUser(t.Context(), "alice"); err != nil || u.FailedAttempts != 2 {
		t.Fatalf("alice = %+v, %v: want the 2 wrong codes and nothing for the throttled one", u, err)
	}
	ev := h.rec.Events(interaction.AuditLoginThrottled)
	if len(ev) != 1 || ev[0].Attrs["step"] != "code" || ev[0].Attrs["source"] != "192.0.2.30" || ev[0].Attrs["subject"] != "" {
		t.Fatalf("login.throttled events = %+v", ev)
	}
	// The password step stands; the code goes through once a token is back.
	h.clock.Advance(interaction.DefaultLoginFailureInterval)
	b.post(interaction.PathMFA, formOf(t, p, "code", h.totpCode(t))).mustBeAt(t, interaction.PathConsent)
}

func TestThrottleConcurrentAttempts(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.newBrowser(t)
	login := b.get(interaction.PathLogin).mustStatus(t, http.StatusOK)
	form := formOf(t, login, "username", "nobody", "password", sprayedPassword).Encode()

	// An attempt holds its token while it is checked, so however many run
	// at once, only a burst's worth reaches the authenticator.
	const attempts = 3 * interaction.DefaultLoginFailureBurst
	statuses := make(chan int, attempts)
	var wg sync.WaitGroup
	for range attempts {
		wg.Go(func() {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, h.srv.URL+interaction.PathLogin, strings.NewReader(form))
			if err != nil {
				t.Error(err)
				return
			}
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := b.manual.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		})
	}
	wg.Wait()
	close(statuses)
	count := map[int]int{}
	for s := range statuses {
		count[s]++
	}
	want := map[int]int{http.StatusUnauthorized: interaction.DefaultLoginFailureBurst, http.StatusTooManyRequests: attempts - interaction.DefaultLoginFailureBurst}
	if !maps.Equal(count, want) {
		t.Fatalf("statuses = %v, want %v", count, want)
	}
	if n := h.lookups.Load(); n != interaction.DefaultLoginFailureBurst {
		t.Fatalf("user lookups = %d, want %d", n, interaction.DefaultLoginFailureBurst)
	}
}

func TestThrottleForgetsLeastRecentlySeen(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		sources   int
		forgotten bool
	}{
		{name: "full: the least recently seen is forgotten", sources: 2, forgotten: true},
		{name: "room for all", sources: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *interaction.Config) { c.LoginFailureBurst, c.LoginThrottleSources = 1, tc.sources })
			at := func(addr string) (*browser, page) {
				b := h.newBrowserAt(t, addr)
				return b, b.get(interaction.PathLogin).mustStatus(t, http.StatusOK)
			}
			a, p := at("192.0.2.1:1000")
			p = a.fail(a.fail(p, 0).mustStatus(t, http.StatusUnauthorized), 1).mustBeThrottled(t, "6")
			for i, addr := range []string{"192.0.2.2:1000", "[2001:db8::1]:1000"} {
				b, q := at(addr)
				b.fail(q, i).mustStatus(t, http.StatusUnauthorized)
			}
			got := a.fail(p, 2)
			if tc.forgotten {
				got.mustStatus(t, http.StatusUnauthorized)
			} else {
				got.mustBeThrottled(t, "6")
			}
		})
	}
}

func TestNewRejectsBadThrottleConfig(t *testing.T) {
	t.Parallel()
	var base interaction.Config
	newHarness(t, func(c *interaction.Config) { base = *c })
	tests := []struct {
		name   string
		change func(*interaction.Config)
	}{
		{name: "negative burst", change: func(c *interaction.Config) { c.LoginFailureBurst = -1 }},
		{name: "negative interval", change: func(c *interaction.Config) { c.LoginFailureInterval = -time.Second }},
		{name: "negative sources", change: func(c *interaction.Config) { c.LoginThrottleSources = -1 }},
		{name: "window overflows", change: func(c *interaction.Config) {
			c.LoginFailureBurst, c.LoginFailureInterval = 1<<40, 1<<30
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := base
			tc.change(&cfg)
			if _, err := interaction.New(cfg); err == nil || !strings.Contains(err.Error(), "Login") {
				t.Fatalf("New = %v, want an error naming the field", err)
			}
		})
	}
}
