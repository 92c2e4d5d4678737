package app_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/gatehouse/gatehouse/libs/serve/envflag"
	"github.com/gatehouse/gatehouse/services/issuer/app"
)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// defaults returns the flag defaults, as cmd/issuer would see them.
func defaults(t testing.TB) app.Config {
	t.Helper()
	var cfg app.Config
	cfg.RegisterFlags(flag.NewFlagSet("issuer", flag.ContinueOnError))
	cfg.ScopeCatalog = filepath.Join("..", "..", "..", app.DefaultScopeCatalog)
	return cfg
}

// demoConfig is an in-memory demo issuer.
func demoConfig(t testing.TB) app.Config {
	cfg := defaults(t)
	cfg.Store = app.StoreMemory
	cfg.Demo = true
	return cfg
}

type issuer struct {
	srv *httptest.Server
	log *syncBuffer
}

func start(t testing.TB, cfg app.Config) *issuer {
	t.Helper()
	logs := &syncBuffer{}
	a, err := app.New(t.Context(), cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(func() {
		srv.Close()
		if err := a.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return &issuer{srv: srv, log: logs}
}

func (is *issuer) get(t *testing.T, path string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, is.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := is.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func (is *issuer) token(t testing.TB, style oauth2.AuthStyle) *oauth2.Token {
	t.Helper()
	cc := clientcredentials.Config{
		ClientID:     "reporting-job",
		ClientSecret: "reporting-job-secret",
		TokenURL:     is.srv.URL + "/oauth2/token",
		Scopes:       []string{"invoice:read"},
		AuthStyle:    style,
	}
	tok, err := cc.Token(context.WithValue(t.Context(), oauth2.HTTPClient, is.srv.Client()))
	if err != nil {
		t.Fatalf("client_credentials: %v", err)
	}
	return tok
}

func TestClientCredentialsTokenVerifiesAgainstJWKS(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		style oauth2.AuthStyle
	}{
		{name: "client_secret_basic", style: oauth2.AuthStyleInHeader},
		{name: "client_secret_post", style: oauth2.AuthStyleInParams},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			is := start(t, demoConfig(t))
			tok := is.token(t, tc.style)

			_, raw := is.get(t, "/.well-known/jwks.json")
			var jwks jose.JSONWebKeySet
			if err := json.Unmarshal(raw, &jwks); err != nil {
				t.Fatal(err)
			}
			parsed, err := josejwt.ParseSigned(tok.AccessToken, []jose.SignatureAlgorithm{jose.ES256})
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			h := parsed.Headers[0]
			keys := jwks.Key(h.KeyID)
			if len(keys) != 1 {
				t.Fatalf("kid %q matches %d JWKS keys, want 1", h.KeyID, len(keys))
			}
			if h.ExtraHeaders["typ"] != "at+jwt" || h.Algorithm != "ES256" {
				t.Errorf("header typ %v alg %s, want at+jwt ES256", h.ExtraHeaders["typ"], h.Algorithm)
			}
			var claims map[string]any
			if err := parsed.Claims(keys[0].Key, &claims); err != nil {
				t.Fatalf("signature does not verify against the JWKS: %v", err)
			}
			assertProfile(t, claims)
			t.Logf("header: %s", segment(t, tok.AccessToken, 0))
			t.Logf("payload: %s", segment(t, tok.AccessToken, 1))

			// The issued-token log line has the audit fields, never the token or secret.
			logs := is.log.String()
			if !strings.Contains(logs, `"msg":"access token issued"`) || !strings.Contains(logs, `"jti":"`+claims["jti"].(string)+`"`) ||
				!strings.Contains(logs, `"tenant":"acme"`) || !strings.Contains(logs, `"scopes":["invoice:read"]`) {
				t.Errorf("no audit line for the token in logs:\n%s", logs)
			}
			for _, secret := range []string{tok.AccessToken, segment(t, tok.AccessToken, 2), "reporting-job-secret"} {
				if strings.Contains(logs, secret) {
					t.Errorf("logs contain a token or secret")
				}
			}
		})
	}
}

func assertProfile(t *testing.T, claims map[string]any) {
	t.Helper()
	keys := make([]string, 0, len(claims))
	for k := range claims {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"aud", "client_id", "exp", "iat", "iss", "jti", "nbf", "scope", "sub", "tenant"}; !slices.Equal(keys, want) {
		t.Fatalf("claims %v, want exactly %v", keys, want)
	}
	for name, want := range map[string]string{
		"iss": "http://localhost:8080", "sub": "reporting-job", "client_id": "reporting-job",
		"tenant": "acme", "scope": "invoice:read",
	} {
		if claims[name] != want {
			t.Errorf("%s = %v, want %q", name, claims[name], want)
		}
	}
	if aud, _ := claims["aud"].([]any); len(aud) != 1 || aud[0] != "gatehouse-api" {
		t.Errorf("aud = %v, want [gatehouse-api]", claims["aud"])
	}
	if exp, iat := claims["exp"].(float64), claims["iat"].(float64); exp-iat != 300 || claims["nbf"] != iat {
		t.Errorf("exp %v iat %v nbf %v: want exp-iat = 300 and nbf = iat", exp, iat, claims["nbf"])
	}
}

func segment(t testing.TB, jwt string, i int) string {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	if i == 2 {
		return parts[2]
	}
	out, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestDiscovery(t *testing.T) {
	t.Parallel()
	is := start(t, demoConfig(t))
	base := "http://localhost:8080"
	want := map[string]any{
		"issuer":                                base,
		"authorization_endpoint":                base + "/oauth2/authorize",
		"token_endpoint":                        base + "/oauth2/token",
		"userinfo_endpoint":                     base + "/userinfo",
		"jwks_uri":                              base + "/.well-known/jwks.json",
		"grant_types_supported":                 []any{"authorization_code", "refresh_token", "client_credentials"},
		"token_endpoint_auth_methods_supported": []any{"client_secret_basic", "client_secret_post", "private_key_jwt", "none"},
		"token_endpoint_auth_signing_alg_values_supported": []any{"ES256"},
		"response_types_supported":                         []any{"code"},
		"response_modes_supported":                         []any{"query"},
		"code_challenge_methods_supported":                 []any{"S256"},
		"subject_types_supported":                          []any{"public"},
		"id_token_signing_alg_values_supported":            []any{"ES256"},
		"claims_supported":                                 []any{"iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "at_hash", "tenant", "preferred_username"},
		"acr_values_supported":                             []any{"pwd", "mfa"},
		"prompt_values_supported":                          []any{"none", "login", "consent"},
		"scopes_supported":                                 []any{"openid", "profile", "offline_access", "invoice:read", "invoice:write", "invoice:approve", "support:read", "support:write", "support:impersonate"},
		"introspection_endpoint":                           base + "/oauth2/introspect",
		"introspection_endpoint_auth_methods_supported":    []any{"client_secret_basic", "client_secret_post", "private_key_jwt"},
		"revocation_endpoint":                              base + "/oauth2/revoke",
		"revocation_endpoint_auth_methods_supported":       []any{"client_secret_basic", "client_secret_post", "private_key_jwt", "none"},
		"gatehouse_revocation_feed_endpoint":               base,
	}
	for _, path := range []string{"/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			resp, raw := is.get(t, path)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if cc := resp.Header.Get("Cache-Control"); cc != "public, max-age=300" {
				t.Errorf("Cache-Control = %q", cc)
			}
			var got map[string]any
			if err := json.Unmarshal(raw, &got); err != nil {
				t.Fatal(err)
			}
			gotJSON, _ := json.Marshal(got)
			wantJSON, _ := json.Marshal(want)
			if string(gotJSON) != string(wantJSON) {
				t.Errorf("metadata =\n%s\nwant\n%s", gotJSON, wantJSON)
			}
		})
	}
}

