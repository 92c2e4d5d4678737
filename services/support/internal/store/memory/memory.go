// Package memory is an in-process support.Store for development and tests.
// It loses everything on restart: never use it in production.
package memory

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/services/support/internal/support"
)

// Store is a support.Store in memory. One mutex guards everything, so
// CloseTicket and CreateSession are atomic with respect to each other.
type Store struct {
	mu       sync.RWMutex
	tickets  map[string]support.Ticket  // by id, across tenants
	sessions map[string]support.Session // by id, across tenants
}

var _ support.Store = (*Store)(nil)

// New returns an empty Store.
func New() *Store {
	return &Store{tickets: map[string]support.Ticket{}, sessions: map[string]support.Session{}}
}

// CreateTicket implements support.Store.
func (s *Store) CreateTicket(_ context.Context, t support.Ticket) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, taken := s.tickets[t.ID]; taken {
		return fmt.Errorf("ticket %q: %w", t.ID, support.ErrDuplicateID)
	}
	// Keep what PostgreSQL would keep, so both stores answer alike.
	t.CreateTime = micros(t.CreateTime)
	t.CloseTime = micros(t.CloseTime)
	s.tickets[t.ID] = t
	return nil
}

// GetTicket implements support.Store.
func (s *Store) GetTicket(_ context.Context, tenant, id string) (support.Ticket, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, ok := s.tickets[id]
	if !ok || t.Tenant != tenant {
		return support.Ticket{}, fmt.Errorf("ticket %q: %w", id, support.ErrTicketNotFound)
	}
	return t, nil
}

// ListTickets implements support.Store.
func (s *Store) ListTickets(_ context.Context, f support.TicketFilter, after *support.Cursor, limit int) ([]support.Ticket, error) {
	if limit < 1 {
		return nil, fmt.Errorf("list tickets: limit %d is not positive", limit)
	}
	s.mu.RLock()
	var out []support.Ticket
	for _, t := range s.tickets {
		if t.Tenant == f.Tenant && (f.Customer == "" || t.Customer == f.Customer) && (f.Status == "" || t.Status == f.Status) &&
			(after == nil || compare(t, *after) > 0) {
			out = append(out, t)
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b support.Ticket) int {
		return compare(a, support.Cursor{CreateTime: b.CreateTime, ID: b.ID})
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// CloseTicket implements support.Store.
func (s *Store) CloseTicket(_ context.Context, tenant, id, subject string, at time.Time) (support.Ticket, []support.Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tickets[id]
	if !ok || t.Tenant != tenant {
		return support.Ticket{}, nil, fmt.Errorf("ticket %q: %w", id, support.ErrTicketNotFound)
	}
	if t.Status != support.StatusOpen {
		return support.Ticket{}, nil, fmt.Errorf("ticket %q: %w", id, support.ErrTicketClosed)
	}
	at = micros(at)
	t.Status, t.CloseTime, t.ClosedBy = support.StatusClosed, at, subject
	s.tickets[id] = t
	var ended []support.Session
	for sid, sess := range s.sessions {
		if sess.Tenant == tenant && sess.TicketID == id && sess.Active(at) {
			sess.EndTime = at
			s.sessions[sid] = sess
			ended = append(ended, clone(sess))
		}
	}
	slices.SortFunc(ended, func(a, b support.Session) int { return cmp.Compare(a.ID, b.ID) })
	return t, ended, nil
}

// CreateSession implements support.Store.
func (s *Store) CreateSession(_ context.Context, sess support.Session) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tickets[sess.TicketID]
	switch {
	case !ok || t.Tenant != sess.Tenant:
		return fmt.Errorf("ticket %q: %w", sess.TicketID, support.ErrTicketNotFound)
	case t.Status != support.StatusOpen:
		return fmt.Errorf("ticket %q: %w", sess.TicketID, support.ErrTicketClosed)
	}
	if _, taken := s.sessions[sess.ID]; taken {
		return fmt.Errorf("session %q: %w", sess.ID, support.ErrDuplicateID)
	}
	sess = clone(sess)
	sess.StartTime, sess.ExpireTime, sess.EndTime = micros(sess.StartTime), micros(sess.ExpireTime), micros(sess.EndTime)
	s.sessions[sess.ID] = sess
	return nil
}

// GetSession implements support.Store.
func (s *Store) GetSession(_ context.Context, tenant, id string) (support.Session, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sess, ok := s.sessions[id]
	if !ok || sess.Tenant != tenant {
		return support.Session{}, fmt.Errorf("session %q: %w", id, support.ErrSessionNotFound)
	}
	return clone(sess), nil
}

// EndSession implements support.Store.
func (s *Store) EndSession(_ context.Context, tenant, id string, at time.Time) (support.Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.sessions[id]
	if !ok || sess.Tenant != tenant {
		return support.Session{}, fmt.Errorf("session %q: %w", id, support.ErrSessionNotFound)
	}
	at = micros(at)
	if !sess.Active(at) {
		return support.Session{}, fmt.Errorf("session %q: %w", id, support.ErrSessionOver)
	}
	sess.EndTime = at
	s.sessions[id] = sess
	return clone(sess), nil
}

// Ping implements support.Store; memory is always reachable.
func (s *Store) Ping(context.Context) error { return nil }

// compare orders a ticket against a cursor by (CreateTime, ID), IDs by
// bytes, as the Postgres store's COLLATE "C" does.
func compare(t support.Ticket, c support.Cursor) int {
	return cmp.Or(t.CreateTime.Compare(c.CreateTime), cmp.Compare(t.ID, c.ID))
}

// micros is t as PostgreSQL keeps it: UTC, microseconds; zero stays zero.
func micros(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC().Truncate(time.Microsecond)
}

// clone copies sess so callers never share its scopes with the store; no
// scopes are nil, as the Postgres store returns them.
func clone(sess support.Session) support.Session {
	if len(sess.Scopes) == 0 {
		sess.Scopes = nil
	} else {
		sess.Scopes = slices.Clone(sess.Scopes)
	}
	return sess
}
