// Package signintest is a fake OpenID Connect issuer for the demo clients'
// tests: discovery, JWKS, an authorization endpoint that signs the client's
// user in at once (no pages) and redirects to the loopback redirect URI, and
// a token endpoint that checks the code, PKCE (S256), the redirect URI and
// the client's authentication like the real issuer, and returns an access
// token and an ES256 ID token.
package signintest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// keyID is the kid of the issuer's one signing key.
const keyID = "signintest-1"

// User is who signs in to a client, and what the issuer says about it.
type User struct {
	Subject  string
	ACR      string
	AuthTime time.Time
	// AccessToken is the access token the token endpoint returns.
	AccessToken string
}

// Client is a registered client and the user who signs in to it.
type Client struct {
	// Secret is a confidential client's secret (client_secret_basic);
	// empty: a public client (client_id in the body, no authentication).
	Secret string
	User   User
}

// Authorization is one request the authorization endpoint accepted.
type Authorization struct {
	ClientID    string
	RedirectURI string
	Scope       string
	Nonce       string
	ACRValues   string
	MaxAge      string
	Prompt      string
}

// TokenRequest is one code exchange the token endpoint answered
// successfully, with how the client authenticated.
type TokenRequest struct {
	ClientID string
	// Basic: the client authenticated with client_secret_basic.
	Basic bool
}

// grant is an issued authorization code.
type grant struct {
	Authorization
	challenge string
}

// Issuer is the fake issuer. Its zero value is not usable: use NewIssuer.
type Issuer struct {
	// URL is the issuer identifier and base URL.
	URL string

	key     *ecdsa.PrivateKey
	clients map[string]Client

	mu             sync.Mutex
	codes          map[string]grant
	authorizations []Authorization
	tokens         []TokenRequest
}

// NewIssuer starts a fake issuer for clients (by client_id), stopped when
// the test ends.
func NewIssuer(t testing.TB, clients map[string]Client) *Issuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	i := &Issuer{key: key, clients: clients, codes: map[string]grant{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", i.discovery)
	mux.HandleFunc("GET /.well-known/jwks.json", i.jwks)
	mux.HandleFunc("GET /oauth2/authorize", i.authorize)
	mux.HandleFunc("POST /oauth2/token", i.token)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	i.URL = srv.URL
	return i
}

// Authorizations returns the authorization requests accepted so far.
func (i *Issuer) Authorizations() []Authorization {
	i.mu.Lock()
	defer i.mu.Unlock()
	return slices.Clone(i.authorizations)
}

// TokenRequests returns the successful code exchanges so far.
func (i *Issuer) TokenRequests() []TokenRequest {
	i.mu.Lock()
	defer i.mu.Unlock()
	return slices.Clone(i.tokens)
}

// Browser is the user's browser: it opens the authorization URL and follows
// the redirect to the client's loopback receiver, which must show its
// "signed-in" page.
func Browser(authURL string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `id="signed-in"`) {
		return fmt.Errorf("the browser landed on %s: %d %s", resp.Request.URL, resp.StatusCode, body)
	}
	return nil
}

func (i *Issuer) discovery(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                i.URL,
		"authorization_endpoint":                i.URL + "/oauth2/authorize",
		"token_endpoint":                        i.URL + "/oauth2/token",
		"jwks_uri":                              i.URL + "/.well-known/jwks.json",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"ES256"},
		"code_challenge_methods_supported":      []string{"S256"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "none"},
	})
}

func (i *Issuer) jwks(w http.ResponseWriter, _ *http.Request) {
	point, err := i.key.PublicKey.Bytes()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	// Uncompressed point: 0x04 || X (32 bytes) || Y (32 bytes).
	writeJSON(w, http.StatusOK, map[string]any{"keys": []map[string]string{{
		"kty": "EC", "crv": "P-256", "kid": keyID, "alg": "ES256", "use": "sig",
		"x": b64(point[1:33]), "y": b64(point[33:65]),
	}}})
}

