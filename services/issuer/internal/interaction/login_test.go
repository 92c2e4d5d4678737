package interaction_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/interaction"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
)

func TestPasswordLoginAndConsent(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.newBrowser(t)

	login := b.get(authorizePath("openid invoice:read")).mustStatus(t, http.StatusOK).mustBeAt(t, interaction.PathLogin)
	for _, want := range []string{`id="login-form"`, `name="username"`, `name="password"`, `id="login-submit"`,
		`autocomplete="username"`, `autocomplete="current-password"`, `<label for="username">`, `<label for="password">`,
		`<html lang="en">`, `<title>Sign in`, "Invoice Web"} {
		if !strings.Contains(login.Body, want) {
			t.Errorf("login page lacks %s", want)
		}
	}
	consentPage := b.post(interaction.PathLogin, formOf(t, login, "username", "bob", "password", bobPassword)).
		mustStatus(t, http.StatusOK).mustBeAt(t, interaction.PathConsent)
	for _, want := range []string{`id="consent-form"`, `id="consent-allow"`, `id="consent-deny"`,
		`name="decision" value="allow"`, `name="decision" value="deny"`, "Invoice Web",
		"View invoices of your organization.", "Sign you in and confirm your identity.",
		"revokes every access and refresh token", `href="/account/consents"`, "bob", "acme"} {
		if !strings.Contains(consentPage.Body, want) {
			t.Errorf("consent page lacks %s", want)
		}
	}
	res := b.post(interaction.PathConsent, formOf(t, consentPage, "decision", "allow")).result(t)
	if res.Outcome != "code" || res.Subject != "bob" || res.ACR != "pwd" || !slices.Equal(res.AMR, []string{"pwd"}) ||
		res.State != "state-1" || res.ConsentID == "" {
		t.Fatalf("answer = %+v, want a code for bob with acr pwd, amr [pwd] and a consent", res)
	}

	c, err := h.consents.GetConsent(t.Context(), res.ConsentID)
	if err != nil {
		t.Fatal(err)
	}
	now := h.clock.Now()
	if c.Subject != "bob" || c.Tenant != "acme" || c.ClientID != "invoice-web" ||
		!slices.Equal(c.Scopes, []string{"invoice:read", "openid"}) ||
		!c.GrantedAt.Equal(now) || !c.ExpiresAt.Equal(now.Add(interaction.DefaultConsentLifetime)) {
		t.Fatalf("stored consent = %+v", c)
	}
	if got := h.rec.Events(interaction.AuditLoginSucceeded); len(got) != 1 || got[0].Attrs["subject"] != "bob" ||
		got[0].Attrs["client_id"] != "invoice-web" || got[0].Attrs["acr"] != "pwd" {
		t.Fatalf("login audit = %+v", got)
	}
	if got := h.rec.Events(interaction.AuditConsentGranted); len(got) != 1 || got[0].Attrs["consent_id"] != c.ID ||
		got[0].Attrs["scope"] != "openid invoice:read" {
		t.Fatalf("consent audit = %+v", got)
	}

	// With a session and a consent, the next request needs no page.
	again := b.get(authorizePath("invoice:read")).result(t)
	if again.Outcome != "code" || again.ConsentID != c.ID || again.Fresh {
		t.Fatalf("second request = %+v, want a code on the same consent without login", again)
	}
	// More scopes than granted: consent again, no login.
	more := b.get(authorizePath("openid invoice:read invoice:write")).mustStatus(t, http.StatusOK).mustBeAt(t, interaction.PathConsent)
	if !strings.Contains(more.Body, "Create and edit invoices of your organization.") {
		t.Fatalf("consent page for more scopes lacks invoice:write's description:\n%s", more.Body)
	}
}

