// Package memory is an in-process store.Store for development and tests.
// Nothing survives a restart: never use it for a real deployment.
package memory

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/client"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/tokensession"
)

// Store keeps clients, access token sessions, grant records, revoked
// request ids and client assertion jtis in maps guarded by one lock, which
// makes every method atomic. It is a store.Store, store.GrantStore and
// store.ClientAssertionStore in one value, as fosite needs.
type Store struct {
	mu       sync.RWMutex
	clients  map[string]*client.Client
	sessions map[string]tokensession.Record
	// jtis indexes sessions by jti, which is unique among them.
	jtis   map[string]struct{}
	grants map[grantKey]tokensession.Grant
	// revoked maps each revoked request id to when its revocation may be
	// forgotten (see store.RevocationRetention).
	revoked map[string]time.Time
	// assertions maps each used client assertion jti to its expiry.
	assertions map[string]time.Time
}

var _ store.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store {
	return &Store{
		clients:    make(map[string]*client.Client),
		sessions:   make(map[string]tokensession.Record),
		jtis:       make(map[string]struct{}),
		grants:     make(map[grantKey]tokensession.Grant),
		revoked:    make(map[string]time.Time),
		assertions: make(map[string]time.Time),
	}
}

// GetClient implements store.ClientStore.
func (s *Store) GetClient(_ context.Context, id string) (*client.Client, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, ok := s.clients[id]
	if !ok {
		return nil, fmt.Errorf("client %q: %w", id, store.ErrNotFound)
	}
	return c.Clone(), nil
}

// UpsertClient implements store.ClientStore.
func (s *Store) UpsertClient(_ context.Context, c *client.Client) error {
	if err := c.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[c.ID] = c.Clone()
	return nil
}

// CreateTokenSession implements store.TokenSessionStore. It refuses a
// session of a revoked request with store.ErrRevoked.
func (s *Store) CreateTokenSession(_ context.Context, rec tokensession.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkNotRevoked(rec.RequestID); err != nil {
		return fmt.Errorf("token session: %w", err)
	}
	if _, ok := s.clients[rec.ClientID]; !ok {
		return fmt.Errorf("token session for client %q: %w", rec.ClientID, store.ErrNotFound)
	}
	if _, ok := s.sessions[rec.Signature]; ok {
		return fmt.Errorf("token session: signature: %w", store.ErrConflict)
	}
	if _, ok := s.jtis[rec.JTI]; ok {
		return fmt.Errorf("token session: jti: %w", store.ErrConflict)
	}
	s.sessions[rec.Signature] = rec.Clone()
	s.jtis[rec.JTI] = struct{}{}
	return nil
}

// GetTokenSession implements store.TokenSessionStore.
func (s *Store) GetTokenSession(_ context.Context, signature string) (tokensession.Record, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	rec, ok := s.sessions[signature]
	if !ok {
		return tokensession.Record{}, fmt.Errorf("token session: %w", store.ErrNotFound)
	}
	return rec.Clone(), nil
}

// DeleteTokenSession implements store.TokenSessionStore.
func (s *Store) DeleteTokenSession(_ context.Context, signature string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sessions[signature]; !ok {
		return fmt.Errorf("token session: %w", store.ErrNotFound)
	}
	s.deleteSession(signature)
	return nil
}

// deleteSession removes the session with signature and frees its jti; the
// caller holds the write lock.
func (s *Store) deleteSession(signature string) {
	if rec, ok := s.sessions[signature]; ok {
		delete(s.sessions, signature)
		delete(s.jtis, rec.JTI)
	}
}

// checkNotRevoked returns store.ErrRevoked if requestID was revoked; the
// caller holds the write lock, which orders the check against
// RevokeRequest. RevokeRequest refuses "", so "" is never revoked.
func (s *Store) checkNotRevoked(requestID string) error {
	if _, ok := s.revoked[requestID]; ok {
		return store.ErrRevoked
	}
	return nil
}

// Ping implements store.Store; memory is always reachable.
func (s *Store) Ping(context.Context) error { return nil }
