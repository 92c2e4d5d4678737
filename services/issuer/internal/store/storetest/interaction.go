package storetest

import (
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/browsersession"
	"github.com/gatehouse/gatehouse/services/issuer/internal/consent"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
)

// interactionEpoch is the suites' clock; microsecond precision, as Postgres keeps.
var interactionEpoch = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

// RunBrowserSessionStore runs the store.BrowserSessionStore contract suite;
// newStore returns a fresh, empty store for each subtest.
func RunBrowserSessionStore(t *testing.T, newStore func(t *testing.T) store.BrowserSessionStore) {
	t.Helper()
	now := interactionEpoch

	t.Run("RoundTrip", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		want := browserSession("a", now)
		if err := s.CreateBrowserSession(t.Context(), want); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetBrowserSession(t.Context(), want.ID, now)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("session = %+v, want %+v", got, want)
		}
		got.AMR[0] = "changed"
		again, err := s.GetBrowserSession(t.Context(), want.ID, now)
		if err != nil {
			t.Fatal(err)
		}
		if again.AMR[0] != "pwd" {
			t.Fatalf("store shares memory with callers: amr = %v", again.AMR)
		}
	})
	t.Run("Unknown", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		id := browserSession("a", now).ID
		if _, err := s.GetBrowserSession(t.Context(), id, now); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetBrowserSession = %v, want ErrNotFound", err)
		}
		if err := s.TouchBrowserSession(t.Context(), id, now); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("TouchBrowserSession = %v, want ErrNotFound", err)
		}
		if err := s.DeleteBrowserSession(t.Context(), id); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("DeleteBrowserSession = %v, want ErrNotFound", err)
		}
	})
	t.Run("Conflict", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		first := browserSession("a", now)
		if err := s.CreateBrowserSession(t.Context(), first); err != nil {
			t.Fatal(err)
		}
		second := browserSession("a", now)
		second.Subject = "mallory"
		if err := s.CreateBrowserSession(t.Context(), second); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("second CreateBrowserSession = %v, want ErrConflict", err)
		}
		got, err := s.GetBrowserSession(t.Context(), first.ID, now)
		if err != nil || got.Subject != "alice" {
			t.Fatalf("session after conflict = %+v, %v; want alice's", got, err)
		}
	})
	t.Run("RejectsInvalid", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name   string
			mutate func(*browsersession.Session)
		}{
			{name: "raw cookie as id", mutate: func(s *browsersession.Session) { s.ID = "not-a-hash" }},
			{name: "no subject", mutate: func(s *browsersession.Session) { s.Subject = "" }},
			{name: "unknown acr", mutate: func(s *browsersession.Session) { s.ACR = "gold" }},
			{name: "idle past expiry", mutate: func(s *browsersession.Session) { s.IdleExpiresAt = s.ExpiresAt.Add(time.Second) }},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				s := newStore(t)
				sess := browserSession("a", now)
				tc.mutate(&sess)
				if err := s.CreateBrowserSession(t.Context(), sess); !errors.Is(err, browsersession.ErrInvalid) {
					t.Fatalf("CreateBrowserSession = %v, want ErrInvalid", err)
				}
				if _, err := s.GetBrowserSession(t.Context(), sess.ID, now); !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("GetBrowserSession after rejected create = %v, want ErrNotFound", err)
				}
			})
		}
	})
	t.Run("Expiry", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		sess := browserSession("a", now) // idle until +1h, absolute until +8h
		if err := s.CreateBrowserSession(t.Context(), sess); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name   string
			at     time.Time
			active bool
		}{
			{name: "just before idle expiry", at: sess.IdleExpiresAt.Add(-time.Microsecond), active: true},
			{name: "at idle expiry", at: sess.IdleExpiresAt},
			{name: "after absolute expiry", at: sess.ExpiresAt.Add(time.Hour)},
		}
		for _, tc := range tests {
			_, err := s.GetBrowserSession(t.Context(), sess.ID, tc.at)
			if tc.active && err != nil || !tc.active && !errors.Is(err, store.ErrNotFound) {
				t.Errorf("%s: GetBrowserSession = %v, want active %v", tc.name, err, tc.active)
			}
		}
	})
	t.Run("TouchExtendsIdleUpToExpiry", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		sess := browserSession("a", now)
		if err := s.CreateBrowserSession(t.Context(), sess); err != nil {
			t.Fatal(err)
		}
		later := now.Add(90 * time.Minute) // past the first idle expiry
		if err := s.TouchBrowserSession(t.Context(), sess.ID, later.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetBrowserSession(t.Context(), sess.ID, later)
		if err != nil {
			t.Fatalf("GetBrowserSession after touch = %v", err)
		}
		if !got.IdleExpiresAt.Equal(later.Add(time.Minute)) {
			t.Fatalf("idle expiry = %v, want %v", got.IdleExpiresAt, later.Add(time.Minute))
		}
		if err := s.TouchBrowserSession(t.Context(), sess.ID, sess.ExpiresAt.Add(24*time.Hour)); err != nil {
			t.Fatal(err)
		}
		got, err = s.GetBrowserSession(t.Context(), sess.ID, later)
		if err != nil {
			t.Fatal(err)
		}
		if !got.IdleExpiresAt.Equal(sess.ExpiresAt) {
			t.Fatalf("idle expiry = %v, want capped at %v", got.IdleExpiresAt, sess.ExpiresAt)
		}
	})
	t.Run("Delete", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		a, b := browserSession("a", now), browserSession("b", now)
		for _, sess := range []browsersession.Session{a, b} {
			if err := s.CreateBrowserSession(t.Context(), sess); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.DeleteBrowserSession(t.Context(), a.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetBrowserSession(t.Context(), a.ID, now); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetBrowserSession after delete = %v, want ErrNotFound", err)
		}
		if _, err := s.GetBrowserSession(t.Context(), b.ID, now); err != nil {
			t.Fatalf("other session after delete = %v", err)
		}
	})
	t.Run("DeleteExpired", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		live, idle, old := browserSession("live", now), browserSession("idle", now), browserSession("old", now)
		live.IdleExpiresAt = live.ExpiresAt
		old.AuthTime, old.ExpiresAt, old.IdleExpiresAt = now.Add(-9*time.Hour), now.Add(-time.Hour), now.Add(-time.Hour)
		for _, sess := range []browsersession.Session{live, idle, old} {
			if err := s.CreateBrowserSession(t.Context(), sess); err != nil {
				t.Fatal(err)
			}
		}
		n, err := s.DeleteExpiredBrowserSessions(t.Context(), now.Add(2*time.Hour))
		if err != nil || n != 2 {
			t.Fatalf("DeleteExpiredBrowserSessions = %d, %v; want 2", n, err)
		}
		if err := s.DeleteBrowserSession(t.Context(), idle.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("idle session survived the sweep: %v", err)
		}
		if _, err := s.GetBrowserSession(t.Context(), live.ID, now.Add(2*time.Hour)); err != nil {
			t.Fatalf("live session swept: %v", err)
		}
	})
}

