package memory

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/tokensession"
)

var (
	_ store.GrantStore           = (*Store)(nil)
	_ store.ClientAssertionStore = (*Store)(nil)
)

// grantKey is a grant record's primary key.
type grantKey struct {
	kind      tokensession.GrantKind
	signature string
}

// CreateGrant implements store.GrantStore. It refuses a record of a
// revoked request with store.ErrRevoked.
func (s *Store) CreateGrant(_ context.Context, g tokensession.Grant) error {
	if err := g.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkNotRevoked(g.RequestID); err != nil {
		return fmt.Errorf("grant %s: %w", g.Kind, err)
	}
	if _, ok := s.clients[g.ClientID]; !ok {
		return fmt.Errorf("grant for client %q: %w", g.ClientID, store.ErrNotFound)
	}
	key := grantKey{kind: g.Kind, signature: g.Signature}
	if _, ok := s.grants[key]; ok {
		return fmt.Errorf("grant %s: %w", g.Kind, store.ErrConflict)
	}
	g = g.Clone()
	g.RequestedAt, g.ExpiresAt = g.RequestedAt.UTC(), g.ExpiresAt.UTC()
	s.grants[key] = g
	return nil
}

// GetGrant implements store.GrantStore.
func (s *Store) GetGrant(_ context.Context, kind tokensession.GrantKind, signature string) (tokensession.Grant, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	g, ok := s.grants[grantKey{kind: kind, signature: signature}]
	if !ok {
		return tokensession.Grant{}, fmt.Errorf("grant %s: %w", kind, store.ErrNotFound)
	}
	return g.Clone(), nil
}

// DeactivateGrant implements store.GrantStore.
func (s *Store) DeactivateGrant(_ context.Context, kind tokensession.GrantKind, signature string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := grantKey{kind: kind, signature: signature}
	g, ok := s.grants[key]
	switch {
	case !ok:
		return fmt.Errorf("grant %s: %w", kind, store.ErrNotFound)
	case !g.Active:
		return fmt.Errorf("grant %s: %w", kind, store.ErrInactive)
	}
	g.Active = false
	s.grants[key] = g
	return nil
}

// DeleteGrant implements store.GrantStore.
func (s *Store) DeleteGrant(_ context.Context, kind tokensession.GrantKind, signature string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := grantKey{kind: kind, signature: signature}
	if _, ok := s.grants[key]; !ok {
		return fmt.Errorf("grant %s: %w", kind, store.ErrNotFound)
	}
	delete(s.grants, key)
	return nil
}

