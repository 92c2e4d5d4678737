package flows

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/gatehouse/gatehouse/e2e/stack"
)

// The demo seed (DESIGN.md) the OIDC flows use.
const (
	webClientID     = "invoice-web"
	apiAudience     = "gatehouse-api"
	alicePassword   = "alice-demo-password"
	aliceTOTPSecret = "JBSWY3DPEHPK3PXPALICE234"
	bobPassword     = "bob-demo-password"
	// loopbackCallback is invoice-web's redirect URI in the flows without
	// a browser: nothing listens on it, the flow stops at the redirect and
	// reads the code from it. Any port is allowed (RFC 8252 section 7.3).
	loopbackCallback = "http://127.0.0.1:49152/callback"
)

// discover runs OIDC discovery for the stack's issuer identifier. The
// returned context carries a client that dials the issuer's published port
// for http://issuer:8080, so go-oidc checks the real issuer identifier, and
// x/oauth2 and go-oidc reach every endpoint the discovery document names.
func discover(ctx context.Context, t *testing.T) (context.Context, *oidc.Provider) {
	t.Helper()
	ctx = oidc.ClientContext(ctx, gh.HTTPClient())
	provider, err := oidc.NewProvider(ctx, stack.IssuerID)
	if err != nil {
		t.Fatalf("OIDC discovery of %s: %v", stack.IssuerID, err)
	}
	return ctx, provider
}

// webConfig is invoice-web, a public client: no secret, the client_id in
// the token request's body.
func webConfig(provider *oidc.Provider, redirectURL string, scopes ...string) *oauth2.Config {
	endpoint := provider.Endpoint()
	endpoint.AuthStyle = oauth2.AuthStyleInParams
	return &oauth2.Config{ClientID: webClientID, Endpoint: endpoint, RedirectURL: redirectURL, Scopes: scopes}
}

// idVerifier verifies invoice-web's ID tokens: signature against the JWKS,
// iss, aud, exp, and ES256 only.
func idVerifier(provider *oidc.Provider) *oidc.IDTokenVerifier {
	return provider.Verifier(&oidc.Config{ClientID: webClientID, SupportedSigningAlgs: []string{oidc.ES256}})
}

// randomValue is a fresh state or nonce.
func randomValue() string { return rand.Text() }

// userClaims are the ID and access token claims the flows check.
type userClaims struct {
	Subject  string      `json:"sub"`
	ACR      string      `json:"acr"`
	AMR      []string    `json:"amr"`
	AuthTime json.Number `json:"auth_time"`
	Tenant   string      `json:"tenant"`
	Roles    []string    `json:"roles"`
	ClientID string      `json:"client_id"`
	Scope    string      `json:"scope"`
	JTI      string      `json:"jti"`
}

// checkAuthentication checks the claims that say how the user signed in.
func checkAuthentication(t *testing.T, what string, c userClaims, acr string, amr []string, notBefore time.Time) {
	t.Helper()
	if c.ACR != acr {
		t.Errorf("%s acr = %q, want %q", what, c.ACR, acr)
	}
	for _, m := range amr {
		if !slices.Contains(c.AMR, m) {
			t.Errorf("%s amr = %q, want it to contain %q", what, c.AMR, m)
		}
	}
	if acr == "pwd" && slices.Contains(c.AMR, "otp") {
		t.Errorf("%s amr = %q for a password-only login", what, c.AMR)
	}
	// The issuer runs on this machine: same clock.
	at := c.authTime(t, what)
	if at.Before(notBefore.Add(-2*time.Second)) || at.After(time.Now().Add(2*time.Second)) {
		t.Errorf("%s auth_time = %s (%v), want the login's time, after %v", what, c.AuthTime, at, notBefore)
	}
}

// authTime reads auth_time. A NumericDate may in theory be any JSON number
// (RFC 7519 section 2), but the issuer writes exp and iat as integers, and
// relying parties that decode auth_time as an integer (as Go's int64 does)
// reject 1.795646954e+09: it must be an integer too.
func (c userClaims) authTime(t *testing.T, what string) time.Time {
	t.Helper()
	if c.AuthTime == "" {
		t.Errorf("%s has no auth_time", what)
		return time.Time{}
	}
	if _, err := strconv.ParseInt(c.AuthTime.String(), 10, 64); err != nil {
		t.Errorf("%s auth_time = %s: not an integer NumericDate as exp and iat are (an int64 field cannot decode it)", what, c.AuthTime)
	}
	f, err := c.AuthTime.Float64()
	if err != nil {
		t.Errorf("%s auth_time = %s: %v", what, c.AuthTime, err)
		return time.Time{}
	}
	return time.Unix(int64(f), 0)
}

