// Package storetest is the contract suite every audit.Store implementation
// passes, so the memory and Postgres stores stay interchangeable.
package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/libs/audit"
)

// Run runs the contract suite; newStore returns a fresh, empty store for
// each subtest.
func Run(t *testing.T, newStore func(t *testing.T) audit.Store) {
	t.Helper()
	t.Run("Empty", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		assertHead(t, s, audit.Head{})
		assertEvents(t, s, nil)
		if _, err := audit.Verify(t.Context(), s); err != nil {
			t.Fatalf("Verify of an empty store = %v", err)
		}
	})
	t.Run("AppendChains", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		before := time.Now().UTC().Truncate(time.Microsecond)
		first := mustAppend(t, s, newEvent("alice", "c1"), newEvent("bob", "c1"), newEvent("carol", "c2"))
		second := mustAppend(t, s, newEvent("dave", "c2"), newEvent("erin", "c3"))
		all := append(first, second...)
		prev := ""
		for i, e := range all {
			if e.Seq != int64(i+1) {
				t.Errorf("event %d: Seq = %d", i, e.Seq)
			}
			if e.PrevHash != prev {
				t.Errorf("event %d: PrevHash = %q, want %q", i, e.PrevHash, prev)
			}
			if want, err := e.ComputeHash(); err != nil || e.Hash != want {
				t.Errorf("event %d: Hash = %q, want %q (%v)", i, e.Hash, want, err)
			}
			if e.HashVersion != audit.CurrentHashVersion {
				t.Errorf("event %d: HashVersion = %d", i, e.HashVersion)
			}
			if e.EventID == "" || e.Time.Before(before) || e.Time.Location() != time.UTC {
				t.Errorf("event %d: EventID %q, Time %v not filled (after %v, UTC)", i, e.EventID, e.Time, before)
			}
			prev = e.Hash
		}
		assertHead(t, s, audit.Head{Seq: 5, Hash: prev})
		assertEvents(t, s, all)
		if r, err := audit.Verify(t.Context(), s); err != nil || r.Checked != 5 {
			t.Fatalf("Verify = %+v, %v; want 5 events checked", r, err)
		}
	})
	t.Run("RoundTrip", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		at := time.Date(2030, 1, 2, 3, 4, 5, 123456789, time.FixedZone("CET", 3600))
		tests := []struct {
			name string
			in   audit.Event
		}{
			{name: "every field", in: fullEvent(at)},
			{name: "minimal", in: audit.Event{Type: audit.TypeKeyCreated}},
			{name: "empty collections", in: audit.Event{Type: audit.TypeSessionLogin,
				ActorChain: []string{}, Attributes: map[string]string{}, Shadow: &audit.Shadow{}}},
		}
		for _, tc := range tests {
			got := mustAppend(t, s, tc.in)[0]
			want := tc.in.Clone()
			want.Seq, want.PrevHash, want.Hash, want.HashVersion = got.Seq, got.PrevHash, got.Hash, got.HashVersion
			if want.EventID == "" {
				want.EventID = got.EventID
			}
			if want.Time.IsZero() {
				want.Time = got.Time
			}
			want.Time = want.Time.UTC().Truncate(time.Microsecond)
			if len(want.ActorChain) == 0 {
				want.ActorChain = nil
			}
			if len(want.Attributes) == 0 {
				want.Attributes = nil
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s: Append returned\n%+v\nwant\n%+v", tc.name, got, want)
			}
			listed := list(t, s, audit.Query{AfterSeq: got.Seq - 1, Limit: 1})
			if len(listed) != 1 || !reflect.DeepEqual(listed[0], got) {
				t.Errorf("%s: List returned\n%+v\nwant\n%+v", tc.name, listed, got)
			}
		}
	})
	t.Run("AppendNothing", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		got, err := s.Append(t.Context())
		if err != nil || len(got) != 0 {
			t.Fatalf("Append() = %v, %v", got, err)
		}
		assertHead(t, s, audit.Head{})
	})
	t.Run("AppendRejectsInvalid", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name string
			bad  audit.Event
		}{
			{name: "no type", bad: audit.Event{Subject: "alice"}},
			{name: "malformed type", bad: audit.Event{Type: "Token Issued"}},
			{name: "invalid UTF-8", bad: audit.Event{Type: audit.TypeDecision, Subject: "al\xffice"}},
			{name: "NUL", bad: audit.Event{Type: audit.TypeDecision, Resource: "invoice/\x00"}},
			{name: "oversized field", bad: audit.Event{Type: audit.TypeDecision, Action: strings.Repeat("a", audit.MaxFieldBytes+1)}},
			{name: "negative latency", bad: audit.Event{Type: audit.TypeDecision, Latency: -time.Second}},
			{name: "empty actor", bad: audit.Event{Type: audit.TypeTokenExchanged, ActorChain: []string{"sam", ""}}},
			{name: "too many attributes", bad: audit.Event{Type: audit.TypeTokenIssued, Attributes: manyAttributes(audit.MaxAttributes + 1)}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				s := newStore(t)
				_, err := s.Append(t.Context(), newEvent("alice", "c1"), tc.bad)
				if !errors.Is(err, audit.ErrInvalidEvent) {
					t.Fatalf("Append = %v, want ErrInvalidEvent", err)
				}
				assertHead(t, s, audit.Head{})
				assertEvents(t, s, nil)
			})
		}
	})
	t.Run("AppendRejectsOversizedBatch", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		batch := make([]audit.Event, audit.MaxAppendBatch+1)
		for i := range batch {
			batch[i] = newEvent("alice", "c1")
		}
		if _, err := s.Append(t.Context(), batch...); !errors.Is(err, audit.ErrInvalidEvent) {
			t.Fatalf("Append of %d events = %v, want ErrInvalidEvent", len(batch), err)
		}
		assertHead(t, s, audit.Head{})
	})
	t.Run("AppendFullBatch", func(t *testing.T) {
		t.Parallel()
		// The most one append takes, after one event: a store may seal and
		// write a batch in parts, but the chain must be the one a single
		// Seal gives.
		s := newStore(t)
		first := mustAppend(t, s, newEvent("alice", "c1"))
		batch := make([]audit.Event, audit.MaxAppendBatch)
		at := time.Now().UTC().Truncate(time.Microsecond)
		for i := range batch {
			batch[i] = newEvent(fmt.Sprintf("user-%d", i), "c1")
			// Given, not filled: a Seal here must give the same hashes.
			batch[i].EventID, batch[i].Time = fmt.Sprintf("full-batch-%d", i), at
		}
		got := mustAppend(t, s, batch...)
		want, err := audit.Seal(audit.Head{Seq: 1, Hash: first[0].Hash}, batch)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("Append returned %d events, want %d", len(got), len(want))
		}
		for i := range got {
			if got[i].Seq != want[i].Seq || got[i].PrevHash != want[i].PrevHash || got[i].Hash != want[i].Hash {
				t.Fatalf("event %d: seq %d prev %.8s hash %.8s, want seq %d prev %.8s hash %.8s",
					i, got[i].Seq, got[i].PrevHash, got[i].Hash, want[i].Seq, want[i].PrevHash, want[i].Hash)
			}
			if h, err := got[i].ComputeHash(); err != nil || h != got[i].Hash {
				t.Fatalf("event %d: hash %.8s does not cover it (%v)", i, got[i].Hash, err)
			}
		}
		last := got[len(got)-1]
		assertHead(t, s, audit.Head{Seq: last.Seq, Hash: last.Hash})
		assertEvents(t, s, append(first, got...))
	})
	t.Run("AppendFullBatchAllOrNothing", func(t *testing.T) {
		t.Parallel()
		// A bad event late in a large batch refuses all of it, the events
		// before it included.
		tests := []struct {
			name    string
			spoil   func(batch []audit.Event)
			wantErr error
		}{
			{"invalid event", func(b []audit.Event) { b[len(b)-3].Subject = "bad\x00" }, audit.ErrInvalidEvent},
			{"duplicate id far apart", func(b []audit.Event) {
				b[5].EventID, b[len(b)-5].EventID = "twin", "twin"
			}, audit.ErrDuplicateEvent},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				s := newStore(t)
				batch := make([]audit.Event, audit.MaxAppendBatch)
				for i := range batch {
					batch[i] = newEvent(fmt.Sprintf("user-%d", i), "c1")
				}
				tc.spoil(batch)
				if _, err := s.Append(t.Context(), batch...); !errors.Is(err, tc.wantErr) {
					t.Fatalf("Append = %v, want %v", err, tc.wantErr)
				}
				assertHead(t, s, audit.Head{})
				assertEvents(t, s, nil)
			})
		}
	})
	t.Run("AppendRejectsDuplicateEventID", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		stored := mustAppend(t, s, newEvent("alice", "c1"))
		dup := newEvent("bob", "c1")
		dup.EventID = stored[0].EventID
		tests := []struct {
			name  string
			batch []audit.Event
		}{
			{name: "already stored", batch: []audit.Event{newEvent("carol", "c1"), dup}},
			{name: "twice in one batch", batch: []audit.Event{
				{Type: audit.TypeDecision, EventID: "twin"}, {Type: audit.TypeDecision, EventID: "twin"}}},
		}
		for _, tc := range tests {
			if _, err := s.Append(t.Context(), tc.batch...); !errors.Is(err, audit.ErrDuplicateEvent) {
				t.Errorf("%s: Append = %v, want ErrDuplicateEvent", tc.name, err)
			}
		}
		assertHead(t, s, audit.Head{Seq: 1, Hash: stored[0].Hash})
		assertEvents(t, s, stored)
	})
	t.Run("NoAliasing", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		in := fullEvent(time.Now())
		got := mustAppend(t, s, in)
		want := got[0].Clone()
		in.Attributes["jti"], in.ActorChain[0], in.Shadow.Decision = "changed", "changed", "changed"
		got[0].Attributes["jti"], got[0].ActorChain[0], got[0].Shadow.Decision = "changed", "changed", "changed"
		listed := list(t, s, audit.Query{})
		listed[0].Attributes["scope"] = "changed"
		assertEvents(t, s, []audit.Event{want})
	})
	t.Run("ConcurrentAppendsNeverFork", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		const writers, batches, perBatch = 8, 10, 3
		var wg sync.WaitGroup
		errs := make(chan error, writers*batches)
		for w := range writers {
			wg.Go(func() {
				for b := range batches {
					batch := make([]audit.Event, perBatch)
					for i := range batch {
						batch[i] = newEvent(fmt.Sprintf("user-%d-%d-%d", w, b, i), "c1")
					}
					if _, err := s.Append(t.Context(), batch...); err != nil {
						errs <- err
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		r, err := audit.Verify(t.Context(), s)
		if err != nil {
			t.Fatalf("Verify = %v", err)
		}
		if want := int64(writers * batches * perBatch); r.Checked != want || r.Verified.Seq != want {
			t.Fatalf("Verify checked %d events up to seq %d, want %d", r.Checked, r.Verified.Seq, want)
		}
		// Each batch is contiguous: appends take turns.
		all := listAll(t, s)
		for i := 0; i < len(all); i += perBatch {
			prefix := all[i].Subject[:strings.LastIndexByte(all[i].Subject, '-')]
			for _, e := range all[i : i+perBatch] {
				if !strings.HasPrefix(e.Subject, prefix+"-") {
					t.Fatalf("batch at seq %d interleaved: %q after %q", e.Seq, e.Subject, all[i].Subject)
				}
			}
		}
	})
	t.Run("ListFilters", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
		at := func(e audit.Event, d time.Duration) audit.Event { e.Time = t0.Add(d); return e }
		withType := func(e audit.Event, typ audit.Type) audit.Event { e.Type = typ; return e }
		withTenant := func(e audit.Event, tenant string) audit.Event { e.Tenant = tenant; return e }
		withActors := func(e audit.Event, actors ...string) audit.Event { e.ActorChain = actors; return e }
		mustAppend(t, s,
			at(newEvent("alice", "invoice-web"), 0),                                                     // 1
			at(withType(newEvent("alice", "invoice-web"), audit.TypeTokenRevoked), time.Second),         // 2
			at(withTenant(newEvent("carol", "invoice-web"), "globex"), 2*time.Second),                   // 3
			at(newEvent("bob", "billing-bot"), 3*time.Second),                                           // 4
			at(newEvent("alice", "billing-bot"), 4*time.Second+time.Microsecond),                        // 5
			at(withActors(newEvent("bob", "support-console"), "sam", "support-console"), 5*time.Second), // 6
		)
		tests := []struct {
			name string
			q    audit.Query
			want []int64
		}{
			{name: "all", q: audit.Query{}, want: []int64{1, 2, 3, 4, 5, 6}},
			{name: "after seq", q: audit.Query{AfterSeq: 3}, want: []int64{4, 5, 6}},
			{name: "after the end", q: audit.Query{AfterSeq: 9}},
			{name: "limit", q: audit.Query{AfterSeq: 1, Limit: 2}, want: []int64{2, 3}},
			{name: "type", q: audit.Query{Type: audit.TypeTokenRevoked}, want: []int64{2}},
			{name: "subject", q: audit.Query{Subject: "alice"}, want: []int64{1, 2, 5}},
			{name: "client", q: audit.Query{ClientID: "billing-bot"}, want: []int64{4, 5}},
			{name: "tenant", q: audit.Query{Tenant: "globex"}, want: []int64{3}},
			{name: "subject and client", q: audit.Query{Subject: "alice", ClientID: "billing-bot"}, want: []int64{5}},
			{name: "since inclusive", q: audit.Query{Since: t0.Add(time.Second)}, want: []int64{2, 3, 4, 5, 6}},
			{name: "until exclusive", q: audit.Query{Until: t0.Add(2 * time.Second)}, want: []int64{1, 2}},
			{name: "window", q: audit.Query{Since: t0.Add(time.Second), Until: t0.Add(3 * time.Second)}, want: []int64{2, 3}},
			{name: "since rounds up to the microsecond",
				q: audit.Query{Since: t0.Add(4*time.Second + time.Nanosecond)}, want: []int64{5, 6}},
			{name: "since with nanoseconds past a stored time",
				q: audit.Query{Since: t0.Add(4*time.Second + time.Microsecond + time.Nanosecond)}, want: []int64{6}},
			{name: "since in another zone", q: audit.Query{Since: t0.Add(3 * time.Second).In(time.FixedZone("X", -5*3600))}, want: []int64{4, 5, 6}},
			{name: "no match", q: audit.Query{Subject: "mallory"}},
			{name: "actor", q: audit.Query{Actor: "sam"}, want: []int64{6}},
			{name: "actor further down the chain", q: audit.Query{Actor: "support-console"}, want: []int64{6}},
			{name: "actor and subject", q: audit.Query{Actor: "sam", Subject: "bob"}, want: []int64{6}},
			{name: "actor is not the subject", q: audit.Query{Actor: "alice"}},
		}
		for _, tc := range tests {
			var got []int64
			for _, e := range list(t, s, tc.q) {
				got = append(got, e.Seq)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("%s: List returned seqs %v, want %v", tc.name, got, tc.want)
			}
		}
	})
	t.Run("ListDefaultLimit", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		batch := make([]audit.Event, audit.DefaultListLimit+5)
		for i := range batch {
			batch[i] = newEvent("alice", "c1")
		}
		mustAppend(t, s, batch...)
		if got := list(t, s, audit.Query{}); len(got) != audit.DefaultListLimit {
			t.Fatalf("List returned %d events, want the default limit %d", len(got), audit.DefaultListLimit)
		}
	})
	t.Run("ListRejectsInvalidQuery", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		now := time.Now()
		tests := []struct {
			name string
			q    audit.Query
		}{
			{name: "negative after seq", q: audit.Query{AfterSeq: -1}},
			{name: "negative limit", q: audit.Query{Limit: -1}},
			{name: "limit too large", q: audit.Query{Limit: audit.MaxListLimit + 1}},
			{name: "empty window", q: audit.Query{Since: now, Until: now}},
		}
		for _, tc := range tests {
			if _, err := s.List(t.Context(), tc.q); !errors.Is(err, audit.ErrInvalidQuery) {
				t.Errorf("%s: List = %v, want ErrInvalidQuery", tc.name, err)
			}
		}
	})
}