func TestTOTPLogin(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.newBrowser(t)
	login := b.get(authorizePath("openid invoice:approve", "acr_values", "mfa")).mustBeAt(t, interaction.PathLogin)
	mfa := b.post(interaction.PathLogin, formOf(t, login, "username", "alice", "password", alicePassword)).
		mustStatus(t, http.StatusOK).mustBeAt(t, interaction.PathMFA)
	for _, want := range []string{`id="mfa-form"`, `name="code"`, `id="mfa-submit"`, `inputmode="numeric"`,
		`autocomplete="one-time-code"`, `<label for="code">`} {
		if !strings.Contains(mfa.Body, want) {
			t.Errorf("MFA page lacks %s", want)
		}
	}
	// The verified password lives server-side: the form carries only the
	// interaction id and the CSRF token.
	if fields := regexp.MustCompile(`<input[^>]*name="([^"]+)"`).FindAllStringSubmatch(mfa.Body, -1); len(fields) != 3 {
		t.Fatalf("MFA form fields = %v, want csrf_token, interaction, code", fields)
	}
	if b.signedIn() {
		t.Fatal("signed in after the password alone")
	}

	wrong := b.post(interaction.PathMFA, formOf(t, mfa, "code", "000000")).mustStatus(t, http.StatusUnauthorized).mustBeAt(t, interaction.PathMFA)
	if !strings.Contains(wrong.Body, "Invalid username, password or code") || !strings.Contains(wrong.Body, `role="alert"`) {
		t.Fatalf("wrong code page:\n%s", wrong.Body)
	}
	if ev := h.rec.Events(interaction.AuditLoginFailed); len(ev) != 1 || ev[0].Attrs["subject"] != "alice" || ev[0].Attrs["reason"] != "invalid_credentials" {
		t.Fatalf("failed-code audit = %+v", ev)
	}

	consentPage := b.post(interaction.PathMFA, formOf(t, wrong, "code", h.totpCode(t))).mustBeAt(t, interaction.PathConsent)
	res := b.post(interaction.PathConsent, formOf(t, consentPage, "decision", "allow")).result(t)
	if res.Outcome != "code" || res.Subject != "alice" || res.ACR != "mfa" || !slices.Equal(res.AMR, []string{"pwd", "otp", "mfa"}) {
		t.Fatalf("answer = %+v, want a code for alice with acr mfa", res)
	}
}

func TestTOTPLoginForAccountPage(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.newBrowser(t)
	login := b.get(interaction.PathAccountConsents).mustBeAt(t, interaction.PathLogin)
	if login.URL.RawQuery != "next=account" {
		t.Fatalf("login for the account page at %s, want ?next=account", login.URL)
	}
	mfa := b.post(interaction.PathLogin, formOf(t, login, "username", "alice", "password", alicePassword)).mustBeAt(t, interaction.PathMFA)
	account := b.post(interaction.PathMFA, formOf(t, mfa, "code", h.totpCode(t))).
		mustStatus(t, http.StatusOK).mustBeAt(t, interaction.PathAccountConsents)
	if !strings.Contains(account.Body, "alice") || !strings.Contains(account.Body, "You have not allowed any application") {
		t.Fatalf("account page:\n%s", account.Body)
	}
	// The account login's interaction is gone, and cannot be resumed.
	if r := b.get(interaction.ResumePath + "?interaction=" + field(t, interactionRE, mfa)); r.Status != http.StatusBadRequest {
		t.Fatalf("resuming an account login = %d, want 400", r.Status)
	}
}

func TestFailedLogins(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, username, password string
	}{
		{name: "wrong password", username: "bob", password: "alice-demo-password"},
		{name: "unknown user", username: "mallory", password: bobPassword},
		{name: "empty", username: "", password: ""},
		{name: "TOTP user, wrong password", username: "alice", password: bobPassword},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			b := h.newBrowser(t)
			login := b.get(authorizePath("openid")).mustBeAt(t, interaction.PathLogin)
			p := b.post(interaction.PathLogin, formOf(t, login, "username", tc.username, "password", tc.password)).
				mustStatus(t, http.StatusUnauthorized).mustBeAt(t, interaction.PathLogin)
			if !strings.Contains(p.Body, "Invalid username, password or code. Check them and try again.") ||
				!strings.Contains(p.Body, `role="alert"`) || !strings.Contains(p.Body, `autofocus`) {
				t.Fatalf("failed login page:\n%s", p.Body)
			}
			if tc.password != "" && strings.Contains(p.Body, tc.password) {
				t.Fatal("failed login page echoes the password")
			}
			if b.signedIn() {
				t.Fatal("signed in after a failed login")
			}
			ev := h.rec.Events(interaction.AuditLoginFailed)
			if len(ev) != 1 || ev[0].Attrs["reason"] != "invalid_credentials" || ev[0].Attrs["client_id"] != "invoice-web" {
				t.Fatalf("audit = %+v", ev)
			}
			for k, v := range ev[0].Attrs {
				if tc.password != "" && strings.Contains(v, tc.password) || tc.username != "" && strings.Contains(v, tc.username) {
					t.Fatalf("audit attr %s=%q holds typed input", k, v)
				}
			}
			// The form still works after the failure.
			b.post(interaction.PathLogin, formOf(t, p, "username", "bob", "password", bobPassword)).mustBeAt(t, interaction.PathConsent)
		})
	}
}