// RunInteractionStore runs the store.InteractionStore contract suite;
// newStore returns a fresh, empty store for each subtest.
func RunInteractionStore(t *testing.T, newStore func(t *testing.T) store.InteractionStore) {
	t.Helper()
	now := interactionEpoch

	t.Run("RoundTrip", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name   string
			mutate func(*browsersession.Pending)
		}{
			{name: "authorization request"},
			{name: "account login in MFA step", mutate: func(p *browsersession.Pending) {
				p.ClientID, p.Query, p.Scopes, p.RedirectURI = "", nil, nil, ""
				p.Next = "account"
				p.MFAUsername, p.PasswordVerifiedAt = "alice", now
			}},
			{name: "outcome set at creation", mutate: func(p *browsersession.Pending) {
				p.Subject, p.LoginAt = "alice", now
				p.ConsentGranted, p.ConsentID = true, "consent-1"
			}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				s := newStore(t)
				want := pendingInteraction("i1", now)
				if tc.mutate != nil {
					tc.mutate(&want)
				}
				want.Version = 41 // ignored: a new interaction is version 1
				if err := s.CreateInteraction(t.Context(), want); err != nil {
					t.Fatal(err)
				}
				got, err := s.GetInteraction(t.Context(), want.ID, now)
				if err != nil {
					t.Fatal(err)
				}
				want.Version = 1
				assertPending(t, got, want)
			})
		}
	})
	t.Run("GetReturnsCopy", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		if err := s.CreateInteraction(t.Context(), pendingInteraction("i1", now)); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetInteraction(t.Context(), "i1", now)
		if err != nil {
			t.Fatal(err)
		}
		got.Scopes[0] = "admin"
		got.Query.Set("client_id", "mallory")
		again, err := s.GetInteraction(t.Context(), "i1", now)
		if err != nil {
			t.Fatal(err)
		}
		if again.Scopes[0] != "openid" || again.Query.Get("client_id") != "invoice-web" {
			t.Fatalf("store shares memory with callers: %+v", again)
		}
	})
	t.Run("UnknownAndExpired", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		p := pendingInteraction("i1", now)
		if err := s.CreateInteraction(t.Context(), p); err != nil {
			t.Fatal(err)
		}
		for name, get := range map[string]struct {
			id string
			at time.Time
		}{
			"unknown id":    {"nope", now},
			"at expiry":     {"i1", p.ExpiresAt},
			"after expiry":  {"i1", p.ExpiresAt.Add(time.Hour)},
			"id of another": {"I1", now},
		} {
			if _, err := s.GetInteraction(t.Context(), get.id, get.at); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("%s: GetInteraction = %v, want ErrNotFound", name, err)
			}
		}
		if _, err := s.GetInteraction(t.Context(), "i1", p.ExpiresAt.Add(-time.Microsecond)); err != nil {
			t.Fatalf("GetInteraction just before expiry = %v", err)
		}
	})
	t.Run("Conflict", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		if err := s.CreateInteraction(t.Context(), pendingInteraction("i1", now)); err != nil {
			t.Fatal(err)
		}
		other := pendingInteraction("i1", now)
		other.ClientID = "mallory-app"
		if err := s.CreateInteraction(t.Context(), other); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("second CreateInteraction = %v, want ErrConflict", err)
		}
		got, err := s.GetInteraction(t.Context(), "i1", now)
		if err != nil || got.ClientID != "invoice-web" {
			t.Fatalf("interaction after conflict = %+v, %v", got, err)
		}
	})
	t.Run("RejectsInvalid", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name   string
			mutate func(*browsersession.Pending)
		}{
			{name: "no browser binding", mutate: func(p *browsersession.Pending) { p.Browser = "" }},
			{name: "id with a slash", mutate: func(p *browsersession.Pending) { p.ID = "a/b" }},
			{name: "neither client nor next", mutate: func(p *browsersession.Pending) { p.ClientID = "" }},
			{name: "invalid scope", mutate: func(p *browsersession.Pending) { p.Scopes = []string{"a b"} }},
			{name: "huge query", mutate: func(p *browsersession.Pending) {
				p.Query.Set("state", strings.Repeat("x", browsersession.MaxQueryBytes))
			}},
			{name: "granted and denied", mutate: func(p *browsersession.Pending) {
				p.ConsentGranted, p.ConsentID, p.ConsentDenied = true, "c", true
			}},
			{name: "MFA user without time", mutate: func(p *browsersession.Pending) { p.MFAUsername = "alice" }},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				s := newStore(t)
				p := pendingInteraction("i1", now)
				tc.mutate(&p)
				if err := s.CreateInteraction(t.Context(), p); !errors.Is(err, browsersession.ErrInvalid) {
					t.Fatalf("CreateInteraction = %v, want ErrInvalid", err)
				}
				if _, err := s.GetInteraction(t.Context(), p.ID, now); !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("GetInteraction after rejected create = %v, want ErrNotFound", err)
				}
			})
		}
	})
	t.Run("UpdateOutcomeOnly", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		orig := pendingInteraction("i1", now)
		if err := s.CreateInteraction(t.Context(), orig); err != nil {
			t.Fatal(err)
		}
		p, err := s.GetInteraction(t.Context(), "i1", now)
		if err != nil {
			t.Fatal(err)
		}
		p.Subject, p.LoginAt = "alice", now.Add(time.Minute)
		p.ConsentGranted, p.ConsentID = true, "consent-1"
		p.Failure = "x"
		// Request fields are immutable: these changes must not stick.
		p.ClientID, p.Scopes, p.RequireMFA = "mallory-app", []string{"admin"}, false
		p.Query = url.Values{"client_id": {"mallory-app"}}
		p.ExpiresAt = now.Add(24 * time.Hour)
		v, err := s.UpdateInteraction(t.Context(), p)
		if err != nil {
			t.Fatal(err)
		}
		if v != 2 {
			t.Fatalf("new version = %d, want 2", v)
		}
		got, err := s.GetInteraction(t.Context(), "i1", now)
		if err != nil {
			t.Fatal(err)
		}
		want := orig
		want.Version = 2
		want.Subject, want.LoginAt = "alice", now.Add(time.Minute)
		want.ConsentGranted, want.ConsentID, want.Failure = true, "consent-1", "x"
		assertPending(t, got, want)
	})
	t.Run("UpdateCompareAndSet", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		if err := s.CreateInteraction(t.Context(), pendingInteraction("i1", now)); err != nil {
			t.Fatal(err)
		}
		p, err := s.GetInteraction(t.Context(), "i1", now)
		if err != nil {
			t.Fatal(err)
		}
		// Two tabs read version 1 and both try to move it on: one wins.
		const n = 8
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			wins []string
		)
		for i := range n {
			wg.Go(func() {
				q := p.Clone()
				q.Subject = fmt.Sprintf("user%d", i)
				_, err := s.UpdateInteraction(t.Context(), q)
				switch {
				case err == nil:
					mu.Lock()
					wins = append(wins, q.Subject)
					mu.Unlock()
				case !errors.Is(err, store.ErrConflict):
					t.Errorf("UpdateInteraction = %v, want nil or ErrConflict", err)
				}
			})
		}
		wg.Wait()
		if len(wins) != 1 {
			t.Fatalf("%d concurrent updates of one version won (%v), want 1", len(wins), wins)
		}
		got, err := s.GetInteraction(t.Context(), "i1", now)
		if err != nil {
			t.Fatal(err)
		}
		if got.Subject != wins[0] || got.Version != 2 {
			t.Fatalf("stored subject %q version %d, want %q version 2", got.Subject, got.Version, wins[0])
		}
		unknown := pendingInteraction("nope", now)
		if _, err := s.UpdateInteraction(t.Context(), unknown); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("UpdateInteraction of unknown = %v, want ErrNotFound", err)
		}
		bad := got
		bad.ConsentDenied, bad.ConsentGranted, bad.ConsentID = true, true, "c"
		if _, err := s.UpdateInteraction(t.Context(), bad); !errors.Is(err, browsersession.ErrInvalid) {
			t.Fatalf("invalid UpdateInteraction = %v, want ErrInvalid", err)
		}
	})
	t.Run("DeleteIsSingleUse", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		if err := s.CreateInteraction(t.Context(), pendingInteraction("i1", now)); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteInteraction(t.Context(), "i1", 7); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("DeleteInteraction of a stale version = %v, want ErrConflict", err)
		}
		const n = 8
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			deleted int
		)
		for range n {
			wg.Go(func() {
				err := s.DeleteInteraction(t.Context(), "i1", 1)
				switch {
				case err == nil:
					mu.Lock()
					deleted++
					mu.Unlock()
				case !errors.Is(err, store.ErrNotFound):
					t.Errorf("DeleteInteraction = %v, want nil or ErrNotFound", err)
				}
			})
		}
		wg.Wait()
		if deleted != 1 {
			t.Fatalf("%d concurrent deletes succeeded, want 1", deleted)
		}
		if _, err := s.GetInteraction(t.Context(), "i1", now); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetInteraction after delete = %v, want ErrNotFound", err)
		}
	})
	t.Run("DeleteExpired", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		live, old := pendingInteraction("live", now), pendingInteraction("old", now.Add(-time.Hour))
		for _, p := range []browsersession.Pending{live, old} {
			if err := s.CreateInteraction(t.Context(), p); err != nil {
				t.Fatal(err)
			}
		}
		n, err := s.DeleteExpiredInteractions(t.Context(), now)
		if err != nil || n != 1 {
			t.Fatalf("DeleteExpiredInteractions = %d, %v; want 1", n, err)
		}
		if err := s.DeleteInteraction(t.Context(), "old", 1); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("expired interaction survived the sweep: %v", err)
		}
		if _, err := s.GetInteraction(t.Context(), "live", now); err != nil {
			t.Fatalf("live interaction swept: %v", err)
		}
	})
}

