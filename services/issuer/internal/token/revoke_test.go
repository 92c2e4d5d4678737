package token_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/token"
)

func TestRevokeOwnToken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		auth func(tok string) (string, url.Values)
	}{
		{name: "basic", auth: func(tok string) (string, url.Values) {
			return basicAuth("reporting-job", "reporting-job-secret"), url.Values{"token": {tok}}
		}},
		{name: "post", auth: func(tok string) (string, url.Values) {
			return "", url.Values{"token": {tok}, "client_id": {"reporting-job"}, "client_secret": {"reporting-job-secret"}}
		}},
		{name: "access_token hint", auth: func(tok string) (string, url.Values) {
			return basicAuth("reporting-job", "reporting-job-secret"), url.Values{"token": {tok}, "token_type_hint": {"access_token"}}
		}},
		// A wrong hint only orders the search (RFC 7009 §2.1).
		{name: "refresh_token hint", auth: func(tok string) (string, url.Values) {
			return basicAuth("reporting-job", "reporting-job-secret"), url.Values{"token": {tok}, "token_type_hint": {"refresh_token"}}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newOAuthServer(t)
			tok := s.issue(t, "reporting-job", "reporting-job-secret")
			kept := s.issue(t, "reporting-job", "reporting-job-secret")
			_, claims := s.claims(t, tok)
			if !s.active(t, tok) {
				t.Fatal("fresh token is inactive")
			}

			auth, form := tc.auth(tok)
			r := s.post(t, token.RevocationPath, auth, form)
			if r.status != http.StatusOK || len(r.raw) != 0 || r.header.Get("Cache-Control") != "no-store" {
				t.Fatalf("revoke: status %d, Cache-Control %q, body %q", r.status, r.header.Get("Cache-Control"), r.raw)
			}
			assertInactive(t, s.introspect(t, "reporting-job", "reporting-job-secret", tok))
			signature := tok[strings.LastIndexByte(tok, '.')+1:]
			if _, err := s.store.GetTokenSession(t.Context(), signature); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("session after revocation: %v, want ErrNotFound", err)
			}
			if !s.active(t, kept) {
				t.Error("revoking one token revoked another")
			}
			// Revoking again is harmless.
			if r := s.post(t, token.RevocationPath, auth, form); r.status != http.StatusOK {
				t.Errorf("second revoke: %d %s", r.status, r.raw)
			}

			lines := s.auditLines(t, "token revocation")
			if len(lines) != 2 {
				t.Fatalf("audit lines = %v, want 2", lines)
			}
			if l := lines[0]; l["outcome"] != "revoked" || l["jti"] != claims["jti"] || l["client_id"] != "reporting-job" || l["token_client_id"] != "reporting-job" {
				t.Errorf("audit line = %v", l)
			}
			if l := lines[1]; l["outcome"] != "unknown_token" {
				t.Errorf("second audit line = %v, want unknown_token", l)
			}
			s.assertNoSecretsLogged(t, tok, kept)
		})
	}
}

func TestRevokeUnknownToken(t *testing.T) {
	t.Parallel()
	s := newOAuthServer(t)
	foreign := newOAuthServer(t).issue(t, "reporting-job", "reporting-job-secret")
	for name, tok := range map[string]string{
		"garbage":         "not-a-token",
		"three dots":      "a.b.c",
		"foreign issuer":  foreign,
		"only whitespace": " ",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := s.post(t, token.RevocationPath, basicAuth("reporting-job", "reporting-job-secret"), url.Values{"token": {tok}})
			if r.status != http.StatusOK || len(r.raw) != 0 {
				t.Fatalf("status %d body %q, want 200 and no body", r.status, r.raw)
			}
		})
	}
}

