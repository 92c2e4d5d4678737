package token_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	josev3 "github.com/go-jose/go-jose/v3"
	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/gatehouse/gatehouse/services/issuer/internal/client"
	"github.com/gatehouse/gatehouse/services/issuer/internal/token"
)

const assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// keyClient registers a private_key_jwt client_credentials client whose
// public key is pub, and returns its id.
func keyClient(t *testing.T, h *harness, id string, pub *ecdsa.PublicKey) {
	t.Helper()
	if err := h.store.UpsertClient(t.Context(), &client.Client{
		ID:         id,
		Tenant:     "acme",
		AuthMethod: client.AuthMethodPrivateKeyJWT,
		JWKS:       &josev3.JSONWebKeySet{Keys: []josev3.JSONWebKey{{Key: pub, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}},
		GrantTypes: []string{client.GrantClientCredentials},
		Scopes:     []string{"invoice:read"},
		Audiences:  []string{"gatehouse-api"},
	}); err != nil {
		t.Fatal(err)
	}
}

type assertion struct {
	iss, sub, jti string
	aud           []string
	exp           time.Duration
	alg           jose.SignatureAlgorithm
	key           any
}

func (a assertion) sign(t *testing.T) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: a.alg, Key: a.key}, (&jose.SignerOptions{}).WithHeader("kid", "k1").WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	raw, err := josejwt.Signed(signer).Claims(josejwt.Claims{
		Issuer: a.iss, Subject: a.sub, ID: a.jti, Audience: a.aud,
		IssuedAt: josejwt.NewNumericDate(now), Expiry: josejwt.NewNumericDate(now.Add(a.exp)),
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func postToken(t *testing.T, h *harness, form url.Values, header http.Header) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, h.srv.URL+token.Path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("body %s: %v", raw, err)
	}
	return resp.StatusCode, body
}

func TestPrivateKeyJWT(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keyClient(t, h, "signing-job", &key.PublicKey)
	tokenURL := issuer + token.Path
	good := func() assertion {
		return assertion{iss: "signing-job", sub: "signing-job", jti: rand.Text(), aud: []string{tokenURL}, exp: time.Minute, alg: jose.ES256, key: key}
	}
	request := func(a string) url.Values {
		return url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {assertionType}, "client_assertion": {a}}
	}

	t.Run("valid assertion", func(t *testing.T) {
		t.Parallel()
		status, body := postToken(t, h, request(good().sign(t)), nil)
		if status != http.StatusOK || body["access_token"] == nil {
			t.Fatalf("status %d body %v, want a token", status, body)
		}
	})
	t.Run("replayed jti", func(t *testing.T) {
		t.Parallel()
		// Its own issuer, so that no parallel subtest moves the counter.
		h := newHarness(t)
		keyClient(t, h, "signing-job", &key.PublicKey)
		raw := good().sign(t)
		if status, body := postToken(t, h, request(raw), nil); status != http.StatusOK {
			t.Fatalf("first use: %d %v", status, body)
		}
		before := h.store.created.Load()
		status, body := postToken(t, h, request(raw), nil)
		if status != http.StatusUnauthorized || body["error"] != "invalid_client" {
			t.Fatalf("replayed assertion: %d %v, want 401 invalid_client", status, body)
		}
		if h.store.created.Load() != before {
			t.Fatal("a replayed assertion stored a token")
		}
	})

	t.Run("a refused audience does not spend the jti", func(t *testing.T) {
		t.Parallel()
		a := good()
		wrong := a
		wrong.aud = []string{"https://elsewhere.example/token"}
		if status, body := postToken(t, h, request(wrong.sign(t)), nil); status != http.StatusUnauthorized {
			t.Fatalf("wrong audience: %d %v", status, body)
		}
		if status, body := postToken(t, h, request(a.sign(t)), nil); status != http.StatusOK {
			t.Fatalf("corrected assertion with the same jti: %d %v", status, body)
		}
	})

	bad := []struct {
		name      string
		edit      func(*assertion)
		form      func(url.Values)
		header    http.Header
		wantError string
	}{
		{name: "wrong audience", edit: func(a *assertion) { a.aud = []string{"https://elsewhere.example/token"} }, wantError: "invalid_client"},
		{name: "expired", edit: func(a *assertion) { a.exp = -time.Minute }, wantError: "invalid_client"},
		{name: "lifetime too long", edit: func(a *assertion) { a.exp = time.Hour }, wantError: "invalid_client"},
		{name: "signed by another key", edit: func(a *assertion) { a.key = other }, wantError: "invalid_client"},
		{name: "HMAC", edit: func(a *assertion) { a.alg, a.key = jose.HS256, []byte("0123456789abcdef0123456789abcdef") }, wantError: "invalid_client"},
		{name: "issuer is another client", edit: func(a *assertion) { a.iss = "reporting-job" }, wantError: "invalid_client"},
		{name: "subject is another client", edit: func(a *assertion) { a.sub = "reporting-job" }, wantError: "invalid_client"},
		{name: "no jti", edit: func(a *assertion) { a.jti = "" }, wantError: "invalid_client"},
		{name: "wrong assertion type", form: func(f url.Values) {
			f.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer")
		}, wantError: "invalid_client"},
		{name: "assertion and secret", form: func(f url.Values) { f.Set("client_secret", "x") }, wantError: "invalid_request"},
		{name: "assertion and basic auth", header: http.Header{"Authorization": {basicAuth("signing-job", "x")}}, wantError: "invalid_request"},
		{name: "not a JWS", form: func(f url.Values) { f.Set("client_assertion", "not-a-jwt") }, wantError: "invalid_client"},
		{name: "secret client presenting an assertion", edit: func(a *assertion) { a.iss, a.sub = "reporting-job", "reporting-job" }, form: func(f url.Values) { f.Set("client_id", "reporting-job") }, wantError: "invalid_client"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := good()
			if tc.edit != nil {
				tc.edit(&a)
			}
			f := request(a.sign(t))
			if tc.form != nil {
				tc.form(f)
			}
			status, body := postToken(t, h, f, tc.header)
			if body["error"] != tc.wantError || status < 400 || body["access_token"] != nil {
				t.Fatalf("status %d body %v, want error %s", status, body, tc.wantError)
			}
		})
	}
	t.Run("secret for a key client", func(t *testing.T) {
		t.Parallel()
		status, body := postToken(t, h, url.Values{"grant_type": {"client_credentials"}}, http.Header{"Authorization": {basicAuth("signing-job", "anything")}})
		if status != http.StatusUnauthorized || body["error"] != "invalid_client" {
			t.Fatalf("status %d body %v, want 401 invalid_client", status, body)
		}
	})
}