// newEvent returns a token.issued event for subject and client.
func newEvent(subject, clientID string) audit.Event {
	return audit.Event{
		Type:       audit.TypeTokenIssued,
		Subject:    subject,
		ClientID:   clientID,
		Tenant:     "acme",
		Attributes: map[string]string{"grant_type": "client_credentials", "jti": audit.NewEventID()},
	}
}

// fullEvent returns an event with every field a caller can set.
func fullEvent(at time.Time) audit.Event {
	return audit.Event{
		EventID:       audit.NewEventID(),
		Time:          at,
		Type:          audit.TypeDecision,
		Subject:       "alice",
		ActorChain:    []string{"sam", "support-console"},
		ClientID:      "support-console",
		Tenant:        "acme",
		Action:        "invoice:approve",
		Resource:      "invoice/inv_123",
		Decision:      "DENY",
		ReasonCode:    "step_up_required",
		PolicyVersion: "v42",
		Shadow:        &audit.Shadow{Decision: "ALLOW", ReasonCode: "allowed", PolicyVersion: "v43-candidate"},
		RequestID:     "req-1",
		TraceID:       "4bf92f3577b34da6a3ce929d0e0e4736",
		Latency:       1234567 * time.Nanosecond,
		Attributes:    map[string]string{"jti": "j-1", "scope": "invoice:read invoice:approve", "ünïcode": "\"quoted\" <&>"},
	}
}

