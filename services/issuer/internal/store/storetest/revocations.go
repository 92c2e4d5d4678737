package storetest

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/revocation"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
)

// tailPage is Tail's page size: small, so that it pages.
const tailPage = 7

// waitTimeout bounds every wait of the suite, so a broken store fails
// instead of hanging.
const waitTimeout = 10 * time.Second

// RunRevocationLog runs the store.RevocationLog contract suite; newLog
// returns a fresh, empty log for each subtest.
func RunRevocationLog(t *testing.T, newLog func(t *testing.T) store.RevocationLog) {
	t.Helper()
	t.Run("Empty", func(t *testing.T) {
		t.Parallel()
		page := after(t, newLog(t), 0, 10)
		if len(page.Events) != 0 || page.Head.Cursor != 0 || page.Head.LogID == "" {
			t.Fatalf("After on an empty log = %+v; want no events, head 0 and a log id", page)
		}
	})
	t.Run("RoundTrip", func(t *testing.T) {
		t.Parallel()
		l := newLog(t)
		var stored []revocation.Event
		for _, ev := range validEvents() {
			got := appendEvent(t, l, ev)
			want := ev
			want.Cursor = got.Cursor
			assertEvent(t, got, want)
			if len(stored) > 0 && got.Cursor <= stored[len(stored)-1].Cursor {
				t.Fatalf("cursor %d after %d: not increasing", got.Cursor, stored[len(stored)-1].Cursor)
			}
			stored = append(stored, got)
		}
		page := after(t, l, 0, store.MaxRevocationPage)
		assertEvents(t, page.Events, stored)
		if page.Head.Cursor != stored[len(stored)-1].Cursor {
			t.Fatalf("head = %d, want the last cursor %d", page.Head.Cursor, stored[len(stored)-1].Cursor)
		}
		if again := after(t, l, 0, 1); again.Head.LogID != page.Head.LogID {
			t.Fatalf("log id changed from %q to %q", page.Head.LogID, again.Head.LogID)
		}
	})
	t.Run("AfterPages", func(t *testing.T) {
		t.Parallel()
		l := newLog(t)
		var all []revocation.Event
		for i := range 5 {
			all = append(all, appendEvent(t, l, tokenEvent("jti-"+strconv.Itoa(i))))
		}
		for _, tc := range []struct {
			cursor int64
			limit  int
			want   []revocation.Event
		}{
			{cursor: 0, limit: 2, want: all[:2]},
			{cursor: all[1].Cursor, limit: 2, want: all[2:4]},
			{cursor: all[3].Cursor, limit: 2, want: all[4:]},
			{cursor: all[4].Cursor, limit: 2, want: nil},
			{cursor: all[2].Cursor, limit: store.MaxRevocationPage, want: all[3:]},
		} {
			page := after(t, l, tc.cursor, tc.limit)
			assertEvents(t, page.Events, tc.want)
			if page.Head.Cursor != all[4].Cursor {
				t.Errorf("After(%d, %d): head = %d, want %d", tc.cursor, tc.limit, page.Head.Cursor, all[4].Cursor)
			}
		}
	})
	t.Run("AfterRejectsBadArguments", func(t *testing.T) {
		t.Parallel()
		l := newLog(t)
		for _, tc := range []struct {
			name   string
			cursor int64
			limit  int
		}{
			{"negative cursor", -1, 10},
			{"zero limit", 0, 0},
			{"negative limit", 0, -1},
			{"limit too large", 0, store.MaxRevocationPage + 1},
		} {
			if _, err := l.After(t.Context(), tc.cursor, tc.limit); err == nil {
				t.Errorf("%s: After(%d, %d) accepted", tc.name, tc.cursor, tc.limit)
			}
		}
	})
	t.Run("AppendRejectsInvalid", func(t *testing.T) {
		t.Parallel()
		l := newLog(t)
		for _, tc := range invalidEvents() {
			if _, err := l.Append(t.Context(), tc.ev); !errors.Is(err, revocation.ErrInvalid) {
				t.Errorf("%s: Append = %v, want ErrInvalid", tc.name, err)
			}
		}
		if page := after(t, l, 0, 10); len(page.Events) != 0 || page.Head.Cursor != 0 {
			t.Fatalf("rejected events changed the log: %+v", page)
		}
	})
	t.Run("ReturnsCopies", func(t *testing.T) {
		t.Parallel()
		l := newLog(t)
		ev := sessionEvent()
		got := appendEvent(t, l, ev)
		ev.JTIs[0], got.JTIs[0] = "changed-by-caller", "changed-by-caller"
		page := after(t, l, 0, 1)
		page.Events[0].JTIs[1] = "changed-by-reader"
		if again := after(t, l, 0, 1); !slices.Equal(again.Events[0].JTIs, sessionEvent().JTIs) {
			t.Fatalf("the log shares memory with callers: jtis = %v", again.Events[0].JTIs)
		}
	})
	t.Run("ChangedClosesOnAppend", func(t *testing.T) {
		t.Parallel()
		l := newLog(t)
		changed := l.Changed()
		appendEvent(t, l, tokenEvent("jti-1"))
		select {
		case <-changed:
		case <-time.After(waitTimeout):
			t.Fatal("Changed's channel did not close after an append")
		}
	})
	t.Run("DeleteExpired", func(t *testing.T) {
		t.Parallel()
		l := newLog(t)
		var all []revocation.Event
		for i := range 3 {
			ev := tokenEvent("jti-" + strconv.Itoa(i))
			ev.ExpiresAt = ev.RevokedAt.Add(time.Duration(i+1) * time.Minute)
			all = append(all, appendEvent(t, l, ev))
		}
		deleted, err := l.DeleteExpired(t.Context(), all[1].ExpiresAt.Add(-time.Microsecond))
		if err != nil || deleted != 1 {
			t.Fatalf("DeleteExpired before the second expiry = %d, %v; want 1", deleted, err)
		}
		deleted, err = l.DeleteExpired(t.Context(), all[1].ExpiresAt)
		if err != nil || deleted != 1 {
			t.Fatalf("DeleteExpired at the second expiry = %d, %v; want 1", deleted, err)
		}
		page := after(t, l, 0, 10)
		assertEvents(t, page.Events, all[2:])
		if page.Head.Cursor != all[2].Cursor {
			t.Fatalf("head = %d after deletion, want %d", page.Head.Cursor, all[2].Cursor)
		}
		// Deleting everything keeps the head: cursors are never reused.
		if _, err := l.DeleteExpired(t.Context(), all[2].ExpiresAt); err != nil {
			t.Fatal(err)
		}
		if page := after(t, l, 0, 10); len(page.Events) != 0 || page.Head.Cursor != all[2].Cursor {
			t.Fatalf("after deleting every event: %+v; want no events and head %d", page, all[2].Cursor)
		}
		if next := appendEvent(t, l, tokenEvent("jti-d")); next.Cursor <= all[2].Cursor {
			t.Fatalf("cursor %d reused after deletion (head was %d)", next.Cursor, all[2].Cursor)
		}
	})
	t.Run("ConcurrentAppendsTailedWithoutLoss", func(t *testing.T) {
		t.Parallel()
		l := newLog(t)
		const writers, perWriter = 6, 10
		ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
		defer cancel()
		// The tailer follows the log as the feed does, moving past the head
		// of every short page: a cursor committed out of order would be
		// skipped for good.
		tailed := make(chan []int64, 1)
		go func() { tailed <- Tail(ctx, l, writers*perWriter) }()

		var wg sync.WaitGroup
		appended := make([][]int64, writers)
		for w := range writers {
			wg.Go(func() {
				for i := range perWriter {
					ev, err := l.Append(ctx, tokenEvent("jti-"+strconv.Itoa(w)+"-"+strconv.Itoa(i)))
					if err != nil {
						t.Errorf("Append: %v", err)
						return
					}
					appended[w] = append(appended[w], ev.Cursor)
				}
			})
		}
		wg.Wait()
		seen := <-tailed
		want := slices.Sorted(slices.Values(slices.Concat(appended...)))
		if len(slices.Compact(slices.Clone(want))) != len(want) {
			t.Fatalf("duplicate cursors assigned: %v", want)
		}
		if !slices.Equal(seen, want) {
			t.Fatalf("the tailer saw %d events %v;\nwant %d %v", len(seen), seen, len(want), want)
		}
		assertCursors(t, after(t, l, 0, store.MaxRevocationPage).Events, want)
	})
}