// TestRevokeRefused proves a rejected revocation changes nothing: the token
// stays active.
func TestRevokeRefused(t *testing.T) {
	t.Parallel()
	s := newOAuthServer(t)
	tok := s.issue(t, "reporting-job", "reporting-job-secret")
	tests := []struct {
		name       string
		auth       string
		query      string
		body       string
		wantStatus int
		wantError  string
	}{
		// RFC 7009 §2.1: the token was not issued to the caller.
		{name: "another client's token", auth: basicAuth("billing-bot", "billing-bot-secret"), body: form("token", tok), wantStatus: 400, wantError: "unauthorized_client"},
		{name: "another client's token, public caller", body: form("token", tok, "client_id", "invoice-web"), wantStatus: 400, wantError: "unauthorized_client"},
		{name: "no client authentication", body: form("token", tok), wantStatus: 401, wantError: "invalid_client"},
		{name: "wrong secret basic", auth: basicAuth("reporting-job", "wrong"), body: form("token", tok), wantStatus: 401, wantError: "invalid_client"},
		{name: "wrong secret post", body: form("token", tok, "client_id", "reporting-job", "client_secret", "wrong"), wantStatus: 401, wantError: "invalid_client"},
		{name: "unknown client", auth: basicAuth("nobody", "x"), body: form("token", tok), wantStatus: 401, wantError: "invalid_client"},
		{name: "bearer token as credentials", auth: "Bearer " + tok, body: form("token", tok), wantStatus: 401, wantError: "invalid_client"},
		{name: "public client with a secret", body: form("token", tok, "client_id", "invoice-web", "client_secret", "x"), wantStatus: 401, wantError: "invalid_client"},
		{name: "missing token", auth: basicAuth("reporting-job", "reporting-job-secret"), body: form("token_type_hint", "access_token"), wantStatus: 400, wantError: "invalid_request"},
		{name: "empty token", auth: basicAuth("reporting-job", "reporting-job-secret"), body: form("token", ""), wantStatus: 400, wantError: "invalid_request"},
		{name: "empty body", auth: basicAuth("reporting-job", "reporting-job-secret"), body: "", wantStatus: 400, wantError: "invalid_request"},
		{name: "duplicate token", auth: basicAuth("reporting-job", "reporting-job-secret"), body: form("token", tok, "token", tok), wantStatus: 400, wantError: "invalid_request"},
		{name: "duplicate client_id", body: form("token", tok, "client_id", "reporting-job", "client_id", "reporting-job", "client_secret", "reporting-job-secret"), wantStatus: 400, wantError: "invalid_request"},
		{name: "token in the query only", auth: basicAuth("reporting-job", "reporting-job-secret"), query: form("token", tok), body: form("token_type_hint", "access_token"), wantStatus: 400, wantError: "invalid_request"},
	}
	t.Run("cases", func(t *testing.T) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				path := token.RevocationPath
				if tc.query != "" {
					path += "?" + tc.query
				}
				r := s.do(t, http.MethodPost, path, "application/x-www-form-urlencoded", tc.auth, tc.body)
				assertOAuthError(t, r, tc.wantStatus, tc.wantError)
			})
		}
	})
	// Checked once every case has run.
	if !s.active(t, tok) {
		t.Fatal("a refused revocation revoked the token")
	}
	refused := 0
	for _, l := range s.auditLines(t, "token revocation") {
		if l["outcome"] != "refused_other_client" || l["token_client_id"] != "reporting-job" || l["jti"] == "" {
			t.Errorf("audit line = %v, want refused_other_client with the token's jti and owner", l)
		}
		refused++
	}
	if refused != 2 {
		t.Errorf("%d refused_other_client audit lines, want 2", refused)
	}
	s.assertNoSecretsLogged(t, tok)
}

func form(kv ...string) string {
	v := url.Values{}
	for i := 0; i < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v.Encode()
}

// TestMalformedRequests runs the bad-input rules both endpoints share.
func TestMalformedRequests(t *testing.T) {
	t.Parallel()
	s := newOAuthServer(t)
	tok := s.issue(t, "reporting-job", "reporting-job-secret")
	auth := basicAuth("reporting-job", "reporting-job-secret")
	tests := []struct {
		name        string
		method      string
		contentType string
		body        string
		wantStatus  int
	}{
		{name: "GET", method: http.MethodGet, wantStatus: 405},
		{name: "PUT", method: http.MethodPut, contentType: "application/x-www-form-urlencoded", body: form("token", tok), wantStatus: 405},
		{name: "json body", method: http.MethodPost, contentType: "application/json", body: `{"token":"` + tok + `"}`, wantStatus: 400},
		{name: "no content type", method: http.MethodPost, body: form("token", tok), wantStatus: 400},
		{name: "malformed body", method: http.MethodPost, contentType: "application/x-www-form-urlencoded", body: "token=%zz", wantStatus: 400},
		{name: "oversized body", method: http.MethodPost, contentType: "application/x-www-form-urlencoded", body: form("token", tok, "pad", strings.Repeat("a", token.MaxBodyBytes)), wantStatus: 413},
	}
	t.Run("cases", func(t *testing.T) {
		for _, path := range []string{token.IntrospectionPath, token.RevocationPath} {
			for _, tc := range tests {
				t.Run(path+"/"+tc.name, func(t *testing.T) {
					t.Parallel()
					r := s.do(t, tc.method, path, tc.contentType, auth, tc.body)
					assertOAuthError(t, r, tc.wantStatus, "invalid_request")
					if tc.wantStatus == 405 && r.header.Get("Allow") != http.MethodPost {
						t.Errorf("405 without Allow: POST")
					}
				})
			}
		}
	})
	// Checked once every case has run.
	if !s.active(t, tok) {
		t.Fatal("a malformed request revoked the token")
	}
	if lines := s.auditLines(t, "token revocation"); len(lines) != 0 {
		t.Errorf("malformed requests reached the revocation handler: %v", lines)
	}
}

