package app_test

import (
	"context"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/pquerna/otp/totp"
	"golang.org/x/oauth2"
)

// The demo public client and its loopback redirect (any port, RFC 8252).
const (
	webClient   = "invoice-web"
	callbackURL = "http://127.0.0.1:47111/callback"
	aliceTOTP   = "JBSWY3DPEHPK3PXPALICE234"
)

// browser drives the issuer's pages over plain HTTP with a cookie jar, as
// a browser without JavaScript would: it follows redirects on the issuer,
// submits the forms it is asked to, and stops at the client's callback.
type browser struct {
	t      *testing.T
	is     *issuer
	client *http.Client
}

func newBrowser(t *testing.T, is *issuer) *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, is: is, client: &http.Client{
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

var hiddenInput = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)

// page is a fetched page or the callback the flow ended at.
type page struct {
	status   int
	body     string
	callback *url.URL
}

// do sends req and follows the issuer's redirects until a page or the callback.
func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	for range 10 {
		resp, err := b.client.Do(req)
		if err != nil {
			b.t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		loc := resp.Header.Get("Location")
		if resp.StatusCode < 300 || resp.StatusCode >= 400 || loc == "" {
			return page{status: resp.StatusCode, body: string(raw)}
		}
		next, err := req.URL.Parse(loc)
		if err != nil {
			b.t.Fatal(err)
		}
		if next.Path == "/callback" {
			return page{status: resp.StatusCode, callback: next}
		}
		if req, err = http.NewRequestWithContext(b.t.Context(), http.MethodGet, next.String(), nil); err != nil {
			b.t.Fatal(err)
		}
	}
	b.t.Fatal("too many redirects")
	return page{}
}

