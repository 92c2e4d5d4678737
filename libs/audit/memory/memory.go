// Package memory is an in-process audit.Store for development and tests.
// Nothing survives a restart: never use it for a real deployment.
package memory

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/gatehouse/gatehouse/libs/audit"
)

// Store keeps the chain in a slice guarded by one lock; events[i] has Seq
// i+1.
type Store struct {
	mu     sync.RWMutex
	events []audit.Event
	ids    map[string]struct{}
}

var _ audit.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store { return &Store{ids: make(map[string]struct{})} }

// Append implements audit.Store.
func (s *Store) Append(_ context.Context, events ...audit.Event) ([]audit.Event, error) {
	if len(events) == 0 {
		return nil, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sealed, err := audit.Seal(s.head(), events)
	if err != nil {
		return nil, err
	}
	for _, e := range sealed {
		if _, dup := s.ids[e.EventID]; dup {
			return nil, fmt.Errorf("audit memory store: event id %q: %w", e.EventID, audit.ErrDuplicateEvent)
		}
	}
	out := make([]audit.Event, len(sealed))
	for i, e := range sealed {
		s.ids[e.EventID] = struct{}{}
		s.events = append(s.events, e)
		out[i] = e.Clone()
	}
	return out, nil
}

// List implements audit.Store.
func (s *Store) List(_ context.Context, q audit.Query) ([]audit.Event, error) {
	q, err := q.Normalize()
	if err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []audit.Event
	for _, e := range s.events[min(q.AfterSeq, int64(len(s.events))):] {
		if len(out) == q.Limit {
			break
		}
		if matches(q, e) {
			out = append(out, e.Clone())
		}
	}
	return out, nil
}

func matches(q audit.Query, e audit.Event) bool {
	return (q.Type == "" || e.Type == q.Type) &&
		(q.Subject == "" || e.Subject == q.Subject) &&
		(q.ClientID == "" || e.ClientID == q.ClientID) &&
		(q.Tenant == "" || e.Tenant == q.Tenant) &&
		(q.Actor == "" || slices.Contains(e.ActorChain, q.Actor)) &&
		(q.Since.IsZero() || !e.Time.Before(q.Since)) &&
		(q.Until.IsZero() || e.Time.Before(q.Until))
}

// Head implements audit.Store.
func (s *Store) Head(context.Context) (audit.Head, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.head(), nil
}

func (s *Store) head() audit.Head {
	if len(s.events) == 0 {
		return audit.Head{}
	}
	last := s.events[len(s.events)-1]
	return audit.Head{Seq: last.Seq, Hash: last.Hash}
}
