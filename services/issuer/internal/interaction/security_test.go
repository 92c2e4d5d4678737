package interaction_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/services/issuer/internal/interaction"
)

func newRecorder() *httptest.ResponseRecorder { return httptest.NewRecorder() }

func newRequest(t *testing.T, target string) *http.Request {
	t.Helper()
	return httptest.NewRequestWithContext(t.Context(), http.MethodGet, target, nil)
}

func TestCSRF(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		form   func(valid url.Values, other string) url.Values
		header []string
	}{
		{name: "no token", form: func(v url.Values, _ string) url.Values { v.Del("csrf_token"); return v }},
		{name: "wrong token", form: func(v url.Values, _ string) url.Values { v.Set("csrf_token", flipFirst(v.Get("csrf_token"))); return v }},
		{name: "another browser's token", form: func(v url.Values, other string) url.Values { v.Set("csrf_token", other); return v }},
		{name: "cross-site fetch", header: []string{"Sec-Fetch-Site", "cross-site"}},
		{name: "same-site fetch", header: []string{"Sec-Fetch-Site", "same-site"}},
		{name: "foreign origin", header: []string{"Origin", "https://evil.example"}},
		{name: "opaque origin", header: []string{"Origin", "null"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			b, other := h.newBrowser(t), h.newBrowser(t)
			otherToken := field(t, csrfRE, other.get(interaction.PathLogin))
			mutate := func(v url.Values) url.Values {
				if tc.form != nil {
					return tc.form(v, otherToken)
				}
				return v
			}

			// Login: a correct password must not sign in.
			login := b.get(authorizePath("openid")).mustBeAt(t, interaction.PathLogin)
			p := b.post(interaction.PathLogin, mutate(formOf(t, login, "username", "bob", "password", bobPassword)), tc.header...)
			assertForbidden(t, p)
			if b.signedIn() || len(h.rec.events) != 0 {
				t.Fatalf("rejected login changed state: signed in %v, audit %+v", b.signedIn(), h.rec.events)
			}

			// Consent: nothing stored, the interaction unchanged.
			consentPage := b.post(interaction.PathLogin, formOf(t, login, "username", "bob", "password", bobPassword)).mustBeAt(t, interaction.PathConsent)
			id := field(t, interactionRE, consentPage)
			before, err := h.pending.GetInteraction(t.Context(), id, h.clock.Now())
			if err != nil {
				t.Fatal(err)
			}
			assertForbidden(t, b.post(interaction.PathConsent, mutate(formOf(t, consentPage, "decision", "allow")), tc.header...))
			after, err := h.pending.GetInteraction(t.Context(), id, h.clock.Now())
			if err != nil || after.Version != before.Version || after.ConsentGranted {
				t.Fatalf("rejected consent changed the interaction: %+v, %v", after, err)
			}
			if list, _ := h.consents.ListConsentsBySubject(t.Context(), "bob"); len(list) != 0 {
				t.Fatal("rejected consent stored a consent")
			}

			// Withdraw: the consent stands, nothing revoked.
			res := b.post(interaction.PathConsent, formOf(t, consentPage, "decision", "allow")).result(t)
			account := b.get(interaction.PathAccountConsents)
			assertForbidden(t, b.post(interaction.PathWithdraw, mutate(formOf(t, account, "consent_id", res.ConsentID)), tc.header...))
			if c, err := h.consents.GetConsent(t.Context(), res.ConsentID); err != nil || !c.WithdrawnAt.IsZero() || len(h.rec.Withdrawn()) != 0 {
				t.Fatalf("rejected withdrawal changed state: %+v, %v", c, err)
			}

			// Logout: still signed in.
			assertForbidden(t, b.post(interaction.PathLogout, mutate(formOf(t, account)), tc.header...))
			if !b.signedIn() {
				t.Fatal("rejected logout signed out")
			}
		})
	}
}

func assertForbidden(t *testing.T, p page) {
	t.Helper()
	if p.Status != http.StatusForbidden || !strings.Contains(p.Body, "did not come from this site") {
		t.Fatalf("%s = %d, want 403 page:\n%s", p.URL, p.Status, p.Body)
	}
	assertSecurityHeaders(t, p.Header, "")
}

func TestSameOriginHeadersAccepted(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.newBrowser(t)
	login := b.get(authorizePath("openid")).mustBeAt(t, interaction.PathLogin)
	b.post(interaction.PathLogin, formOf(t, login, "username", "bob", "password", bobPassword),
		"Sec-Fetch-Site", "same-origin", "Origin", h.srv.URL).mustBeAt(t, interaction.PathConsent)
}

func TestOversizedForm(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.newBrowser(t)
	login := b.get(authorizePath("openid")).mustBeAt(t, interaction.PathLogin)
	p := b.post(interaction.PathLogin, formOf(t, login, "username", "bob", "password", strings.Repeat("x", 64<<10)))
	if p.Status != http.StatusRequestEntityTooLarge || len(h.rec.events) != 0 {
		t.Fatalf("oversized form = %d, audit %+v", p.Status, h.rec.events)
	}
}