// TestIntrospectThenRevoke goes through the wired issuer: a live token is
// active, revoked by its client, then inactive.
func TestIntrospectThenRevoke(t *testing.T) {
	t.Parallel()
	is := start(t, demoConfig(t))
	tok := is.token(t, oauth2.AuthStyleInHeader).AccessToken
	post := func(path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, is.srv.URL+path, strings.NewReader(url.Values{"token": {tok}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("reporting-job", "reporting-job-secret")
		resp, err := is.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := post("/oauth2/introspect"); code != http.StatusOK || !strings.Contains(body, `"active":true`) || !strings.Contains(body, `"tenant":"acme"`) {
		t.Fatalf("introspect live token: %d %s", code, body)
	}
	if code, body := post("/oauth2/revoke"); code != http.StatusOK {
		t.Fatalf("revoke: %d %s", code, body)
	}
	if code, body := post("/oauth2/introspect"); code != http.StatusOK || body != `{"active":false}` && !strings.HasPrefix(body, `{"active":false}`) {
		t.Fatalf("introspect revoked token: %d %s", code, body)
	}
	if strings.Contains(is.log.String(), tok) {
		t.Fatal("the token reached the log")
	}
}

func TestJWKS(t *testing.T) {
	t.Parallel()
	is := start(t, demoConfig(t))
	resp, raw := is.get(t, "/.well-known/jwks.json")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "public, max-age=300" {
		t.Errorf("Cache-Control = %q", cc)
	}
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(raw, &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 {
		t.Fatalf("%d keys, want 1", len(set.Keys))
	}
	k := set.Keys[0]
	if k["kty"] != "EC" || k["crv"] != "P-256" || k["alg"] != "ES256" || k["use"] != "sig" || k["kid"] == "" {
		t.Errorf("key = %v", k)
	}
	if _, ok := k["d"]; ok {
		t.Error("JWKS publishes the private key")
	}
}

func TestHealthAndMetrics(t *testing.T) {
	t.Parallel()
	is := start(t, demoConfig(t))
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, body := is.get(t, path)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d: %s", path, resp.StatusCode, body)
		}
	}
	is.token(t, oauth2.AuthStyleInHeader)
	if _, body := is.get(t, "/metrics"); !strings.Contains(string(body), "http_server_request") {
		t.Errorf("/metrics has no HTTP server metrics:\n%.500s", body)
	}
}

func TestRefusesToStartWithoutKeys(t *testing.T) {
	t.Parallel()
	kek, secretKey := keyFiles(t)
	tests := []struct {
		name    string
		edit    func(*app.Config)
		wantErr string
	}{
		{name: "no keys", edit: func(*app.Config) {}, wantErr: "-key-encryption-key-file is required"},
		{name: "no key-encryption key", edit: func(c *app.Config) { c.ClientSecretKeyFile = secretKey }, wantErr: "-key-encryption-key-file is required"},
		{name: "no client secret key", edit: func(c *app.Config) { c.KeyEncryptionKeyFile = kek }, wantErr: "-client-secret-key-file is required"},
		{name: "unreadable key-encryption key", edit: func(c *app.Config) {
			c.KeyEncryptionKeyFile = filepath.Join(t.TempDir(), "missing.key")
			c.ClientSecretKeyFile = secretKey
		}, wantErr: "read key-encryption key"},
		{name: "key-encryption key not 32 bytes", edit: func(c *app.Config) {
			c.KeyEncryptionKeyFile = writeFile(t, "kek-short", []byte("0123456789"))
			c.ClientSecretKeyFile = secretKey
		}, wantErr: "want exactly 32"},
		{name: "short client secret key", edit: func(c *app.Config) {
			c.KeyEncryptionKeyFile = kek
			c.ClientSecretKeyFile = writeFile(t, "short", []byte("0123456789"))
		}, wantErr: "need at least 32"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := defaults(t)
			cfg.Store = app.StoreMemory
			tc.edit(&cfg)
			a, err := app.New(t.Context(), cfg, slog.New(slog.DiscardHandler))
			if err == nil {
				_ = a.Close()
				t.Fatal("issuer started")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q does not mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestStartsWithKeyFilesWithoutDemoSeed(t *testing.T) {
	t.Parallel()
	kek, secretKey := keyFiles(t)
	cfg := defaults(t)
	cfg.Store = app.StoreMemory
	cfg.KeyEncryptionKeyFile = kek
	cfg.ClientSecretKeyFile = secretKey
	is := start(t, cfg)

	if strings.Contains(is.log.String(), "DEV ONLY: no -key-encryption-key-file") {
		t.Error("warned about an ephemeral key although a key file was given")
	}
	form := url.Values{"grant_type": {"client_credentials"}}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, is.srv.URL+"/oauth2/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("reporting-job", "reporting-job-secret")
	resp, err := is.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("demo client accepted without -demo: status %d", resp.StatusCode)
	}
}

func TestDemoWarnsAboutEphemeralKeys(t *testing.T) {
	t.Parallel()
	is := start(t, demoConfig(t))
	logs := is.log.String()
	for _, want := range []string{"DEV ONLY: no -key-encryption-key-file", "DEV ONLY: no -client-secret-key-file", "DEV ONLY: memory store", "DEV ONLY: demo seed loaded"} {
		if !strings.Contains(logs, want) {
			t.Errorf("no warning %q in logs", want)
		}
	}
}

func TestInvalidConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		edit    func(*app.Config)
		wantErr string
	}{
		{name: "issuer with trailing slash", edit: func(c *app.Config) { c.Issuer = "http://localhost:8080/" }, wantErr: "-issuer"},
		{name: "issuer not a URL", edit: func(c *app.Config) { c.Issuer = "localhost" }, wantErr: "-issuer"},
		{name: "issuer with query", edit: func(c *app.Config) { c.Issuer = "https://id.example?x=1" }, wantErr: "-issuer"},
		{name: "unknown store", edit: func(c *app.Config) { c.Store = "redis" }, wantErr: "-store"},
		{name: "postgres without DSN", edit: func(c *app.Config) { c.Store = app.StorePostgres }, wantErr: "-database-url"},
		{name: "zero lifespan", edit: func(c *app.Config) { c.AccessTokenLifespan = 0 }, wantErr: "-access-token-lifespan"},
		{name: "zero refresh lifespan", edit: func(c *app.Config) { c.RefreshTokenLifespan = 0 }, wantErr: "-refresh-token-lifespan"},
		{name: "long-lived codes", edit: func(c *app.Config) { c.AuthorizationCodeLifespan = time.Hour }, wantErr: "-authorization-code-lifespan"},
		{name: "no scope catalog", edit: func(c *app.Config) { c.ScopeCatalog = "" }, wantErr: "-scope-catalog"},
		{name: "missing scope catalog", edit: func(c *app.Config) { c.ScopeCatalog = "/nonexistent/data.json" }, wantErr: "scope"},
		{name: "unknown exporter", edit: func(c *app.Config) { c.Telemetry.Exporter = "jaeger" }, wantErr: "exporter"},
		{name: "PDP URL not http", edit: func(c *app.Config) { c.PDPURL = "pdp:8081" }, wantErr: "-pdp-url"},
		{name: "zero PDP timeout", edit: func(c *app.Config) { c.PDPTimeout = 0 }, wantErr: "-pdp-timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := demoConfig(t)
			tc.edit(&cfg)
			a, err := app.New(t.Context(), cfg, slog.New(slog.DiscardHandler))
			if err == nil {
				_ = a.Close()
				t.Fatal("issuer started")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q does not mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestConfigFromEnvironment(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"GATEHOUSE_ISSUER_ISSUER":                  "https://id.example.com",
		"GATEHOUSE_ISSUER_ACCESS_TOKEN_LIFESPAN":   "2m",
		"GATEHOUSE_ISSUER_KEY_ENCRYPTION_KEY_FILE": "/keys/kek",
		"GATEHOUSE_ISSUER_KEY_ROTATION_PERIOD":     "12h",
		"GATEHOUSE_ISSUER_KEY_PUBLISH_LEAD":        "15m",
		"GATEHOUSE_ISSUER_KEY_REFRESH_INTERVAL":    "30s",
		"GATEHOUSE_ISSUER_MAX_TOKEN_LIFETIME":      "2h",
		"GATEHOUSE_ISSUER_CLIENT_SECRET_KEY_FILE":  "/keys/secret",
		"GATEHOUSE_ISSUER_SCOPES_SUPPORTED":        "a:read b:write",
		"GATEHOUSE_ISSUER_DEMO":                    "true",
		"GATEHOUSE_ISSUER_PDP_URL":                 "http://pdp:8081",
		"GATEHOUSE_ISSUER_PDP_TIMEOUT":             "1s",
	}
	fs := flag.NewFlagSet("issuer", flag.ContinueOnError)
	var cfg app.Config
	cfg.RegisterFlags(fs)
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	if err := envflag.Parse(fs, "issuer", []string{"-store", "memory"}, lookup); err != nil {
		t.Fatal(err)
	}
	if cfg.Issuer != "https://id.example.com" || cfg.AccessTokenLifespan != 2*time.Minute ||
		cfg.KeyEncryptionKeyFile != "/keys/kek" || cfg.ClientSecretKeyFile != "/keys/secret" ||
		cfg.KeyRotationPeriod != 12*time.Hour || cfg.KeyPublishLead != 15*time.Minute ||
		cfg.KeyRefreshInterval != 30*time.Second || cfg.MaxTokenLifetime != 2*time.Hour ||
		!slices.Equal(cfg.ScopesSupported, []string{"a:read", "b:write"}) || !cfg.Demo || cfg.Store != app.StoreMemory ||
		cfg.HTTPAddr != ":8080" || cfg.PDPURL != "http://pdp:8081" || cfg.PDPTimeout != time.Second {
		t.Fatalf("config = %+v", cfg)
	}
}

// keyFiles writes a fresh key-encryption key and client-secret key to files.
func keyFiles(t *testing.T) (kek, secretKey string) {
	t.Helper()
	kekBytes := make([]byte, 32)
	if _, err := rand.Read(kekBytes); err != nil {
		t.Fatal(err)
	}
	return writeFile(t, "kek", kekBytes), writeFile(t, "secret.key", []byte("0123456789abcdef0123456789abcdef"))
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func BenchmarkIssueToken(b *testing.B) {
	cfg := demoConfig(b)
	a, err := app.New(b.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = a.Close() })
	h := a.Handler()
	body := url.Values{"grant_type": {"client_credentials"}, "scope": {"invoice:read"}}.Encode()
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("reporting-job:reporting-job-secret"))
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequestWithContext(b.Context(), http.MethodPost, "/oauth2/token", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", auth)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}
