package postgres

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"fmt"

	"github.com/gatehouse/gatehouse/services/issuer/internal/signingkey"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
)

// Sealer encrypts and authenticates small secrets for storage: Open returns
// the plaintext only for a value that Seal produced under the same key with
// the same additional data, and an error otherwise.
type Sealer interface {
	// Seal returns plaintext encrypted and authenticated together with
	// additionalData, which is not stored in the result.
	Seal(plaintext, additionalData []byte) ([]byte, error)
	// Open returns the plaintext of sealed, or an error when sealed was not
	// made by Seal under this key with additionalData.
	Open(sealed, additionalData []byte) ([]byte, error)
}

// ErrUndecryptable means a stored sealed value does not open: the Sealer's
// key is not the one that sealed it, the value was altered, or it was
// copied from another row. It is never store.ErrNotFound, so a login treats
// it as an internal failure, never as "no second factor".
var ErrUndecryptable = fmt.Errorf("issuer store: sealed value does not decrypt under this key (wrong key-encryption key, tampered value or another row's value): %w", store.ErrUndecryptable)

// kekSealVersion is the first byte of every value a KEKSealer seals; it is
// also authenticated, so a future format cannot be confused with this one.
const kekSealVersion byte = 1

// kekSealInfo is the HKDF info that derives a KEKSealer's key from the KEK.
const kekSealInfo = "gatehouse/issuer/store-sealer/v1"

// KEKSealer is a Sealer with AES-256-GCM under a key derived from the
// issuer's key-encryption key. signingkey.KEK seals only signing keys (its
// methods take a *signingkey.Key and a kid), hence this type for other
// secrets; the HKDF derivation keeps the two ciphers' keys independent
// although one KEK file keys both.
type KEKSealer struct {
	aead cipher.AEAD
}

var _ Sealer = (*KEKSealer)(nil)

// NewKEKSealer returns a KEKSealer for the signingkey.KEKSize raw bytes of
// the key-encryption key (the bytes signingkey.NewKEK takes).
func NewKEKSealer(kek []byte) (*KEKSealer, error) {
	if len(kek) != signingkey.KEKSize {
		return nil, fmt.Errorf("issuer store: key-encryption key is %d bytes, want exactly %d", len(kek), signingkey.KEKSize)
	}
	key, err := hkdf.Key(sha256.New, kek, nil, kekSealInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("issuer store: derive sealing key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("issuer store: sealing key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("issuer store: sealing key: %w", err)
	}
	return &KEKSealer{aead: aead}, nil
}

// Seal implements Sealer: version byte, random 96-bit nonce, then the GCM
// ciphertext and tag.
func (s *KEKSealer) Seal(plaintext, additionalData []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize())
	_, _ = rand.Read(nonce) // crypto/rand.Read never fails (it crashes the program instead).
	out := make([]byte, 0, 1+len(nonce)+len(plaintext)+s.aead.Overhead())
	out = append(out, kekSealVersion)
	out = append(out, nonce...)
	return s.aead.Seal(out, nonce, plaintext, kekSealAAD(additionalData)), nil
}

// Open implements Sealer; any failure is ErrUndecryptable.
func (s *KEKSealer) Open(sealed, additionalData []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < 1+n+s.aead.Overhead() || sealed[0] != kekSealVersion {
		return nil, ErrUndecryptable
	}
	plaintext, err := s.aead.Open(nil, sealed[1:1+n], sealed[1+n:], kekSealAAD(additionalData))
	if err != nil {
		return nil, ErrUndecryptable
	}
	return plaintext, nil
}

func kekSealAAD(additionalData []byte) []byte {
	return append([]byte{kekSealVersion}, additionalData...)
}
