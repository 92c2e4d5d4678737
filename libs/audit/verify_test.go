package audit_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/gatehouse/gatehouse/libs/audit"
	"github.com/gatehouse/gatehouse/libs/audit/memory"
)

// sliceStore serves a fixed, possibly doctored, chain.
type sliceStore struct {
	events  []audit.Event
	head    audit.Head
	listErr error
	headErr error
}

func (s *sliceStore) Append(context.Context, ...audit.Event) ([]audit.Event, error) {
	return nil, errors.New("read-only")
}

func (s *sliceStore) List(_ context.Context, q audit.Query) ([]audit.Event, error) {
	if s.listErr != nil {
		return nil, s.listErr
	}
	q, err := q.Normalize()
	if err != nil {
		return nil, err
	}
	var out []audit.Event
	for _, e := range s.events {
		if e.Seq > q.AfterSeq && len(out) < q.Limit {
			out = append(out, e)
		}
	}
	return out, nil
}

func (s *sliceStore) Head(context.Context) (audit.Head, error) { return s.head, s.headErr }

// chain returns n sealed events.
func chain(t *testing.T, n int) []audit.Event {
	t.Helper()
	var events []audit.Event
	head := audit.Head{}
	for n > 0 {
		batch := make([]audit.Event, min(n, audit.MaxAppendBatch))
		for i := range batch {
			batch[i] = audit.Event{Type: audit.TypeTokenIssued, Subject: fmt.Sprintf("user-%d", len(events)+i)}
		}
		sealed, err := audit.Seal(head, batch)
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, sealed...)
		head = audit.Head{Seq: sealed[len(sealed)-1].Seq, Hash: sealed[len(sealed)-1].Hash}
		n -= len(batch)
	}
	return events
}

func headOf(events []audit.Event) audit.Head {
	if len(events) == 0 {
		return audit.Head{}
	}
	last := events[len(events)-1]
	return audit.Head{Seq: last.Seq, Hash: last.Hash}
}

func rehash(t *testing.T, e *audit.Event) {
	t.Helper()
	h, err := e.ComputeHash()
	if err != nil {
		t.Fatal(err)
	}
	e.Hash = h
}

func TestVerifyIntact(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 2, audit.MaxListLimit, 2*audit.MaxListLimit + 7} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			events := chain(t, n)
			r, err := audit.Verify(t.Context(), &sliceStore{events: events, head: headOf(events)})
			if err != nil || r.Problem != nil {
				t.Fatalf("Verify = %+v, %v", r, err)
			}
			if r.Checked != int64(n) || r.Verified != headOf(events) {
				t.Fatalf("Verify checked %d events up to %+v, want %d up to %+v", r.Checked, r.Verified, n, headOf(events))
			}
		})
	}
}

