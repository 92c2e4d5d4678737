package accesstoken_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gatehouse/gatehouse/libs/accesstoken"
	"github.com/gatehouse/gatehouse/libs/accesstoken/accesstokentest"
)

func newVerifier(t *testing.T, iss *accesstokentest.Issuer) *accesstoken.Verifier {
	t.Helper()
	jwks, err := accesstoken.NewJWKS(accesstoken.JWKSConfig{URL: iss.JWKSURL()})
	if err != nil {
		t.Fatal(err)
	}
	v, err := accesstoken.NewVerifier(accesstoken.Config{Issuer: iss.URL, Audience: accesstokentest.Audience, Keys: jwks})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerifyValid(t *testing.T) {
	t.Parallel()
	iss := accesstokentest.NewIssuer(t)
	v := newVerifier(t, iss)
	raw := iss.Mint(t, map[string]any{
		"sub": "alice", "client_id": "invoice-web", "roles": []string{"billing_approver"},
		"scope": "openid invoice:read", "acr": "mfa", "amr": []string{"pwd", "otp"}, "auth_time": time.Now().Unix(),
		"act": map[string]any{"sub": "sam", "client_id": "support-console", "act": map[string]any{"sub": "bot"}},
	}, nil)
	c, err := v.Verify(t.Context(), raw)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "alice" || c.Tenant != "acme" || c.ClientID != "invoice-web" || c.ACR != "mfa" {
		t.Fatalf("claims: %+v", c)
	}
	if !c.HasScope("invoice:read") || c.HasScope("invoice:write") || c.IsClient() {
		t.Fatalf("scope/client helpers wrong: %+v", c)
	}
	if c.Actor == nil || c.Actor.Subject != "sam" || c.Actor.Actor == nil || c.Actor.Actor.Subject != "bot" {
		t.Fatalf("actor chain lost: %+v", c.Actor)
	}
	if c.AuthTime.IsZero() || len(c.Roles) != 1 {
		t.Fatalf("auth_time/roles lost: %+v", c)
	}
}

func TestVerifyRejects(t *testing.T) {
	t.Parallel()
	iss := accesstokentest.NewIssuer(t)
	v := newVerifier(t, iss)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	now := time.Now()
	valid := iss.Mint(t, nil, nil)
	parts := strings.Split(valid, ".")

	tests := []struct {
		name string
		raw  string
		want error
	}{
		{"empty", "", accesstoken.ErrMalformed},
		{"garbage", "not-a-token", accesstoken.ErrMalformed},
		{"truncated", parts[0] + "." + parts[1], accesstoken.ErrMalformed},
		{"stripped signature", parts[0] + "." + parts[1] + ".", accesstoken.ErrSignature},
		{"oversized", strings.Repeat("a", accesstoken.MaxTokenBytes+1), accesstoken.ErrTooLarge},
		{"alg none", unsigned(t, `{"alg":"none","typ":"at+jwt","kid":"test-key-1"}`, parts[1]), accesstoken.ErrMalformed},
		{"HMAC with public key as secret", accesstokentest.Sign(t, jose.HS256, []byte("public-key-bytes-as-hmac-secret!"), kid1(iss), iss.Claims(), nil), accesstoken.ErrMalformed},
		{"RS256", accesstokentest.Sign(t, jose.RS256, rsaKey, kid1(iss), iss.Claims(), nil), accesstoken.ErrMalformed},
		{"foreign key same kid", accesstokentest.Sign(t, jose.ES256, other, kid1(iss), iss.Claims(), nil), accesstoken.ErrSignature},
		{"unknown kid", accesstokentest.Sign(t, jose.ES256, other, "nope", iss.Claims(), nil), accesstoken.ErrUnknownKey},
		{"no kid", accesstokentest.Sign(t, jose.ES256, key1(iss), "", iss.Claims(), nil), accesstoken.ErrHeader},
		{"jku header", iss.Mint(t, nil, map[jose.HeaderKey]any{"jku": "http://evil/jwks"}), accesstoken.ErrHeader},
		{"x5u header", iss.Mint(t, nil, map[jose.HeaderKey]any{"x5u": "http://evil/cert"}), accesstoken.ErrHeader},
		{"crit header", iss.Mint(t, nil, map[jose.HeaderKey]any{"crit": []string{"exp"}}), accesstoken.ErrHeader},
		{"kid path traversal", accesstokentest.Sign(t, jose.ES256, key1(iss), "../../etc/passwd", iss.Claims(), nil), accesstoken.ErrUnknownKey},
		{"typ JWT (ID token shape)", iss.Mint(t, nil, map[jose.HeaderKey]any{"typ": "JWT"}), accesstoken.ErrType},
		{"no typ", iss.Mint(t, nil, map[jose.HeaderKey]any{"typ": nil}), accesstoken.ErrType},
		{"edited payload", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"admin"}`)) + "." + parts[2], accesstoken.ErrSignature},
		{"wrong issuer", iss.Mint(t, map[string]any{"iss": "http://evil"}, nil), accesstoken.ErrIssuer},
		{"wrong audience", iss.Mint(t, map[string]any{"aud": []string{"other-api"}}, nil), accesstoken.ErrAudience},
		{"expired", iss.Mint(t, map[string]any{"exp": now.Add(-time.Minute).Unix()}, nil), accesstoken.ErrExpired},
		{"not yet valid", iss.Mint(t, map[string]any{"nbf": now.Add(time.Hour).Unix()}, nil), accesstoken.ErrNotYetValid},
		{"issued in future", iss.Mint(t, map[string]any{"iat": now.Add(time.Hour).Unix()}, nil), accesstoken.ErrNotYetValid},
		{"no exp", iss.Mint(t, map[string]any{"exp": nil}, nil), accesstoken.ErrMissingClaim},
		{"no tenant", iss.Mint(t, map[string]any{"tenant": nil}, nil), accesstoken.ErrMissingClaim},
		{"no client_id", iss.Mint(t, map[string]any{"client_id": nil}, nil), accesstoken.ErrMissingClaim},
		{"one-year lifetime", iss.Mint(t, map[string]any{"exp": now.Add(365 * 24 * time.Hour).Unix()}, nil), accesstoken.ErrLifetime},
		{"DPoP-bound (cnf)", iss.Mint(t, map[string]any{"cnf": map[string]any{"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}, nil), accesstoken.ErrSenderBound},
		{"actor without sub", iss.Mint(t, map[string]any{"act": map[string]any{"client_id": "x"}}, nil), accesstoken.ErrMissingClaim},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := v.Verify(t.Context(), tc.raw)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func unsigned(t *testing.T, header, payload string) string {
	t.Helper()
	return base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + payload + "."
}

// TestUnknownKidRefetchIsRateLimited sends many tokens with random kids and
// checks the JWKS endpoint is fetched once, not once per token.
func TestUnknownKidRefetchIsRateLimited(t *testing.T) {
	t.Parallel()
	iss := accesstokentest.NewIssuer(t)
	v := newVerifier(t, iss)
	if _, err := v.Verify(t.Context(), iss.Mint(t, nil, nil)); err != nil {
		t.Fatal(err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			raw := accesstokentest.Sign(t, jose.ES256, other, rand.Text(), iss.Claims(), nil)
			if _, err := v.Verify(context.Background(), raw); !errors.Is(err, accesstoken.ErrUnknownKey) {
				t.Errorf("got %v", err)
			}
		})
	}
	wg.Wait()
	if n := iss.Fetches.Load(); n != 1 {
		t.Fatalf("JWKS fetched %d times, want 1 (the refetch must be rate-limited)", n)
	}
}

// TestRotationPicksUpNewKey: a token signed by a key the cache has not seen
// yet is accepted after one refetch, once the rate limit allows it.
func TestRotationPicksUpNewKey(t *testing.T) {
	t.Parallel()
	iss := accesstokentest.NewIssuer(t)
	clock := time.Now()
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	jwks, _ := accesstoken.NewJWKS(accesstoken.JWKSConfig{URL: iss.JWKSURL(), Now: now, MinRefetchInterval: time.Second})
	v, _ := accesstoken.NewVerifier(accesstoken.Config{Issuer: iss.URL, Audience: accesstokentest.Audience, Keys: jwks})
	if _, err := v.Verify(t.Context(), iss.Mint(t, nil, nil)); err != nil {
		t.Fatal(err)
	}
	// Rotate: the issuer publishes a new key under a new kid.
	iss.Rotate(t, "test-key-2")
	mu.Lock()
	clock = clock.Add(2 * time.Second)
	mu.Unlock()
	if _, err := v.Verify(t.Context(), iss.Mint(t, nil, nil)); err != nil {
		t.Fatalf("token under rotated key rejected: %v", err)
	}
}

// TestCancelledCallerDoesNotPoisonTheCache: a caller that hangs up while a
// fetch runs must not use up the refetch window for everyone else.
func TestCancelledCallerDoesNotPoisonTheCache(t *testing.T) {
	t.Parallel()
	iss := accesstokentest.NewIssuer(t)
	v := newVerifier(t, iss)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := v.Verify(ctx, iss.Mint(t, nil, nil)); err != nil && !errors.Is(err, accesstoken.ErrKeysUnavailable) {
		t.Fatalf("cancelled caller: %v", err)
	}
	if _, err := v.Verify(t.Context(), iss.Mint(t, nil, nil)); err != nil {
		t.Fatalf("the next caller is refused after a cancelled one: %v", err)
	}
}

func TestReadyFailsWithoutKeys(t *testing.T) {
	t.Parallel()
	jwks, _ := accesstoken.NewJWKS(accesstoken.JWKSConfig{URL: "http://127.0.0.1:1/jwks"})
	for range 2 { // the second call is inside the refetch window: still not ready
		if err := jwks.Ready(t.Context()); !errors.Is(err, accesstoken.ErrKeysUnavailable) {
			t.Fatalf("Ready without keys = %v", err)
		}
	}
	iss := accesstokentest.NewIssuer(t)
	good, _ := accesstoken.NewJWKS(accesstoken.JWKSConfig{URL: iss.JWKSURL()})
	if err := good.Ready(t.Context()); err != nil {
		t.Fatalf("Ready with a reachable issuer: %v", err)
	}
}

// TestEmptyCacheRetriesWithinASecond: while no key set was ever loaded (the
// issuer was down at start), the next fetch comes after a second, not after
// the full refetch interval.
func TestEmptyCacheRetriesWithinASecond(t *testing.T) {
	t.Parallel()
	iss := accesstokentest.NewIssuer(t)
	var up atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		resp, err := http.Get(iss.JWKSURL())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		_, _ = io.Copy(w, resp.Body)
	}))
	t.Cleanup(srv.Close)
	clock := time.Now()
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	jwks, _ := accesstoken.NewJWKS(accesstoken.JWKSConfig{URL: srv.URL, Now: now, MinRefetchInterval: time.Minute})
	if err := jwks.Ready(t.Context()); err == nil {
		t.Fatal("ready while the issuer is down")
	}
	up.Store(true)
	mu.Lock()
	clock = clock.Add(1100 * time.Millisecond)
	mu.Unlock()
	if err := jwks.Ready(t.Context()); err != nil {
		t.Fatalf("still not ready a second after the issuer came up: %v", err)
	}
}

func TestKeysUnavailable(t *testing.T) {
	t.Parallel()
	jwks, _ := accesstoken.NewJWKS(accesstoken.JWKSConfig{URL: "http://127.0.0.1:1/jwks"})
	iss := accesstokentest.NewIssuer(t)
	v, _ := accesstoken.NewVerifier(accesstoken.Config{Issuer: iss.URL, Audience: accesstokentest.Audience, Keys: jwks})
	if _, err := v.Verify(t.Context(), iss.Mint(t, nil, nil)); !errors.Is(err, accesstoken.ErrKeysUnavailable) {
		t.Fatalf("got %v, want ErrKeysUnavailable", err)
	}
}

func BenchmarkVerify(b *testing.B) {
	iss := accesstokentest.NewIssuer(b)
	jwks, _ := accesstoken.NewJWKS(accesstoken.JWKSConfig{URL: iss.JWKSURL()})
	v, _ := accesstoken.NewVerifier(accesstoken.Config{Issuer: iss.URL, Audience: accesstokentest.Audience, Keys: jwks})
	raw := iss.Mint(b, nil, nil)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, raw); err != nil {
			b.Fatal(err)
		}
	}
}

func key1(iss *accesstokentest.Issuer) *ecdsa.PrivateKey { k, _ := iss.SigningKey(); return k }
func kid1(iss *accesstokentest.Issuer) string            { _, kid := iss.SigningKey(); return kid }

// TestOnFetchHearsEveryFetch: OnFetch hears each fetch the cache makes,
// with its outcome, and nothing when the cache answers.
func TestOnFetchHearsEveryFetch(t *testing.T) {
	t.Parallel()
	iss := accesstokentest.NewIssuer(t)
	for _, tc := range []struct {
		name    string
		url     string
		wantErr bool
	}{
		{"the issuer answers", iss.JWKSURL(), false},
		{"nobody answers", "http://127.0.0.1:1/jwks", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var ok, failed atomic.Int64
			jwks, _ := accesstoken.NewJWKS(accesstoken.JWKSConfig{URL: tc.url, OnFetch: func(err error) {
				if err != nil {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
			}})
			v, _ := accesstoken.NewVerifier(accesstoken.Config{Issuer: iss.URL, Audience: accesstokentest.Audience, Keys: jwks})
			for range 3 { // the first fetches; the others find the set, or are too soon to retry
				_, _ = v.Verify(t.Context(), iss.Mint(t, nil, nil))
			}
			if tc.wantErr && (ok.Load() != 0 || failed.Load() != 1) || !tc.wantErr && (ok.Load() != 1 || failed.Load() != 0) {
				t.Errorf("heard %d successful and %d failed fetches", ok.Load(), failed.Load())
			}
		})
	}
}