func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.newBrowser(t)
	login := b.getManual(interaction.PathLogin).mustStatus(t, http.StatusOK)
	style := regexp.MustCompile(`(?s)<style>(.*?)</style>`).FindStringSubmatch(login.Body)
	if style == nil {
		t.Fatal("no inline stylesheet")
	}
	sum := sha256.Sum256([]byte(style[1]))
	styleSrc := "style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"

	pages := map[string]page{
		"login page":          login,
		"account redirect":    b.getManual(interaction.PathAccountConsents),
		"invalid interaction": b.getManual(interaction.PathLogin + "?interaction=nope"),
		"MFA without state":   b.getManual(interaction.PathMFA),
		"authorize redirect":  b.getManual(authorizePath("openid")),
	}
	flow := b.get(authorizePath("openid invoice:read"))
	pages["interaction login page"] = flow
	consentPage := b.post(interaction.PathLogin, formOf(t, flow, "username", "bob", "password", bobPassword))
	pages["consent page"] = consentPage
	pages["account page"] = b.get(interaction.PathAccountConsents)
	for name, p := range pages {
		t.Run(name, func(t *testing.T) {
			extra := ""
			if strings.Contains(name, "interaction login") || name == "consent page" {
				extra = "http://127.0.0.1:5555"
			}
			assertSecurityHeaders(t, p.Header, extra)
			if !strings.Contains(p.Header.Get("Content-Security-Policy"), styleSrc) {
				t.Errorf("CSP %q does not allow the inline stylesheet (%s)", p.Header.Get("Content-Security-Policy"), styleSrc)
			}
			if strings.HasPrefix(p.Header.Get("Content-Type"), "text/html") && strings.Contains(p.Body, "<script") {
				t.Error("page has a script")
			}
		})
	}
}

// assertSecurityHeaders checks the headers every page answer carries;
// formAction is the extra form-action source expected ("" for none).
func assertSecurityHeaders(t *testing.T, hdr http.Header, formAction string) {
	t.Helper()
	csp := hdr.Get("Content-Security-Policy")
	wantFormAction := "form-action 'self';"
	if formAction != "" {
		wantFormAction = "form-action 'self' " + formAction + ";"
	}
	for _, want := range []string{"default-src 'none';", "style-src 'sha256-", wantFormAction, "frame-ancestors 'none'", "base-uri 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	for k, want := range map[string]string{
		"X-Content-Type-Options": "nosniff",
		"Referrer-Policy":        "same-origin",
		"Cache-Control":          "no-store",
		"X-Frame-Options":        "DENY",
	} {
		if got := hdr.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

func TestRedirectsAreRelative(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.newBrowser(t)
	begin := b.getManual(authorizePath("openid")).mustStatus(t, http.StatusSeeOther)
	login := b.get(begin.Header.Get("Location"))
	afterLogin := b.postManual(interaction.PathLogin, formOf(t, login, "username", "bob", "password", bobPassword)).mustStatus(t, http.StatusSeeOther)
	for _, loc := range []string{begin.Header.Get("Location"), afterLogin.Header.Get("Location")} {
		u, err := url.Parse(loc)
		if err != nil || u.IsAbs() || u.Host != "" || !strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, "//") {
			t.Errorf("Location %q is not a relative path on the issuer", loc)
		}
	}
}

func TestClientNameIsEscaped(t *testing.T) {
	t.Parallel()
	const evil = `<script>alert("x")</script>`
	h := newHarness(t, func(c *interaction.Config) {
		c.ClientName = func(context.Context, string) (string, error) { return evil, nil }
	})
	b := h.newBrowser(t)
	login := b.get(authorizePath("openid")).mustBeAt(t, interaction.PathLogin)
	consentPage := b.post(interaction.PathLogin, formOf(t, login, "username", "bob", "password", bobPassword)).mustBeAt(t, interaction.PathConsent)
	for name, p := range map[string]page{"login": login, "consent": consentPage} {
		if strings.Contains(p.Body, "<script") || !strings.Contains(p.Body, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") {
			t.Errorf("%s page does not escape the client name:\n%s", name, p.Body)
		}
	}
}

func TestCookies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		secure bool
		prefix string
	}{
		{name: "localhost demo", prefix: "gatehouse-"},
		{name: "secure", secure: true, prefix: "__Host-gatehouse-"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *interaction.Config) { c.SecureCookies = tc.secure })
			mux := http.NewServeMux()
			h.m.Mount(mux)

			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, newRequest(t, interaction.PathLogin))
			browserCookie := findCookie(t, rec.Result().Cookies(), tc.prefix+"browser")
			csrf := field(t, csrfRE, page{Body: rec.Body.String()})

			form := url.Values{"csrf_token": {csrf}, "username": {"bob"}, "password": {bobPassword}}
			req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, interaction.PathLogin, strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.AddCookie(browserCookie)
			rec = httptest.NewRecorder()
			mux.ServeHTTP(rec, req)
			if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != interaction.PathAccountConsents {
				t.Fatalf("login = %d %q:\n%s", rec.Code, rec.Header().Get("Location"), rec.Body)
			}
			sessionCookie := findCookie(t, rec.Result().Cookies(), tc.prefix+"session")

			for _, c := range []*http.Cookie{browserCookie, sessionCookie} {
				if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Domain != "" || c.Secure != tc.secure || c.MaxAge != 0 {
					t.Errorf("cookie %s = %+v", c.Name, c)
				}
			}
			// The server keeps only the hash of the session cookie.
			if _, err := h.sessions.GetBrowserSession(t.Context(), sessionCookie.Value, h.clock.Now()); err == nil {
				t.Error("session stored under the raw cookie value")
			}
			if s, err := h.sessions.GetBrowserSession(t.Context(), hashOf(sessionCookie.Value), h.clock.Now()); err != nil || s.Subject != "bob" {
				t.Errorf("session under the cookie's hash = %+v, %v", s, err)
			}
		})
	}
}

func findCookie(t *testing.T, cookies []*http.Cookie, name string) *http.Cookie {
	t.Helper()
	for _, c := range cookies {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no cookie %s in %v", name, cookies)
	return nil
}

// flipFirst returns tok with its first character changed (always changed:
// a token may begin with any character).
func flipFirst(tok string) string {
	first := "x"
	if strings.HasPrefix(tok, "x") {
		first = "y"
	}
	return first + tok[1:]
}
