package memory

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/browsersession"
	"github.com/gatehouse/gatehouse/services/issuer/internal/consent"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
)

// BrowserSessionStore keeps browser sessions in a map guarded by one lock.
type BrowserSessionStore struct {
	mu       sync.Mutex
	sessions map[string]browsersession.Session
}

var _ store.BrowserSessionStore = (*BrowserSessionStore)(nil)

// NewBrowserSessionStore returns an empty browser session store.
func NewBrowserSessionStore() *BrowserSessionStore {
	return &BrowserSessionStore{sessions: make(map[string]browsersession.Session)}
}

// CreateBrowserSession implements store.BrowserSessionStore.
func (s *BrowserSessionStore) CreateBrowserSession(_ context.Context, sess browsersession.Session) error {
	if err := sess.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sessions[sess.ID]; ok {
		return fmt.Errorf("browser session: %w", store.ErrConflict)
	}
	s.sessions[sess.ID] = utcSession(sess.Clone())
	return nil
}

// GetBrowserSession implements store.BrowserSessionStore.
func (s *BrowserSessionStore) GetBrowserSession(_ context.Context, id string, now time.Time) (browsersession.Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.sessions[id]
	if !ok || !sess.ActiveAt(now) {
		return browsersession.Session{}, fmt.Errorf("browser session: %w", store.ErrNotFound)
	}
	return sess.Clone(), nil
}

// TouchBrowserSession implements store.BrowserSessionStore.
func (s *BrowserSessionStore) TouchBrowserSession(_ context.Context, id string, idleExpiresAt time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.sessions[id]
	if !ok {
		return fmt.Errorf("browser session: %w", store.ErrNotFound)
	}
	sess.IdleExpiresAt = minTime(idleExpiresAt, sess.ExpiresAt).UTC()
	s.sessions[id] = sess
	return nil
}

// DeleteBrowserSession implements store.BrowserSessionStore.
func (s *BrowserSessionStore) DeleteBrowserSession(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sessions[id]; !ok {
		return fmt.Errorf("browser session: %w", store.ErrNotFound)
	}
	delete(s.sessions, id)
	return nil
}

// DeleteExpiredBrowserSessions implements store.BrowserSessionStore.
func (s *BrowserSessionStore) DeleteExpiredBrowserSessions(_ context.Context, now time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for id, sess := range s.sessions {
		if !sess.ActiveAt(now) {
			delete(s.sessions, id)
			n++
		}
	}
	return n, nil
}

// InteractionStore keeps pending authorization requests in a map guarded
// by one lock, which makes the version checks atomic.
type InteractionStore struct {
	mu           sync.Mutex
	interactions map[string]browsersession.Pending
}

var _ store.InteractionStore = (*InteractionStore)(nil)

// NewInteractionStore returns an empty interaction store.
func NewInteractionStore() *InteractionStore {
	return &InteractionStore{interactions: make(map[string]browsersession.Pending)}
}

// CreateInteraction implements store.InteractionStore.
func (s *InteractionStore) CreateInteraction(_ context.Context, p browsersession.Pending) error {
	if err := p.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.interactions[p.ID]; ok {
		return fmt.Errorf("interaction: %w", store.ErrConflict)
	}
	p = utcPending(p.Clone())
	p.Version = 1
	s.interactions[p.ID] = p
	return nil
}

// GetInteraction implements store.InteractionStore.
func (s *InteractionStore) GetInteraction(_ context.Context, id string, now time.Time) (browsersession.Pending, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.interactions[id]
	if !ok || !now.Before(p.ExpiresAt) {
		return browsersession.Pending{}, fmt.Errorf("interaction: %w", store.ErrNotFound)
	}
	return p.Clone(), nil
}