func TestVerifyFindsProblems(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		tamper func(t *testing.T, s *sliceStore)
		kind   audit.ProblemKind
		seq    int64
		detail string
	}{
		{name: "field changed", kind: audit.ProblemChanged, seq: 3, detail: "does not match its hash",
			tamper: func(_ *testing.T, s *sliceStore) { s.events[2].Subject = "mallory" }},
		{name: "hash changed", kind: audit.ProblemChanged, seq: 2,
			tamper: func(_ *testing.T, s *sliceStore) { s.events[1].Hash = strings.Repeat("0", 64) }},
		{name: "unknown hash version", kind: audit.ProblemChanged, seq: 4, detail: "unknown audit hash version",
			tamper: func(_ *testing.T, s *sliceStore) { s.events[3].HashVersion = 9 }},
		{name: "changed and rehashed", kind: audit.ProblemBrokenLink, seq: 4,
			tamper: func(t *testing.T, s *sliceStore) {
				s.events[2].Subject = "mallory"
				rehash(t, &s.events[2])
			}},
		{name: "last changed and rehashed", kind: audit.ProblemChanged, seq: 6, detail: "chain head",
			tamper: func(t *testing.T, s *sliceStore) {
				s.events[5].Subject = "mallory"
				rehash(t, &s.events[5])
			}},
		{name: "first links elsewhere", kind: audit.ProblemBrokenLink, seq: 1, detail: "first event",
			tamper: func(t *testing.T, s *sliceStore) {
				s.events[0].PrevHash = strings.Repeat("f", 64)
				rehash(t, &s.events[0])
			}},
		{name: "one removed", kind: audit.ProblemRemoved, seq: 3, detail: "event 3 is missing",
			tamper: func(_ *testing.T, s *sliceStore) { s.events = append(s.events[:2], s.events[3:]...) }},
		{name: "two removed", kind: audit.ProblemRemoved, seq: 3, detail: "events 3 to 4",
			tamper: func(_ *testing.T, s *sliceStore) { s.events = append(s.events[:2], s.events[4:]...) }},
		{name: "first removed", kind: audit.ProblemRemoved, seq: 1,
			tamper: func(_ *testing.T, s *sliceStore) { s.events = s.events[1:] }},
		{name: "last removed", kind: audit.ProblemRemoved, seq: 6, detail: "head",
			tamper: func(_ *testing.T, s *sliceStore) { s.events = s.events[:5] }},
		{name: "all removed", kind: audit.ProblemRemoved, seq: 1,
			tamper: func(_ *testing.T, s *sliceStore) { s.events = nil }},
		{name: "seq repeated", kind: audit.ProblemInserted, seq: 3,
			tamper: func(_ *testing.T, s *sliceStore) {
				s.events = append(s.events[:3], append([]audit.Event{s.events[2]}, s.events[3:]...)...)
			}},
		{name: "appended past the head", kind: audit.ProblemInserted, seq: 7,
			tamper: func(t *testing.T, s *sliceStore) {
				forged, err := audit.Seal(s.head, []audit.Event{{Type: audit.TypeTokenIssued, Subject: "mallory"}})
				if err != nil {
					t.Fatal(err)
				}
				s.events = append(s.events, forged...)
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			events := chain(t, 6)
			s := &sliceStore{events: events, head: headOf(events)}
			tc.tamper(t, s)
			r, err := audit.Verify(t.Context(), s)
			if !errors.Is(err, audit.ErrTampered) {
				t.Fatalf("Verify = %+v, %v; want ErrTampered", r, err)
			}
			p := r.Problem
			if p == nil || p.Kind != tc.kind || p.Seq != tc.seq || !strings.Contains(p.Detail, tc.detail) {
				t.Fatalf("Problem = %+v, want %s at seq %d mentioning %q", p, tc.kind, tc.seq, tc.detail)
			}
			if p.Kind != audit.ProblemInserted && r.Checked != r.Verified.Seq {
				t.Errorf("Checked %d events but verified up to seq %d", r.Checked, r.Verified.Seq)
			}
		})
	}
}

func TestVerifyStoreErrors(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	events := chain(t, 3)
	tests := []struct {
		name string
		s    *sliceStore
	}{
		{name: "list", s: &sliceStore{events: events, head: headOf(events), listErr: boom}},
		{name: "head", s: &sliceStore{events: events, head: headOf(events), headErr: boom}},
	}
	for _, tc := range tests {
		r, err := audit.Verify(t.Context(), tc.s)
		if !errors.Is(err, boom) || errors.Is(err, audit.ErrTampered) || r.Problem != nil {
			t.Errorf("%s: Verify = %+v, %v; want the store's error, no problem", tc.name, r, err)
		}
	}
}

// growingStore appends more events right after its first List, as another
// replica would while Verify walks.
type growingStore struct {
	*memory.Store
	once  sync.Once
	extra int
	err   error
}

func (s *growingStore) List(ctx context.Context, q audit.Query) ([]audit.Event, error) {
	page, err := s.Store.List(ctx, q)
	s.once.Do(func() {
		for range s.extra {
			if _, s.err = s.Append(ctx, audit.Event{Type: audit.TypeDecision}); s.err != nil {
				return
			}
		}
	})
	return page, err
}

func TestVerifyWhileAppending(t *testing.T) {
	t.Parallel()
	s := &growingStore{Store: memory.New(), extra: 3}
	for range 4 {
		if _, err := s.Append(t.Context(), audit.Event{Type: audit.TypeDecision}); err != nil {
			t.Fatal(err)
		}
	}
	r, err := audit.Verify(t.Context(), s)
	if err != nil || s.err != nil {
		t.Fatalf("Verify = %v (append: %v)", err, s.err)
	}
	head, err := s.Head(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if r.Checked != 7 || r.Verified != head {
		t.Fatalf("Verify checked %d events up to %+v, want 7 up to %+v", r.Checked, r.Verified, head)
	}
}
