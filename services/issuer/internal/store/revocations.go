package store

import (
	"context"
	"fmt"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/revocation"
)

// MaxRevocationPage bounds the limit of RevocationLog.After.
const MaxRevocationPage = 1000

// RevocationLog is the append-only log of revocation events that the
// revocation feed serves. Cursors are assigned in the order appends commit:
// once an event is readable, so is every event with a smaller cursor
// (unless deleted), so a reader that moves past a cursor never misses an
// event committed later with a smaller one. All replicas of the issuer that
// share a store share one log.
type RevocationLog interface {
	// Append validates ev (revocation.ErrInvalid, also for a non-zero
	// Cursor), assigns it the next cursor, stores it and returns it with
	// that cursor. A rejected event changes nothing.
	Append(ctx context.Context, ev revocation.Event) (revocation.Event, error)
	// After returns up to limit (1 to MaxRevocationPage) events with a
	// cursor greater than cursor, in cursor order, with the log's head
	// read no later than the events (see revocation.Page).
	After(ctx context.Context, cursor int64, limit int) (revocation.Page, error)
	// Changed returns a channel that is closed when an event may have been
	// appended since the call, by this process or (for a shared store)
	// another replica. Take it before calling After, then wait on it, and
	// no append is missed. Wake-ups may be spurious or, for events of
	// other replicas, late by at most the store's poll interval.
	Changed() <-chan struct{}
	// DeleteExpired deletes every event whose ExpiresAt is not after
	// before, and returns how many it deleted. The head does not move back.
	// Pass a time earlier than now by the consumers' clock leeway, so that
	// no consumer forgets an event it still enforces.
	DeleteExpired(ctx context.Context, before time.Time) (int64, error)
}

// CheckRevocationPage is the argument check every RevocationLog.After
// applies: a cursor of at least 0 and a limit from 1 to MaxRevocationPage.
func CheckRevocationPage(cursor int64, limit int) error {
	if cursor < 0 {
		return fmt.Errorf("revocation log: negative cursor %d", cursor)
	}
	if limit < 1 || limit > MaxRevocationPage {
		return fmt.Errorf("revocation log: limit %d outside 1 to %d", limit, MaxRevocationPage)
	}
	return nil
}