// UpdateInteraction implements store.InteractionStore.
func (s *InteractionStore) UpdateInteraction(_ context.Context, p browsersession.Pending) (int64, error) {
	if err := p.Validate(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.interactions[p.ID]
	switch {
	case !ok:
		return 0, fmt.Errorf("interaction: %w", store.ErrNotFound)
	case old.Version != p.Version:
		return 0, fmt.Errorf("interaction version %d: %w", p.Version, store.ErrConflict)
	}
	old.Subject = p.Subject
	old.LoginAt = p.LoginAt.UTC()
	old.ConsentGranted, old.ConsentID, old.ConsentDenied = p.ConsentGranted, p.ConsentID, p.ConsentDenied
	old.Failure = p.Failure
	old.MFAUsername, old.PasswordVerifiedAt = p.MFAUsername, p.PasswordVerifiedAt.UTC()
	old.Version++
	s.interactions[p.ID] = old
	return old.Version, nil
}

// DeleteInteraction implements store.InteractionStore.
func (s *InteractionStore) DeleteInteraction(_ context.Context, id string, version int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.interactions[id]
	switch {
	case !ok:
		return fmt.Errorf("interaction: %w", store.ErrNotFound)
	case p.Version != version:
		return fmt.Errorf("interaction version %d: %w", version, store.ErrConflict)
	}
	delete(s.interactions, id)
	return nil
}

// DeleteExpiredInteractions implements store.InteractionStore.
func (s *InteractionStore) DeleteExpiredInteractions(_ context.Context, now time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for id, p := range s.interactions {
		if !now.Before(p.ExpiresAt) {
			delete(s.interactions, id)
			n++
		}
	}
	return n, nil
}

// ConsentStore keeps consent records in a map guarded by one lock.
type ConsentStore struct {
	mu       sync.Mutex
	consents map[string]consent.Consent
}

var _ store.ConsentStore = (*ConsentStore)(nil)

// NewConsentStore returns an empty consent store.
func NewConsentStore() *ConsentStore {
	return &ConsentStore{consents: make(map[string]consent.Consent)}
}

// GrantConsent implements store.ConsentStore.
func (s *ConsentStore) GrantConsent(_ context.Context, c consent.Consent) error {
	if err := c.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.consents[c.ID]; ok {
		return fmt.Errorf("consent %q: %w", c.ID, store.ErrConflict)
	}
	c = c.Clone()
	c.GrantedAt, c.ExpiresAt, c.WithdrawnAt = c.GrantedAt.UTC(), c.ExpiresAt.UTC(), c.WithdrawnAt.UTC()
	s.consents[c.ID] = c
	return nil
}

// GetConsent implements store.ConsentStore.
func (s *ConsentStore) GetConsent(_ context.Context, id string) (consent.Consent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.consents[id]
	if !ok {
		return consent.Consent{}, fmt.Errorf("consent %q: %w", id, store.ErrNotFound)
	}
	return c.Clone(), nil
}

// FindActiveConsent implements store.ConsentStore.
func (s *ConsentStore) FindActiveConsent(_ context.Context, subject, clientID string, scopes []string, now time.Time) (consent.Consent, error) {
	for _, c := range s.bySubject(subject) {
		if c.ClientID == clientID && c.ActiveAt(now) && c.Covers(scopes) {
			return c, nil
		}
	}
	return consent.Consent{}, fmt.Errorf("consent of %q for %q: %w", subject, clientID, store.ErrNotFound)
}

// ListConsentsBySubject implements store.ConsentStore.
func (s *ConsentStore) ListConsentsBySubject(_ context.Context, subject string) ([]consent.Consent, error) {
	list := s.bySubject(subject)
	return list[:min(len(list), store.MaxListedConsents)], nil
}

// WithdrawConsent implements store.ConsentStore.
func (s *ConsentStore) WithdrawConsent(_ context.Context, subject, id string, at time.Time) (consent.Consent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.consents[id]
	if !ok || c.Subject != subject || !c.WithdrawnAt.IsZero() {
		return consent.Consent{}, fmt.Errorf("consent %q of %q: %w", id, subject, store.ErrNotFound)
	}
	c.WithdrawnAt = at.UTC()
	s.consents[id] = c
	return c.Clone(), nil
}

// bySubject returns copies of subject's consents, most recently granted
// first (ties by descending ID, as in Postgres).
func (s *ConsentStore) bySubject(subject string) []consent.Consent {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []consent.Consent
	for _, c := range s.consents {
		if c.Subject == subject {
			out = append(out, c.Clone())
		}
	}
	slices.SortFunc(out, func(a, b consent.Consent) int {
		return cmp.Or(b.GrantedAt.Compare(a.GrantedAt), cmp.Compare(b.ID, a.ID))
	})
	return out
}

func utcSession(s browsersession.Session) browsersession.Session {
	s.AuthTime, s.ExpiresAt, s.IdleExpiresAt = s.AuthTime.UTC(), s.ExpiresAt.UTC(), s.IdleExpiresAt.UTC()
	return s
}

func utcPending(p browsersession.Pending) browsersession.Pending {
	p.CreatedAt, p.ExpiresAt = p.CreatedAt.UTC(), p.ExpiresAt.UTC()
	p.LoginAt, p.PasswordVerifiedAt = p.LoginAt.UTC(), p.PasswordVerifiedAt.UTC()
	return p
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