// authorize signs the client's user in at once and redirects with a code,
// or with an RFC 6749 error when the request breaks the demo clients'
// rules (PKCE S256, a loopback redirect URI, scope openid).
func (i *Issuer) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	_, ok := i.clients[q.Get("client_id")]
	redirect, err := url.Parse(q.Get("redirect_uri"))
	if !ok || err != nil || redirect.Scheme != "http" || redirect.Hostname() != "127.0.0.1" || redirect.Path != "/callback" {
		http.Error(w, "unknown client or redirect URI", http.StatusBadRequest)
		return
	}
	back := redirect.Query()
	back.Set("state", q.Get("state"))
	switch {
	case q.Get("response_type") != "code", q.Get("code_challenge_method") != "S256", q.Get("code_challenge") == "",
		q.Get("nonce") == "", q.Get("state") == "", !slices.Contains(strings.Fields(q.Get("scope")), "openid"):
		back.Set("error", "invalid_request")
	default:
		a := Authorization{
			ClientID: q.Get("client_id"), RedirectURI: q.Get("redirect_uri"), Scope: q.Get("scope"), Nonce: q.Get("nonce"),
			ACRValues: q.Get("acr_values"), MaxAge: q.Get("max_age"), Prompt: q.Get("prompt"),
		}
		code := rand.Text()
		i.mu.Lock()
		i.codes[code] = grant{Authorization: a, challenge: q.Get("code_challenge")}
		i.authorizations = append(i.authorizations, a)
		i.mu.Unlock()
		back.Set("code", code)
	}
	redirect.RawQuery = back.Encode()
	// Only to a loopback /callback URI, checked above, like the real issuer.
	http.Redirect(w, r, redirect.String(), http.StatusFound) //nolint:gosec // G710: see above
}

// token answers the authorization_code grant.
func (i *Issuer) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request")
		return
	}
	clientID, c, basic, err := i.authenticate(r)
	if err != nil {
		oauthError(w, http.StatusUnauthorized, "invalid_client")
		return
	}
	if r.PostForm.Get("grant_type") != "authorization_code" {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type")
		return
	}
	code := r.PostForm.Get("code")
	i.mu.Lock()
	g, ok := i.codes[code]
	delete(i.codes, code)
	i.mu.Unlock()
	sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
	if !ok || g.ClientID != clientID || g.RedirectURI != r.PostForm.Get("redirect_uri") || b64(sum[:]) != g.challenge {
		oauthError(w, http.StatusBadRequest, "invalid_grant")
		return
	}
	now := time.Now()
	idToken, err := i.sign(map[string]any{
		"iss": i.URL, "sub": c.User.Subject, "aud": clientID, "nonce": g.Nonce,
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		"auth_time": c.User.AuthTime.Unix(), "acr": c.User.ACR,
	})
	if err != nil {
		oauthError(w, http.StatusInternalServerError, "server_error")
		return
	}
	i.mu.Lock()
	i.tokens = append(i.tokens, TokenRequest{ClientID: clientID, Basic: basic})
	i.mu.Unlock()
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": c.User.AccessToken, "token_type": "Bearer", "expires_in": 300,
		"id_token": idToken, "scope": g.Scope,
	})
}

// authenticate is the client authentication of the token endpoint: a
// confidential client by client_secret_basic only, a public client by its
// client_id in the body and no secret.
func (i *Issuer) authenticate(r *http.Request) (string, Client, bool, error) {
	user, pass, basic := r.BasicAuth()
	if basic {
		id, err1 := url.QueryUnescape(user)
		secret, err2 := url.QueryUnescape(pass)
		c, ok := i.clients[id]
		if err1 != nil || err2 != nil || !ok || c.Secret == "" || subtle.ConstantTimeCompare([]byte(secret), []byte(c.Secret)) != 1 {
			return "", Client{}, false, errors.New("bad client credentials")
		}
		return id, c, true, nil
	}
	id := r.PostForm.Get("client_id")
	c, ok := i.clients[id]
	if !ok || c.Secret != "" || r.PostForm.Has("client_secret") {
		return "", Client{}, false, errors.New("no client authentication")
	}
	return id, c, false, nil
}

// sign returns an ES256 JWS of claims.
func (i *Issuer) sign(claims map[string]any) (string, error) {
	header, err := json.Marshal(map[string]string{"alg": "ES256", "kid": keyID, "typ": "JWT"})
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	input := b64(header) + "." + b64(payload)
	digest := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, i.key, digest[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + b64(sig), nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func oauthError(w http.ResponseWriter, status int, code string) {
	writeJSON(w, status, map[string]string{"error": code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