// accessToken verifies an access token as a resource server would (RFC
// 9068: typ at+jwt, ES256, a kid in the JWKS, iss, exp, aud gatehouse-api)
// and returns its claims.
func accessToken(ctx context.Context, t *testing.T, provider *oidc.Provider, raw string) userClaims {
	t.Helper()
	jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("access token is not an ES256 JWS: %v", err)
	}
	header := jws.Signatures[0].Protected
	if typ, _ := header.ExtraHeaders[jose.HeaderType].(string); typ != "at+jwt" || header.KeyID == "" {
		t.Errorf("access token header typ %q kid %q, want at+jwt and a kid", typ, header.KeyID)
	}
	verifier := provider.Verifier(&oidc.Config{SkipClientIDCheck: true, SupportedSigningAlgs: []string{oidc.ES256}})
	tok, err := verifier.Verify(ctx, raw)
	if err != nil {
		t.Fatalf("access token does not verify against the issuer's JWKS: %v", err)
	}
	if !slices.Contains(tok.Audience, apiAudience) {
		t.Errorf("access token aud = %q, want %q", tok.Audience, apiAudience)
	}
	var c userClaims
	if err := tok.Claims(&c); err != nil {
		t.Fatalf("access token claims: %v", err)
	}
	if c.JTI == "" {
		t.Error("access token has no jti")
	}
	return c
}

// checkScopes checks that a token's scope claim holds exactly want.
func checkScopes(t *testing.T, what, scope string, want []string) {
	t.Helper()
	got := strings.Fields(scope)
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Errorf("%s scope = %q, want %q", what, got, want)
	}
}

// oauthError reports whether err is the token endpoint's RFC 6749 error code.
func oauthError(err error, code string) bool {
	var re *oauth2.RetrieveError
	return errors.As(err, &re) && re.ErrorCode == code
}

// introspect asks the issuer whether token is active (RFC 7662), as
// billing-bot, a resource client of the gatehouse-api audience the user
// tokens carry.
func introspect(ctx context.Context, t *testing.T, token string) bool {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, stack.IssuerID+"/oauth2/introspect",
		strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("billing-bot", "billing-bot-secret")
	resp, err := gh.HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("introspect: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Active bool `json:"active"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("introspect: %s, %v", resp.Status, err)
	}
	return body.Active
}

// formBrowser drives the issuer's pages as a browser without JavaScript
// would: a cookie jar, redirects followed while they stay on the issuer,
// forms read from the HTML and posted with their hidden fields and an
// Origin header. It stops at the first redirect that leaves the issuer: the
// client's callback, where the flow ends without contacting it.
type formBrowser struct {
	t      *testing.T
	client *http.Client
}

func newFormBrowser(t *testing.T) *formBrowser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	client := gh.HTTPClient()
	client.Jar = jar
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &formBrowser{t: t, client: client}
}

// page is where a request ended: an issuer page, or a redirect that leaves
// the issuer (away is true and url is its target).
type page struct {
	url    *url.URL
	status int
	away   bool
	doc    *html.Node
}

// String describes the page for a failure message.
func (p page) String() string {
	if p.away {
		return "redirect to " + p.url.Redacted()
	}
	return p.url.Path + " (" + http.StatusText(p.status) + "):\n" + visibleText(p.doc)
}

// do sends req and follows the redirects that stay on its host.
func (b *formBrowser) do(req *http.Request) page {
	b.t.Helper()
	for range 10 {
		resp, err := b.client.Do(req)
		if err != nil {
			b.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
		}
		raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		_ = resp.Body.Close()
		if err != nil {
			b.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
		}
		if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode >= 300 && resp.StatusCode < 400 {
			next, err := req.URL.Parse(loc)
			if err != nil {
				b.t.Fatalf("%s %s: Location %q: %v", req.Method, req.URL.Path, loc, err)
			}
			if next.Host != req.URL.Host {
				return page{url: next, status: resp.StatusCode, away: true}
			}
			if req, err = http.NewRequestWithContext(req.Context(), http.MethodGet, next.String(), nil); err != nil {
				b.t.Fatal(err)
			}
			continue
		}
		doc, err := html.Parse(strings.NewReader(string(raw)))
		if err != nil {
			b.t.Fatalf("%s %s: not HTML: %v", req.Method, req.URL.Path, err)
		}
		return page{url: req.URL, status: resp.StatusCode, doc: doc}
	}
	b.t.Fatalf("more than 10 redirects from %s", req.URL.Path)
	return page{}
}

