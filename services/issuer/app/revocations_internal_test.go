package app

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/revocation"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/memory"
	"github.com/gatehouse/gatehouse/services/issuer/internal/token"
	"github.com/gatehouse/gatehouse/services/issuer/internal/tokensession"
)

// jtisOf returns the jtis of the fixture's access tokens of requestID,
// sorted, or of all of them for "".
func (f *revocationFixture) jtisOf(requestID string) []string {
	var jtis []string
	for _, rec := range f.sessions {
		if requestID == "" || rec.RequestID == requestID {
			jtis = append(jtis, rec.JTI)
		}
	}
	slices.Sort(jtis)
	return jtis
}

// assertCompletionEvents checks that events are refresh-family events
// completing exactly the grants requestIDs, in that order, each listing
// that grant's access tokens.
func assertCompletionEvents(t *testing.T, f *revocationFixture, events []revocation.Event, requestIDs ...string) {
	t.Helper()
	if len(events) != len(requestIDs) {
		t.Fatalf("published %+v, want one event for each of %v", events, requestIDs)
	}
	for i, ev := range events {
		if ev.Kind != revocation.KindRefreshFamily || ev.ID != requestIDs[i] || ev.Reason != revocationReasonCompleted ||
			ev.Subject != "bob" || ev.ClientID != "web" || !slices.Equal(ev.JTIs, f.jtisOf(requestIDs[i])) {
			t.Fatalf("event %d = %+v, want a %s refresh_family event of %s with jtis %v", i, ev, revocationReasonCompleted, requestIDs[i], f.jtisOf(requestIDs[i]))
		}
	}
}

// TestCompleteRevocations: a round completes the revocations whose
// publication failed (a consent withdrawal, which nobody retries, here):
// it publishes their access tokens and deletes their sessions, at most
// limit grants a round. A completed revocation is not published again,
// and a grant that was never revoked is left alone.
func TestCompleteRevocations(t *testing.T) {
	t.Parallel()
	f := newRevocationFixture(t, 2)
	// A live grant of the same user, not revoked.
	now := time.Now().UTC()
	if err := f.store.CreateTokenSession(t.Context(), tokensession.Record{
		Signature: "at-live", JTI: "jti-live", RequestID: "req-live", ClientID: "web", Subject: "bob",
		RequestedAt: now, ExpiresAt: now.Add(5 * time.Minute), Session: []byte(`{}`),
	}); err != nil {
		t.Fatal(err)
	}
	if err := f.events.consentWithdrawn(t.Context(), f.store, f.consent); err == nil {
		t.Fatal("consent withdrawal succeeded although publishing failed")
	}
	if len(f.published(t)) != 0 || f.liveSessions(t) != len(f.sessions) {
		t.Fatal("the failed withdrawal published or deleted something")
	}

	// One grant a round with limit 1.
	n, err := completeRevocations(t.Context(), f.store, f.events, time.Now(), 1)
	if err != nil || n != 1 {
		t.Fatalf("first round = %d, %v; want 1 completed", n, err)
	}
	assertCompletionEvents(t, f, f.published(t), "req-1")
	n, err = completeRevocations(t.Context(), f.store, f.events, time.Now(), 1)
	if err != nil || n != 1 {
		t.Fatalf("second round = %d, %v; want 1 completed", n, err)
	}
	assertCompletionEvents(t, f, f.published(t), "req-1", "req-2")
	if live := f.liveSessions(t); live != 0 {
		t.Fatalf("%d access tokens of the revoked grants still live", live)
	}

	// Nothing left: no event again.
	n, err = completeRevocations(t.Context(), f.store, f.events, time.Now(), revocationCompletionBatch)
	if err != nil || n != 0 {
		t.Fatalf("round after completion = %d, %v; want none", n, err)
	}
	assertCompletionEvents(t, f, f.published(t), "req-1", "req-2")
	if _, err := f.store.GetTokenSession(t.Context(), "at-live"); err != nil {
		t.Fatalf("the access token of a grant never revoked: %v", err)
	}
}

// TestCompleteRevocationsRetriesFailedPublication: a round whose own
// publication fails keeps the sessions, and the next round publishes them.
// The grant here was ended as a refresh-token reuse ends it when the
// publication fails: marked revoked, sessions kept.
func TestCompleteRevocationsRetriesFailedPublication(t *testing.T) {
	t.Parallel()
	f := newRevocationFixture(t, 2)
	if err := f.store.MarkRequestRevoked(t.Context(), "req-2"); err != nil {
		t.Fatal(err)
	}
	n, err := completeRevocations(t.Context(), f.store, f.events, time.Now(), revocationCompletionBatch)
	if err == nil || n != 0 {
		t.Fatalf("round with a failing revocation log = %d, %v; want an error", n, err)
	}
	if live := f.liveSessions(t); live != len(f.sessions) {
		t.Fatalf("%d of %d access tokens kept their session after a failed publication", live, len(f.sessions))
	}
	n, err = completeRevocations(t.Context(), f.store, f.events, time.Now(), revocationCompletionBatch)
	if err != nil || n != 1 {
		t.Fatalf("next round = %d, %v; want 1 completed", n, err)
	}
	assertCompletionEvents(t, f, f.published(t), "req-2")
	for _, rec := range f.sessions {
		_, err := f.store.GetTokenSession(t.Context(), rec.Signature)
		if gone := errors.Is(err, store.ErrNotFound); gone != (rec.RequestID == "req-2") {
			t.Fatalf("access token of %s after completing req-2: GetTokenSession = %v", rec.RequestID, err)
		}
	}
}