// Tail follows l from the start as a feed subscriber does (take Changed,
// read a page, move past its head when it is short, wait) until it has
// seen n events or ctx is done, and returns the cursors it saw in order.
func Tail(ctx context.Context, l store.RevocationLog, n int) []int64 {
	var (
		seen   []int64
		cursor int64
	)
	for len(seen) < n {
		changed := l.Changed()
		page, err := l.After(ctx, cursor, tailPage)
		if err != nil {
			return seen
		}
		for _, ev := range page.Events {
			seen = append(seen, ev.Cursor)
			cursor = ev.Cursor
		}
		if len(seen) >= n || len(page.Events) == tailPage {
			continue
		}
		cursor = max(cursor, page.Head.Cursor)
		select {
		case <-changed:
		case <-ctx.Done():
			return seen
		}
	}
	return seen
}

// revokedAt is the suite's revocation time, with microsecond precision:
// what Postgres keeps.
func revokedAt() time.Time { return time.Date(2026, 11, 25, 9, 30, 0, 123456000, time.UTC) }

func tokenEvent(jti string) revocation.Event {
	t0 := revokedAt()
	return revocation.Event{
		Kind: revocation.KindToken, ID: jti, JTIs: []string{jti},
		Subject: "alice", ClientID: "invoice-web", Tenant: "acme",
		RevokedAt: t0, ExpiresAt: t0.Add(5 * time.Minute), Reason: "client_request",
	}
}

