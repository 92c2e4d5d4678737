// Package accesstokentest mints Gatehouse-shaped access tokens and serves
// their JWKS, for tests of the verifier and of everything that uses it.
package accesstokentest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Audience is the audience minted tokens carry by default.
const Audience = "gatehouse-api"

// Issuer is a fake issuer with one ES256 key and a JWKS endpoint.
type Issuer struct {
	URL    string // the issuer identifier (also its server's base URL)
	server *httptest.Server

	mu    sync.Mutex
	key   *ecdsa.PrivateKey
	keyID string
	// Fetches counts JWKS requests served.
	Fetches atomic.Int64
}

// NewIssuer starts a JWKS server for a fresh key; it stops with the test.
func NewIssuer(t testing.TB) *Issuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	iss := &Issuer{key: key, keyID: "test-key-1"}
	iss.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		iss.Fetches.Add(1)
		key, kid := iss.SigningKey()
		set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: kid, Algorithm: "ES256", Use: "sig"}}}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(iss.server.Close)
	iss.URL = iss.server.URL
	return iss
}

// JWKSURL is the URL of the issuer's key set.
func (i *Issuer) JWKSURL() string { return i.server.URL + "/.well-known/jwks.json" }

// Claims returns valid claims for a client_credentials token of
// reporting-job in tenant acme, issued now for five minutes.
func (i *Issuer) Claims() map[string]any {
	now := time.Now()
	return map[string]any{
		"iss":       i.URL,
		"sub":       "reporting-job",
		"aud":       []string{Audience},
		"exp":       now.Add(5 * time.Minute).Unix(),
		"iat":       now.Unix(),
		"nbf":       now.Unix(),
		"jti":       rand.Text(),
		"client_id": "reporting-job",
		"scope":     "invoice:read",
		"tenant":    "acme",
	}
}

// Mint signs claims (merged over Claims()) with the issuer's key and the
// given extra header fields (typ defaults to at+jwt).
func (i *Issuer) Mint(t testing.TB, overrides map[string]any, headers map[jose.HeaderKey]any) string {
	t.Helper()
	claims := i.Claims()
	maps.Copy(claims, overrides)
	for k, v := range overrides {
		if v == nil {
			delete(claims, k)
		}
	}
	key, kid := i.SigningKey()
	return Sign(t, jose.ES256, key, kid, claims, headers)
}

// SigningKey returns the current key and its kid.
func (i *Issuer) SigningKey() (*ecdsa.PrivateKey, string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.key, i.keyID
}

// Rotate replaces the key with a fresh one under kid (the old one is no
// longer published).
func (i *Issuer) Rotate(t testing.TB, kid string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.key, i.keyID = key, kid
}

// Sign signs claims with key under alg, with kid and extra header fields.
// typ is at+jwt unless headers sets it; a nil header value removes it.
func Sign(t testing.TB, alg jose.SignatureAlgorithm, key any, kid string, claims map[string]any, headers map[jose.HeaderKey]any) string {
	t.Helper()
	hdr := map[jose.HeaderKey]any{"typ": "at+jwt"}
	if kid != "" {
		hdr["kid"] = kid
	}
	maps.Copy(hdr, headers)
	opts := &jose.SignerOptions{}
	for k, v := range hdr {
		if v != nil {
			opts = opts.WithHeader(k, v)
		}
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