// TestConsentWithdrawalCompletedInBackground: the issuer's loop completes
// a consent withdrawal whose publication failed, without any retry from
// the user (who could not retry: the consent is already gone), and stops
// when asked.
func TestConsentWithdrawalCompletedInBackground(t *testing.T) {
	t.Parallel()
	f := newRevocationFixture(t, 2)
	if err := f.events.consentWithdrawn(t.Context(), f.store, f.consent); err == nil {
		t.Fatal("consent withdrawal succeeded although publishing failed")
	}
	a := &App{}
	a.startRevocationCompletion(t.Context(), f.store, f.events, slog.New(slog.DiscardHandler), 10*time.Millisecond)
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		a.completion.stop()
		select {
		case <-a.completion.done:
		case <-time.After(10 * time.Second):
			t.Fatal("the completion loop did not stop")
		}
	}
	t.Cleanup(stop)

	deadline := time.Now().Add(10 * time.Second)
	for f.liveSessions(t) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d access tokens of the withdrawn consent still live after 10s", f.liveSessions(t))
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	assertCompletionEvents(t, f, f.published(t), "req-1", "req-2")
}

// hookedGrants runs a hook after marking or listing a grant, to place
// another revocation of it exactly there.
type hookedGrants struct {
	*memory.Store
	afterMark, afterList func(ctx context.Context, requestID string)
}

func (g *hookedGrants) MarkRequestRevoked(ctx context.Context, requestID string) error {
	err := g.Store.MarkRequestRevoked(ctx, requestID)
	if err == nil && g.afterMark != nil {
		g.afterMark(ctx, requestID)
	}
	return err
}

func (g *hookedGrants) RequestTokenSessions(ctx context.Context, requestID string) ([]tokensession.Record, error) {
	recs, err := g.Store.RequestTokenSessions(ctx, requestID)
	if err == nil && g.afterList != nil {
		g.afterList(ctx, requestID)
	}
	return recs, err
}

// observerFunc is a token.Observer whose Revoked is a function.
type observerFunc func(ctx context.Context, r token.Revocation) error

func (observerFunc) Issued(context.Context, token.Issued) {}

func (f observerFunc) Revoked(ctx context.Context, r token.Revocation) error { return f(ctx, r) }

// TestCompletionBesideRevocation: a completion round (another replica's)
// running in the middle of a normal revocation of the same grant, or a
// normal revocation running while a round publishes, may publish a token
// twice but never deletes one unpublished, and together they leave
// nothing live.
func TestCompletionBesideRevocation(t *testing.T) {
	t.Parallel()
	complete := func(t *testing.T, f *revocationFixture) {
		t.Helper()
		if _, err := completeRevocations(t.Context(), f.store, f.events, time.Now(), revocationCompletionBatch); err != nil {
			t.Errorf("completion round = %v", err)
		}
	}
	tests := []struct {
		name   string
		revoke func(t *testing.T, f *revocationFixture) error
	}{
		{name: "round between marking and listing", revoke: func(t *testing.T, f *revocationFixture) error {
			grants := &hookedGrants{Store: f.store, afterMark: func(context.Context, string) { complete(t, f) }}
			return f.events.consentWithdrawn(t.Context(), grants, f.consent)
		}},
		{name: "round between listing and deleting", revoke: func(t *testing.T, f *revocationFixture) error {
			grants := &hookedGrants{Store: f.store, afterList: func(context.Context, string) { complete(t, f) }}
			return f.events.consentWithdrawn(t.Context(), grants, f.consent)
		}},
		{name: "revocation while a round publishes", revoke: func(t *testing.T, f *revocationFixture) error {
			// Ended, not yet published: what a round picks up.
			for _, id := range []string{"req-1", "req-2"} {
				if err := f.store.MarkRequestRevoked(t.Context(), id); err != nil {
					t.Fatal(err)
				}
			}
			var (
				revoked   bool
				revokeErr error
			)
			observer := observerFunc(func(ctx context.Context, r token.Revocation) error {
				if !revoked {
					revoked = true
					revokeErr = f.events.consentWithdrawn(ctx, f.store, f.consent)
				}
				return f.events.Revoked(ctx, r)
			})
			if _, err := completeRevocations(t.Context(), f.store, observer, time.Now(), revocationCompletionBatch); err != nil {
				t.Errorf("completion round = %v", err)
			}
			return revokeErr
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newRevocationFixture(t, 2)
			f.events.revocations = f.log
			if err := tc.revoke(t, f); err != nil {
				t.Fatalf("consent withdrawal = %v", err)
			}
			if live := f.liveSessions(t); live != 0 {
				t.Fatalf("%d access tokens still live", live)
			}
			var published []string
			for _, ev := range f.published(t) {
				published = append(published, ev.JTIs...)
			}
			for _, jti := range f.jtisOf("") {
				if !slices.Contains(published, jti) {
					t.Fatalf("access token %s deleted but never published (published %v)", jti, published)
				}
			}
		})
	}
}
