package signingkey

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// KEKSize is the size of a key-encryption key in bytes (AES-256).
const KEKSize = 32

// sealVersion is the first byte of every sealed private key; it is also
// bound into the additional authenticated data, so a future format cannot
// be confused with this one.
const sealVersion byte = 1

// aadPrefix starts the additional authenticated data of a sealed key; the
// kid follows it.
const aadPrefix = "gatehouse/issuer/signing-key/v1\x00"

// ErrUndecryptable means a sealed private key does not open under the
// key-encryption key: the KEK is not the one that sealed it, the ciphertext
// was altered, or it belongs to another kid.
var ErrUndecryptable = errors.New("signingkey: private key does not decrypt under this key-encryption key (wrong KEK, tampered ciphertext or another key's ciphertext)")

// KEK is the key-encryption key: private signing keys are stored only as
// AES-256-GCM ciphertext under it, so the database alone never yields a key
// that can sign.
type KEK struct {
	aead cipher.AEAD
}

// NewKEK returns the KEK whose key is the KEKSize bytes of key.
func NewKEK(key []byte) (*KEK, error) {
	if len(key) != KEKSize {
		return nil, fmt.Errorf("signingkey: key-encryption key is %d bytes, want exactly %d (for example: head -c 32 /dev/urandom > kek)", len(key), KEKSize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("signingkey: key-encryption key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("signingkey: key-encryption key: %w", err)
	}
	return &KEK{aead: aead}, nil
}

// LoadKEK reads a KEK from a file holding exactly KEKSize raw bytes.
func LoadKEK(path string) (*KEK, error) {
	data, err := ReadKEKFile(path)
	if err != nil {
		return nil, err
	}
	return NewKEK(data)
}

// ReadKEKFile reads the raw bytes of a KEK file, checking their size, for
// callers that derive other keys from the KEK too (the issuer seals TOTP
// secrets under a key derived from it).
func ReadKEKFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path) //nolint:gosec // G304: the operator names this file in the configuration
	if err != nil {
		return nil, fmt.Errorf("signingkey: read key-encryption key: %w", err)
	}
	if len(data) != KEKSize {
		return nil, fmt.Errorf("%s: signingkey: key-encryption key is %d bytes, want exactly %d (for example: head -c 32 /dev/urandom > kek)", path, len(data), KEKSize)
	}
	return data, nil
}

// GenerateKEK returns a random KEK that lives only as long as the process:
// for demo use only.
func GenerateKEK() (*KEK, error) { return NewKEK(RandomKEKBytes()) }

// RandomKEKBytes returns KEKSize random bytes: an ephemeral KEK (demo only).
func RandomKEKBytes() []byte { return randomBytes(KEKSize) }

// Seal encrypts k's private key (PKCS#8 DER) under the KEK: version byte,
// random 96-bit nonce, then the GCM ciphertext and tag. The kid is
// authenticated data, so the result opens only for the same kid.
func (e *KEK) Seal(k *Key) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.private)
	if err != nil {
		return nil, fmt.Errorf("signingkey: seal: %w", err)
	}
	nonce := randomBytes(e.aead.NonceSize())
	out := make([]byte, 0, 1+len(nonce)+len(der)+e.aead.Overhead())
	out = append(out, sealVersion)
	out = append(out, nonce...)
	return e.aead.Seal(out, nonce, der, aad(k.kid)), nil
}

// Open decrypts a private key sealed for kid and checks that it is the key
// kid names (its RFC 7638 thumbprint). Any failure is ErrUndecryptable.
func (e *KEK) Open(kid string, sealed []byte) (*Key, error) {
	n := e.aead.NonceSize()
	if len(sealed) < 1+n+e.aead.Overhead() || sealed[0] != sealVersion {
		return nil, fmt.Errorf("kid %s: %w", kid, ErrUndecryptable)
	}
	der, err := e.aead.Open(nil, sealed[1:1+n], sealed[1+n:], aad(kid))
	if err != nil {
		return nil, fmt.Errorf("kid %s: %w", kid, ErrUndecryptable)
	}
	k, err := parsePKCS8(der)
	if err != nil {
		return nil, fmt.Errorf("kid %s: %w: %w", kid, ErrUndecryptable, err)
	}
	if k.kid != kid {
		return nil, fmt.Errorf("kid %s: decrypted key has kid %s: %w", kid, k.kid, ErrUndecryptable)
	}
	return k, nil
}

func aad(kid string) []byte {
	return append([]byte{sealVersion}, aadPrefix+kid...)
}

// randomBytes returns n bytes from crypto/rand, which never fails.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