// RunConsentStore runs the store.ConsentStore contract suite; newStore
// returns a fresh, empty store for each subtest.
func RunConsentStore(t *testing.T, newStore func(t *testing.T) store.ConsentStore) {
	t.Helper()
	now := interactionEpoch

	t.Run("RoundTrip", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		want := grantOf("c1", "alice", "invoice-web", now, "invoice:read", "openid")
		if err := s.GrantConsent(t.Context(), want); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetConsent(t.Context(), "c1")
		if err != nil {
			t.Fatal(err)
		}
		assertConsent(t, got, want)
		got.Scopes[0] = "admin"
		again, err := s.GetConsent(t.Context(), "c1")
		if err != nil {
			t.Fatal(err)
		}
		assertConsent(t, again, want)
	})
	t.Run("UnknownAndConflict", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		if _, err := s.GetConsent(t.Context(), "c1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetConsent = %v, want ErrNotFound", err)
		}
		first := grantOf("c1", "alice", "invoice-web", now, "openid")
		if err := s.GrantConsent(t.Context(), first); err != nil {
			t.Fatal(err)
		}
		if err := s.GrantConsent(t.Context(), grantOf("c1", "mallory", "evil", now, "openid")); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("second GrantConsent = %v, want ErrConflict", err)
		}
		got, err := s.GetConsent(t.Context(), "c1")
		if err != nil {
			t.Fatal(err)
		}
		assertConsent(t, got, first)
	})
	t.Run("RejectsInvalid", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name   string
			mutate func(*consent.Consent)
		}{
			{name: "no subject", mutate: func(c *consent.Consent) { c.Subject = "" }},
			{name: "no client", mutate: func(c *consent.Consent) { c.ClientID = "" }},
			{name: "no scopes", mutate: func(c *consent.Consent) { c.Scopes = nil }},
			{name: "unsorted scopes", mutate: func(c *consent.Consent) { c.Scopes = []string{"openid", "invoice:read"} }},
			{name: "expires before granted", mutate: func(c *consent.Consent) { c.ExpiresAt = c.GrantedAt }},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				s := newStore(t)
				c := grantOf("c1", "alice", "invoice-web", now, "invoice:read", "openid")
				tc.mutate(&c)
				if err := s.GrantConsent(t.Context(), c); !errors.Is(err, consent.ErrInvalid) {
					t.Fatalf("GrantConsent = %v, want ErrInvalid", err)
				}
				if _, err := s.GetConsent(t.Context(), "c1"); !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("GetConsent after rejected grant = %v, want ErrNotFound", err)
				}
			})
		}
	})
	t.Run("FindActive", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		withdrawn := grantOf("withdrawn", "alice", "invoice-web", now.Add(3*time.Minute), "invoice:read", "invoice:write", "openid")
		for _, c := range []consent.Consent{
			grantOf("old", "alice", "invoice-web", now, "invoice:read", "openid"),
			grantOf("newer", "alice", "invoice-web", now.Add(time.Minute), "invoice:read", "openid", "profile"),
			withdrawn,
			grantOf("bobs", "bob", "invoice-web", now.Add(2*time.Minute), "invoice:read", "invoice:write", "openid"),
			grantOf("other-client", "alice", "support-console", now.Add(2*time.Minute), "invoice:read", "invoice:write", "openid"),
		} {
			if err := s.GrantConsent(t.Context(), c); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.WithdrawConsent(t.Context(), "alice", "withdrawn", now.Add(4*time.Minute)); err != nil {
			t.Fatal(err)
		}
		at := now.Add(5 * time.Minute)
		tests := []struct {
			name    string
			subject string
			client  string
			scopes  []string
			at      time.Time
			want    string // "" for ErrNotFound
		}{
			{name: "newest covering", subject: "alice", client: "invoice-web", scopes: []string{"openid", "invoice:read"}, at: at, want: "newer"},
			{name: "only one covers", subject: "alice", client: "invoice-web", scopes: []string{"profile"}, at: at, want: "newer"},
			{name: "no scopes", subject: "alice", client: "invoice-web", at: at, want: "newer"},
			{name: "withdrawn does not count", subject: "alice", client: "invoice-web", scopes: []string{"invoice:write"}, at: at},
			{name: "other client", subject: "alice", client: "support-console", scopes: []string{"invoice:write"}, at: at, want: "other-client"},
			{name: "other subject's grant", subject: "carol", client: "invoice-web", scopes: []string{"openid"}, at: at},
			{name: "expired", subject: "alice", client: "invoice-web", scopes: []string{"openid"}, at: now.Add(100 * 24 * time.Hour)},
			{name: "before the newer grant", subject: "alice", client: "invoice-web", scopes: []string{"openid"}, at: now.Add(30 * time.Second), want: "old"},
		}
		for _, tc := range tests {
			got, err := s.FindActiveConsent(t.Context(), tc.subject, tc.client, tc.scopes, tc.at)
			switch {
			case tc.want == "" && !errors.Is(err, store.ErrNotFound):
				t.Errorf("%s: FindActiveConsent = %+v, %v; want ErrNotFound", tc.name, got, err)
			case tc.want != "" && (err != nil || got.ID != tc.want):
				t.Errorf("%s: FindActiveConsent = %q, %v; want %q", tc.name, got.ID, err, tc.want)
			}
		}
	})
	t.Run("ListBySubject", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		for _, c := range []consent.Consent{
			grantOf("a1", "alice", "invoice-web", now, "openid"),
			grantOf("b1", "bob", "invoice-web", now.Add(time.Minute), "openid"),
			grantOf("a2", "alice", "support-console", now.Add(2*time.Minute), "openid"),
			grantOf("a3", "alice", "invoice-web", now.Add(2*time.Minute), "openid"), // same time as a2: ties by ID descending
		} {
			if err := s.GrantConsent(t.Context(), c); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.WithdrawConsent(t.Context(), "alice", "a1", now.Add(3*time.Minute)); err != nil {
			t.Fatal(err)
		}
		list, err := s.ListConsentsBySubject(t.Context(), "alice")
		if err != nil {
			t.Fatal(err)
		}
		if ids := consentIDs(list); !slices.Equal(ids, []string{"a3", "a2", "a1"}) {
			t.Fatalf("ListConsentsBySubject(alice) = %v, want [a3 a2 a1]", ids)
		}
		if !list[2].WithdrawnAt.Equal(now.Add(3 * time.Minute)) {
			t.Fatalf("withdrawn consent listed with WithdrawnAt %v", list[2].WithdrawnAt)
		}
		if list, err := s.ListConsentsBySubject(t.Context(), "carol"); err != nil || len(list) != 0 {
			t.Fatalf("ListConsentsBySubject(carol) = %v, %v; want none", list, err)
		}
	})
	t.Run("ListIsBounded", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		for i := range store.MaxListedConsents + 1 {
			c := grantOf(fmt.Sprintf("c%04d", i), "alice", "invoice-web", now.Add(time.Duration(i)*time.Second), "openid")
			if err := s.GrantConsent(t.Context(), c); err != nil {
				t.Fatal(err)
			}
		}
		list, err := s.ListConsentsBySubject(t.Context(), "alice")
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != store.MaxListedConsents || list[0].ID != fmt.Sprintf("c%04d", store.MaxListedConsents) {
			t.Fatalf("listed %d consents starting at %q, want %d newest first", len(list), list[0].ID, store.MaxListedConsents)
		}
	})
	t.Run("WithdrawOnlyOwnOnce", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		alices := grantOf("c1", "alice", "invoice-web", now, "invoice:read", "openid")
		if err := s.GrantConsent(t.Context(), alices); err != nil {
			t.Fatal(err)
		}
		at := now.Add(time.Hour)
		if _, err := s.WithdrawConsent(t.Context(), "bob", "c1", at); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("bob withdrawing alice's consent = %v, want ErrNotFound", err)
		}
		if got, err := s.GetConsent(t.Context(), "c1"); err != nil || !got.WithdrawnAt.IsZero() {
			t.Fatalf("alice's consent after bob's attempt = %+v, %v; want unchanged", got, err)
		}
		if _, err := s.WithdrawConsent(t.Context(), "alice", "nope", at); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("WithdrawConsent of unknown id = %v, want ErrNotFound", err)
		}
		// Concurrent withdrawals: exactly one wins.
		const n = 8
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			wins []consent.Consent
		)
		for range n {
			wg.Go(func() {
				c, err := s.WithdrawConsent(t.Context(), "alice", "c1", at)
				switch {
				case err == nil:
					mu.Lock()
					wins = append(wins, c)
					mu.Unlock()
				case !errors.Is(err, store.ErrNotFound):
					t.Errorf("WithdrawConsent = %v, want nil or ErrNotFound", err)
				}
			})
		}
		wg.Wait()
		if len(wins) != 1 {
			t.Fatalf("%d concurrent withdrawals succeeded, want 1", len(wins))
		}
		want := alices
		want.WithdrawnAt = at
		assertConsent(t, wins[0], want)
		got, err := s.GetConsent(t.Context(), "c1")
		if err != nil {
			t.Fatal(err)
		}
		assertConsent(t, got, want)
		if _, err := s.FindActiveConsent(t.Context(), "alice", "invoice-web", nil, now.Add(time.Minute)); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("FindActiveConsent after withdrawal = %v, want ErrNotFound", err)
		}
	})
}

