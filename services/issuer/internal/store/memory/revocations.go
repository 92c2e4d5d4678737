package memory

import (
	"context"
	"crypto/rand"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/revocation"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
)

// RevocationLog keeps revocation events in a slice in cursor order,
// guarded by one lock: appends are serialized, so cursor order is commit
// order. Every instance is a new log with a new id.
type RevocationLog struct {
	mu     sync.RWMutex
	logID  string
	head   int64
	events []revocation.Event
	signal revocation.Signal
}

var _ store.RevocationLog = (*RevocationLog)(nil)

// NewRevocationLog returns an empty log with a random id.
func NewRevocationLog() *RevocationLog {
	return &RevocationLog{logID: rand.Text()}
}

// Append implements store.RevocationLog.
func (l *RevocationLog) Append(_ context.Context, ev revocation.Event) (revocation.Event, error) {
	if ev.Cursor != 0 {
		return revocation.Event{}, fmt.Errorf("%w: the cursor is assigned by the log, got %d", revocation.ErrInvalid, ev.Cursor)
	}
	if err := ev.Validate(); err != nil {
		return revocation.Event{}, err
	}
	l.mu.Lock()
	l.head++
	ev.Cursor = l.head
	l.events = append(l.events, ev.Clone())
	l.mu.Unlock()
	l.signal.Broadcast()
	return ev.Clone(), nil
}

// After implements store.RevocationLog.
func (l *RevocationLog) After(_ context.Context, cursor int64, limit int) (revocation.Page, error) {
	if err := store.CheckRevocationPage(cursor, limit); err != nil {
		return revocation.Page{}, err
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	i := sort.Search(len(l.events), func(i int) bool { return l.events[i].Cursor > cursor })
	page := revocation.Page{Head: revocation.Head{LogID: l.logID, Cursor: l.head}}
	for _, ev := range l.events[i:min(i+limit, len(l.events))] {
		page.Events = append(page.Events, ev.Clone())
	}
	return page, nil
}

// Changed implements store.RevocationLog: the channel closes at the next
// Append.
func (l *RevocationLog) Changed() <-chan struct{} { return l.signal.Changed() }

// DeleteExpired implements store.RevocationLog.
func (l *RevocationLog) DeleteExpired(_ context.Context, before time.Time) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	kept := make([]revocation.Event, 0, len(l.events))
	for _, ev := range l.events {
		if ev.ExpiresAt.After(before) {
			kept = append(kept, ev)
		}
	}
	deleted := int64(len(l.events) - len(kept))
	l.events = kept
	return deleted, nil
}