func (b *browser) get(rawURL string) page {
	req, err := http.NewRequestWithContext(b.t.Context(), http.MethodGet, rawURL, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.do(req)
}

// submit posts the page's form formID with its hidden fields and fields.
func (b *browser) submit(p page, formID string, fields url.Values) page {
	b.t.Helper()
	return b.submitForm(p, `<form id="`+formID+`"`, fields)
}

// submitForm posts the first form of the page that starts with marker.
func (b *browser) submitForm(p page, marker string, fields url.Values) page {
	b.t.Helper()
	start := strings.Index(p.body, marker)
	if start < 0 {
		b.t.Fatalf("no form %s on page (status %d):\n%s", marker, p.status, p.body)
	}
	form := p.body[start:]
	form = form[:strings.Index(form, "</form>")]
	action := regexp.MustCompile(`action="([^"]+)"`).FindStringSubmatch(form)[1]
	values := url.Values{}
	for _, m := range hiddenInput.FindAllStringSubmatch(form, -1) {
		values.Set(m[1], html.UnescapeString(m[2]))
	}
	for k, v := range fields {
		values[k] = v
	}
	req, err := http.NewRequestWithContext(b.t.Context(), http.MethodPost, b.is.srv.URL+action, strings.NewReader(values.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", b.is.srv.URL)
	return b.do(req)
}

// login answers the login page (and the TOTP page when secret is set).
func (b *browser) login(p page, username, password, secret string) page {
	b.t.Helper()
	p = b.submit(p, "login-form", url.Values{"username": {username}, "password": {password}})
	if secret != "" {
		code, err := totp.GenerateCode(secret, time.Now())
		if err != nil {
			b.t.Fatal(err)
		}
		p = b.submit(p, "mfa-form", url.Values{"code": {code}})
	}
	return p
}

func (b *browser) allow(p page) page {
	b.t.Helper()
	return b.submit(p, "consent-form", url.Values{"decision": {"allow"}})
}

func webConfig(is *issuer, scopes ...string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:    webClient,
		RedirectURL: callbackURL,
		Scopes:      scopes,
		Endpoint: oauth2.Endpoint{
			AuthURL:   is.srv.URL + "/oauth2/authorize",
			TokenURL:  is.srv.URL + "/oauth2/token",
			AuthStyle: oauth2.AuthStyleInParams,
		},
	}
}

// flow runs the code flow with PKCE up to the callback and returns it.
func (b *browser) authorize(cfg *oauth2.Config, verifier string, opts ...oauth2.AuthCodeOption) page {
	opts = append(opts, oauth2.S256ChallengeOption(verifier))
	return b.get(cfg.AuthCodeURL("state-1234567890", opts...))
}

func signedClaims(t *testing.T, is *issuer, raw string) (jose.Header, map[string]any) {
	t.Helper()
	var set jose.JSONWebKeySet
	_, body := is.get(t, "/.well-known/jwks.json")
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatal(err)
	}
	tok, err := josejwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	keys := set.Key(tok.Headers[0].KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %q not in the JWKS", tok.Headers[0].KeyID)
	}
	var claims map[string]any
	if err := tok.Claims(keys[0].Key, &claims); err != nil {
		t.Fatalf("verify: %v", err)
	}
	return tok.Headers[0], claims
}

func oauthCtx(t *testing.T) context.Context { return t.Context() }

func TestAuthorizationCodeFlowWithPKCE(t *testing.T) {
	t.Parallel()
	is := start(t, demoConfig(t))
	cfg := webConfig(is, "openid", "profile", "offline_access", "invoice:read")
	b := newBrowser(t, is)
	verifier := oauth2.GenerateVerifier()
	nonce := "nonce-abcdefgh"

	p := b.authorize(cfg, verifier, oauth2.SetAuthURLParam("nonce", nonce))
	p = b.allow(b.login(p, "alice", "alice-demo-password", aliceTOTP))
	if p.callback == nil {
		t.Fatalf("flow did not reach the callback: status %d\n%s", p.status, p.body)
	}
	if got := p.callback.Query().Get("state"); got != "state-1234567890" {
		t.Fatalf("state = %q", got)
	}
	tok, err := cfg.Exchange(oauthCtx(t), p.callback.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	header, at := signedClaims(t, is, tok.AccessToken)
	if header.ExtraHeaders["typ"] != "at+jwt" {
		t.Errorf("access token typ = %v", header.ExtraHeaders["typ"])
	}
	for k, want := range map[string]any{"sub": "alice", "tenant": "acme", "client_id": webClient, "acr": "mfa", "iss": "http://localhost:8080"} {
		if at[k] != want {
			t.Errorf("access token %s = %v, want %v", k, at[k], want)
		}
	}
	if amr, _ := at["amr"].([]any); !slices.Equal(amr, []any{"pwd", "otp", "mfa"}) {
		t.Errorf("amr = %v", at["amr"])
	}
	if roles, _ := at["roles"].([]any); !slices.Contains(roles, any("billing_approver")) {
		t.Errorf("roles = %v", at["roles"])
	}
	if _, ok := at["auth_time"].(float64); !ok {
		t.Errorf("auth_time = %v", at["auth_time"])
	}
	// Whole seconds, as verifiers parse it into an integer.
	if payload := segment(t, tok.AccessToken, 1); !regexp.MustCompile(`"auth_time":[0-9]+[,}]`).MatchString(payload) {
		t.Errorf("auth_time is not an integer in %s", payload)
	}
	if life := time.Until(tok.Expiry); life <= 0 || life > 5*time.Minute+time.Second {
		t.Errorf("expires_in gives a lifetime of %s, want about 5m", life)
	}
	rawID, _ := tok.Extra("id_token").(string)
	if rawID == "" {
		t.Fatal("no id_token")
	}
	_, id := signedClaims(t, is, rawID)
	if id["nonce"] != nonce || id["sub"] != "alice" || id["acr"] != "mfa" || id["aud"] == nil || id["preferred_username"] != "alice" {
		t.Errorf("id token claims = %v", id)
	}
	if tok.RefreshToken == "" {
		t.Fatal("no refresh token with offline_access")
	}

	// userinfo with the access token.
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, is.srv.URL+"/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var info map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&info)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || info["sub"] != "alice" {
		t.Fatalf("userinfo %d %v", resp.StatusCode, info)
	}
	// A refresh token is no bearer token.
	req, _ = http.NewRequestWithContext(t.Context(), http.MethodGet, is.srv.URL+"/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+tok.RefreshToken)
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("userinfo with a refresh token: %d, want 401", resp.StatusCode)
	}

	// Refresh rotates; the old refresh token is then reuse, which ends the family.
	refreshed, err := cfg.TokenSource(oauthCtx(t), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if refreshed.RefreshToken == "" || refreshed.RefreshToken == tok.RefreshToken || refreshed.AccessToken == tok.AccessToken {
		t.Fatal("refresh did not rotate the tokens")
	}
	_, rat := signedClaims(t, is, refreshed.AccessToken)
	if rat["acr"] != "mfa" || rat["jti"] == at["jti"] || rat["scope"] != at["scope"] {
		t.Errorf("refreshed claims %v, first %v", rat, at)
	}
	if _, err := cfg.TokenSource(oauthCtx(t), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); !isOAuthError(err, "invalid_grant") {
		t.Fatalf("reused refresh token: err = %v, want invalid_grant", err)
	}
	if _, err := cfg.TokenSource(oauthCtx(t), &oauth2.Token{RefreshToken: refreshed.RefreshToken}).Token(); !isOAuthError(err, "invalid_grant") {
		t.Fatalf("newest refresh token after reuse: err = %v, want invalid_grant (family revoked)", err)
	}
	if active := introspect(t, is, refreshed.AccessToken); active {
		t.Fatal("access token of a revoked family is still active")
	}

	// A second authorization reuses the session and the stored consent.
	v2 := oauth2.GenerateVerifier()
	p = b.authorize(cfg, v2)
	if p.callback == nil {
		t.Fatalf("second authorization asked again: status %d\n%s", p.status, p.body)
	}
}

func TestPasswordOnlyLoginAndPromptRules(t *testing.T) {
	t.Parallel()
	is := start(t, demoConfig(t))
	cfg := webConfig(is, "openid", "invoice:read")
	b := newBrowser(t, is)

	// prompt=none without a session: login_required at the callback.
	p := b.authorize(cfg, oauth2.GenerateVerifier(), oauth2.SetAuthURLParam("prompt", "none"))
	if p.callback == nil || p.callback.Query().Get("error") != "login_required" {
		t.Fatalf("prompt=none without session: %+v", p)
	}
	verifier := oauth2.GenerateVerifier()
	p = b.allow(b.login(b.authorize(cfg, verifier), "bob", "bob-demo-password", ""))
	if p.callback == nil || p.callback.Query().Get("code") == "" {
		t.Fatalf("bob's flow: status %d\n%s", p.status, p.body)
	}
	tok, err := cfg.Exchange(oauthCtx(t), p.callback.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	_, at := signedClaims(t, is, tok.AccessToken)
	if at["acr"] != "pwd" || tok.RefreshToken != "" {
		t.Errorf("bob: acr %v refresh %q (no offline_access asked)", at["acr"], tok.RefreshToken)
	}
	// prompt=login asks for the password again although a session exists.
	p = b.authorize(cfg, oauth2.GenerateVerifier(), oauth2.SetAuthURLParam("prompt", "login"))
	if !strings.Contains(p.body, `id="login-form"`) {
		t.Fatalf("prompt=login did not show the login page: %d %s", p.status, p.body)
	}
	if p = b.login(p, "bob", "bob-demo-password", ""); p.callback == nil || p.callback.Query().Get("code") == "" {
		t.Fatalf("after prompt=login: %d %s", p.status, p.body)
	}
	// acr_values=mfa for a user without TOTP: access_denied.
	p = b.authorize(cfg, oauth2.GenerateVerifier(), oauth2.SetAuthURLParam("acr_values", "mfa"))
	if p.callback == nil {
		p = b.login(p, "bob", "bob-demo-password", "")
	}
	// The page explains why and links back to the application.
	if m := regexp.MustCompile(`href="(/oauth2/authorize/resume\?interaction=[^"]+)"`).FindStringSubmatch(p.body); p.callback == nil && m != nil {
		p = b.get(is.srv.URL + html.UnescapeString(m[1]))
	}
	if p.callback == nil || p.callback.Query().Get("error") != "access_denied" {
		t.Fatalf("acr_values=mfa for bob: %d %+v %s", p.status, p.callback, p.body)
	}
}

func TestConsentDenied(t *testing.T) {
	t.Parallel()
	is := start(t, demoConfig(t))
	cfg := webConfig(is, "openid", "invoice:read")
	b := newBrowser(t, is)
	p := b.login(b.authorize(cfg, oauth2.GenerateVerifier()), "bob", "bob-demo-password", "")
	p = b.submit(p, "consent-form", url.Values{"decision": {"deny"}})
	if p.callback == nil || p.callback.Query().Get("error") != "access_denied" || p.callback.Query().Get("state") != "state-1234567890" {
		t.Fatalf("deny: %+v", p)
	}
}

func TestAuthorizationCodeAttacks(t *testing.T) {
	t.Parallel()
	is := start(t, demoConfig(t))
	cfg := webConfig(is, "openid", "offline_access", "invoice:read")
	b := newBrowser(t, is)
	code := func(verifier string) string {
		t.Helper()
		p := b.authorize(cfg, verifier)
		if p.callback == nil {
			p = b.allow(b.login(p, "bob", "bob-demo-password", ""))
		}
		if p.callback == nil || p.callback.Query().Get("code") == "" {
			t.Fatalf("no code: %d %s", p.status, p.body)
		}
		return p.callback.Query().Get("code")
	}

	t.Run("code reuse revokes the tokens of the first exchange", func(t *testing.T) {
		v := oauth2.GenerateVerifier()
		c := code(v)
		tok, err := cfg.Exchange(oauthCtx(t), c, oauth2.VerifierOption(v))
		if err != nil {
			t.Fatal(err)
		}
		if !introspect(t, is, tok.AccessToken) {
			t.Fatal("fresh token inactive")
		}
		if _, err := cfg.Exchange(oauthCtx(t), c, oauth2.VerifierOption(v)); !isOAuthError(err, "invalid_grant") {
			t.Fatalf("second exchange: %v", err)
		}
		if introspect(t, is, tok.AccessToken) {
			t.Fatal("token from a reused code is still active")
		}
		if _, err := cfg.TokenSource(oauthCtx(t), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); err == nil {
			t.Fatal("refresh token from a reused code still works")
		}
	})
	t.Run("PKCE verifier mismatch", func(t *testing.T) {
		c := code(oauth2.GenerateVerifier())
		if _, err := cfg.Exchange(oauthCtx(t), c, oauth2.VerifierOption(oauth2.GenerateVerifier())); !isOAuthError(err, "invalid_grant") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("PKCE verifier missing", func(t *testing.T) {
		c := code(oauth2.GenerateVerifier())
		if _, err := cfg.Exchange(oauthCtx(t), c); err == nil {
			t.Fatal("exchange without verifier succeeded")
		}
	})
	t.Run("redirect_uri differs at the token endpoint", func(t *testing.T) {
		v := oauth2.GenerateVerifier()
		c := code(v)
		other := *cfg
		other.RedirectURL = "http://127.0.0.1:47112/callback"
		if _, err := other.Exchange(oauthCtx(t), c, oauth2.VerifierOption(v)); !isOAuthError(err, "invalid_grant") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("code of another client", func(t *testing.T) {
		v := oauth2.GenerateVerifier()
		c := code(v)
		console := oauth2.Config{ClientID: "support-console", ClientSecret: "support-console-secret", RedirectURL: callbackURL,
			Endpoint: oauth2.Endpoint{TokenURL: is.srv.URL + "/oauth2/token", AuthStyle: oauth2.AuthStyleInHeader}}
		if _, err := console.Exchange(oauthCtx(t), c, oauth2.VerifierOption(v)); !isOAuthError(err, "invalid_grant") {
			t.Fatalf("err = %v", err)
		}
	})

	// Requests refused before any page (a browser without a session sees
	// no login page): no redirect to an unregistered URI.
	fresh := newBrowser(t, is)
	refused := []struct {
		name   string
		params url.Values
		// redirect says the error may go back to the (valid) redirect URI.
		redirect bool
	}{
		{name: "no code_challenge for a public client", params: url.Values{"code_challenge": nil, "code_challenge_method": nil}, redirect: true},
		{name: "plain challenge", params: url.Values{"code_challenge_method": {"plain"}}, redirect: true},
		{name: "missing state", params: url.Values{"state": nil}, redirect: true},
		{name: "token response type", params: url.Values{"response_type": {"token"}}, redirect: true},
		{name: "redirect with extra path", params: url.Values{"redirect_uri": {"http://127.0.0.1:47111/callback/extra"}}},
		{name: "redirect to localhost", params: url.Values{"redirect_uri": {"http://localhost:47111/callback"}}},
		{name: "redirect to another host", params: url.Values{"redirect_uri": {"https://evil.example/callback"}}},
		{name: "redirect with query", params: url.Values{"redirect_uri": {"http://127.0.0.1:47111/callback?x=1"}}},
		{name: "redirect with userinfo", params: url.Values{"redirect_uri": {"http://evil@127.0.0.1:47111/callback"}}},
		{name: "unknown client", params: url.Values{"client_id": {"nobody"}}},
		{name: "short challenge", params: url.Values{"code_challenge": {"abcde"}}, redirect: true},
		{name: "method without challenge", params: url.Values{"code_challenge": nil}, redirect: true},
		{name: "short nonce", params: url.Values{"nonce": {"abc"}}, redirect: true},
		{name: "missing redirect_uri", params: url.Values{"redirect_uri": nil}},
		{name: "repeated parameter", params: url.Values{"scope": {"openid", "openid invoice:read"}}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			u, _ := url.Parse(cfg.AuthCodeURL("state-1234567890", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
			q := u.Query()
			for k, v := range tc.params {
				if v == nil {
					q.Del(k)
				} else {
					q[k] = v
				}
			}
			u.RawQuery = q.Encode()
			resp, err := fresh.client.Get(u.String())
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			loc, _ := url.Parse(resp.Header.Get("Location"))
			switch {
			case resp.StatusCode >= 300 && resp.StatusCode < 400 && loc.Path == "/callback":
				if !tc.redirect || loc.Host != "127.0.0.1:47111" || loc.Query().Get("error") == "" || loc.Query().Has("code") {
					t.Fatalf("redirected to %s", loc)
				}
			case resp.StatusCode >= 400:
			default:
				t.Fatalf("status %d Location %q: request not refused", resp.StatusCode, resp.Header.Get("Location"))
			}
		})
	}
}

// introspect reports whether token is active, asked by billing-bot (whose
// audience the user tokens carry).
func introspect(t *testing.T, is *issuer, token string) bool {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, is.srv.URL+"/oauth2/introspect", strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("billing-bot", "billing-bot-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Active bool `json:"active"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("introspect: %d %v", resp.StatusCode, err)
	}
	return body.Active
}

func isOAuthError(err error, code string) bool {
	re, ok := err.(*oauth2.RetrieveError)
	return ok && re.ErrorCode == code
}

func TestWithdrawingConsentRevokesItsTokens(t *testing.T) {
	t.Parallel()
	is := start(t, demoConfig(t))
	cfg := webConfig(is, "openid", "offline_access", "invoice:read")
	b := newBrowser(t, is)
	verifier := oauth2.GenerateVerifier()
	p := b.allow(b.login(b.authorize(cfg, verifier), "bob", "bob-demo-password", ""))
	if p.callback == nil {
		t.Fatalf("no callback: %d %s", p.status, p.body)
	}
	tok, err := cfg.Exchange(oauthCtx(t), p.callback.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	account := b.get(is.srv.URL + "/account/consents")
	if !strings.Contains(account.body, "invoice-web") {
		t.Fatalf("account page does not list the consent: %d %s", account.status, account.body)
	}
	if after := b.submitForm(account, `<form class="withdraw-form"`, nil); after.status >= 400 {
		t.Fatalf("withdraw: %d %s", after.status, after.body)
	}
	if introspect(t, is, tok.AccessToken) {
		t.Fatal("access token still active after its consent was withdrawn")
	}
	if _, err := cfg.TokenSource(oauthCtx(t), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); !isOAuthError(err, "invalid_grant") {
		t.Fatalf("refresh after withdrawal: %v, want invalid_grant", err)
	}
	// The next authorization asks for consent again.
	p = b.authorize(cfg, oauth2.GenerateVerifier())
	if !strings.Contains(p.body, `id="consent-form"`) {
		t.Fatalf("consent not asked again: %d %+v", p.status, p.callback)
	}
}

func TestExpiredAuthorizationCode(t *testing.T) {
	t.Parallel()
	cfg := demoConfig(t)
	cfg.AuthorizationCodeLifespan = time.Nanosecond // expired before anyone can exchange it
	is := start(t, cfg)
	oc := webConfig(is, "openid")
	b := newBrowser(t, is)
	verifier := oauth2.GenerateVerifier()
	p := b.allow(b.login(b.authorize(oc, verifier), "bob", "bob-demo-password", ""))
	if p.callback == nil {
		t.Fatalf("no callback: %d %s", p.status, p.body)
	}
	if _, err := oc.Exchange(oauthCtx(t), p.callback.Query().Get("code"), oauth2.VerifierOption(verifier)); !isOAuthError(err, "invalid_grant") {
		t.Fatalf("expired code: %v, want invalid_grant", err)
	}
}

func TestSignOutRevokesTheSessionsGrants(t *testing.T) {
	t.Parallel()
	is := start(t, demoConfig(t))
	cfg := webConfig(is, "openid", "offline_access", "invoice:read")
	b := newBrowser(t, is)
	verifier := oauth2.GenerateVerifier()
	p := b.allow(b.login(b.authorize(cfg, verifier), "bob", "bob-demo-password", ""))
	if p.callback == nil {
		t.Fatalf("no callback: %d %s", p.status, p.body)
	}
	tok, err := cfg.Exchange(oauthCtx(t), p.callback.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	// Another browser's grant for the same user is not touched.
	other := newBrowser(t, is)
	v2 := oauth2.GenerateVerifier()
	p = other.login(other.authorize(cfg, v2), "bob", "bob-demo-password", "")
	if p.callback == nil {
		t.Fatalf("second browser: %d %s", p.status, p.body)
	}
	otherTok, err := cfg.Exchange(oauthCtx(t), p.callback.Query().Get("code"), oauth2.VerifierOption(v2))
	if err != nil {
		t.Fatal(err)
	}

	if out := b.submit(b.get(is.srv.URL+"/account/consents"), "logout-form", nil); out.status != http.StatusOK {
		t.Fatalf("sign out: %d %s", out.status, out.body)
	}
	if introspect(t, is, tok.AccessToken) {
		t.Fatal("access token still active after sign-out")
	}
	if _, err := cfg.TokenSource(oauthCtx(t), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); !isOAuthError(err, "invalid_grant") {
		t.Fatalf("refresh after sign-out: %v, want invalid_grant", err)
	}
	if !introspect(t, is, otherTok.AccessToken) {
		t.Fatal("sign-out in one browser revoked another browser's grant")
	}
	// The signed-out browser must sign in again.
	if p := b.authorize(cfg, oauth2.GenerateVerifier()); !strings.Contains(p.body, `id="login-form"`) {
		t.Fatalf("after sign-out: %d %+v", p.status, p.callback)
	}
}
