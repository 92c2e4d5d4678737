package token_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	xoauth2 "golang.org/x/oauth2"

	"github.com/gatehouse/gatehouse/services/issuer/internal/client"
	"github.com/gatehouse/gatehouse/services/issuer/internal/token"
	"github.com/gatehouse/gatehouse/services/issuer/internal/tokensession"
)

// lockedBuffer collects log output written from server goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the JSON log records written so far.
func (b *lockedBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(b.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %s", line)
		}
		out = append(out, rec)
	}
	return out
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// oauthServer serves the token, introspection and revocation endpoints on
// one store and key, logging to logs.
type oauthServer struct {
	*harness
	url  string
	http *http.Client
	logs *lockedBuffer
}

func newOAuthServer(t *testing.T) *oauthServer {
	t.Helper()
	h := newHarness(t)
	return serveOAuth(t, h, h.store)
}

// serveOAuth mounts the three endpoints on st (which may wrap h.store) with
// h's key and hasher; edits change the configuration.
func serveOAuth(t *testing.T, h *harness, st token.Store, edits ...func(*token.Config)) *oauthServer {
	t.Helper()
	logs := &lockedBuffer{}
	cfg := token.Config{
		Issuer:              issuer,
		AccessTokenLifespan: 5 * time.Minute,
		Key:                 h.key,
		Hasher:              h.hasher,
		TokenHMACKey:        testHMACKey,
		Store:               st,
		Logger:              slog.New(slog.NewJSONHandler(logs, nil)),
	}
	for _, edit := range edits {
		edit(&cfg)
	}
	provider, err := token.NewProvider(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tokenEndpoint := token.NewEndpoint(provider)
	introspection := token.NewIntrospectionEndpoint(provider)
	revocation := token.NewRevocationEndpoint(provider)
	mux := http.NewServeMux()
	mux.Handle(token.Path, tokenEndpoint)
	mux.Handle(token.IntrospectionPath, introspection)
	mux.Handle(token.RevocationPath, revocation)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &oauthServer{harness: h, url: srv.URL, http: srv.Client(), logs: logs}
}

// issue gets a real access token for id through golang.org/x/oauth2's
// client_credentials flow.
func (s *oauthServer) issue(t *testing.T, id, secret string, scopes ...string) string {
	t.Helper()
	cc := s.clientCredentials(id, secret, xoauth2.AuthStyleInHeader, scopes...)
	cc.TokenURL = s.url + token.Path
	tok, err := cc.Token(context.WithValue(t.Context(), xoauth2.HTTPClient, s.http))
	if err != nil {
		t.Fatalf("Token(%s): %v", id, err)
	}
	return tok.AccessToken
}

// addClient registers a confidential client_credentials client.
func (s *oauthServer) addClient(t *testing.T, id, secret string, audiences []string, lifespan time.Duration) {
	t.Helper()
	hash, err := s.hasher.Hash(t.Context(), []byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.store.UpsertClient(t.Context(), &client.Client{
		ID:                  id,
		SecretHash:          hash,
		Tenant:              "globex",
		GrantTypes:          []string{client.GrantClientCredentials},
		Scopes:              []string{"invoice:read"},
		Audiences:           audiences,
		AccessTokenLifespan: lifespan,
	}); err != nil {
		t.Fatal(err)
	}
}

type response struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

// post sends form to path with an optional Authorization header.
func (s *oauthServer) post(t *testing.T, path, auth string, form url.Values) response {
	t.Helper()
	return s.do(t, http.MethodPost, path, "application/x-www-form-urlencoded", auth, form.Encode())
}

func (s *oauthServer) do(t *testing.T, method, path, contentType, auth, body string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, s.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := response{status: resp.StatusCode, header: resp.Header, raw: raw}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out.body); err != nil {
			t.Fatalf("%s %s: body is not JSON: %q", method, path, raw)
		}
	}
	return out
}

// introspect asks as id (client_secret_basic) about tok.
func (s *oauthServer) introspect(t *testing.T, id, secret, tok string) response {
	t.Helper()
	return s.post(t, token.IntrospectionPath, basicAuth(id, secret), url.Values{"token": {tok}})
}

// active reports whether tok's owner still sees tok as active.
func (s *oauthServer) active(t *testing.T, tok string) bool {
	t.Helper()
	r := s.introspect(t, "reporting-job", "reporting-job-secret", tok)
	if r.status != http.StatusOK {
		t.Fatalf("introspection status %d: %s", r.status, r.raw)
	}
	return r.body["active"] == true
}

// assertNoSecretsLogged fails if any log line holds a token or secret.
func (s *oauthServer) assertNoSecretsLogged(t *testing.T, secrets ...string) {
	t.Helper()
	logs := s.logs.String()
	for _, secret := range append(secrets, "reporting-job-secret", "billing-bot-secret") {
		if secret != "" && strings.Contains(logs, secret) {
			t.Errorf("logs hold a token or secret: %s", logs)
		}
	}
}

// auditLines returns the log records with message msg.
func (s *oauthServer) auditLines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, rec := range s.logs.lines(t) {
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

func basicAuth(id, secret string) string {
	return "Basic " + b64(url.QueryEscape(id)+":"+url.QueryEscape(secret))
}

// assertInactive fails unless r is exactly {"active": false}.
func assertInactive(t *testing.T, r response) {
	t.Helper()
	if r.status != http.StatusOK || strings.TrimSpace(string(r.raw)) != `{"active":false}` {
		t.Fatalf("status %d body %s, want 200 {\"active\":false}", r.status, r.raw)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", r.header.Get("Cache-Control"))
	}
}

// assertOAuthError fails unless r is an RFC 6749 §5.2 error with status and
// code, free of token information.
func assertOAuthError(t *testing.T, r response, status int, code string) {
	t.Helper()
	if r.status != status || r.body["error"] != code {
		t.Fatalf("status %d body %s, want %d %s", r.status, r.raw, status, code)
	}
	if d, _ := r.body["error_description"].(string); d == "" {
		t.Errorf("no error_description: %s", r.raw)
	}
	for k := range r.body {
		if k != "error" && k != "error_description" {
			t.Errorf("unexpected member %q in error body %s", k, r.raw)
		}
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", r.header.Get("Cache-Control"))
	}
	if wa := r.header.Get("WWW-Authenticate"); (status == http.StatusUnauthorized) != strings.HasPrefix(wa, "Basic ") {
		t.Errorf("status %d with WWW-Authenticate %q", status, wa)
	}
}

// failingStore fails every token-session lookup, as an unreachable database.
type failingStore struct {
	token.Store
}

var errStoreDown = errors.New("connection refused")

func (failingStore) GetTokenSession(context.Context, string) (tokensession.Record, error) {
	return tokensession.Record{}, errStoreDown
}

func (failingStore) DeleteTokenSession(context.Context, string) error { return errStoreDown }
