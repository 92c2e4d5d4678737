package token_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	xoauth2 "golang.org/x/oauth2"

	"github.com/gatehouse/gatehouse/services/issuer/internal/client"
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

// codeGrant runs the authorization-code grant of the public client
// invoice-web (PKCE S256) against s: the code comes from a provider over
// the server's configuration cfg, as the authorize endpoint would issue it
// after login and consent, and is exchanged at s's token endpoint. It
// returns the client's configuration and its first tokens (an access and
// a refresh token).
func (s *oauthServer) codeGrant(t *testing.T, cfg token.Config) (*xoauth2.Config, *xoauth2.Token) {
	t.Helper()
	p, err := token.NewProvider(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const redirect = "http://127.0.0.1/callback"
	verifier := xoauth2.GenerateVerifier()
	q := url.Values{
		"response_type": {"code"}, "client_id": {"invoice-web"}, "redirect_uri": {redirect},
		"scope": {"offline_access invoice:read"}, "state": {"state-of-the-test-client"},
		"code_challenge": {xoauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"},
	}
	req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, issuer+"/oauth2/authorize?"+q.Encode(), nil)
	ar, err := p.NewAuthorizeRequest(t.Context(), req)
	if err != nil {
		t.Fatalf("authorize request: %v", err)
	}
	for _, scope := range ar.GetRequestedScopes() {
		ar.GrantScope(scope)
	}
	sess := token.NewSession()
	sess.Subject, sess.JWTClaims.Subject = "bob", "bob"
	resp, err := p.NewAuthorizeResponse(t.Context(), ar, sess)
	if err != nil {
		t.Fatalf("authorize response: %v", err)
	}
	oc := &xoauth2.Config{
		ClientID:    "invoice-web",
		Endpoint:    xoauth2.Endpoint{TokenURL: s.url + token.Path, AuthStyle: xoauth2.AuthStyleInParams},
		RedirectURL: redirect,
		Scopes:      []string{"offline_access", "invoice:read"},
	}
	tok, err := oc.Exchange(s.clientCtx(t), resp.GetCode(), xoauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("code exchange: %v", err)
	}
	if tok.RefreshToken == "" {
		t.Fatal("code exchange issued no refresh token")
	}
	return oc, tok
}

// refresh redeems refreshToken at s's token endpoint.
func (s *oauthServer) refresh(t *testing.T, oc *xoauth2.Config, refreshToken string) (*xoauth2.Token, error) {
	t.Helper()
	return oc.TokenSource(s.clientCtx(t), &xoauth2.Token{RefreshToken: refreshToken}).Token()
}

func (s *oauthServer) clientCtx(t *testing.T) context.Context {
	return context.WithValue(t.Context(), xoauth2.HTTPClient, s.http)
}

// sessionLive reports whether the access token tok still has its session.
func (s *oauthServer) sessionLive(t *testing.T, tok string) bool {
	t.Helper()
	_, err := s.store.GetTokenSession(t.Context(), tok[strings.LastIndexByte(tok, '.')+1:])
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// summary returns what o published: per revocation, its kind and the
// sorted jtis of its tokens.
func (o *flakyObserver) summary() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for _, r := range o.published {
		var jtis []string
		for _, rec := range r.Tokens {
			jtis = append(jtis, rec.JTI)
		}
		slices.Sort(jtis)
		out = append(out, r.Kind+" "+strings.Join(jtis, ","))
	}
	return out
}

// TestRefreshTokenRevocationIsNeverLostToAFailedPublication: revoking a
// refresh token (RFC 7009) ends its grant, every access token of the
// family included. When publishing that fails, the client gets 503 and
// nothing is revoked yet; its retry publishes the family's access tokens.
// Revoking first would leave the retry a revoked grant with no token to
// publish: 200, and no gateway ever told.
func TestRefreshTokenRevocationIsNeverLostToAFailedPublication(t *testing.T) {
	t.Parallel()
	s, obs, oc, first, second, want := refreshedFamily(t)
	form := url.Values{"token": {second.RefreshToken}, "token_type_hint": {"refresh_token"}, "client_id": {"invoice-web"}}

	assertOAuthError(t, s.post(t, token.RevocationPath, "", form), http.StatusServiceUnavailable, "temporarily_unavailable")
	for _, at := range []string{first.AccessToken, second.AccessToken} {
		if !s.sessionLive(t, at) {
			t.Fatal("a revocation that failed to publish ended an access token's session: its retry would publish nothing")
		}
	}
	if r := s.post(t, token.RevocationPath, "", form); r.status != http.StatusOK {
		t.Fatalf("retry: %d %s", r.status, r.raw)
	}
	if got := obs.summary(); !slices.Equal(got, want) {
		t.Fatalf("published %q, want %q", got, want)
	}
	for _, at := range []string{first.AccessToken, second.AccessToken} {
		if s.sessionLive(t, at) {
			t.Fatal("an access token of the revoked family is still live")
		}
	}
	if _, err := s.refresh(t, oc, second.RefreshToken); !isInvalidGrant(err) {
		t.Fatalf("refresh with the revoked refresh token: %v, want invalid_grant", err)
	}
	// Replays of the dead family publish nothing more.
	if r := s.post(t, token.RevocationPath, "", form); r.status != http.StatusOK {
		t.Fatalf("revoking again: %d %s", r.status, r.raw)
	}
	if got := obs.summary(); !slices.Equal(got, want) {
		t.Fatalf("after replays published %q, want %q", got, want)
	}
}

// TestReuseRevocationIsNeverLostToAFailedPublication: a rotated refresh
// token presented again is reuse, and fosite revokes the family with two
// storage calls, after deleting the reused token's record (so replaying it
// again cannot help). When publishing fails, the family must be dead all
// the same, and its access tokens left for the next use of the family to
// publish; once published, fosite's second call and later replays publish
// nothing more (no flooding).
func TestReuseRevocationIsNeverLostToAFailedPublication(t *testing.T) {
	t.Parallel()
	s, obs, oc, first, second, want := refreshedFamily(t)

	if _, err := s.refresh(t, oc, first.RefreshToken); err == nil {
		t.Fatal("a reused refresh token was redeemed")
	}
	if got := obs.summary(); len(got) != 0 {
		t.Fatalf("published %q although publishing failed", got)
	}
	if !s.sessionLive(t, second.AccessToken) {
		t.Fatal("an access token's session ended although publishing failed: nothing is left to publish it")
	}
	// The family is dead: its newest refresh token is refused, and that
	// use publishes what the failed publication left.
	if _, err := s.refresh(t, oc, second.RefreshToken); !isInvalidGrant(err) {
		t.Fatalf("refresh in the family after reuse: %v, want invalid_grant", err)
	}
	if got := obs.summary(); !slices.Equal(got, want) {
		t.Fatalf("published %q, want %q once", got, want)
	}
	for _, at := range []string{first.AccessToken, second.AccessToken} {
		if s.sessionLive(t, at) {
			t.Fatal("an access token of the revoked family is still live")
		}
	}
	for _, rt := range []string{second.RefreshToken, first.RefreshToken} {
		if _, err := s.refresh(t, oc, rt); !isInvalidGrant(err) {
			t.Fatalf("refresh in the revoked family: %v, want invalid_grant", err)
		}
	}
	if got := obs.summary(); !slices.Equal(got, want) {
		t.Fatalf("after replays published %q, want %q once", got, want)
	}
}

func isInvalidGrant(err error) bool {
	re, ok := errors.AsType[*xoauth2.RetrieveError](err)
	return ok && re.ErrorCode == "invalid_grant"
}

// authStoreDown fails client lookups (clients) or the recording of client
// assertion jtis (assertions), as an unreachable database would.
type authStoreDown struct {
	token.Store
	clients, assertions bool
}

func (s authStoreDown) GetClient(ctx context.Context, id string) (*client.Client, error) {
	if s.clients {
		return nil, errStoreDown
	}
	return s.Store.GetClient(ctx, id)
}

func (s authStoreDown) UseClientAssertion(ctx context.Context, jti string, exp time.Time) error {
	if s.assertions {
		return errStoreDown
	}
	return s.Store.UseClientAssertion(ctx, jti, exp)
}

// TestClientAuthenticationStoreDown: a store outage while the client
// authenticates is not the client's fault. The token, introspection and
// revocation endpoints answer 503 temporarily_unavailable, which tells the
// client to retry (RFC 7009 §2.2.1), not 401 invalid_client (fix your
// credentials) nor 500.
func TestClientAuthenticationStoreDown(t *testing.T) {
	t.Parallel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	basic := basicAuth("reporting-job", "reporting-job-secret")
	withAssertion := func(t *testing.T, form url.Values) url.Values {
		t.Helper()
		form.Set("client_assertion_type", assertionType)
		form.Set("client_assertion", assertion{
			iss: "key-job", sub: "key-job", jti: rand.Text(), aud: []string{issuer + token.Path},
			exp: time.Minute, alg: jose.ES256, key: key,
		}.sign(t))
		return form
	}
	tests := []struct {
		name string
		down authStoreDown
		path string
		auth string
		form func(t *testing.T) url.Values
	}{
		{name: "token, client_secret_basic", down: authStoreDown{clients: true}, path: token.Path, auth: basic,
			form: func(*testing.T) url.Values { return url.Values{"grant_type": {"client_credentials"}} }},
		{name: "token, public client", down: authStoreDown{clients: true}, path: token.Path,
			form: func(*testing.T) url.Values {
				return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"ory_rt_x.y"}, "client_id": {"invoice-web"}}
			}},
		{name: "token, private_key_jwt, client lookup", down: authStoreDown{clients: true}, path: token.Path,
			form: func(t *testing.T) url.Values {
				return withAssertion(t, url.Values{"grant_type": {"client_credentials"}})
			}},
		{name: "token, private_key_jwt, jti record", down: authStoreDown{assertions: true}, path: token.Path,
			form: func(t *testing.T) url.Values {
				return withAssertion(t, url.Values{"grant_type": {"client_credentials"}})
			}},
		{name: "introspection", down: authStoreDown{clients: true}, path: token.IntrospectionPath, auth: basic,
			form: func(*testing.T) url.Values { return url.Values{"token": {"a.b.c"}} }},
		{name: "revocation", down: authStoreDown{clients: true}, path: token.RevocationPath, auth: basic,
			form: func(*testing.T) url.Values { return url.Values{"token": {"a.b.c"}} }},
		{name: "revocation, public client", down: authStoreDown{clients: true}, path: token.RevocationPath,
			form: func(*testing.T) url.Values { return url.Values{"token": {"a.b.c"}, "client_id": {"invoice-web"}} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			keyClient(t, h, "key-job", &key.PublicKey)
			down := tc.down
			down.Store = h.store
			s := serveOAuth(t, h, down)
			assertOAuthError(t, s.post(t, tc.path, tc.auth, tc.form(t)), http.StatusServiceUnavailable, "temporarily_unavailable")
		})
	}
}

// refreshedFamily serves the endpoints with a flakyObserver, signs in by
// the code grant and refreshes once; want is the one publication that
// revoking the family must make: its two access tokens.
func refreshedFamily(t *testing.T) (s *oauthServer, obs *flakyObserver, oc *xoauth2.Config, first, second *xoauth2.Token, want []string) {
	t.Helper()
	h := newHarness(t)
	obs = &flakyObserver{}
	var cfg token.Config
	s = serveOAuth(t, h, h.store, func(c *token.Config) { c.Observer = obs; cfg = *c })
	oc, first = s.codeGrant(t, cfg)
	second, err := s.refresh(t, oc, first.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	_, c1 := s.claims(t, first.AccessToken)
	_, c2 := s.claims(t, second.AccessToken)
	jtis := []string{c1["jti"].(string), c2["jti"].(string)}
	slices.Sort(jtis)
	return s, obs, oc, first, second, []string{token.RevocationRefreshFamily + " " + strings.Join(jtis, ",")}
}