// RevokeRequest implements store.GrantStore. It also records requestID as
// revoked, even if nothing of it is stored, so that CreateGrant and
// CreateTokenSession refuse it from now on (store.ErrRevoked) until the
// revocation expires (store.RevocationRetention). The records come back
// ordered by signature.
func (s *Store) RevokeRequest(_ context.Context, requestID string) ([]tokensession.Record, error) {
	if requestID == "" {
		return nil, errors.New("memory store: revoke request: empty request id")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.markRevoked(requestID)
	var revoked []tokensession.Record
	for signature, rec := range s.sessions {
		if rec.RequestID == requestID {
			revoked = append(revoked, rec.Clone())
			s.deleteSession(signature)
		}
	}
	slices.SortFunc(revoked, func(a, b tokensession.Record) int { return strings.Compare(a.Signature, b.Signature) })
	return revoked, nil
}

// MarkRequestRevoked implements store.GrantStore.
func (s *Store) MarkRequestRevoked(_ context.Context, requestID string) error {
	if requestID == "" {
		return errors.New("memory store: mark request revoked: empty request id")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.markRevoked(requestID)
	return nil
}

// markRevoked records requestID as revoked until the latest expiry of its
// records (at least store.RevocationRetention from now) and marks its
// grant records inactive; the caller holds the write lock.
func (s *Store) markRevoked(requestID string) {
	expires := time.Now().UTC().Add(store.RevocationRetention)
	for key, g := range s.grants {
		if g.RequestID != requestID {
			continue
		}
		expires = latest(expires, g.ExpiresAt)
		if g.Active {
			g.Active = false
			s.grants[key] = g
		}
	}
	for _, rec := range s.sessions {
		if rec.RequestID == requestID {
			expires = latest(expires, rec.ExpiresAt)
		}
	}
	s.revoked[requestID] = latest(expires, s.revoked[requestID])
}

// RequestTokenSessions implements store.GrantStore.
func (s *Store) RequestTokenSessions(_ context.Context, requestID string) ([]tokensession.Record, error) {
	if requestID == "" {
		return nil, errors.New("memory store: request token sessions: empty request id")
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var recs []tokensession.Record
	for _, rec := range s.sessions {
		if rec.RequestID == requestID {
			recs = append(recs, rec.Clone())
		}
	}
	slices.SortFunc(recs, func(a, b tokensession.Record) int { return strings.Compare(a.Signature, b.Signature) })
	return recs, nil
}

// RevokedRequestsWithSessions implements store.GrantStore.
func (s *Store) RevokedRequestsWithSessions(_ context.Context, now time.Time, limit int) ([]string, error) {
	if limit < 1 {
		return nil, fmt.Errorf("memory store: revoked requests with sessions: limit %d", limit)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	ids := make(map[string]struct{})
	for _, rec := range s.sessions {
		if _, revoked := s.revoked[rec.RequestID]; revoked && rec.ExpiresAt.After(now) {
			ids[rec.RequestID] = struct{}{}
		}
	}
	sorted := slices.Sorted(maps.Keys(ids))
	return sorted[:min(len(sorted), limit)], nil
}

// RequestIDsForConsent implements store.GrantStore. An empty consentID is
// an error: it would name every authorization that rests on no consent.
func (s *Store) RequestIDsForConsent(_ context.Context, consentID string) ([]string, error) {
	if consentID == "" {
		return nil, errors.New("memory store: request ids for consent: empty consent id")
	}
	return s.requestIDs(func(g tokensession.Grant) bool { return g.ConsentID == consentID }), nil
}

// RequestIDsForSession implements store.GrantStore. An empty sessionID is
// an error: it would name every authorization made without a browser
// session.
func (s *Store) RequestIDsForSession(_ context.Context, sessionID string) ([]string, error) {
	if sessionID == "" {
		return nil, errors.New("memory store: request ids for session: empty session id")
	}
	return s.requestIDs(func(g tokensession.Grant) bool { return g.SessionID == sessionID }), nil
}

// requestIDs returns the distinct, sorted request ids of the grant records
// match accepts.
func (s *Store) requestIDs(match func(tokensession.Grant) bool) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ids := make(map[string]struct{})
	for _, g := range s.grants {
		if match(g) {
			ids[g.RequestID] = struct{}{}
		}
	}
	return slices.Sorted(maps.Keys(ids))
}

// DeleteExpiredGrants implements store.GrantStore. It also removes
// revocations and client assertion jtis that expired before t, and counts
// them with the rest.
func (s *Store) DeleteExpiredGrants(_ context.Context, t time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for key, g := range s.grants {
		if g.ExpiresAt.Before(t) {
			delete(s.grants, key)
			n++
		}
	}
	for signature, rec := range s.sessions {
		if rec.ExpiresAt.Before(t) {
			s.deleteSession(signature)
			n++
		}
	}
	for requestID, exp := range s.revoked {
		if exp.Before(t) {
			delete(s.revoked, requestID)
			n++
		}
	}
	for jti, exp := range s.assertions {
		if exp.Before(t) {
			delete(s.assertions, jti)
			n++
		}
	}
	return n, nil
}

// latest returns the later of a and b.
func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// UseClientAssertion implements store.ClientAssertionStore.
func (s *Store) UseClientAssertion(_ context.Context, jti string, exp time.Time) error {
	switch {
	case jti == "":
		return errors.New("memory store: client assertion: empty jti")
	case len(jti) > store.MaxAssertionJTILength:
		return fmt.Errorf("memory store: client assertion: jti longer than %d bytes", store.MaxAssertionJTILength)
	case exp.IsZero():
		return errors.New("memory store: client assertion: no expiry")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if stored, ok := s.assertions[jti]; ok && !stored.Before(time.Now()) {
		return fmt.Errorf("client assertion jti: %w", store.ErrConflict)
	}
	s.assertions[jti] = exp.UTC()
	return nil
}

// RequestRevoked implements store.GrantStore.
func (s *Store) RequestRevoked(_ context.Context, requestID string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.revoked[requestID]
	return ok, nil
}
