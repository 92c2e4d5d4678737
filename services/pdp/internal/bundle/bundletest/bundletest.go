// Package bundletest signs policy bundles in tests: it generates RSA key
// pairs and builds, signs and opens bundles from directories or from
// files given inline.
package bundletest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/gatehouse/gatehouse/services/pdp/internal/bundle"
)

// KeyID is the key id of the Shared key pair.
const KeyID = "bundletest"

// KeyPair is a generated signing key with its Signer and Verifier.
type KeyPair struct {
	KeyID         string
	PrivateKeyPEM []byte // PKCS #8
	PublicKeyPEM  []byte // PKIX
	Signer        *bundle.Signer
	Verifier      *bundle.Verifier
}

// NewKeyPair generates an RSA 2048 key pair for keyID. Generating a key
// takes a while; prefer Shared unless a test needs another key.
func NewKeyPair(tb testing.TB, keyID string) KeyPair {
	tb.Helper()
	kp, err := newKeyPair(keyID)
	if err != nil {
		tb.Fatalf("bundletest: %v", err)
	}
	return kp
}

// shared is generated once per test binary: key generation is the slow
// part of signing bundles in tests.
var shared = sync.OnceValues(func() (KeyPair, error) { return newKeyPair(KeyID) })

// Shared returns the key pair, with KeyID, that the test binary shares.
func Shared(tb testing.TB) KeyPair {
	tb.Helper()
	kp, err := shared()
	if err != nil {
		tb.Fatalf("bundletest: %v", err)
	}
	return kp
}

func newKeyPair(keyID string) (KeyPair, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return KeyPair{}, err
	}
	priv, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return KeyPair{}, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return KeyPair{}, err
	}
	kp := KeyPair{
		KeyID:         keyID,
		PrivateKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: priv}),
		PublicKeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}),
	}
	if kp.Signer, err = bundle.NewSigner(keyID, kp.PrivateKeyPEM); err != nil {
		return KeyPair{}, err
	}
	if kp.Verifier, err = bundle.NewVerifier(keyID, kp.PublicKeyPEM); err != nil {
		return KeyPair{}, err
	}
	return kp, nil
}

// WriteDir writes files (slash-separated path relative to the bundle
// root -> content) into a new temporary directory and returns it.
func WriteDir(tb testing.TB, files map[string]string) string {
	tb.Helper()
	dir := tb.TempDir()
	for name, content := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			tb.Fatalf("bundletest: %v", err)
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			tb.Fatalf("bundletest: %v", err)
		}
	}
	return dir
}

// Tarball builds the directory bundle dir signed with the Shared key.
func Tarball(tb testing.TB, dir string) []byte {
	tb.Helper()
	tarball, err := bundle.Build(dir, Shared(tb).Signer)
	if err != nil {
		tb.Fatalf("bundletest: build %s: %v", dir, err)
	}
	return tarball
}

// Open builds the directory bundle dir signed with the Shared key and
// opens it with the Shared key.
func Open(tb testing.TB, dir string) *bundle.Bundle {
	tb.Helper()
	b, err := bundle.Open(Tarball(tb, dir), Shared(tb).Verifier)
	if err != nil {
		tb.Fatalf("bundletest: open %s: %v", dir, err)
	}
	return b
}

// Policy returns a signed, opened bundle with revision whose
// gatehouse.main.decision is the Rego expression decision, e.g.
// `{"decision": "allow", "reason_code": "allowed"}`.
func Policy(tb testing.TB, revision, decision string) *bundle.Bundle {
	tb.Helper()
	return Open(tb, WriteDir(tb, map[string]string{
		".manifest":           `{"revision": "` + revision + `", "roots": ["gatehouse"]}`,
		"gatehouse/main.rego": "package gatehouse.main\n\ndefault decision := " + decision + "\n",
	}))
}
