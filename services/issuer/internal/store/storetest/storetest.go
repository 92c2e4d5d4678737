// Package storetest is the contract suite every store.Store implementation
// passes, so the memory and Postgres stores stay interchangeable.
package storetest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v3"

	"github.com/gatehouse/gatehouse/services/issuer/internal/client"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/tokensession"
)

// Run runs the contract suite; newStore returns a fresh, empty store for
// each subtest.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Helper()
	t.Run("Ping", func(t *testing.T) {
		t.Parallel()
		if err := newStore(t).Ping(t.Context()); err != nil {
			t.Fatalf("Ping = %v", err)
		}
	})
	t.Run("GetClientUnknown", func(t *testing.T) {
		t.Parallel()
		_, err := newStore(t).GetClient(t.Context(), "nobody")
		if !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetClient = %v, want ErrNotFound", err)
		}
	})
	t.Run("UpsertClientRoundTrip", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name   string
			client func(t *testing.T) *client.Client
		}{
			{name: "client_secret_basic by default", client: func(*testing.T) *client.Client { return confidential("reporting-job") }},
			{name: "client_secret_post with every field", client: func(*testing.T) *client.Client {
				c := confidential("support-console")
				c.AuthMethod = client.AuthMethodClientSecretPost
				c.GrantTypes = []string{client.GrantAuthorizationCode, client.GrantRefreshToken, client.GrantTokenExchange}
				c.ResponseTypes = []string{"code"}
				c.RedirectURIs = []string{"https://support.example/callback", "http://127.0.0.1/callback"}
				c.RefreshTokenLifespan = 36*time.Hour + 1500*time.Millisecond
				c.DisplayName = "Support Console – Ünïcode"
				return c
			}},
			{name: "private_key_jwt", client: func(t *testing.T) *client.Client { return keyClient(t, "billing-bot") }},
			{name: "public", client: func(*testing.T) *client.Client { return public("invoice-web") }},
			{name: "public with auth method none", client: func(*testing.T) *client.Client {
				c := public("invoice-web")
				c.AuthMethod = client.AuthMethodNone
				c.DisplayName = "Invoices"
				return c
			}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				s := newStore(t)
				want := tc.client(t)
				if err := s.UpsertClient(t.Context(), want); err != nil {
					t.Fatal(err)
				}
				got, err := s.GetClient(t.Context(), want.ID)
				if err != nil {
					t.Fatal(err)
				}
				assertClient(t, got, want)
			})
		}
	})
	t.Run("UpsertClientReplaces", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		// Each version replaces the previous one completely, including a
		// switch of auth method that adds or drops the key set and secret.
		post := confidential("billing-bot")
		post.Scopes = []string{"invoice:read", "invoice:write"}
		post.SecretHash = []byte("another-hash-of-32-bytes-length!")
		post.AccessTokenLifespan = 0
		post.AuthMethod = client.AuthMethodClientSecretPost
		post.DisplayName = "Billing Bot"
		versions := []*client.Client{
			confidential("billing-bot"),
			keyClient(t, "billing-bot"),
			post,
			keyClient(t, "billing-bot"),
			confidential("billing-bot"),
		}
		for i, want := range versions {
			if err := s.UpsertClient(t.Context(), want); err != nil {
				t.Fatalf("version %d: %v", i, err)
			}
			got, err := s.GetClient(t.Context(), "billing-bot")
			if err != nil {
				t.Fatal(err)
			}
			assertClient(t, got, want)
		}
	})
	t.Run("UpsertClientRejectsInvalid", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name string
			edit func(t *testing.T, c *client.Client)
		}{
			{name: "confidential without secret", edit: func(_ *testing.T, c *client.Client) { c.SecretHash = nil }},
			{name: "unknown auth method", edit: func(_ *testing.T, c *client.Client) { c.AuthMethod = "client_secret_jwt" }},
			{name: "confidential with auth method none", edit: func(_ *testing.T, c *client.Client) { c.AuthMethod = client.AuthMethodNone }},
			{name: "private_key_jwt without keys", edit: func(_ *testing.T, c *client.Client) {
				c.SecretHash, c.AuthMethod = nil, client.AuthMethodPrivateKeyJWT
			}},
			{name: "private_key_jwt with a secret", edit: func(t *testing.T, c *client.Client) {
				c.AuthMethod, c.JWKS = client.AuthMethodPrivateKeyJWT, publicJWKS(t, "k1")
			}},
			{name: "private key in the key set", edit: func(t *testing.T, c *client.Client) {
				c.SecretHash, c.AuthMethod, c.JWKS = nil, client.AuthMethodPrivateKeyJWT, privateJWKS(t, "k1")
			}},
			{name: "key set on a secret client", edit: func(t *testing.T, c *client.Client) { c.JWKS = publicJWKS(t, "k1") }},
			{name: "negative refresh lifespan", edit: func(_ *testing.T, c *client.Client) { c.RefreshTokenLifespan = -time.Second }},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				s := newStore(t)
				stored := confidential("reporting-job")
				if err := s.UpsertClient(t.Context(), stored); err != nil {
					t.Fatal(err)
				}
				for _, id := range []string{"reporting-job", "newcomer"} {
					bad := confidential(id)
					tc.edit(t, bad)
					if err := s.UpsertClient(t.Context(), bad); !errors.Is(err, client.ErrInvalid) {
						t.Fatalf("UpsertClient(%s) = %v, want ErrInvalid", id, err)
					}
				}
				if _, err := s.GetClient(t.Context(), "newcomer"); !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("GetClient after rejected create = %v, want ErrNotFound", err)
				}
				got, err := s.GetClient(t.Context(), "reporting-job")
				if err != nil {
					t.Fatal(err)
				}
				assertClient(t, got, stored)
			})
		}
	})
	t.Run("ClientCopies", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		in := keyClient(t, "billing-bot")
		want := in.Clone()
		if err := s.UpsertClient(t.Context(), in); err != nil {
			t.Fatal(err)
		}
		in.Scopes[0] = "admin"
		in.JWKS.Keys[0].KeyID = "caller-kid"
		got, err := s.GetClient(t.Context(), "billing-bot")
		if err != nil {
			t.Fatal(err)
		}
		assertClient(t, got, want)
		got.Scopes[0] = "admin"
		got.JWKS.Keys[0].KeyID = "caller-kid"
		again, err := s.GetClient(t.Context(), "billing-bot")
		if err != nil {
			t.Fatal(err)
		}
		assertClient(t, again, want)
	})
	t.Run("TokenSessionRoundTrip", func(t *testing.T) {
		t.Parallel()
		s := withClient(t, newStore(t))
		want := session("sig-1", "jti-1")
		if err := s.CreateTokenSession(t.Context(), want); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetTokenSession(t.Context(), "sig-1")
		if err != nil {
			t.Fatal(err)
		}
		assertSession(t, got, want)
	})
	t.Run("TokenSessionConflicts", func(t *testing.T) {
		t.Parallel()
		s := withClient(t, newStore(t))
		if err := s.CreateTokenSession(t.Context(), session("sig-1", "jti-1")); err != nil {
			t.Fatal(err)
		}
		for name, rec := range map[string]tokensession.Record{
			"same signature": session("sig-1", "jti-2"),
			"same jti":       session("sig-2", "jti-1"),
		} {
			if err := s.CreateTokenSession(t.Context(), rec); !errors.Is(err, store.ErrConflict) {
				t.Errorf("%s: CreateTokenSession = %v, want ErrConflict", name, err)
			}
		}
		if _, err := s.GetTokenSession(t.Context(), "sig-2"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("conflicting record was stored: %v", err)
		}
	})
	t.Run("TokenSessionUnknownClient", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		if err := s.CreateTokenSession(t.Context(), session("sig-1", "jti-1")); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("CreateTokenSession = %v, want ErrNotFound", err)
		}
	})
	t.Run("TokenSessionDelete", func(t *testing.T) {
		t.Parallel()
		s := withClient(t, newStore(t))
		if err := s.CreateTokenSession(t.Context(), session("sig-1", "jti-1")); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteTokenSession(t.Context(), "sig-1"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetTokenSession(t.Context(), "sig-1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetTokenSession after delete = %v, want ErrNotFound", err)
		}
		if err := s.DeleteTokenSession(t.Context(), "sig-1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("second DeleteTokenSession = %v, want ErrNotFound", err)
		}
		// The jti is free again once its session is gone.
		if err := s.CreateTokenSession(t.Context(), session("sig-2", "jti-1")); err != nil {
			t.Fatalf("CreateTokenSession reusing a deleted jti = %v", err)
		}
	})
	t.Run("GetTokenSessionUnknown", func(t *testing.T) {
		t.Parallel()
		if _, err := newStore(t).GetTokenSession(t.Context(), "nope"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetTokenSession = %v, want ErrNotFound", err)
		}
	})
}

