package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/libs/audit"
	"github.com/gatehouse/gatehouse/services/issuer/internal/browsersession"
	"github.com/gatehouse/gatehouse/services/issuer/internal/client"
	"github.com/gatehouse/gatehouse/services/issuer/internal/consent"
	"github.com/gatehouse/gatehouse/services/issuer/internal/revocation"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/memory"
	"github.com/gatehouse/gatehouse/services/issuer/internal/tokensession"
)

// flakyLog fails its first append, as when the database restarts under it.
type flakyLog struct {
	store.RevocationLog
	mu     sync.Mutex
	failed bool
}

func (l *flakyLog) Append(ctx context.Context, ev revocation.Event) (revocation.Event, error) {
	l.mu.Lock()
	first := !l.failed
	l.failed = true
	l.mu.Unlock()
	if first {
		return revocation.Event{}, errors.New("revocation log unavailable")
	}
	return l.RevocationLog.Append(ctx, ev)
}

// nopAudit drops audit events.
type nopAudit struct{}

func (nopAudit) Record(context.Context, audit.Event) error { return nil }

// revocationFixture is a store holding grants of one consent and one
// browser session, with live access tokens, and events publishing to a
// log whose first append fails.
type revocationFixture struct {
	store    *memory.Store
	log      *memory.RevocationLog
	events   *events
	consent  consent.Consent
	session  browsersession.Session
	sessions []tokensession.Record
}

// newRevocationFixture stores tokens access tokens for each of the grants
// req-1 and req-2.
func newRevocationFixture(t *testing.T, tokens int) *revocationFixture {
	t.Helper()
	st := memory.New()
	if err := st.UpsertClient(t.Context(), &client.Client{
		ID: "web", Public: true, GrantTypes: []string{client.GrantAuthorizationCode, client.GrantRefreshToken},
		Scopes: []string{"offline_access"}, RedirectURIs: []string{"http://127.0.0.1/callback"},
	}); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("browser-1"))
	f := &revocationFixture{
		store:   st,
		log:     memory.NewRevocationLog(),
		consent: consent.Consent{ID: "consent-1", Subject: "bob", Tenant: "acme", ClientID: "web"},
		session: browsersession.Session{ID: hex.EncodeToString(sum[:]), Subject: "bob", Tenant: "acme"},
	}
	f.events = &events{
		revocations:      &flakyLog{RevocationLog: f.log},
		audit:            nopAudit{},
		logger:           slog.New(slog.DiscardHandler),
		maxTokenLifetime: time.Hour,
	}
	now := time.Now().UTC()
	for _, req := range []string{"req-1", "req-2"} {
		if err := st.CreateGrant(t.Context(), tokensession.Grant{
			Kind: tokensession.KindRefreshToken, Signature: "refresh-" + req, RequestID: req,
			ClientID: "web", Subject: "bob", ConsentID: f.consent.ID, SessionID: f.session.ID,
			Active: true, RequestedAt: now, ExpiresAt: now.Add(8 * time.Hour), Request: []byte(`{}`),
		}); err != nil {
			t.Fatal(err)
		}
		for i := range tokens {
			rec := tokensession.Record{
				Signature: fmt.Sprintf("at-%s-%d", req, i), JTI: fmt.Sprintf("jti-%s-%d", req, i),
				RequestID: req, ClientID: "web", Subject: "bob",
				RequestedAt: now, ExpiresAt: now.Add(5 * time.Minute), Session: []byte(`{}`),
			}
			if err := st.CreateTokenSession(t.Context(), rec); err != nil {
				t.Fatal(err)
			}
			f.sessions = append(f.sessions, rec)
		}
	}
	return f
}

// published returns the events in the log.
func (f *revocationFixture) published(t *testing.T) []revocation.Event {
	t.Helper()
	page, err := f.log.After(t.Context(), 0, store.MaxRevocationPage)
	if err != nil {
		t.Fatal(err)
	}
	return page.Events
}

// liveSessions counts the fixture's access tokens that still have a session.
func (f *revocationFixture) liveSessions(t *testing.T) int {
	t.Helper()
	n := 0
	for _, rec := range f.sessions {
		_, err := f.store.GetTokenSession(t.Context(), rec.Signature)
		switch {
		case err == nil:
			n++
		case !errors.Is(err, store.ErrNotFound):
			t.Fatal(err)
		}
	}
	return n
}

// TestRevocationsSurviveAFailedPublication: when the event of a consent
// withdrawal or a sign-out cannot be published, the grants end all the
// same but their access tokens' sessions stay, so the retry (a sign-out
// keeps the browser session when it fails) publishes them. Deleting them
// first would leave the retry an event without jtis: tokens no gateway
// refuses.
func TestRevocationsSurviveAFailedPublication(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		kind   revocation.Kind
		revoke func(ctx context.Context, f *revocationFixture) error
	}{
		{name: "consent withdrawn", kind: revocation.KindConsent, revoke: func(ctx context.Context, f *revocationFixture) error {
			return f.events.consentWithdrawn(ctx, f.store, f.consent)
		}},
		{name: "signed out", kind: revocation.KindSession, revoke: func(ctx context.Context, f *revocationFixture) error {
			return f.events.signedOut(ctx, f.store, f.session)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newRevocationFixture(t, 2)
			var want []string
			for _, rec := range f.sessions {
				want = append(want, rec.JTI)
			}

			if err := tc.revoke(t.Context(), f); err == nil {
				t.Fatal("revocation succeeded although publishing failed")
			}
			if n := f.liveSessions(t); n != len(f.sessions) {
				t.Fatalf("%d of %d access tokens kept their session after a failed publication; the retry could not publish the others", n, len(f.sessions))
			}
			for _, req := range []string{"req-1", "req-2"} {
				if revoked, err := f.store.RequestRevoked(t.Context(), req); err != nil || !revoked {
					t.Fatalf("grant %s after a failed publication: revoked = %v, %v; want revoked", req, revoked, err)
				}
			}

			if err := tc.revoke(t.Context(), f); err != nil {
				t.Fatalf("retry: %v", err)
			}
			events := f.published(t)
			if len(events) != 1 || events[0].Kind != tc.kind || !slices.Equal(events[0].JTIs, want) {
				t.Fatalf("published %+v, want one %s event with jtis %v", events, tc.kind, want)
			}
			if n := f.liveSessions(t); n != 0 {
				t.Fatalf("%d access tokens still live after the revocation", n)
			}
		})
	}
}

// TestRevocationOfManyTokens: a revocation covering more access tokens
// than an event may list goes out as several events, together listing
// every one. A single event would be refused, and as a revocation is
// published before it is complete, refused on every retry.
func TestRevocationOfManyTokens(t *testing.T) {
	t.Parallel()
	f := newRevocationFixture(t, revocation.MaxJTIs/2+1)
	f.events.revocations = f.log
	if err := f.events.signedOut(t.Context(), f.store, f.session); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range f.published(t) {
		if ev.Kind != revocation.KindSession || ev.ID != f.session.ID || len(ev.JTIs) > revocation.MaxJTIs {
			t.Fatalf("event %s %s with %d jtis, want a session event of at most %d", ev.Kind, ev.ID, len(ev.JTIs), revocation.MaxJTIs)
		}
		got = append(got, ev.JTIs...)
	}
	var want []string
	for _, rec := range f.sessions {
		want = append(want, rec.JTI)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("published %d jtis, want the %d of the revoked grants", len(got), len(want))
	}
	if n := f.liveSessions(t); n != 0 {
		t.Fatalf("%d access tokens still live after the revocation", n)
	}
}
