// Package signingkey holds the issuer's access-token signing keys: ECDSA
// P-256 keys used with ES256 only, identified by their RFC 7638 thumbprint,
// published as a JWKS with the public half only, stored sealed under a
// key-encryption key (KEK), and rotated publish-then-use by a Ring.
package signingkey

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	jose "github.com/go-jose/go-jose/v4"
)

// Algorithm is the only JWS algorithm the issuer signs with.
const Algorithm = "ES256"

// Key is an ES256 signing key and its key id.
type Key struct {
	private *ecdsa.PrivateKey
	kid     string
}

// Load reads a PEM file holding a PKCS#8 "PRIVATE KEY" for curve P-256.
func Load(path string) (*Key, error) {
	data, err := os.ReadFile(path) //nolint:gosec // G304: the operator names this file in the configuration
	if err != nil {
		return nil, fmt.Errorf("signingkey: read: %w", err)
	}
	k, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("signingkey: %s: %w", path, err)
	}
	return k, nil
}

// Parse decodes a PEM-encoded PKCS#8 P-256 private key.
func Parse(pemData []byte) (*Key, error) {
	block, _ := pem.Decode(pemData)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	if block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("PEM block is %q, want a PKCS#8 \"PRIVATE KEY\"", block.Type)
	}
	return parsePKCS8(block.Bytes)
}

// parsePKCS8 decodes a PKCS#8 DER P-256 private key.
func parsePKCS8(der []byte) (*Key, error) {
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("parse PKCS#8: %w", err)
	}
	priv, ok := parsed.(*ecdsa.PrivateKey)
	if !ok || priv.Curve != elliptic.P256() {
		return nil, fmt.Errorf("key is %T, want an EC P-256 key (ES256 only)", parsed)
	}
	return newKey(priv)
}

// Generate returns a fresh random key. Keep it only sealed under a KEK (see
// KEK.Seal), or it dies with the process and so do its tokens.
func Generate() (*Key, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("signingkey: generate: %w", err)
	}
	return newKey(priv)
}

// MarshalPKCS8PEM encodes k's private key as a PEM "PRIVATE KEY" block, the
// format Load reads.
func (k *Key) MarshalPKCS8PEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.private)
	if err != nil {
		return nil, fmt.Errorf("signingkey: marshal: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func newKey(priv *ecdsa.PrivateKey) (*Key, error) {
	jwk := jose.JSONWebKey{Key: &priv.PublicKey}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("signingkey: thumbprint: %w", err)
	}
	return &Key{private: priv, kid: base64.RawURLEncoding.EncodeToString(tp)}, nil
}

// KeyID is the RFC 7638 SHA-256 thumbprint of the public key, base64url.
func (k *Key) KeyID() string { return k.kid }

// Private returns the private key, for the token signer only.
func (k *Key) Private() *ecdsa.PrivateKey { return k.private }

// Public returns the public key.
func (k *Key) Public() *ecdsa.PublicKey { return &k.private.PublicKey }

// SigningKey returns k itself: a single Key is a key source that never
// rotates (tests, tools).
func (k *Key) SigningKey(context.Context) (*Key, error) { return k, nil }

// VerificationKey returns k's public key if kid is k's kid, else
// ErrUnknownKey.
func (k *Key) VerificationKey(_ context.Context, kid string) (*ecdsa.PublicKey, error) {
	if kid != k.kid {
		return nil, ErrUnknownKey
	}
	return k.Public(), nil
}

// JWK returns k's public key as published: kty EC, crv P-256, alg ES256,
// use sig, and the kid tokens carry.
func (k *Key) JWK() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.Public(), KeyID: k.kid, Algorithm: Algorithm, Use: "sig"}
}

// JWKS returns the JSON Web Key Set publishing k's public key (see JWK).
func (k *Key) JWKS() ([]byte, error) {
	out, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{k.JWK()}})
	if err != nil {
		return nil, fmt.Errorf("signingkey: marshal JWKS: %w", err)
	}
	return out, nil
}