func confidential(id string) *client.Client {
	return &client.Client{
		ID:                  id,
		SecretHash:          []byte("0123456789abcdef0123456789abcdef"),
		Tenant:              "acme",
		GrantTypes:          []string{client.GrantClientCredentials},
		Scopes:              []string{"invoice:read"},
		Audiences:           []string{"gatehouse-api"},
		AccessTokenLifespan: 90 * time.Second,
	}
}

// public returns a valid public client (authorization code with PKCE).
func public(id string) *client.Client {
	return &client.Client{
		ID:            id,
		Public:        true,
		GrantTypes:    []string{client.GrantAuthorizationCode, client.GrantRefreshToken},
		ResponseTypes: []string{"code"},
		Scopes:        []string{"openid", "invoice:read"},
		RedirectURIs:  []string{"http://127.0.0.1/callback"},
	}
}

// keyClient returns a valid private_key_jwt client with two keys.
func keyClient(t *testing.T, id string) *client.Client {
	t.Helper()
	c := confidential(id)
	c.SecretHash = nil
	c.AuthMethod = client.AuthMethodPrivateKeyJWT
	c.JWKS = publicJWKS(t, "k1", "k2")
	c.DisplayName = "Key-authenticated " + id
	return c
}

// privateJWKS returns a set of fresh ECDSA P-256 private keys, one per kid.
func privateJWKS(t *testing.T, kids ...string) *jose.JSONWebKeySet {
	t.Helper()
	set := new(jose.JSONWebKeySet)
	for _, kid := range kids {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k, KeyID: kid, Algorithm: client.AssertionSigningAlgorithm, Use: "sig"})
	}
	return set
}