func (b *formBrowser) get(ctx context.Context, rawURL string) page {
	b.t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.do(req)
}

// submit posts the form formID of p with its hidden fields and fields (a
// button's name and value go in fields, as the button a user clicks).
func (b *formBrowser) submit(ctx context.Context, p page, formID string, fields url.Values) page {
	b.t.Helper()
	form := findElement(p.doc, func(n *html.Node) bool { return n.DataAtom == atom.Form && attr(n, "id") == formID })
	if p.away || form == nil {
		b.t.Fatalf("want the form %s; got %s", formID, p)
	}
	if method := attr(form, "method"); !strings.EqualFold(method, http.MethodPost) {
		b.t.Fatalf("form %s has method %q, want post", formID, method)
	}
	action, err := p.url.Parse(attr(form, "action"))
	if err != nil || action.Host != p.url.Host {
		b.t.Fatalf("form %s: action %q (%v) is not on the issuer", formID, attr(form, "action"), err)
	}
	values := url.Values{}
	for _, in := range findElements(form, func(n *html.Node) bool { return n.DataAtom == atom.Input }) {
		if strings.EqualFold(attr(in, "type"), "hidden") && attr(in, "name") != "" {
			values.Add(attr(in, "name"), attr(in, "value"))
		}
	}
	if values.Get("csrf_token") == "" {
		b.t.Fatalf("form %s has no csrf_token", formID)
	}
	for k, v := range fields {
		values[k] = v
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, action.String(), strings.NewReader(values.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", p.url.Scheme+"://"+p.url.Host)
	return b.do(req)
}

// callback checks that p is the redirect to redirectURL and returns its query.
func callback(t *testing.T, p page, redirectURL string) url.Values {
	t.Helper()
	want, err := url.Parse(redirectURL)
	if err != nil {
		t.Fatal(err)
	}
	if !p.away || p.url.Scheme != want.Scheme || p.url.Host != want.Host || p.url.Path != want.Path {
		t.Fatalf("want the redirect to %s; got %s", redirectURL, p)
	}
	return p.url.Query()
}

// login describes one sign-in at the issuer's pages.
type login struct {
	username, password string
	// totpSecret is set for a user enrolled in TOTP: the MFA page must follow
	// the password.
	totpSecret string
}

// signIn answers the login page (and the MFA page for a TOTP user) and
// allows the consent page, and returns the callback's query.
func (b *formBrowser) signIn(ctx context.Context, authURL string, l login, redirectURL string) url.Values {
	b.t.Helper()
	p := b.get(ctx, authURL)
	if p.away || p.url.Path != "/login" || p.url.Query().Get("interaction") == "" {
		b.t.Fatalf("the authorization request did not lead to /login?interaction=...; got %s", p)
	}
	p = b.submit(ctx, p, "login-form", url.Values{"username": {l.username}, "password": {l.password}})
	if l.totpSecret != "" {
		code, err := gh.TOTPCode(ctx, l.totpSecret)
		if err != nil {
			b.t.Fatal(err)
		}
		p = b.submit(ctx, p, "mfa-form", url.Values{"code": {code}})
	}
	p = b.submit(ctx, p, "consent-form", url.Values{"decision": {"allow"}})
	return callback(b.t, p, redirectURL)
}

// authorize starts the code flow with PKCE (S256) and prompt=consent (so
// each run shows the consent page, also where an earlier test consented),
// signs in and returns the code, after checking the state came back.
func authorize(ctx context.Context, t *testing.T, cfg *oauth2.Config, verifier string, l login, opts ...oauth2.AuthCodeOption) string {
	t.Helper()
	state := randomValue()
	opts = append(opts, oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("prompt", "consent"))
	q := newFormBrowser(t).signIn(ctx, cfg.AuthCodeURL(state, opts...), l, cfg.RedirectURL)
	if q.Get("error") != "" || q.Get("code") == "" {
		t.Fatalf("callback without a code: error %q (%s)", q.Get("error"), q.Get("error_description"))
	}
	if q.Get("state") != state {
		t.Fatalf("callback state %q, want the request's %q", q.Get("state"), state)
	}
	return q.Get("code")
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Namespace == "" && a.Key == key {
			return a.Val
		}
	}
	return ""
}

func findElements(root *html.Node, match func(*html.Node) bool) []*html.Node {
	var found []*html.Node
	for n := range root.Descendants() {
		if n.Type == html.ElementNode && match(n) {
			found = append(found, n)
		}
	}
	return found
}

func findElement(root *html.Node, match func(*html.Node) bool) *html.Node {
	if root == nil {
		return nil
	}
	if found := findElements(root, match); len(found) > 0 {
		return found[0]
	}
	return nil
}

// visibleText is a page's text without its markup or hidden fields, for
// failure messages that must not print CSRF tokens.
func visibleText(doc *html.Node) string {
	if doc == nil {
		return ""
	}
	var b strings.Builder
	for n := range doc.Descendants() {
		if n.Type == html.TextNode && n.Parent != nil && n.Parent.DataAtom != atom.Script && n.Parent.DataAtom != atom.Style {
			if s := strings.TrimSpace(n.Data); s != "" {
				b.WriteString(s)
				b.WriteByte('\n')
			}
		}
	}
	return b.String()
}

func TestOIDCDiscovery(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, provider := discover(ctx, t) // NewProvider checks issuer == IssuerID.
	var meta struct {
		Issuer                string   `json:"issuer"`
		AuthorizationEndpoint string   `json:"authorization_endpoint"`
		TokenEndpoint         string   `json:"token_endpoint"`
		UserinfoEndpoint      string   `json:"userinfo_endpoint"`
		JWKSURI               string   `json:"jwks_uri"`
		CodeChallengeMethods  []string `json:"code_challenge_methods_supported"`
		ResponseTypes         []string `json:"response_types_supported"`
		IDTokenSigningAlgs    []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := provider.Claims(&meta); err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string]string{
		"issuer":                 meta.Issuer,
		"authorization_endpoint": meta.AuthorizationEndpoint,
		"token_endpoint":         meta.TokenEndpoint,
		"userinfo_endpoint":      meta.UserinfoEndpoint,
	} {
		want := stack.IssuerID + map[string]string{
			"issuer": "", "authorization_endpoint": "/oauth2/authorize", "token_endpoint": "/oauth2/token", "userinfo_endpoint": "/userinfo",
		}[name]
		if got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if !strings.HasPrefix(meta.JWKSURI, stack.IssuerID+"/") {
		t.Errorf("jwks_uri = %q, want a URL of the issuer", meta.JWKSURI)
	}
	for name, c := range map[string]struct{ got, want []string }{
		"code_challenge_methods_supported":      {meta.CodeChallengeMethods, []string{"S256"}},
		"response_types_supported":              {meta.ResponseTypes, []string{"code"}},
		"id_token_signing_alg_values_supported": {meta.IDTokenSigningAlgs, []string{"ES256"}},
	} {
		if !slices.Equal(c.got, c.want) {
			t.Errorf("%s = %q, want %q", name, c.got, c.want)
		}
	}
}

// TestOIDCAuthorizationCodeFlow is invoice-web's whole life with alice:
// code flow with PKCE and acr_values=mfa, ID token, userinfo, refresh with
// rotation, and refresh-token reuse ending the token family.
func TestOIDCAuthorizationCodeFlow(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	ctx, provider := discover(ctx, t)
	scopes := []string{oidc.ScopeOpenID, "profile", oidc.ScopeOfflineAccess, "invoice:read", "invoice:approve"}
	cfg := webConfig(provider, loopbackCallback, scopes...)
	verifier, nonce := oauth2.GenerateVerifier(), randomValue()

	started := time.Now()
	code := authorize(ctx, t, cfg, verifier, login{"alice", alicePassword, aliceTOTPSecret},
		oauth2.SetAuthURLParam("nonce", nonce), oauth2.SetAuthURLParam("acr_values", "mfa"))
	tok, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("code exchange: %v", err)
	}
	if !strings.EqualFold(tok.Type(), "Bearer") || tok.RefreshToken == "" || tok.Expiry.IsZero() {
		t.Fatalf("token response: type %q, refresh token %t, expiry %v; want Bearer, a refresh token (offline_access), an expiry",
			tok.Type(), tok.RefreshToken != "", tok.Expiry)
	}

	rawID, _ := tok.Extra("id_token").(string)
	if rawID == "" {
		t.Fatal("no id_token for the openid scope")
	}
	idt, err := idVerifier(provider).Verify(ctx, rawID)
	if err != nil {
		t.Fatalf("ID token: %v", err)
	}
	if idt.Nonce != nonce {
		t.Errorf("ID token nonce %q, want the request's %q", idt.Nonce, nonce)
	}
	if idt.Subject != "alice" {
		t.Errorf("ID token sub = %q", idt.Subject)
	}
	if idt.AccessTokenHash != "" {
		if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
			t.Errorf("ID token at_hash: %v", err)
		}
	}
	var id userClaims
	if err := idt.Claims(&id); err != nil {
		t.Fatal(err)
	}
	checkAuthentication(t, "ID token", id, "mfa", []string{"pwd", "otp"}, started)

	at := accessToken(ctx, t, provider, tok.AccessToken)
	checkAuthentication(t, "access token", at, "mfa", []string{"pwd", "otp"}, started)
	if at.Subject != "alice" || at.Tenant != "acme" || at.ClientID != webClientID || !slices.Contains(at.Roles, "billing_approver") {
		t.Errorf("access token sub %q tenant %q client_id %q roles %q, want alice, acme, %s, billing_approver",
			at.Subject, at.Tenant, at.ClientID, at.Roles, webClientID)
	}
	checkScopes(t, "access token", at.Scope, scopes)

	info, err := provider.UserInfo(ctx, oauth2.StaticTokenSource(tok))
	if err != nil {
		t.Fatalf("userinfo: %v", err)
	}
	if info.Subject != "alice" {
		t.Errorf("userinfo sub = %q, want alice", info.Subject)
	}

	// Refresh: new tokens, the refresh token rotated, the same grant.
	refreshed, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if refreshed.AccessToken == tok.AccessToken || refreshed.RefreshToken == "" || refreshed.RefreshToken == tok.RefreshToken {
		t.Fatalf("refresh did not issue a new access token and a rotated refresh token")
	}
	rat := accessToken(ctx, t, provider, refreshed.AccessToken)
	if rat.JTI == at.JTI || rat.Subject != "alice" || rat.ACR != "mfa" || rat.AuthTime != at.AuthTime {
		t.Errorf("refreshed access token jti %q sub %q acr %q auth_time %s; want a new jti, alice, mfa, the login's auth_time %s",
			rat.JTI, rat.Subject, rat.ACR, rat.AuthTime, at.AuthTime)
	}
	checkScopes(t, "refreshed access token", rat.Scope, scopes)
	if !introspect(ctx, t, refreshed.AccessToken) {
		t.Fatal("the refreshed access token is not active")
	}

	// Reuse of the rotated-out refresh token: refused, and the family ends.
	if _, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); !oauthError(err, "invalid_grant") {
		t.Fatalf("reused refresh token: %v, want invalid_grant", err)
	}
	if _, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshed.RefreshToken}).Token(); !oauthError(err, "invalid_grant") {
		t.Fatalf("newest refresh token after the reuse: %v, want invalid_grant (family revoked)", err)
	}
	if introspect(ctx, t, refreshed.AccessToken) {
		t.Error("the access token of a revoked refresh family is still active")
	}
}

