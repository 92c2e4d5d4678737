// Package supporttest holds the support service's test doubles: a fake
// issuer (token exchange per RFC 8693 with Gatehouse's impersonation
// extensions, client credentials, RFC 7009 revocation, and the keys to
// mint and verify tokens), a fake PDP that mirrors the support policy of
// the issue-7 plan, and a fake invoice service that verifies tokens and
// identity headers as the real one does. They record what they receive so
// tests can assert the support service's requests.
package supporttest

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gatehouse/gatehouse/libs/accesstoken"
	"github.com/gatehouse/gatehouse/libs/accesstoken/accesstokentest"
)

// Audience is the audience of every minted token.
const Audience = accesstokentest.Audience

// RFC 8693 identifiers, spelled out so tests compare against the
// specification, not against the code under test.
const (
	GrantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange" //nolint:gosec // G101: a grant type URN, not a credential
	TokenTypeAccessToken   = "urn:ietf:params:oauth:token-type:access_token"   //nolint:gosec // G101: a token type URN, not a credential
)

// Principal is who a test token is minted for.
type Principal struct {
	Sub, Tenant, ClientID, Scope string
	Roles                        []string
}

// Principals of the demo seed (DESIGN.md) and an agent of another tenant.
var (
	// Sam is acme's support agent, signed in at the support console.
	Sam = Principal{Sub: "sam", Tenant: "acme", ClientID: "support-console", Scope: "openid support:read support:impersonate invoice:read", Roles: []string{"support_agent"}}
	// Bob is an acme customer (billing_viewer) signed in at invoice-web.
	Bob = Principal{Sub: "bob", Tenant: "acme", ClientID: "invoice-web", Scope: "invoice:read support:write", Roles: []string{"billing_viewer"}}
	// Alice is an acme billing approver signed in at invoice-web.
	Alice = Principal{Sub: "alice", Tenant: "acme", ClientID: "invoice-web", Scope: "invoice:read invoice:write support:write", Roles: []string{"billing_approver"}}
	// Carol is a globex billing approver signed in at invoice-web.
	Carol = Principal{Sub: "carol", Tenant: "globex", ClientID: "invoice-web", Scope: "invoice:read invoice:write support:write", Roles: []string{"billing_approver"}}
	// Gina is globex's support agent: an agent of another tenant than acme.
	Gina = Principal{Sub: "gina", Tenant: "globex", ClientID: "support-console", Scope: "openid support:read support:impersonate invoice:read", Roles: []string{"support_agent"}}
)

// ClientSecret returns the demo secret of a confidential client the fake
// issuer knows (support-console, support-export), or "".
func ClientSecret(id string) string {
	switch id {
	case "support-console":
		return "support-console-secret"
	case "support-export":
		return "support-export-secret"
	}
	return ""
}

// ExportTenant is the tenant of the support-export client.
const ExportTenant = "acme"

// Received is one request the fake issuer authenticated.
type Received struct {
	// ClientID is the client that authenticated (client_secret_basic).
	ClientID string
	// Form is the request's form, exactly as sent.
	Form url.Values
}

// Refusal is an error answer of the token endpoint.
type Refusal struct {
	Status     int
	Error      string
	ReasonCode string
}

// Issuer is a fake Gatehouse issuer: its Keys sign tokens and serve the
// JWKS (Keys.URL is the issuer identifier), and URL serves /oauth2/token
// and /oauth2/revoke. Every request must authenticate with
// client_secret_basic as a client ClientSecret knows.
type Issuer struct {
	Keys *accesstokentest.Issuer
	// URL is the base URL of the token and revocation endpoints (the
	// support service's -issuer-url).
	URL string

	users    map[string]Principal
	verifier *accesstoken.Verifier

	mu          sync.Mutex
	exchanges   []Received
	credentials []Received
	revocations []Received
	refusal     *Refusal
	down        bool
	delay       time.Duration
}

