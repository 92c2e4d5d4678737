package memory

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/user"
)

// UserStore keeps users in a map guarded by one lock; every method runs
// under it, which makes the login-state updates atomic.
type UserStore struct {
	mu    sync.Mutex
	users map[string]*user.User
}

var _ store.UserStore = (*UserStore)(nil)

// NewUserStore returns an empty user store.
func NewUserStore() *UserStore {
	return &UserStore{users: make(map[string]*user.User)}
}

// CreateUser implements store.UserStore.
func (s *UserStore) CreateUser(_ context.Context, u *user.User) error {
	if err := u.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.users[u.Username]; ok {
		return fmt.Errorf("user %q: %w", u.Username, store.ErrConflict)
	}
	c := u.Clone()
	c.CreatedAt = time.Now().UTC()
	c.UpdatedAt = c.CreatedAt
	s.users[u.Username] = c
	return nil
}

// UpsertUser implements store.UserStore.
func (s *UserStore) UpsertUser(_ context.Context, u *user.User) error {
	if err := u.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now().UTC()
	old, ok := s.users[u.Username]
	if !ok {
		c := u.Clone()
		c.CreatedAt, c.UpdatedAt = now, now
		s.users[u.Username] = c
		return nil
	}
	c := old.Clone()
	c.Tenant = u.Tenant
	c.Roles = u.Clone().Roles
	c.PasswordHash = u.PasswordHash
	c.TOTPSecret = u.TOTPSecret
	c.UpdatedAt = now
	s.users[u.Username] = c
	return nil
}

// GetUser implements store.UserStore.
func (s *UserStore) GetUser(_ context.Context, username string) (*user.User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[username]
	if !ok {
		return nil, fmt.Errorf("user %q: %w", username, store.ErrNotFound)
	}
	return u.Clone(), nil
}

// SetPasswordHash implements store.UserStore.
func (s *UserStore) SetPasswordHash(_ context.Context, username, hash string) error {
	if _, err := user.ParseParams(hash); err != nil {
		return fmt.Errorf("user %q: %w: password hash: %w", username, user.ErrInvalid, err)
	}
	return s.update(username, func(u *user.User) { u.PasswordHash = hash })
}

// RecordLoginFailure implements store.UserStore.
func (s *UserStore) RecordLoginFailure(_ context.Context, username string, at time.Time, policy user.LockoutPolicy) (user.LoginState, error) {
	var state user.LoginState
	err := s.update(username, func(u *user.User) {
		u.FailedAttempts++
		if d := policy.Duration(u.FailedAttempts); d > 0 {
			u.LockedUntil = at.Add(d).UTC()
		}
		state = user.LoginState{FailedAttempts: u.FailedAttempts, LockedUntil: u.LockedUntil}
	})
	return state, err
}

// RecordLoginSuccess implements store.UserStore.
func (s *UserStore) RecordLoginSuccess(_ context.Context, username string) error {
	return s.update(username, func(u *user.User) {
		u.FailedAttempts = 0
		u.LockedUntil = time.Time{}
	})
}

// AdvanceTOTPStep implements store.UserStore.
func (s *UserStore) AdvanceTOTPStep(_ context.Context, username string, step int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[username]
	if !ok {
		return fmt.Errorf("user %q: %w", username, store.ErrNotFound)
	}
	if step <= u.TOTPLastStep {
		return fmt.Errorf("user %q: TOTP step %d: %w", username, step, store.ErrConflict)
	}
	u.TOTPLastStep = step
	u.UpdatedAt = time.Now().UTC()
	return nil
}

// update applies change to the stored user under the lock.
func (s *UserStore) update(username string, change func(*user.User)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[username]
	if !ok {
		return fmt.Errorf("user %q: %w", username, store.ErrNotFound)
	}
	change(u)
	u.UpdatedAt = time.Now().UTC()
	return nil
}