// TestOIDCLoginAssurance checks acr and amr by user and request: a TOTP
// user is asked for her code even when the client does not ask for MFA.
func TestOIDCLoginAssurance(t *testing.T) {
	cases := []struct {
		name     string
		login    login
		opts     []oauth2.AuthCodeOption
		acr      string
		amr      []string
		username string
	}{
		{name: "alice without acr_values", login: login{"alice", alicePassword, aliceTOTPSecret}, acr: "mfa", amr: []string{"pwd", "otp"}},
		{name: "bob", login: login{"bob", bobPassword, ""}, acr: "pwd", amr: []string{"pwd"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			ctx, provider := discover(ctx, t)
			cfg := webConfig(provider, loopbackCallback, oidc.ScopeOpenID, "invoice:read")
			verifier, nonce := oauth2.GenerateVerifier(), randomValue()
			started := time.Now()
			code := authorize(ctx, t, cfg, verifier, tc.login, append(tc.opts, oauth2.SetAuthURLParam("nonce", nonce))...)
			tok, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatalf("code exchange: %v", err)
			}
			if tok.RefreshToken != "" {
				t.Error("a refresh token without offline_access")
			}
			rawID, _ := tok.Extra("id_token").(string)
			idt, err := idVerifier(provider).Verify(ctx, rawID)
			if err != nil {
				t.Fatalf("ID token: %v", err)
			}
			var id userClaims
			if err := idt.Claims(&id); err != nil {
				t.Fatal(err)
			}
			if idt.Subject != tc.login.username || idt.Nonce != nonce {
				t.Errorf("ID token sub %q nonce %q, want %q and the request's nonce", idt.Subject, idt.Nonce, tc.login.username)
			}
			checkAuthentication(t, "ID token", id, tc.acr, tc.amr, started)
			at := accessToken(ctx, t, provider, tok.AccessToken)
			checkAuthentication(t, "access token", at, tc.acr, tc.amr, started)
		})
	}
}