// browserSession returns a valid session whose cookie secret was secret:
// idle for 1h, absolute 8h from at.
func browserSession(secret string, at time.Time) browsersession.Session {
	return browsersession.Session{
		ID:            fmt.Sprintf("%064x", []byte(secret)),
		Subject:       "alice",
		Tenant:        "acme",
		AuthTime:      at,
		AMR:           []string{"pwd", "otp", "mfa"},
		ACR:           browsersession.ACRMFA,
		ExpiresAt:     at.Add(8 * time.Hour),
		IdleExpiresAt: at.Add(time.Hour),
	}
}

// pendingInteraction returns a valid authorization interaction created at at.
func pendingInteraction(id string, at time.Time) browsersession.Pending {
	return browsersession.Pending{
		ID:      id,
		Browser: strings.Repeat("ab", 32),
		Query: url.Values{
			"client_id":     {"invoice-web"},
			"response_type": {"code"},
			"scope":         {"openid invoice:read"},
			"state":         {"xyz"},
		},
		ClientID:    "invoice-web",
		RedirectURI: "http://127.0.0.1:4242/callback",
		Scopes:      []string{"openid", "invoice:read"},
		RequireMFA:  true,
		CreatedAt:   at,
		ExpiresAt:   at.Add(10 * time.Minute),
	}
}

// grantOf returns a 90-day consent granted at at.
func grantOf(id, subject, clientID string, at time.Time, scopes ...string) consent.Consent {
	return consent.Consent{
		ID:        id,
		Subject:   subject,
		Tenant:    "acme",
		ClientID:  clientID,
		Scopes:    consent.NormalizeScopes(scopes),
		GrantedAt: at,
		ExpiresAt: at.Add(90 * 24 * time.Hour),
	}
}

func consentIDs(list []consent.Consent) []string {
	ids := make([]string, 0, len(list))
	for _, c := range list {
		ids = append(ids, c.ID)
	}
	return ids
}

func assertPending(t *testing.T, got, want browsersession.Pending) {
	t.Helper()
	// A nil and an empty query or scope list are the same request.
	if len(got.Query) == 0 && len(want.Query) == 0 {
		got.Query, want.Query = nil, nil
	}
	if len(got.Scopes) == 0 && len(want.Scopes) == 0 {
		got.Scopes, want.Scopes = nil, nil
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("interaction =\n%+v\nwant\n%+v", got, want)
	}
}

func assertConsent(t *testing.T, got, want consent.Consent) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("consent = %+v, want %+v", got, want)
	}
}