// NewIssuer starts a fake issuer that knows the users Sam, Bob, Alice,
// Carol and Gina; it stops with the test.
func NewIssuer(t testing.TB) *Issuer {
	t.Helper()
	keys := accesstokentest.NewIssuer(t)
	verifier, err := accesstoken.NewVerifier(accesstoken.Config{Issuer: keys.URL, Audience: Audience, Keys: KeySource{keys}})
	if err != nil {
		t.Fatal(err)
	}
	iss := &Issuer{Keys: keys, verifier: verifier, users: map[string]Principal{}}
	for _, p := range []Principal{Sam, Bob, Alice, Carol, Gina} {
		iss.users[p.Sub] = p
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /oauth2/token", iss.token)
	mux.HandleFunc("POST /oauth2/revoke", iss.revoke)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		iss.mu.Lock()
		down, delay := iss.down, iss.delay
		iss.mu.Unlock()
		if down {
			panic(http.ErrAbortHandler) // drop the connection, like a crashed issuer
		}
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	iss.URL = srv.URL
	return iss
}

// Mint returns a valid access token for p, with extra claims merged in.
func (i *Issuer) Mint(t testing.TB, p Principal, extra map[string]any) string {
	t.Helper()
	claims := map[string]any{"sub": p.Sub, "tenant": p.Tenant, "client_id": p.ClientID, "scope": p.Scope}
	if p.Roles != nil {
		claims["roles"] = p.Roles
	}
	maps.Copy(claims, extra)
	return i.Keys.Mint(t, claims, nil)
}

// Verify verifies a token the fake issued (or minted).
func (i *Issuer) Verify(ctx context.Context, raw string) (*accesstoken.Claims, error) {
	return i.verifier.Verify(ctx, raw)
}

// Refuse makes every token exchange answer r until Refuse(nil).
func (i *Issuer) Refuse(r *Refusal) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.refusal = r
}

// SetDown makes the issuer drop every connection.
func (i *Issuer) SetDown(down bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.down = down
}

// SetDelay makes the issuer answer after d.
func (i *Issuer) SetDelay(d time.Duration) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.delay = d
}

// Exchanges returns the token exchange requests received so far.
func (i *Issuer) Exchanges() []Received {
	i.mu.Lock()
	defer i.mu.Unlock()
	return slices.Clone(i.exchanges)
}

// ClientCredentials returns the client credentials requests received so far.
func (i *Issuer) ClientCredentials() []Received {
	i.mu.Lock()
	defer i.mu.Unlock()
	return slices.Clone(i.credentials)
}

// Revocations returns the revocation requests received so far.
func (i *Issuer) Revocations() []Received {
	i.mu.Lock()
	defer i.mu.Unlock()
	return slices.Clone(i.revocations)
}

// authenticate checks client_secret_basic (both parts form-urlencoded,
// RFC 6749 section 2.3.1).
func authenticate(r *http.Request) (string, bool) {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return "", false
	}
	id, err1 := url.QueryUnescape(user)
	secret, err2 := url.QueryUnescape(pass)
	want := ClientSecret(id)
	if err1 != nil || err2 != nil || want == "" || subtle.ConstantTimeCompare([]byte(secret), []byte(want)) != 1 {
		return "", false
	}
	return id, true
}

func (i *Issuer) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeError(w, Refusal{Status: http.StatusBadRequest, Error: "invalid_request"})
		return
	}
	client, ok := authenticate(r)
	if !ok {
		writeError(w, Refusal{Status: http.StatusUnauthorized, Error: "invalid_client"})
		return
	}
	rec := Received{ClientID: client, Form: r.PostForm}
	switch r.PostForm.Get("grant_type") {
	case "client_credentials":
		i.mu.Lock()
		i.credentials = append(i.credentials, rec)
		i.mu.Unlock()
		tok := i.Keys.Mint(testingTB{}, map[string]any{
			"sub": client, "client_id": client, "tenant": ExportTenant, "scope": r.PostForm.Get("scope"),
		}, nil)
		writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 300})
	case GrantTypeTokenExchange:
		i.mu.Lock()
		i.exchanges = append(i.exchanges, rec)
		refusal := i.refusal
		i.mu.Unlock()
		if refusal != nil {
			writeError(w, *refusal)
			return
		}
		i.exchange(r.Context(), w, client, r.PostForm)
	default:
		writeError(w, Refusal{Status: http.StatusBadRequest, Error: "unsupported_grant_type"})
	}
}

