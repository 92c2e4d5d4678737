// Package storetest is the contract suite every store.Store implementation
// passes, so the memory and Postgres stores stay interchangeable.
package storetest

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

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
		s := newStore(t)
		want := confidential("reporting-job")
		if err := s.UpsertClient(t.Context(), want); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetClient(t.Context(), want.ID)
		if err != nil {
			t.Fatal(err)
		}
		assertClient(t, got, want)
	})
	t.Run("UpsertPublicClient", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		want := &client.Client{
			ID:            "invoice-web",
			Public:        true,
			GrantTypes:    []string{client.GrantAuthorizationCode, client.GrantRefreshToken},
			ResponseTypes: []string{"code"},
			Scopes:        []string{"openid", "invoice:read"},
			RedirectURIs:  []string{"http://127.0.0.1/callback"},
		}
		if err := s.UpsertClient(t.Context(), want); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetClient(t.Context(), want.ID)
		if err != nil {
			t.Fatal(err)
		}
		assertClient(t, got, want)
	})
	t.Run("UpsertClientReplaces", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		first := confidential("billing-bot")
		if err := s.UpsertClient(t.Context(), first); err != nil {
			t.Fatal(err)
		}
		second := confidential("billing-bot")
		second.Scopes = []string{"invoice:read", "invoice:write"}
		second.SecretHash = []byte("another-hash-of-32-bytes-length!")
		second.AccessTokenLifespan = 0
		if err := s.UpsertClient(t.Context(), second); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetClient(t.Context(), "billing-bot")
		if err != nil {
			t.Fatal(err)
		}
		assertClient(t, got, second)
	})
	t.Run("UpsertClientRejectsInvalid", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		bad := confidential("no-secret")
		bad.SecretHash = nil
		if err := s.UpsertClient(t.Context(), bad); !errors.Is(err, client.ErrInvalid) {
			t.Fatalf("UpsertClient = %v, want ErrInvalid", err)
		}
		if _, err := s.GetClient(t.Context(), bad.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetClient after rejected upsert = %v, want ErrNotFound", err)
		}
	})
	t.Run("GetClientReturnsCopy", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		if err := s.UpsertClient(t.Context(), confidential("reporting-job")); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetClient(t.Context(), "reporting-job")
		if err != nil {
			t.Fatal(err)
		}
		got.Scopes[0] = "admin"
		again, err := s.GetClient(t.Context(), "reporting-job")
		if err != nil {
			t.Fatal(err)
		}
		if again.Scopes[0] != "invoice:read" {
			t.Fatalf("store shares memory with callers: scopes = %v", again.Scopes)
		}
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
		got.AccessTokenLifespan != want.AccessTokenLifespan {
		t.Fatalf("client = %+v, want %+v", got, want)
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
