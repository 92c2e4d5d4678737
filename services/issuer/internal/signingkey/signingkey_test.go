package signingkey_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gatehouse/gatehouse/services/issuer/internal/signingkey"
)

func TestLoadRoundTrip(t *testing.T) {
	t.Parallel()
	k, err := signingkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	pemData, err := k.MarshalPKCS8PEM()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	loaded, err := signingkey.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.KeyID() != k.KeyID() || !loaded.Public().Equal(k.Public()) {
		t.Fatal("loaded key differs from the written one")
	}
}

func TestKeyIDIsRFC7638Thumbprint(t *testing.T) {
	t.Parallel()
	k, err := signingkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	// RFC 7638 section 3.2: SHA-256 over the required members in
	// lexicographic order, no whitespace.
	ecdhPub, err := k.Public().ECDH()
	if err != nil {
		t.Fatal(err)
	}
	point := ecdhPub.Bytes() // 0x04 || X || Y
	enc := base64.RawURLEncoding.EncodeToString
	canonical := `{"crv":"P-256","kty":"EC","x":"` + enc(point[1:33]) + `","y":"` + enc(point[33:]) + `"}`
	sum := sha256.Sum256([]byte(canonical))
	if want := enc(sum[:]); k.KeyID() != want {
		t.Fatalf("kid = %s, RFC 7638 thumbprint = %s", k.KeyID(), want)
	}
}

func TestJWKSPublishesPublicKeyOnly(t *testing.T) {
	t.Parallel()
	k, err := signingkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := k.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(raw, &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 {
		t.Fatalf("JWKS has %d keys, want 1", len(set.Keys))
	}
	jwk := set.Keys[0]
	if !jwk.IsPublic() || jwk.KeyID != k.KeyID() || jwk.Algorithm != "ES256" || jwk.Use != "sig" {
		t.Fatalf("JWKS key = %+v, want public ES256 sig key with kid %s", jwk, k.KeyID())
	}
	if strings.Contains(string(raw), `"d"`) {
		t.Fatalf("JWKS leaks the private key: %s", raw)
	}
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sec1, err := x509.MarshalECPrivateKey(p256)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pem  []byte
	}{
		{name: "not PEM", pem: []byte("hello")},
		{name: "P-384", pem: pkcs8(t, p384)},
		{name: "RSA", pem: pkcs8(t, rsaKey)},
		{name: "SEC1 instead of PKCS#8", pem: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})},
		{name: "garbage DER", pem: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := signingkey.Parse(tc.pem); err == nil {
				t.Fatal("Parse accepted the key")
			}
		})
	}
}

func pkcs8(t *testing.T, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}