// publicJWKS returns the public half of privateJWKS.
func publicJWKS(t *testing.T, kids ...string) *jose.JSONWebKeySet {
	t.Helper()
	set := privateJWKS(t, kids...)
	for i, k := range set.Keys {
		set.Keys[i] = k.Public()
	}
	return set
}

func withClient(t *testing.T, s store.Store) store.Store {
	t.Helper()
	if err := s.UpsertClient(t.Context(), confidential("reporting-job")); err != nil {
		t.Fatal(err)
	}
	return s
}

func session(signature, jti string) tokensession.Record {
	// Microsecond precision: what Postgres keeps.
	now := time.Now().UTC().Truncate(time.Microsecond)
	return tokensession.Record{
		Signature:   signature,
		JTI:         jti,
		RequestID:   "req-" + jti,
		ClientID:    "reporting-job",
		Subject:     "reporting-job",
		Scopes:      []string{"invoice:read"},
		Audiences:   []string{"gatehouse-api"},
		RequestedAt: now,
		ExpiresAt:   now.Add(5 * time.Minute),
		Session:     []byte(`{"Subject":"reporting-job","JWTClaims":{"JTI":"` + jti + `"}}`),
	}
}

func assertClient(t *testing.T, got, want *client.Client) {
	t.Helper()
	if got.ID != want.ID || got.Tenant != want.Tenant || got.Public != want.Public ||
		!bytes.Equal(got.SecretHash, want.SecretHash) ||
		!slices.Equal(got.GrantTypes, want.GrantTypes) ||
		!slices.Equal(got.ResponseTypes, want.ResponseTypes) ||
		!slices.Equal(got.Scopes, want.Scopes) ||
		!slices.Equal(got.Audiences, want.Audiences) ||
		!slices.Equal(got.RedirectURIs, want.RedirectURIs) ||
		got.AccessTokenLifespan != want.AccessTokenLifespan ||
		got.RefreshTokenLifespan != want.RefreshTokenLifespan ||
		got.AuthMethod != want.AuthMethod || got.DisplayName != want.DisplayName {
		t.Fatalf("client = %+v, want %+v", got, want)
	}
	assertJWKS(t, got.JWKS, want.JWKS)
}

// assertJWKS compares key sets by their JSON form and by each key's
// RFC 7638 thumbprint, and checks that only public keys come back.
func assertJWKS(t *testing.T, got, want *jose.JSONWebKeySet) {
	t.Helper()
	if got == nil || want == nil {
		if got != want {
			t.Fatalf("key set = %v, want %v", got, want)
		}
		return
	}
	gotJSON, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	wantJSON, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Fatalf("key set = %s, want %s", gotJSON, wantJSON)
	}
	if len(got.Keys) != len(want.Keys) {
		t.Fatalf("%d keys, want %d", len(got.Keys), len(want.Keys))
	}
	for i := range want.Keys {
		gotPrint, err := got.Keys[i].Thumbprint(crypto.SHA256)
		if err != nil {
			t.Fatalf("key %d: %v", i, err)
		}
		wantPrint, err := want.Keys[i].Thumbprint(crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(gotPrint, wantPrint) || !got.Keys[i].IsPublic() {
			t.Fatalf("key %d (%s) differs from the stored one or is not public", i, got.Keys[i].KeyID)
		}
	}
}

func assertSession(t *testing.T, got, want tokensession.Record) {
	t.Helper()
	if got.Signature != want.Signature || got.JTI != want.JTI || got.RequestID != want.RequestID ||
		got.ClientID != want.ClientID || got.Subject != want.Subject ||
		!slices.Equal(got.Scopes, want.Scopes) || !slices.Equal(got.Audiences, want.Audiences) ||
		!got.RequestedAt.Equal(want.RequestedAt) || !got.ExpiresAt.Equal(want.ExpiresAt) {
		t.Fatalf("record = %+v, want %+v", got, want)
	}
	var gotJSON, wantJSON any
	if err := json.Unmarshal(got.Session, &gotJSON); err != nil {
		t.Fatalf("stored session is not JSON: %v", err)
	}
	if err := json.Unmarshal(want.Session, &wantJSON); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotJSON, wantJSON) {
		t.Fatalf("session = %s, want %s", got.Session, want.Session)
	}
}