func sessionEvent() revocation.Event {
	t0 := revokedAt()
	return revocation.Event{
		Kind: revocation.KindSession, ID: "session-1", JTIs: []string{"jti-s1", "jti-s2"},
		Subject: "alice", Tenant: "acme", IssuedBefore: t0,
		RevokedAt: t0, ExpiresAt: t0.Add(5 * time.Minute), Reason: "user_logout",
	}
}

// validEvents has one event of every kind, every field in use somewhere.
func validEvents() []revocation.Event {
	t0 := revokedAt()
	return []revocation.Event{
		tokenEvent("jti-1"),
		{Kind: revocation.KindRefreshFamily, ID: "request-1", JTIs: []string{"jti-2", "jti-3"},
			Subject: "bob", ClientID: "invoice-web", Tenant: "acme",
			RevokedAt: t0, ExpiresAt: t0.Add(8 * time.Hour), Reason: "refresh_token_reuse"},
		sessionEvent(),
		{Kind: revocation.KindClient, ID: "billing-bot", ClientID: "billing-bot", Tenant: "acme",
			IssuedBefore: t0.Add(-time.Second), RevokedAt: t0, ExpiresAt: t0.Add(5 * time.Minute)},
		{Kind: revocation.KindConsent, ID: "consent-1", Subject: "carol", ClientID: "invoice-web",
			Tenant: "globex", IssuedBefore: t0, RevokedAt: t0, ExpiresAt: t0, Reason: "consent_withdrawn"},
	}
}

type invalidEvent struct {
	name string
	ev   revocation.Event
}

