package token

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"

	"github.com/ory/fosite/token/jwt"

	"github.com/gatehouse/gatehouse/services/issuer/internal/signingkey"
)

// KeySource supplies the keys access tokens are signed and verified with.
// A *signingkey.Ring (rotating keys from the store) is one, and so is a
// single *signingkey.Key (a fixed key, for tests and tools).
type KeySource interface {
	// SigningKey returns the key that signs a token issued now.
	SigningKey(ctx context.Context) (*signingkey.Key, error)
	// VerificationKey returns the public key named kid while it is
	// published, or an error.
	VerificationKey(ctx context.Context, kid string) (*ecdsa.PublicKey, error)
}

// keySigner is fosite's jwt.Signer over a KeySource: each token is signed
// by the key active when it is issued, with that key's kid in its header,
// and verified (introspection) by the published key its kid names, so a
// token outlives the rotation of the key that signed it.
type keySigner struct {
	// DefaultSigner supplies GetSignature, Hash and GetSigningMethodLength,
	// none of which touch a key.
	jwt.DefaultSigner
	keys KeySource
}

var _ jwt.Signer = (*keySigner)(nil)

// Generate implements jwt.Signer: one key is picked per token, so its kid
// and its signature always match.
func (s *keySigner) Generate(ctx context.Context, claims jwt.MapClaims, header jwt.Mapper) (string, string, error) {
	key, err := s.keys.SigningKey(ctx)
	if err != nil {
		return "", "", fmt.Errorf("token: signing key: %w", err)
	}
	h := &jwt.Headers{Extra: header.ToMap()}
	h.Add("kid", key.KeyID())
	// A bare *ecdsa.PrivateKey makes fosite sign with ES256 and nothing else.
	signer := &jwt.DefaultSigner{GetPrivateKey: func(context.Context) (any, error) { return key.Private(), nil }}
	return signer.Generate(ctx, claims, h)
}

// Decode implements jwt.Signer: it verifies token (ES256 only) against the
// published key its kid names.
func (s *keySigner) Decode(ctx context.Context, token string) (*jwt.Token, error) {
	return jwt.ParseWithClaims(token, jwt.MapClaims{}, func(t *jwt.Token) (any, error) {
		if string(t.Method) != signingkey.Algorithm {
			return nil, fmt.Errorf("token: alg %q, want %s", t.Method, signingkey.Algorithm)
		}
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, errors.New("token: no kid")
		}
		return s.keys.VerificationKey(ctx, kid)
	})
}

// Validate implements jwt.Signer: Decode, then the token's signature.
func (s *keySigner) Validate(ctx context.Context, token string) (string, error) {
	if _, err := s.Decode(ctx, token); err != nil {
		return "", err
	}
	return s.GetSignature(ctx, token)
}