func TestOIDCClientCredentials(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ctx, provider := discover(ctx, t)
	cfg := clientcredentials.Config{
		ClientID:     "reporting-job",
		ClientSecret: "reporting-job-secret",
		TokenURL:     provider.Endpoint().TokenURL,
		Scopes:       []string{"invoice:read"},
		AuthStyle:    oauth2.AuthStyleInHeader,
	}
	tok, err := cfg.Token(ctx)
	if err != nil {
		t.Fatalf("client credentials: %v", err)
	}
	if tok.RefreshToken != "" {
		t.Error("a refresh token for client_credentials (RFC 6749 section 4.4.3)")
	}
	if _, ok := tok.Extra("id_token").(string); ok {
		t.Error("an ID token without a user")
	}
	at := accessToken(ctx, t, provider, tok.AccessToken)
	if at.ClientID != "reporting-job" || at.Tenant != "acme" || at.ACR != "" || len(at.AMR) != 0 {
		t.Errorf("client token client_id %q tenant %q acr %q amr %q, want reporting-job, acme, no user authentication",
			at.ClientID, at.Tenant, at.ACR, at.AMR)
	}
	checkScopes(t, "client token", at.Scope, []string{"invoice:read"})
	if !introspect(ctx, t, tok.AccessToken) {
		t.Error("a fresh client token is not active")
	}
}