// exchange issues the token of an impersonation (requested_subject) or a
// delegation (actor_token), with the act claim the plan specifies.
func (i *Issuer) exchange(ctx context.Context, w http.ResponseWriter, client string, form url.Values) {
	subject, err := i.verifier.Verify(ctx, form.Get("subject_token"))
	if err != nil || form.Get("subject_token_type") != TokenTypeAccessToken {
		writeError(w, Refusal{Status: http.StatusBadRequest, Error: "invalid_grant"})
		return
	}
	lifetime, err := strconv.Atoi(form.Get("requested_lifetime"))
	if err != nil || lifetime < 1 {
		writeError(w, Refusal{Status: http.StatusBadRequest, Error: "invalid_request"})
		return
	}
	claims := map[string]any{"client_id": client, "scope": form.Get("scope")}
	var act map[string]any
	switch {
	case form.Has("actor_token") && !form.Has("requested_subject"):
		actor, err := i.verifier.Verify(ctx, form.Get("actor_token"))
		if err != nil {
			writeError(w, Refusal{Status: http.StatusBadRequest, Error: "invalid_grant"})
			return
		}
		lifetime = min(lifetime, 300)
		claims["sub"], claims["tenant"], claims["roles"] = subject.Subject, subject.Tenant, subject.Roles
		act = map[string]any{"sub": actor.Subject, "client_id": actor.ClientID}
	case form.Has("requested_subject") && !form.Has("actor_token"):
		user, ok := i.users[form.Get("requested_subject")]
		if !ok {
			writeError(w, Refusal{Status: http.StatusBadRequest, Error: "invalid_grant"})
			return
		}
		lifetime = min(lifetime, 900)
		claims["sub"], claims["tenant"], claims["roles"] = user.Sub, user.Tenant, user.Roles
		act = map[string]any{"sub": subject.Subject, "client_id": subject.ClientID}
	default:
		writeError(w, Refusal{Status: http.StatusBadRequest, Error: "invalid_request"})
		return
	}
	if prior := actClaim(subject.Actor); prior != nil {
		act["act"] = prior
	}
	claims["act"] = act
	now := time.Now()
	claims["iat"], claims["nbf"], claims["exp"] = now.Unix(), now.Unix(), now.Add(time.Duration(lifetime)*time.Second).Unix()
	tok := i.Keys.Mint(testingTB{}, claims, nil)
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": tok, "issued_token_type": TokenTypeAccessToken, "token_type": "Bearer",
		"expires_in": lifetime, "scope": form.Get("scope"),
	})
}

// actClaim is a verified actor chain as an act claim.
func actClaim(a *accesstoken.Actor) map[string]any {
	if a == nil {
		return nil
	}
	out := map[string]any{"sub": a.Subject, "client_id": a.ClientID}
	if nested := actClaim(a.Actor); nested != nil {
		out["act"] = nested
	}
	return out
}

func (i *Issuer) revoke(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeError(w, Refusal{Status: http.StatusBadRequest, Error: "invalid_request"})
		return
	}
	client, ok := authenticate(r)
	if !ok {
		writeError(w, Refusal{Status: http.StatusUnauthorized, Error: "invalid_client"})
		return
	}
	i.mu.Lock()
	i.revocations = append(i.revocations, Received{ClientID: client, Form: r.PostForm})
	i.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func writeError(w http.ResponseWriter, r Refusal) {
	body := map[string]any{"error": r.Error, "error_description": "refused by the fake issuer"}
	if r.ReasonCode != "" {
		body["reason_code"] = r.ReasonCode
	}
	writeJSON(w, r.Status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// KeySource serves the fake issuer's current key to a verifier without
// HTTP.
type KeySource struct{ Keys *accesstokentest.Issuer }

// Key implements accesstoken.KeySource.
func (k KeySource) Key(_ context.Context, kid string) (*jose.JSONWebKey, error) {
	key, id := k.Keys.SigningKey()
	if kid != id {
		return nil, accesstoken.ErrUnknownKey
	}
	return &jose.JSONWebKey{Key: &key.PublicKey, KeyID: id, Algorithm: "ES256", Use: "sig"}, nil
}

// testingTB lets the fake's handlers mint tokens outside a test's
// goroutine: accesstokentest only calls Helper and, on a broken key,
// Fatal, which here panics (the handler's request fails, the test sees it).
type testingTB struct{ testing.TB }

func (testingTB) Helper() {}

func (testingTB) Fatal(args ...any) { panic(fmt.Sprint(args...)) }