func invalidEvents() []invalidEvent {
	edit := func(ev revocation.Event, f func(*revocation.Event)) revocation.Event {
		ev = ev.Clone()
		f(&ev)
		return ev
	}
	t0 := revokedAt()
	tok, sess := tokenEvent("jti-1"), sessionEvent()
	tooMany := make([]string, revocation.MaxJTIs+1)
	for i := range tooMany {
		tooMany[i] = "jti-" + strconv.Itoa(i)
	}
	return []invalidEvent{
		{"cursor set", edit(tok, func(e *revocation.Event) { e.Cursor = 7 })},
		{"unknown kind", edit(tok, func(e *revocation.Event) { e.Kind = "user" })},
		{"no kind", edit(tok, func(e *revocation.Event) { e.Kind = "" })},
		{"empty id", edit(sess, func(e *revocation.Event) { e.ID = "" })},
		{"id too long", edit(sess, func(e *revocation.Event) { e.ID = strings.Repeat("s", revocation.MaxIDLen+1) })},
		{"control character", edit(sess, func(e *revocation.Event) { e.ID = "session\n1" })},
		{"invalid UTF-8", edit(sess, func(e *revocation.Event) { e.Subject = "al\xffice" })},
		{"token jtis not [id]", edit(tok, func(e *revocation.Event) { e.JTIs = []string{"jti-2"} })},
		{"token without jtis", edit(tok, func(e *revocation.Event) { e.JTIs = nil })},
		{"empty jti", edit(sess, func(e *revocation.Event) { e.JTIs = []string{"jti-1", ""} })},
		{"duplicate jti", edit(sess, func(e *revocation.Event) { e.JTIs = []string{"jti-1", "jti-1"} })},
		{"too many jtis", edit(sess, func(e *revocation.Event) { e.JTIs = tooMany })},
		{"session without subject", edit(sess, func(e *revocation.Event) { e.Subject = "" })},
		{"client id differs", revocation.Event{Kind: revocation.KindClient, ID: "billing-bot", ClientID: "other",
			RevokedAt: t0, ExpiresAt: t0}},
		{"consent without client", revocation.Event{Kind: revocation.KindConsent, ID: "c-1", Subject: "alice",
			RevokedAt: t0, ExpiresAt: t0}},
		{"issued before on a token", edit(tok, func(e *revocation.Event) { e.IssuedBefore = t0 })},
		{"issued before after revocation", edit(sess, func(e *revocation.Event) { e.IssuedBefore = t0.Add(time.Second) })},
		{"no revoked at", edit(sess, func(e *revocation.Event) { e.RevokedAt, e.IssuedBefore = time.Time{}, time.Time{} })},
		{"no expires at", edit(sess, func(e *revocation.Event) { e.ExpiresAt = time.Time{} })},
		{"expires before revoked", edit(sess, func(e *revocation.Event) { e.ExpiresAt = t0.Add(-time.Second) })},
		{"reason not snake_case", edit(sess, func(e *revocation.Event) { e.Reason = "User logged out" })},
		{"reason too long", edit(sess, func(e *revocation.Event) { e.Reason = strings.Repeat("r", revocation.MaxReasonLen+1) })},
	}
}

func appendEvent(t *testing.T, l store.RevocationLog, ev revocation.Event) revocation.Event {
	t.Helper()
	got, err := l.Append(t.Context(), ev)
	if err != nil {
		t.Fatalf("Append(%s %s): %v", ev.Kind, ev.ID, err)
	}
	if got.Cursor <= 0 {
		t.Fatalf("Append assigned cursor %d", got.Cursor)
	}
	return got
}

func after(t *testing.T, l store.RevocationLog, cursor int64, limit int) revocation.Page {
	t.Helper()
	page, err := l.After(t.Context(), cursor, limit)
	if err != nil {
		t.Fatalf("After(%d, %d): %v", cursor, limit, err)
	}
	return page
}

func assertEvents(t *testing.T, got, want []revocation.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d events %+v, want %d %+v", len(got), got, len(want), want)
	}
	for i := range got {
		assertEvent(t, got[i], want[i])
	}
}

func assertEvent(t *testing.T, got, want revocation.Event) {
	t.Helper()
	if got.Cursor != want.Cursor || got.Kind != want.Kind || got.ID != want.ID ||
		!slices.Equal(got.JTIs, want.JTIs) || got.Subject != want.Subject ||
		got.ClientID != want.ClientID || got.Tenant != want.Tenant ||
		!got.IssuedBefore.Equal(want.IssuedBefore) || !got.RevokedAt.Equal(want.RevokedAt) ||
		!got.ExpiresAt.Equal(want.ExpiresAt) || got.Reason != want.Reason {
		t.Fatalf("event =\n%+v\nwant\n%+v", got, want)
	}
}

func assertCursors(t *testing.T, got []revocation.Event, want []int64) {
	t.Helper()
	cursors := make([]int64, len(got))
	for i, ev := range got {
		cursors[i] = ev.Cursor
	}
	if !slices.Equal(cursors, want) {
		t.Fatalf("cursors %v, want %v", cursors, want)
	}
}