// TestOIDCCodeAttacks: a code is single-use, bound to its PKCE verifier and
// to its client.
func TestOIDCCodeAttacks(t *testing.T) {
	bob := login{"bob", bobPassword, ""}
	scopes := []string{oidc.ScopeOpenID, oidc.ScopeOfflineAccess, "invoice:read"}

	t.Run("code reuse refuses and revokes the first exchange's tokens", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		ctx, provider := discover(ctx, t)
		cfg := webConfig(provider, loopbackCallback, scopes...)
		verifier := oauth2.GenerateVerifier()
		code := authorize(ctx, t, cfg, verifier, bob)
		tok, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatalf("first exchange: %v", err)
		}
		if !introspect(ctx, t, tok.AccessToken) {
			t.Fatal("the first exchange's access token is not active")
		}
		if _, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier)); !oauthError(err, "invalid_grant") {
			t.Fatalf("second exchange: %v, want invalid_grant", err)
		}
		if introspect(ctx, t, tok.AccessToken) {
			t.Error("the access token of a reused code is still active (RFC 6749 section 4.1.2)")
		}
		if _, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); !oauthError(err, "invalid_grant") {
			t.Errorf("the refresh token of a reused code: %v, want invalid_grant", err)
		}
	})
	t.Run("PKCE verifier mismatch", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		ctx, provider := discover(ctx, t)
		cfg := webConfig(provider, loopbackCallback, scopes...)
		code := authorize(ctx, t, cfg, oauth2.GenerateVerifier(), bob)
		if _, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(oauth2.GenerateVerifier())); !oauthError(err, "invalid_grant") {
			t.Fatalf("exchange with another verifier: %v, want invalid_grant", err)
		}
	})
	t.Run("code of another client", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		ctx, provider := discover(ctx, t)
		cfg := webConfig(provider, loopbackCallback, scopes...)
		verifier := oauth2.GenerateVerifier()
		code := authorize(ctx, t, cfg, verifier, bob)
		console := oauth2.Config{
			ClientID:     "support-console",
			ClientSecret: "support-console-secret",
			RedirectURL:  loopbackCallback,
			Endpoint:     oauth2.Endpoint{TokenURL: provider.Endpoint().TokenURL, AuthStyle: oauth2.AuthStyleInHeader},
		}
		if _, err := console.Exchange(ctx, code, oauth2.VerifierOption(verifier)); !oauthError(err, "invalid_grant") {
			t.Fatalf("support-console exchanging invoice-web's code: %v, want invalid_grant", err)
		}
	})
}

