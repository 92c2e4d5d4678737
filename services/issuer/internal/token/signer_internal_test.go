package token

import (
	"context"
	"crypto/ecdsa"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ory/fosite/token/jwt"

	"github.com/gatehouse/gatehouse/services/issuer/internal/signingkey"
)

// rotatingSource signs with current and verifies every key it has held.
type rotatingSource struct {
	current   atomic.Pointer[signingkey.Key]
	published map[string]*signingkey.Key
}

func (s *rotatingSource) SigningKey(context.Context) (*signingkey.Key, error) {
	return s.current.Load(), nil
}

func (s *rotatingSource) VerificationKey(_ context.Context, kid string) (*ecdsa.PublicKey, error) {
	if k, ok := s.published[kid]; ok {
		return k.Public(), nil
	}
	return nil, signingkey.ErrUnknownKey
}

// TestKeySignerAcrossRotation: each token carries the kid of the key that
// signed it, and still verifies once another key signs.
func TestKeySignerAcrossRotation(t *testing.T) {
	t.Parallel()
	k1, k2, stranger := mustKey(t), mustKey(t), mustKey(t)
	src := &rotatingSource{published: map[string]*signingkey.Key{k1.KeyID(): k1, k2.KeyID(): k2}}
	src.current.Store(k1)
	s := &keySigner{keys: src}
	ctx := t.Context()

	header := &jwt.Headers{Extra: map[string]any{"typ": AccessTokenType}}
	before, _, err := s.Generate(ctx, jwt.MapClaims{"sub": "a"}, header)
	if err != nil {
		t.Fatal(err)
	}
	src.current.Store(k2)
	after, _, err := s.Generate(ctx, jwt.MapClaims{"sub": "a"}, header)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := header.Extra["kid"]; ok {
		t.Error("Generate changed the session's header")
	}
	for name, tc := range map[string]struct {
		token string
		kid   string
	}{"before": {before, k1.KeyID()}, "after": {after, k2.KeyID()}} {
		tok, err := s.Decode(ctx, tc.token)
		if err != nil {
			t.Fatalf("%s rotation: Decode: %v", name, err)
		}
		if tok.Header["kid"] != tc.kid || tok.Header["typ"] != AccessTokenType {
			t.Errorf("%s rotation: header %v, want kid %s typ %s", name, tok.Header, tc.kid, AccessTokenType)
		}
		if _, err := s.Validate(ctx, tc.token); err != nil {
			t.Errorf("%s rotation: Validate: %v", name, err)
		}
	}

	// A key that was never published verifies nothing.
	src.current.Store(stranger)
	forged, _, err := s.Generate(ctx, jwt.MapClaims{"sub": "a"}, header)
	if err != nil {
		t.Fatal(err)
	}
	// fosite's ValidationError does not unwrap: compare the text.
	if _, err := s.Validate(ctx, forged); err == nil || !strings.Contains(err.Error(), signingkey.ErrUnknownKey.Error()) {
		t.Fatalf("Validate(unpublished kid) = %v, want ErrUnknownKey", err)
	}
	// Nor does a token whose header has no kid or another algorithm.
	noKid, _, err := (&jwt.DefaultSigner{GetPrivateKey: func(context.Context) (any, error) { return k1.Private(), nil }}).
		Generate(ctx, jwt.MapClaims{"sub": "a"}, &jwt.Headers{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Validate(ctx, noKid); err == nil {
		t.Fatal("Validate accepted a token without kid")
	}
	unsigned, _, err := (&jwt.DefaultSigner{GetPrivateKey: func(context.Context) (any, error) { return jwt.UnsafeAllowNoneSignatureType, nil }}).
		Generate(ctx, jwt.MapClaims{"sub": "a"}, &jwt.Headers{Extra: map[string]any{"kid": k1.KeyID()}})
	if err == nil {
		if _, err := s.Validate(ctx, unsigned); err == nil {
			t.Fatal("Validate accepted alg none")
		}
	}
}

func mustKey(t *testing.T) *signingkey.Key {
	t.Helper()
	k, err := signingkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}
