package token_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/ory/fosite/handler/oauth2"
	xoauth2 "golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/gatehouse/gatehouse/services/issuer/internal/client"
	"github.com/gatehouse/gatehouse/services/issuer/internal/clientsecret"
	"github.com/gatehouse/gatehouse/services/issuer/internal/demoseed"
	"github.com/gatehouse/gatehouse/services/issuer/internal/signingkey"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/memory"
	"github.com/gatehouse/gatehouse/services/issuer/internal/token"
	"github.com/gatehouse/gatehouse/services/issuer/internal/tokensession"
)

const issuer = "http://issuer.test"

// countingStore counts stored token sessions, to prove rejected requests
// store nothing.
type countingStore struct {
	token.Store
	created atomic.Int64
}

func (s *countingStore) CreateTokenSession(ctx context.Context, rec tokensession.Record) error {
	err := s.Store.CreateTokenSession(ctx, rec)
	if err == nil {
		s.created.Add(1)
	}
	return err
}

type harness struct {
	srv    *httptest.Server
	store  *countingStore
	key    *signingkey.Key
	hasher *clientsecret.Hasher
}

func newHarness(t testing.TB, opts ...func(*token.Config)) *harness {
	t.Helper()
	ctx := context.Background()
	hasher, err := clientsecret.NewHasher(clientsecret.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	key, err := signingkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	mem := memory.New()
	clients, err := demoseed.Clients(ctx, hasher)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range clients {
		if err := mem.UpsertClient(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	st := &countingStore{Store: mem}
	cfg := token.Config{
		Issuer:              issuer,
		AccessTokenLifespan: 5 * time.Minute,
		Key:                 key,
		Hasher:              hasher,
		TokenHMACKey:        testHMACKey,
		Store:               st,
		Logger:              slog.New(slog.DiscardHandler),
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	provider, err := token.NewProvider(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ep := token.NewEndpoint(provider)
	srv := httptest.NewServer(ep)
	t.Cleanup(srv.Close)
	return &harness{srv: srv, store: st, key: key, hasher: hasher}
}

func (h *harness) clientCredentials(id, secret string, style xoauth2.AuthStyle, scopes ...string) *clientcredentials.Config {
	return &clientcredentials.Config{
		ClientID:     id,
		ClientSecret: secret,
		TokenURL:     h.srv.URL + token.Path,
		Scopes:       scopes,
		AuthStyle:    style,
	}
}

func (h *harness) ctx(t testing.TB) context.Context {
	return context.WithValue(t.Context(), xoauth2.HTTPClient, h.srv.Client())
}

// claims verifies raw with h's public key, ES256 only, and returns header and claims.
func (h *harness) claims(t *testing.T, raw string) (jose.Header, map[string]any) {
	t.Helper()
	tok, err := josejwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("parse token: %v", err)
	}
	var claims map[string]any
	if err := tok.Claims(h.key.Public(), &claims); err != nil {
		t.Fatalf("verify token: %v", err)
	}
	return tok.Headers[0], claims
}

func TestClientCredentials(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		id       string
		secret   string
		style    xoauth2.AuthStyle
		scopes   []string
		audience string
		want     string // scope claim
	}{
		{name: "basic", id: "reporting-job", secret: "reporting-job-secret", style: xoauth2.AuthStyleInHeader, scopes: []string{"invoice:read"}, want: "invoice:read"},
		{name: "post", id: "reporting-job", secret: "reporting-job-secret", style: xoauth2.AuthStyleInParams, scopes: []string{"invoice:read"}, want: "invoice:read"},
		{name: "default scopes", id: "billing-bot", secret: "billing-bot-secret", style: xoauth2.AuthStyleInHeader, want: "invoice:read invoice:write"},
		{name: "narrowed scopes", id: "billing-bot", secret: "billing-bot-secret", style: xoauth2.AuthStyleInHeader, scopes: []string{"invoice:write"}, want: "invoice:write"},
		{name: "explicit audience", id: "reporting-job", secret: "reporting-job-secret", style: xoauth2.AuthStyleInParams, audience: "gatehouse-api", want: "invoice:read"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			cc := h.clientCredentials(tc.id, tc.secret, tc.style, tc.scopes...)
			if tc.audience != "" {
				cc.EndpointParams = url.Values{"audience": {tc.audience}}
			}
			tok, err := cc.Token(h.ctx(t))
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
			if tok.TokenType != "bearer" && tok.TokenType != "Bearer" {
				t.Errorf("token_type = %q", tok.TokenType)
			}
			if got := tok.Extra("scope"); got != tc.want {
				t.Errorf("response scope = %v, want %q", got, tc.want)
			}
			if got := tok.Extra("expires_in"); got != float64(300) {
				t.Errorf("expires_in = %v, want 300", got)
			}
			header, claims := h.claims(t, tok.AccessToken)
			if header.ExtraHeaders["typ"] != "at+jwt" || header.Algorithm != "ES256" || header.KeyID != h.key.KeyID() {
				t.Errorf("header = typ %v alg %s kid %s, want at+jwt ES256 %s", header.ExtraHeaders["typ"], header.Algorithm, header.KeyID, h.key.KeyID())
			}
			assertClaims(t, claims, tc.id, tc.want, 300)
			if got := h.store.created.Load(); got != 1 {
				t.Errorf("stored %d token sessions, want 1", got)
			}
		})
	}
}

func assertClaims(t *testing.T, claims map[string]any, clientID, scope string, lifetime float64) {
	t.Helper()
	want := []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope", "tenant"}
	var got []string
	for k := range claims {
		got = append(got, k)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("claims = %v, want exactly %v", got, want)
	}
	if claims["iss"] != issuer || claims["sub"] != clientID || claims["client_id"] != clientID ||
		claims["tenant"] != "acme" || claims["scope"] != scope {
		t.Errorf("claims = %v", claims)
	}
	if aud, _ := claims["aud"].([]any); len(aud) != 1 || aud[0] != demoseed.Audience {
		t.Errorf("aud = %v, want [%s]", claims["aud"], demoseed.Audience)
	}
	iat, _ := claims["iat"].(float64)
	exp, _ := claims["exp"].(float64)
	nbf, _ := claims["nbf"].(float64)
	if exp-iat != lifetime || nbf != iat {
		t.Errorf("iat %v nbf %v exp %v: want exp-iat = %v and nbf = iat", iat, nbf, exp, lifetime)
	}
	if now := float64(time.Now().Unix()); iat < now-60 || iat > now+1 {
		t.Errorf("iat %v is not now (%v)", iat, now)
	}
	if jti, _ := claims["jti"].(string); len(jti) < 16 {
		t.Errorf("jti = %q, want a random id", jti)
	}
}

func TestJTIIsUnique(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cc := h.clientCredentials("reporting-job", "reporting-job-secret", xoauth2.AuthStyleInHeader)
	seen := map[string]bool{}
	for range 5 {
		tok, err := cc.Token(h.ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		_, claims := h.claims(t, tok.AccessToken)
		jti, _ := claims["jti"].(string)
		if seen[jti] {
			t.Fatalf("jti %s issued twice", jti)
		}
		seen[jti] = true
	}
}

func TestPerClientLifespan(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	hash, err := h.hasher.Hash(t.Context(), []byte("short-lived-secret"))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.store.UpsertClient(t.Context(), &client.Client{
		ID:                  "short-lived",
		SecretHash:          hash,
		Tenant:              "acme",
		GrantTypes:          []string{client.GrantClientCredentials},
		Scopes:              []string{"invoice:read"},
		Audiences:           []string{demoseed.Audience},
		AccessTokenLifespan: time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	tok, err := h.clientCredentials("short-lived", "short-lived-secret", xoauth2.AuthStyleInHeader).Token(h.ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.Extra("expires_in"); got != float64(60) {
		t.Errorf("expires_in = %v, want 60", got)
	}
	_, claims := h.claims(t, tok.AccessToken)
	assertClaims(t, claims, "short-lived", "invoice:read", 60)
}

// TestLifetimeCap: a client override longer than MaxTokenLifetime is cut to
// it, so no token outlives its signing key's publication.
func TestLifetimeCap(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *token.Config) { c.MaxTokenLifetime = 10 * time.Minute })
	hash, err := h.hasher.Hash(t.Context(), []byte("long-lived-secret"))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.store.UpsertClient(t.Context(), &client.Client{
		ID: "long-lived", SecretHash: hash, Tenant: "acme",
		GrantTypes: []string{client.GrantClientCredentials}, Scopes: []string{"invoice:read"},
		Audiences: []string{demoseed.Audience}, AccessTokenLifespan: 2 * time.Hour,
	}); err != nil {
		t.Fatal(err)
	}
	tok, err := h.clientCredentials("long-lived", "long-lived-secret", xoauth2.AuthStyleInHeader).Token(h.ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.Extra("expires_in"); got != float64(600) {
		t.Errorf("expires_in = %v, want 600 (capped)", got)
	}
	_, claims := h.claims(t, tok.AccessToken)
	assertClaims(t, claims, "long-lived", "invoice:read", 600)
}

func TestTokenSessionIsStored(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	tok, err := h.clientCredentials("reporting-job", "reporting-job-secret", xoauth2.AuthStyleInHeader).Token(h.ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	_, claims := h.claims(t, tok.AccessToken)
	signature := tok.AccessToken[strings.LastIndexByte(tok.AccessToken, '.')+1:]

	storage := token.NewStorage(h.store, token.NopObserver{})
	sess := token.NewSession()
	req, err := storage.GetAccessTokenSession(t.Context(), signature, sess)
	if err != nil {
		t.Fatalf("GetAccessTokenSession: %v", err)
	}
	if req.GetClient().GetID() != "reporting-job" || !slices.Equal(req.GetGrantedScopes(), []string{"invoice:read"}) ||
		!slices.Equal(req.GetGrantedAudience(), []string{demoseed.Audience}) || sess.GetSubject() != "reporting-job" ||
		sess.JWTClaims.JTI != claims["jti"] {
		t.Fatalf("stored session = client %s scopes %v aud %v sub %s jti %s; token jti %v",
			req.GetClient().GetID(), req.GetGrantedScopes(), req.GetGrantedAudience(), sess.GetSubject(), sess.JWTClaims.JTI, claims["jti"])
	}
	if exp := sess.GetExpiresAt("access_token").Unix(); float64(exp) != claims["exp"] {
		t.Fatalf("stored expiry %d, token exp %v", exp, claims["exp"])
	}
	if err := storage.DeleteAccessTokenSession(t.Context(), signature); err != nil {
		t.Fatal(err)
	}
	if _, err := storage.GetAccessTokenSession(t.Context(), signature, new(oauth2.JWTSession)); err == nil {
		t.Fatal("session still there after delete")
	}
}

func TestRejected(t *testing.T) {
	t.Parallel()
	form := func(kv ...string) string {
		v := url.Values{}
		for i := 0; i < len(kv); i += 2 {
			v.Add(kv[i], kv[i+1])
		}
		return v.Encode()
	}
	const formType = "application/x-www-form-urlencoded"
	basic := func(id, secret string) string { return "Basic " + b64(url.QueryEscape(id)+":"+url.QueryEscape(secret)) }
	reportingJob := basic("reporting-job", "reporting-job-secret")
	tests := []struct {
		name        string
		method      string
		contentType string
		auth        string
		body        string
		wantStatus  int
		wantError   string
	}{
		{name: "wrong secret basic", auth: basic("reporting-job", "wrong"), body: form("grant_type", "client_credentials"), wantStatus: 401, wantError: "invalid_client"},
		{name: "wrong secret post", body: form("grant_type", "client_credentials", "client_id", "reporting-job", "client_secret", "wrong"), wantStatus: 401, wantError: "invalid_client"},
		{name: "empty secret", body: form("grant_type", "client_credentials", "client_id", "reporting-job", "client_secret", ""), wantStatus: 401, wantError: "invalid_client"},
		{name: "unknown client", auth: basic("nobody", "reporting-job-secret"), body: form("grant_type", "client_credentials"), wantStatus: 401, wantError: "invalid_client"},
		{name: "no client authentication", body: form("grant_type", "client_credentials"), wantStatus: 401, wantError: "invalid_client"},
		{name: "bearer instead of basic", auth: "Bearer abc", body: form("grant_type", "client_credentials"), wantStatus: 401, wantError: "invalid_client"},
		{name: "client assertion", body: form("grant_type", "client_credentials", "client_id", "reporting-job", "client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", "client_assertion", "a.b.c"), wantStatus: 401, wantError: "invalid_client"},
		{name: "basic and post together", auth: reportingJob, body: form("grant_type", "client_credentials", "client_id", "reporting-job", "client_secret", "reporting-job-secret"), wantStatus: 400, wantError: "invalid_request"},
		{name: "scope widening", auth: reportingJob, body: form("grant_type", "client_credentials", "scope", "invoice:read invoice:write"), wantStatus: 400, wantError: "invalid_scope"},
		{name: "audience not allowed", auth: reportingJob, body: form("grant_type", "client_credentials", "audience", "other-api"), wantStatus: 400, wantError: "invalid_request"},
		{name: "public client", body: form("grant_type", "client_credentials", "client_id", "invoice-web"), wantStatus: 400, wantError: "unauthorized_client"},
		{name: "public client with a secret", body: form("grant_type", "client_credentials", "client_id", "invoice-web", "client_secret", "x"), wantStatus: 401, wantError: "invalid_client"},
		{name: "client without the grant", auth: basic("support-console", "support-console-secret"), body: form("grant_type", "client_credentials"), wantStatus: 400, wantError: "unauthorized_client"},
		{name: "malformed body", auth: reportingJob, body: "grant_type=client_credentials&scope=%zz", wantStatus: 400, wantError: "invalid_request"},
		{name: "oversized body", auth: reportingJob, body: form("grant_type", "client_credentials", "pad", strings.Repeat("a", token.MaxBodyBytes)), wantStatus: 413, wantError: "invalid_request"},
		{name: "duplicate grant_type", auth: reportingJob, body: form("grant_type", "client_credentials", "grant_type", "client_credentials"), wantStatus: 400, wantError: "invalid_request"},
		{name: "duplicate scope", auth: reportingJob, body: form("grant_type", "client_credentials", "scope", "invoice:read", "scope", "invoice:read"), wantStatus: 400, wantError: "invalid_request"},
		{name: "missing grant_type", auth: reportingJob, body: form("scope", "invoice:read"), wantStatus: 400, wantError: "invalid_request"},
		{name: "empty body", auth: reportingJob, body: "", wantStatus: 400, wantError: "invalid_request"},
		{name: "unsupported grant type", auth: reportingJob, body: form("grant_type", "password", "username", "alice", "password", "x"), wantStatus: 400, wantError: "unsupported_grant_type"},
		// Token exchange is served only by a provider configured with the
		// grant (package exchange, with a PDP); this one is not.
		{name: "token exchange not configured", auth: basic("support-console", "support-console-secret"), body: form("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token", "abc"), wantStatus: 400, wantError: "unsupported_grant_type"},
		{name: "password grant", auth: reportingJob, body: form("grant_type", "password", "username", "alice", "password", "x"), wantStatus: 400, wantError: "unsupported_grant_type"},
		{name: "json body", contentType: "application/json", auth: reportingJob, body: `{"grant_type":"client_credentials"}`, wantStatus: 400, wantError: "invalid_request"},
		{name: "GET", method: http.MethodGet, auth: reportingJob, wantStatus: 405, wantError: "invalid_request"},
		{name: "PUT", method: http.MethodPut, contentType: formType, auth: reportingJob, body: form("grant_type", "client_credentials"), wantStatus: 405, wantError: "invalid_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			req, err := http.NewRequestWithContext(t.Context(), method, h.srv.URL+token.Path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.contentType != "":
				req.Header.Set("Content-Type", tc.contentType)
			case method == http.MethodPost:
				req.Header.Set("Content-Type", formType)
			}
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := h.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Errorf("status = %d, want %d (body %s)", resp.StatusCode, tc.wantStatus, raw)
			}
			var body map[string]any
			if err := json.Unmarshal(raw, &body); err != nil {
				t.Fatalf("body is not JSON: %s", raw)
			}
			if body["error"] != tc.wantError {
				t.Errorf("error = %v, want %s (body %s)", body["error"], tc.wantError, raw)
			}
			if d, _ := body["error_description"].(string); d == "" {
				t.Errorf("no error_description: %s", raw)
			}
			for k := range body {
				if k != "error" && k != "error_description" {
					t.Errorf("unexpected member %q in error body %s", k, raw)
				}
			}
			for _, leak := range []string{"not registered", "secret does not match", "repeated parameter", "presented no secret", "grant_type '", "invalid URL escape"} {
				if strings.Contains(string(raw), leak) {
					t.Errorf("error body leaks debug detail %q: %s", leak, raw)
				}
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type = %q", ct)
			}
			if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", cc)
			}
			if wa := resp.Header.Get("WWW-Authenticate"); (resp.StatusCode == 401) != strings.HasPrefix(wa, "Basic ") {
				t.Errorf("status %d with WWW-Authenticate %q", resp.StatusCode, wa)
			}
			if resp.StatusCode == 405 && resp.Header.Get("Allow") != http.MethodPost {
				t.Errorf("405 without Allow: POST")
			}
			if got := h.store.created.Load(); got != 0 {
				t.Errorf("a rejected request stored %d token sessions", got)
			}
		})
	}
}

func TestNewEndpointValidatesConfig(t *testing.T) {
	t.Parallel()
	if _, err := token.NewProvider(token.Config{}); err == nil {
		t.Fatal("NewProvider accepted an empty config")
	}
}

func TestConcurrentIssuance(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const workers, perWorker = 8, 5
	jtis := make(chan string, workers*perWorker)
	errs := make(chan error, workers*perWorker)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			style := xoauth2.AuthStyleInHeader
			if w%2 == 1 {
				style = xoauth2.AuthStyleInParams
			}
			cc := h.clientCredentials("billing-bot", "billing-bot-secret", style, "invoice:read")
			for range perWorker {
				tok, err := cc.Token(h.ctx(t))
				if err != nil {
					errs <- err
					return
				}
				tj, err := josejwt.ParseSigned(tok.AccessToken, []jose.SignatureAlgorithm{jose.ES256})
				if err != nil {
					errs <- err
					return
				}
				var c josejwt.Claims
				if err := tj.Claims(h.key.Public(), &c); err != nil {
					errs <- err
					return
				}
				jtis <- c.ID
			}
		})
	}
	wg.Wait()
	close(errs)
	close(jtis)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for jti := range jtis {
		if seen[jti] {
			t.Fatalf("jti %s issued twice", jti)
		}
		seen[jti] = true
	}
	if got := h.store.created.Load(); got != workers*perWorker || len(seen) != workers*perWorker {
		t.Fatalf("stored %d sessions, saw %d tokens; want %d", got, len(seen), workers*perWorker)
	}
}
