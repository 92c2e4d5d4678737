package store

import (
	"context"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/signingkey"
)

// KeyStore keeps the issuer's signing keys: public key in clear, private key
// sealed under the key-encryption key (the store never sees it in clear),
// and lifecycle timestamps. It is the signingkey.Ring's storage.
type KeyStore interface {
	// ListKeys returns every stored key, newest (latest CreatedAt) first.
	ListKeys(ctx context.Context) ([]signingkey.Record, error)
	// RotateKeys validates and stores next and, in the same transaction,
	// makes every other key that would still sign at next.ActivateAt
	// (RetireAt zero or later) retire at next.ActivateAt and expire at
	// retiredExpireAt. Each key may have one successor: when a stored key
	// already names next.Predecessor ("" for the first key), or next.KID is
	// taken, it stores nothing and returns an error matching both
	// ErrConflict and signingkey.ErrRotationRace.
	RotateKeys(ctx context.Context, next signingkey.Record, retiredExpireAt time.Time) error
	// DeleteExpiredKeys deletes every key whose ExpireAt is set and not after
	// now, and returns their kids.
	DeleteExpiredKeys(ctx context.Context, now time.Time) ([]string, error)
}

var _ signingkey.Store = KeyStore(nil)