// TestOIDCAuthorizationRequestsRefused: requests the authorization endpoint
// must refuse before any page. An untrusted redirect_uri gets a 400 and is
// never redirected to; other errors may go back to the registered
// redirect_uri, with an error and no code.
func TestOIDCAuthorizationRequestsRefused(t *testing.T) {
	const port = "49152"
	cases := []struct {
		name string
		// set replaces request parameters; a nil value deletes one.
		set url.Values
		// mayRedirect: the error may go to the (valid) redirect_uri.
		mayRedirect bool
		// anyClientError: a 4xx other than 400 will do.
		anyClientError bool
	}{
		{name: "no code_challenge for a public client", set: url.Values{"code_challenge": nil, "code_challenge_method": nil}, mayRedirect: true},
		{name: "plain code_challenge_method", set: url.Values{"code_challenge_method": {"plain"}}, mayRedirect: true},
		{name: "no state", set: url.Values{"state": nil}, mayRedirect: true},
		{name: "implicit response_type", set: url.Values{"response_type": {"token"}}, mayRedirect: true},
		{name: "redirect_uri with an extra path", set: url.Values{"redirect_uri": {"http://127.0.0.1:" + port + "/callback/extra"}}},
		{name: "redirect_uri on localhost", set: url.Values{"redirect_uri": {"http://localhost:" + port + "/callback"}}},
		{name: "redirect_uri on another host", set: url.Values{"redirect_uri": {"https://evil.example/callback"}}},
		{name: "redirect_uri with a query", set: url.Values{"redirect_uri": {"http://127.0.0.1:" + port + "/callback?x=1"}}},
		{name: "redirect_uri over https", set: url.Values{"redirect_uri": {"https://127.0.0.1:" + port + "/callback"}}},
		// RFC 6749 section 4.1.2.1: inform the user, never redirect.
		{name: "unknown client", set: url.Values{"client_id": {"no-such-client"}}, anyClientError: true},
	}
	// The subtests run in parallel after this function returned: the
	// context ends in a cleanup, which runs after them.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	ctx, provider := discover(ctx, t)
	cfg := webConfig(provider, loopbackCallback, oidc.ScopeOpenID, "invoice:read")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			u, err := url.Parse(cfg.AuthCodeURL(randomValue(), oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
			if err != nil {
				t.Fatal(err)
			}
			q := u.Query()
			for k, v := range tc.set {
				if v == nil {
					q.Del(k)
				} else {
					q[k] = v
				}
			}
			u.RawQuery = q.Encode()
			p := newFormBrowser(t).get(ctx, u.String())
			switch {
			case p.away:
				if !tc.mayRedirect {
					t.Fatalf("redirected to %s, want a 400 page", p.url.Redacted())
				}
				got := p.url.Query()
				if p.url.Scheme+"://"+p.url.Host+p.url.Path != loopbackCallback || got.Get("error") == "" || got.Has("code") {
					t.Fatalf("redirected to %s, want the registered redirect_uri with an error and no code", p.url.Redacted())
				}
			case p.url.Path == "/login":
				t.Fatalf("the request was accepted and the login page shown; one the issuer will refuse must be refused before the user signs in")
			case tc.anyClientError && (p.status < 400 || p.status > 499):
				t.Fatalf("got %s; want the request refused with a 4xx", p)
			case !tc.anyClientError && p.status != http.StatusBadRequest:
				t.Fatalf("got %s; want the request refused with 400", p)
			}
		})
	}
}