func TestLockout(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.newBrowser(t)
	p := b.get(authorizePath("openid")).mustBeAt(t, interaction.PathLogin)
	for range testLockout().Threshold {
		p = b.post(interaction.PathLogin, formOf(t, p, "username", "bob", "password", "wrong-password")).mustStatus(t, http.StatusUnauthorized)
	}
	locked := b.post(interaction.PathLogin, formOf(t, p, "username", "bob", "password", bobPassword)).
		mustStatus(t, http.StatusTooManyRequests).mustBeAt(t, interaction.PathLogin)
	if !strings.Contains(locked.Body, "Too many failed attempts. Try again later.") || !strings.Contains(locked.Body, `role="alert"`) {
		t.Fatalf("lockout page:\n%s", locked.Body)
	}
	if strings.Contains(locked.Body, "2030") || b.signedIn() {
		t.Fatal("lockout page tells the unlock time, or the login went through")
	}
	if ev := h.rec.Events(interaction.AuditLoginFailed); ev[len(ev)-1].Attrs["reason"] != "locked" {
		t.Fatalf("last audit = %+v, want reason locked", ev[len(ev)-1])
	}
	h.clock.Advance(testLockout().Max + time.Second)
	b.post(interaction.PathLogin, formOf(t, locked, "username", "bob", "password", bobPassword)).mustBeAt(t, interaction.PathConsent)
}

func TestMFANotEnrolled(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.newBrowser(t)
	p := b.signIn("bob", bobPassword, authorizePath("openid invoice:read", "acr_values", "mfa")).
		mustStatus(t, http.StatusForbidden).mustBeAt(t, interaction.PathLogin)
	if !strings.Contains(p.Body, "requires you to sign in with a code from an authenticator app") {
		t.Fatalf("page:\n%s", p.Body)
	}
	if b.signedIn() {
		t.Fatal("a session was created for a login that did not satisfy the request")
	}
	link := regexp.MustCompile(`<a href="(/oauth2/authorize/resume\?interaction=[^"]+)">`).FindStringSubmatch(p.Body)
	if link == nil {
		t.Fatalf("no link back to the authorization endpoint:\n%s", p.Body)
	}
	res := b.get(strings.ReplaceAll(link[1], "&amp;", "&")).result(t)
	if res.Outcome != "access_denied:mfa_not_enrolled" {
		t.Fatalf("answer = %+v, want access_denied:mfa_not_enrolled", res)
	}
	if ev := h.rec.Events(interaction.AuditLoginFailed); len(ev) != 1 || ev[0].Attrs["reason"] != "mfa_not_enrolled" {
		t.Fatalf("audit = %+v", ev)
	}
}

func TestMFAStepExpires(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *interaction.Config) { c.InteractionLifetime = time.Hour })
	b := h.newBrowser(t)
	login := b.get(authorizePath("openid")).mustBeAt(t, interaction.PathLogin)
	mfa := b.post(interaction.PathLogin, formOf(t, login, "username", "alice", "password", alicePassword)).mustBeAt(t, interaction.PathMFA)
	h.clock.Advance(6 * time.Minute) // past authn.MFAWindow
	p := b.post(interaction.PathMFA, formOf(t, mfa, "code", h.totpCode(t))).mustStatus(t, http.StatusUnauthorized).mustBeAt(t, interaction.PathMFA)
	if !strings.Contains(p.Body, "Signing in took too long") || !strings.Contains(p.Body, `id="login-form"`) {
		t.Fatalf("page after an expired MFA step:\n%s", p.Body)
	}
	// The password step must be repeated: the MFA page sends back to it.
	if again := b.get(interaction.PathMFA + "?interaction=" + field(t, interactionRE, mfa)); again.URL.Path != interaction.PathLogin {
		t.Fatalf("MFA page after expiry at %s, want the login page", again.URL)
	}
	next := b.post(interaction.PathLogin, formOf(t, p, "username", "alice", "password", alicePassword)).mustBeAt(t, interaction.PathMFA)
	b.post(interaction.PathMFA, formOf(t, next, "code", h.totpCode(t))).mustBeAt(t, interaction.PathConsent)
}