func manyAttributes(n int) map[string]string {
	m := make(map[string]string, n)
	for i := range n {
		m[fmt.Sprintf("k%d", i)] = "v"
	}
	return m
}

func mustAppend(t *testing.T, s audit.Store, events ...audit.Event) []audit.Event {
	t.Helper()
	got, err := s.Append(t.Context(), events...)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if len(got) != len(events) {
		t.Fatalf("Append returned %d events, want %d", len(got), len(events))
	}
	return got
}

func list(t *testing.T, s audit.Store, q audit.Query) []audit.Event {
	t.Helper()
	got, err := s.List(t.Context(), q)
	if err != nil {
		t.Fatalf("List(%+v): %v", q, err)
	}
	return got
}

// listAll returns every event, paging through the store.
func listAll(t *testing.T, s audit.Store) []audit.Event {
	t.Helper()
	var all []audit.Event
	for {
		page := list(t, s, audit.Query{AfterSeq: int64(len(all)), Limit: audit.MaxListLimit})
		all = append(all, page...)
		if len(page) < audit.MaxListLimit {
			return all
		}
	}
}

func assertEvents(t *testing.T, s audit.Store, want []audit.Event) {
	t.Helper()
	got := listAll(t, s)
	if len(got) != len(want) {
		t.Fatalf("store holds %d events, want %d", len(got), len(want))
	}
	for i := range got {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("event %d is\n%+v\nwant\n%+v", i, got[i], want[i])
		}
	}
}

func assertHead(t *testing.T, s audit.Store, want audit.Head) {
	t.Helper()
	got, err := s.Head(t.Context())
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	if got != want {
		t.Fatalf("Head = %+v, want %+v", got, want)
	}
}