func TestRevokeStoreDown(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	s := serveOAuth(t, h, failingStore{Store: h.store})
	tok := s.issue(t, "reporting-job", "reporting-job-secret")
	r := s.post(t, token.RevocationPath, basicAuth("reporting-job", "reporting-job-secret"), url.Values{"token": {tok}})
	// RFC 7009 §2.2.1: the caller must assume the token still exists.
	assertOAuthError(t, r, http.StatusServiceUnavailable, "temporarily_unavailable")
}

func TestConcurrentRevocation(t *testing.T) {
	t.Parallel()
	s := newOAuthServer(t)
	tok := s.issue(t, "billing-bot", "billing-bot-secret")
	const workers = 8
	statuses := make(chan int, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			statuses <- s.post(t, token.RevocationPath, basicAuth("billing-bot", "billing-bot-secret"), url.Values{"token": {tok}}).status
		})
	}
	wg.Wait()
	close(statuses)
	for st := range statuses {
		if st != http.StatusOK {
			t.Errorf("concurrent revoke status %d, want 200", st)
		}
	}
	assertInactive(t, s.introspect(t, "billing-bot", "billing-bot-secret", tok))
	revoked := 0
	for _, l := range s.auditLines(t, "token revocation") {
		if l["outcome"] == "revoked" {
			revoked++
		}
	}
	if revoked < 1 {
		t.Errorf("no revoked audit line")
	}
}

// flakyObserver fails its first publication of a revocation, as when the
// database restarts under it, and records the ones that succeed.
type flakyObserver struct {
	token.NopObserver
	mu        sync.Mutex
	failed    bool
	published []token.Revocation
}

func (o *flakyObserver) Revoked(_ context.Context, r token.Revocation) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.failed {
		o.failed = true
		return errors.New("revocation log unavailable")
	}
	o.published = append(o.published, r)
	return nil
}

// TestRevocationIsNeverLostToAFailedPublication: when publishing a
// revocation fails, the client gets 503, the token stays revoked-pending
// (still active, RFC 7009 section 2.2.1), and the client's retry publishes
// it. Deleting the session first would make the retry answer 200 with
// nothing published: a revocation no gateway ever hears of.
func TestRevocationIsNeverLostToAFailedPublication(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	obs := &flakyObserver{}
	s := serveOAuth(t, h, h.store, func(c *token.Config) { c.Observer = obs })
	tok := s.issue(t, "reporting-job", "reporting-job-secret")
	_, claims := s.claims(t, tok)
	auth, form := basicAuth("reporting-job", "reporting-job-secret"), url.Values{"token": {tok}}

	assertOAuthError(t, s.post(t, token.RevocationPath, auth, form), http.StatusServiceUnavailable, "temporarily_unavailable")
	if !s.active(t, tok) {
		t.Fatal("a revocation that failed to publish ended the token's session: its retry would publish nothing")
	}
	if r := s.post(t, token.RevocationPath, auth, form); r.status != http.StatusOK {
		t.Fatalf("retry: %d %s", r.status, r.raw)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.published) != 1 || obs.published[0].ID != claims["jti"] {
		t.Fatalf("published %+v, want the token's jti %v once", obs.published, claims["jti"])
	}
	assertInactive(t, s.introspect(t, "reporting-job", "reporting-job-secret", tok))
}
