package token_test

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/demoseed"
	"github.com/gatehouse/gatehouse/services/issuer/internal/token"
)

func TestIntrospectActive(t *testing.T) {
	t.Parallel()
	s := newOAuthServer(t)
	// other-api-rs is a resource server for another API: it shares no
	// audience with billing-bot's token.
	s.addClient(t, "other-api-rs", "other-api-rs-secret", []string{"other-api"}, 0)
	tok := s.issue(t, "billing-bot", "billing-bot-secret")
	_, claims := s.claims(t, tok)

	tests := []struct {
		name       string
		auth       string
		form       url.Values
		wantActive bool
	}{
		{name: "owner basic", auth: basicAuth("billing-bot", "billing-bot-secret"), form: url.Values{"token": {tok}}, wantActive: true},
		{name: "owner post", form: url.Values{"token": {tok}, "client_id": {"billing-bot"}, "client_secret": {"billing-bot-secret"}}, wantActive: true},
		{name: "owner with access_token hint", auth: basicAuth("billing-bot", "billing-bot-secret"), form: url.Values{"token": {tok}, "token_type_hint": {"access_token"}}, wantActive: true},
		{name: "owner with refresh_token hint", auth: basicAuth("billing-bot", "billing-bot-secret"), form: url.Values{"token": {tok}, "token_type_hint": {"refresh_token"}}, wantActive: true},
		{name: "other client, same audience", auth: basicAuth("reporting-job", "reporting-job-secret"), form: url.Values{"token": {tok}}, wantActive: true},
		{name: "confidential client without the grant, same audience", auth: basicAuth("support-console", "support-console-secret"), form: url.Values{"token": {tok}}, wantActive: true},
		{name: "other client, other audience", auth: basicAuth("other-api-rs", "other-api-rs-secret"), form: url.Values{"token": {tok}}},
	}
	t.Run("cases", func(t *testing.T) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				r := s.post(t, token.IntrospectionPath, tc.auth, tc.form)
				if !tc.wantActive {
					assertInactive(t, r)
					return
				}
				if r.status != http.StatusOK || r.header.Get("Cache-Control") != "no-store" ||
					!strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
					t.Fatalf("status %d, headers %v, body %s", r.status, r.header, r.raw)
				}
				want := map[string]any{
					"active":     true,
					"scope":      "invoice:read invoice:write",
					"client_id":  "billing-bot",
					"sub":        "billing-bot",
					"aud":        []any{demoseed.Audience},
					"iss":        issuer,
					"exp":        claims["exp"],
					"iat":        claims["iat"],
					"nbf":        claims["nbf"],
					"jti":        claims["jti"],
					"token_type": "Bearer",
					"tenant":     "acme",
				}
				if len(r.body) != len(want) {
					t.Errorf("members = %v, want exactly %v", keys(r.body), keys(want))
				}
				for k, v := range want {
					if got := r.body[k]; !equalJSON(got, v) {
						t.Errorf("%s = %v, want %v", k, got, v)
					}
				}
			})
		}
	})
	// Checked once every case has run.
	lines := s.auditLines(t, "token introspected")
	if len(lines) != len(tests) {
		t.Errorf("%d audit lines, want %d", len(lines), len(tests))
	}
	for _, l := range lines {
		if l["jti"] != claims["jti"] || l["token_client_id"] != "billing-bot" {
			t.Errorf("audit line %v lacks the token's jti or owner", l)
		}
		if l["client_id"] == "other-api-rs" && l["outcome"] != "not_permitted" {
			t.Errorf("other-api-rs outcome = %v, want not_permitted", l["outcome"])
		}
	}
	s.assertNoSecretsLogged(t, tok, "other-api-rs-secret", "support-console-secret")
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func equalJSON(a, b any) bool {
	as, aok := a.([]any)
	bs, bok := b.([]any)
	if aok || bok {
		return aok && bok && slices.Equal(as, bs)
	}
	return a == b
}

func TestIntrospectInactive(t *testing.T) {
	t.Parallel()
	s := newOAuthServer(t)
	tok := s.issue(t, "reporting-job", "reporting-job-secret")
	other := s.issue(t, "billing-bot", "billing-bot-secret")
	parts := strings.Split(tok, ".")
	otherParts := strings.Split(other, ".")

	// A token from another issuer instance: well formed, signed, never
	// stored here.
	foreign := newOAuthServer(t).issue(t, "reporting-job", "reporting-job-secret")

	revoked := s.issue(t, "reporting-job", "reporting-job-secret")
	if r := s.post(t, token.RevocationPath, basicAuth("reporting-job", "reporting-job-secret"), url.Values{"token": {revoked}}); r.status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.status, r.raw)
	}

	tests := []struct {
		name  string
		token string
	}{
		{name: "garbage", token: "not-a-token"},
		{name: "three dots", token: "a.b.c"},
		{name: "foreign issuer", token: foreign},
		{name: "revoked", token: revoked},
		// billing-bot's claims under reporting-job's signature: the session
		// is found by signature, but the JWT no longer verifies.
		{name: "payload swapped", token: parts[0] + "." + otherParts[1] + "." + parts[2]},
		{name: "signature only", token: "." + "." + parts[2]},
	}
	t.Run("cases", func(t *testing.T) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				assertInactive(t, s.introspect(t, "reporting-job", "reporting-job-secret", tc.token))
			})
		}
	})
	// Checked once every case has run.
	if !s.active(t, tok) {
		t.Error("the genuine token became inactive")
	}
	for _, l := range s.auditLines(t, "token introspected") {
		if l["outcome"] == "inactive" && l["reason"] == "" {
			t.Errorf("inactive audit line without reason: %v", l)
		}
	}
	s.assertNoSecretsLogged(t, tok, other, revoked, foreign)
}

