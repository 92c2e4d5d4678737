package token_test

import (
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
