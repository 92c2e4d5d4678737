// Package memory is an in-process invoice.Store for development and tests.
// It loses everything on restart: never use it in production.
package memory

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/services/invoice/internal/invoice"
)

// Store is an invoice.Store in memory. Safe for concurrent use.
type Store struct {
	mu       sync.RWMutex
	invoices map[string]invoice.Invoice // by id, across tenants
}

var _ invoice.Store = (*Store)(nil)

// New returns an empty Store.
func New() *Store { return &Store{invoices: map[string]invoice.Invoice{}} }

// Create implements invoice.Store.
func (s *Store) Create(_ context.Context, inv invoice.Invoice) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, taken := s.invoices[inv.ID]; taken {
		return fmt.Errorf("invoice %q: %w", inv.ID, invoice.ErrDuplicateID)
	}
	// Keep what PostgreSQL would keep, so both stores answer alike.
	inv.CreateTime = inv.CreateTime.UTC().Truncate(time.Microsecond)
	if !inv.ApproveTime.IsZero() {
		inv.ApproveTime = inv.ApproveTime.UTC().Truncate(time.Microsecond)
	}
	s.invoices[inv.ID] = inv
	return nil
}

// Get implements invoice.Store.
func (s *Store) Get(_ context.Context, tenant, id string) (invoice.Invoice, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	inv, ok := s.invoices[id]
	if !ok || inv.Tenant != tenant {
		return invoice.Invoice{}, fmt.Errorf("invoice %q: %w", id, invoice.ErrNotFound)
	}
	return inv, nil
}

// List implements invoice.Store.
func (s *Store) List(_ context.Context, tenant string, after *invoice.Cursor, limit int) ([]invoice.Invoice, error) {
	if limit < 1 {
		return nil, fmt.Errorf("list invoices: limit %d is not positive", limit)
	}
	s.mu.RLock()
	var out []invoice.Invoice
	for _, inv := range s.invoices {
		if inv.Tenant == tenant && (after == nil || compare(inv, *after) > 0) {
			out = append(out, inv)
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b invoice.Invoice) int {
		return compare(a, invoice.Cursor{CreateTime: b.CreateTime, ID: b.ID})
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// Approve implements invoice.Store.
func (s *Store) Approve(_ context.Context, tenant, id, subject string, at time.Time) (invoice.Invoice, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	inv, ok := s.invoices[id]
	if !ok || inv.Tenant != tenant {
		return invoice.Invoice{}, fmt.Errorf("invoice %q: %w", id, invoice.ErrNotFound)
	}
	if inv.Status != invoice.StatusDraft {
		return invoice.Invoice{}, fmt.Errorf("invoice %q: %w", id, invoice.ErrAlreadyApproved)
	}
	inv.Status = invoice.StatusApproved
	inv.ApprovedBy = subject
	inv.ApproveTime = at.UTC().Truncate(time.Microsecond)
	s.invoices[id] = inv
	return inv, nil
}

// Ping implements invoice.Store; memory is always reachable.
func (s *Store) Ping(context.Context) error { return nil }

// compare orders an invoice against a cursor by (CreateTime, ID), IDs by
// bytes, as the Postgres store's COLLATE "C" does.
func compare(inv invoice.Invoice, c invoice.Cursor) int {
	return cmp.Or(inv.CreateTime.Compare(c.CreateTime), cmp.Compare(inv.ID, c.ID))
}
