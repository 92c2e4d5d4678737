package token_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ory/fosite"

	"github.com/gatehouse/gatehouse/services/issuer/internal/client"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/memory"
	"github.com/gatehouse/gatehouse/services/issuer/internal/token"
	"github.com/gatehouse/gatehouse/services/issuer/internal/tokensession"
)

// TestRefreshFamilyLifetimeIsFixed: a rotated refresh token never outlives
// the first one of its family, whatever lifetime fosite gives it.
func TestRefreshFamilyLifetimeIsFixed(t *testing.T) {
	t.Parallel()
	st := memory.New()
	c := &client.Client{ID: "web", Public: true, GrantTypes: []string{client.GrantAuthorizationCode, client.GrantRefreshToken},
		Scopes: []string{"openid", "offline_access"}, RedirectURIs: []string{"http://127.0.0.1/callback"}}
	if err := st.UpsertClient(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	storage := token.NewStorage(st, token.NopObserver{})
	first := time.Now().Add(8 * time.Hour).UTC().Truncate(time.Second)

	req := fosite.NewRequest()
	req.ID, req.Client = "family-1", c
	sess := token.NewSession()
	sess.Subject = "bob"
	sess.SetExpiresAt(fosite.RefreshToken, first)
	req.Session = sess
	if err := storage.CreateRefreshTokenSession(t.Context(), "sig-1", "", req); err != nil {
		t.Fatal(err)
	}

	// Two rotations, each asking for a full lifetime from a later "now".
	prev := "sig-1"
	for i, sig := range []string{"sig-2", "sig-3"} {
		stored, err := storage.GetRefreshTokenSession(t.Context(), prev, token.NewSession())
		if err != nil {
			t.Fatal(err)
		}
		next := fosite.NewRequest()
		next.ID, next.Client = "family-1", c
		ns := stored.GetSession().Clone().(*token.Session)
		ns.SetExpiresAt(fosite.RefreshToken, first.Add(time.Duration(i+1)*time.Hour))
		next.Session = ns
		if err := storage.CreateRefreshTokenSession(t.Context(), sig, "", next); err != nil {
			t.Fatal(err)
		}
		g, err := st.GetGrant(t.Context(), tokensession.KindRefreshToken, sig)
		if err != nil {
			t.Fatal(err)
		}
		if !g.ExpiresAt.Equal(first) {
			t.Fatalf("rotation %d expires %s, want the family's end %s", i+1, g.ExpiresAt, first)
		}
		prev = sig
	}
}

// deleteFailsOnce is a store whose first RevokeRequest fails, as when the
// database goes away between publishing a revocation and completing it.
type deleteFailsOnce struct {
	token.Store
	mu     sync.Mutex
	failed bool
}

func (s *deleteFailsOnce) RevokeRequest(ctx context.Context, requestID string) ([]tokensession.Record, error) {
	s.mu.Lock()
	first := !s.failed
	s.failed = true
	s.mu.Unlock()
	if first {
		return nil, errors.New("connection reset")
	}
	return s.Store.RevokeRequest(ctx, requestID)
}

// TestRevokeGrantPublishesUntilComplete: whichever step of a grant's
// revocation fails, the grant is revoked at once, its access tokens stay
// until they are published, and a retry publishes them; once the
// revocation is complete, repeating it publishes nothing.
func TestRevokeGrantPublishesUntilComplete(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// wrap sets up the failure; published is how often the family is
		// published when the retry is done (a publication may repeat).
		wrap      func(token.Store) (token.Store, *flakyObserver)
		published int
	}{
		{name: "publishing fails", published: 1, wrap: func(st token.Store) (token.Store, *flakyObserver) {
			return st, &flakyObserver{}
		}},
		{name: "deleting fails after publishing", published: 2, wrap: func(st token.Store) (token.Store, *flakyObserver) {
			return &deleteFailsOnce{Store: st}, &flakyObserver{failed: true}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mem := memory.New()
			c := &client.Client{ID: "web", Public: true, GrantTypes: []string{client.GrantAuthorizationCode, client.GrantRefreshToken},
				Scopes: []string{"offline_access"}, RedirectURIs: []string{"http://127.0.0.1/callback"}}
			if err := mem.UpsertClient(t.Context(), c); err != nil {
				t.Fatal(err)
			}
			now := time.Now().UTC()
			if err := mem.CreateGrant(t.Context(), tokensession.Grant{
				Kind: tokensession.KindRefreshToken, Signature: "refresh-1", RequestID: "family-1", ClientID: "web",
				Subject: "bob", Active: true, RequestedAt: now, ExpiresAt: now.Add(time.Hour), Request: []byte(`{}`),
			}); err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				if err := mem.CreateTokenSession(t.Context(), tokensession.Record{
					Signature: fmt.Sprintf("at-%d", i), JTI: fmt.Sprintf("jti-%d", i), RequestID: "family-1", ClientID: "web",
					Subject: "bob", RequestedAt: now, ExpiresAt: now.Add(5 * time.Minute), Session: []byte(`{}`),
				}); err != nil {
					t.Fatal(err)
				}
			}
			st, obs := tc.wrap(mem)
			storage := token.NewStorage(st, obs)
			live := func() int {
				recs, err := mem.RequestTokenSessions(t.Context(), "family-1")
				if err != nil {
					t.Fatal(err)
				}
				return len(recs)
			}

			if err := storage.RevokeGrant(t.Context(), "family-1", token.RevocationReasonRequested); err == nil {
				t.Fatal("RevokeGrant succeeded although a step failed")
			}
			if g, err := mem.GetGrant(t.Context(), tokensession.KindRefreshToken, "refresh-1"); err != nil || g.Active {
				t.Fatalf("refresh token after a failed revocation = %+v, %v; want it inactive", g, err)
			}
			if n := live(); n != 2 {
				t.Fatalf("%d of 2 access tokens kept their session after a failed revocation; the retry could not publish the others", n)
			}
			if err := storage.RevokeGrant(t.Context(), "family-1", token.RevocationReasonRequested); err != nil {
				t.Fatalf("retry: %v", err)
			}
			if n := live(); n != 0 {
				t.Fatalf("%d access tokens live after the revocation", n)
			}
			// fosite's second call, a replayed token: nothing more to tell.
			for range 2 {
				if err := storage.RevokeRefreshToken(t.Context(), "family-1"); err != nil {
					t.Fatal(err)
				}
			}
			want := slices.Repeat([]string{token.RevocationRefreshFamily + " jti-0,jti-1"}, tc.published)
			if got := obs.summary(); !slices.Equal(got, want) {
				t.Fatalf("published %q, want %q", got, want)
			}
		})
	}
}
