package memory

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/signingkey"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
)

// KeyStore keeps signing keys in a slice guarded by a lock. Dev only: the
// keys die with the process, and with them every token they signed.
type KeyStore struct {
	mu   sync.Mutex
	keys []signingkey.Record
}

var _ store.KeyStore = (*KeyStore)(nil)

// NewKeyStore returns an empty KeyStore.
func NewKeyStore() *KeyStore { return &KeyStore{} }

// ListKeys implements store.KeyStore.
func (s *KeyStore) ListKeys(context.Context) ([]signingkey.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]signingkey.Record, len(s.keys))
	for i, r := range s.keys {
		out[i] = cloneRecord(r)
	}
	slices.SortStableFunc(out, func(a, b signingkey.Record) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(b.KID, a.KID)
	})
	return out, nil
}

// RotateKeys implements store.KeyStore.
func (s *KeyStore) RotateKeys(_ context.Context, next signingkey.Record, retiredExpireAt time.Time) error {
	if err := next.Validate(); err != nil {
		return err
	}
	next = cloneRecord(next)
	next.CreatedAt, next.ActivateAt = signingkey.Timestamp(next.CreatedAt), signingkey.Timestamp(next.ActivateAt)
	next.RetireAt, next.ExpireAt = signingkey.Timestamp(next.RetireAt), signingkey.Timestamp(next.ExpireAt)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.keys {
		if r.KID == next.KID || r.Predecessor == next.Predecessor {
			return fmt.Errorf("signing key %s (predecessor %q): %w: %w", next.KID, next.Predecessor, store.ErrConflict, signingkey.ErrRotationRace)
		}
	}
	for i := range s.keys {
		if r := &s.keys[i]; r.RetireAt.IsZero() || r.RetireAt.After(next.ActivateAt) {
			r.RetireAt, r.ExpireAt = next.ActivateAt, signingkey.Timestamp(retiredExpireAt)
		}
	}
	s.keys = append(s.keys, next)
	return nil
}

// DeleteExpiredKeys implements store.KeyStore.
func (s *KeyStore) DeleteExpiredKeys(_ context.Context, now time.Time) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var deleted []string
	s.keys = slices.DeleteFunc(s.keys, func(r signingkey.Record) bool {
		expired := !r.ExpireAt.IsZero() && !r.ExpireAt.After(now)
		if expired {
			deleted = append(deleted, r.KID)
		}
		return expired
	})
	return deleted, nil
}

func cloneRecord(r signingkey.Record) signingkey.Record {
	r.PublicJWK = slices.Clone(r.PublicJWK)
	r.Sealed = slices.Clone(r.Sealed)
	return r
}