func TestPromptLoginReplacesSession(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.newBrowser(t)
	b.signIn("bob", bobPassword, authorizePath("openid"))
	before, err := b.cookie("gatehouse-session")
	if err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(time.Minute)
	login := b.get(authorizePath("openid", "prompt", "login")).mustBeAt(t, interaction.PathLogin)
	if !strings.Contains(login.Body, "sign in again") {
		t.Fatalf("re-login page does not say why:\n%s", login.Body)
	}
	consentPage := b.post(interaction.PathLogin, formOf(t, login, "username", "bob", "password", bobPassword)).mustBeAt(t, interaction.PathConsent)
	after, err := b.cookie("gatehouse-session")
	if err != nil || after == before {
		t.Fatalf("session cookie not replaced by the login: %v", err)
	}
	res := b.post(interaction.PathConsent, formOf(t, consentPage, "decision", "allow")).result(t)
	if !res.Fresh {
		t.Fatalf("answer = %+v, want LoginAt set", res)
	}
	// The old session is gone server-side.
	if _, err := h.sessions.GetBrowserSession(t.Context(), hashOf(before), h.clock.Now()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the replaced session: %v, want ErrNotFound", err)
	}
}

func TestSessionIdleAndAbsoluteExpiry(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.newBrowser(t)
	b.signIn("bob", bobPassword, authorizePath("openid"))
	for range 9 { // 9 x 50 min = 7.5 h of use keeps it alive
		h.clock.Advance(50 * time.Minute)
		if !b.signedIn() {
			t.Fatalf("session ended while in use at %v", h.clock.Now())
		}
	}
	h.clock.Advance(31 * time.Minute) // past 8h absolute
	if b.signedIn() {
		t.Fatal("session outlived its absolute lifetime")
	}

	idle := h.newBrowser(t)
	idle.signIn("bob", bobPassword, authorizePath("openid"))
	h.clock.Advance(interaction.DefaultSessionIdleTimeout + time.Second)
	if idle.signedIn() {
		t.Fatal("session outlived its idle timeout")
	}
}

func TestLogout(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.newBrowser(t)
	b.signIn("bob", bobPassword, authorizePath("openid"))
	account := b.get(interaction.PathAccountConsents).mustStatus(t, http.StatusOK)
	if !strings.Contains(account.Body, `id="logout-form"`) {
		t.Fatalf("account page lacks the sign-out form:\n%s", account.Body)
	}
	out := b.post(interaction.PathLogout, url.Values{"csrf_token": {field(t, csrfRE, account)}}).mustStatus(t, http.StatusOK)
	if !strings.Contains(out.Body, "You are signed out") || b.signedIn() {
		t.Fatalf("still signed in after logout:\n%s", out.Body)
	}
	if ev := h.rec.Events(interaction.AuditLogout); len(ev) != 1 || ev[0].Attrs["subject"] != "bob" {
		t.Fatalf("logout audit = %+v", ev)
	}
}

func TestLogoutRevokesFirst(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		err        error
		wantStatus int
		signedIn   bool
	}{
		{name: "revoked", wantStatus: http.StatusOK},
		{name: "revocation fails: the session stays", err: errors.New("store down"), wantStatus: http.StatusInternalServerError, signedIn: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var calls []interaction.Session
			h := newHarness(t, func(c *interaction.Config) {
				c.OnSignedOut = func(_ context.Context, s interaction.Session) error {
					mu.Lock()
					defer mu.Unlock()
					calls = append(calls, s)
					return tc.err
				}
			})
			b := h.newBrowser(t)
			b.signIn("bob", bobPassword, authorizePath("openid"))
			account := b.get(interaction.PathAccountConsents).mustStatus(t, http.StatusOK)
			b.post(interaction.PathLogout, url.Values{"csrf_token": {field(t, csrfRE, account)}}).mustStatus(t, tc.wantStatus)
			mu.Lock()
			defer mu.Unlock()
			if len(calls) != 1 || calls[0].Subject != "bob" || calls[0].ID == "" {
				t.Fatalf("OnSignedOut calls = %+v, want one for bob's session", calls)
			}
			if b.signedIn() != tc.signedIn {
				t.Fatalf("signed in = %v, want %v", b.signedIn(), tc.signedIn)
			}
		})
	}
}