// TestIntrospectExpired proves the issuer itself enforces exp: the token is
// active, then inactive once its lifetime is over, with its session still
// stored.
func TestIntrospectExpired(t *testing.T) {
	t.Parallel()
	s := newOAuthServer(t)
	s.addClient(t, "short-lived", "short-lived-secret", []string{demoseed.Audience}, 2*time.Second)
	tok := s.issue(t, "short-lived", "short-lived-secret")
	_, claims := s.claims(t, tok)
	exp := time.Unix(int64(claims["exp"].(float64)), 0)

	if r := s.introspect(t, "short-lived", "short-lived-secret", tok); r.body["active"] != true {
		t.Fatalf("fresh token: %s", r.raw)
	}
	time.Sleep(time.Until(exp.Add(1100 * time.Millisecond)))
	assertInactive(t, s.introspect(t, "short-lived", "short-lived-secret", tok))
	signature := tok[strings.LastIndexByte(tok, '.')+1:]
	if _, err := s.store.GetTokenSession(t.Context(), signature); err != nil {
		t.Fatalf("session gone (%v): the test would not prove expiry enforcement", err)
	}
	lines := s.auditLines(t, "token introspected")
	if last := lines[len(lines)-1]; last["outcome"] != "inactive" || last["reason"] != "token has expired" {
		t.Errorf("audit line = %v, want inactive because expired", last)
	}
}

func TestIntrospectRejected(t *testing.T) {
	t.Parallel()
	s := newOAuthServer(t)
	tok := s.issue(t, "reporting-job", "reporting-job-secret")
	tests := []struct {
		name       string
		auth       string
		form       url.Values
		wantStatus int
		wantError  string
	}{
		{name: "no client authentication", form: url.Values{"token": {tok}}, wantStatus: 401, wantError: "invalid_client"},
		{name: "wrong secret basic", auth: basicAuth("reporting-job", "wrong"), form: url.Values{"token": {tok}}, wantStatus: 401, wantError: "invalid_client"},
		{name: "wrong secret post", form: url.Values{"token": {tok}, "client_id": {"reporting-job"}, "client_secret": {"wrong"}}, wantStatus: 401, wantError: "invalid_client"},
		{name: "unknown client", auth: basicAuth("nobody", "reporting-job-secret"), form: url.Values{"token": {tok}}, wantStatus: 401, wantError: "invalid_client"},
		{name: "public client", form: url.Values{"token": {tok}, "client_id": {"invoice-web"}}, wantStatus: 401, wantError: "invalid_client"},
		{name: "bearer token as credentials", auth: "Bearer " + tok, form: url.Values{"token": {tok}}, wantStatus: 401, wantError: "invalid_client"},
		{name: "client assertion", form: url.Values{"token": {tok}, "client_id": {"reporting-job"}, "client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {"a.b.c"}}, wantStatus: 401, wantError: "invalid_client"},
		{name: "missing token", auth: basicAuth("reporting-job", "reporting-job-secret"), form: url.Values{"token_type_hint": {"access_token"}}, wantStatus: 400, wantError: "invalid_request"},
		{name: "empty token", auth: basicAuth("reporting-job", "reporting-job-secret"), form: url.Values{"token": {""}}, wantStatus: 400, wantError: "invalid_request"},
		{name: "duplicate token", auth: basicAuth("reporting-job", "reporting-job-secret"), form: url.Values{"token": {tok, "x"}}, wantStatus: 400, wantError: "invalid_request"},
		{name: "basic and post together", auth: basicAuth("reporting-job", "reporting-job-secret"), form: url.Values{"token": {tok}, "client_id": {"reporting-job"}, "client_secret": {"reporting-job-secret"}}, wantStatus: 400, wantError: "invalid_request"},
	}
	t.Run("cases", func(t *testing.T) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				r := s.post(t, token.IntrospectionPath, tc.auth, tc.form)
				assertOAuthError(t, r, tc.wantStatus, tc.wantError)
			})
		}
	})
	// Checked once every case has run.
	if got := s.auditLines(t, "token introspected"); len(got) != 0 {
		t.Errorf("rejected requests wrote introspection audit lines: %v", got)
	}
	s.assertNoSecretsLogged(t, tok)
}

func TestIntrospectStoreDown(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	s := serveOAuth(t, h, failingStore{Store: h.store})
	tok := s.issue(t, "reporting-job", "reporting-job-secret")
	assertOAuthError(t, s.introspect(t, "reporting-job", "reporting-job-secret", tok), http.StatusInternalServerError, "server_error")
}
