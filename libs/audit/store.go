package audit

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Limits of a Query.
const (
	// DefaultListLimit is the page size of a Query without a Limit.
	DefaultListLimit = 100
	// MaxListLimit is the largest page List returns.
	MaxListLimit = 1000
)

// Errors of a Store.
var (
	// ErrDuplicateEvent is wrapped by Append's error when an EventID is
	// already in the store or occurs twice in one call.
	ErrDuplicateEvent = errors.New("duplicate audit event id")
	// ErrInvalidQuery is wrapped by List's error for a malformed Query.
	ErrInvalidQuery = errors.New("invalid audit query")
)

// Store is an append-only audit chain. Implementations are safe for
// concurrent use, also by several processes sharing one database: however
// many appenders there are, the chain never forks.
type Store interface {
	// Append seals events (see Seal) after the current head and writes
	// them, all or none, in one atomic step, and returns them as stored.
	// No events is no-op.
	Append(ctx context.Context, events ...Event) ([]Event, error)
	// List returns the events q selects, in Seq order, at most q.Limit.
	List(ctx context.Context, q Query) ([]Event, error)
	// Head returns the end of the chain.
	Head(ctx context.Context) (Head, error)
}

// Query selects events for List. Zero fields select everything; to page
// through a result, pass the last Seq returned as the next AfterSeq.
type Query struct {
	// AfterSeq skips events up to and including this Seq.
	AfterSeq int64
	// Limit caps the page: DefaultListLimit when zero, at most MaxListLimit.
	Limit int
	// Type, Subject, ClientID and Tenant, when set, must equal the event's.
	Type     Type
	Subject  string
	ClientID string
	Tenant   string
	// Actor, when set, must be one of the event's actor chain: everything
	// done by someone acting for another (an agent impersonating a
	// customer, a service acting for a user), at any depth of the chain.
	Actor string
	// Since (inclusive) and Until (exclusive) bound the event's Time.
	Since, Until time.Time
}

// Normalize returns q with its default Limit applied and Since and Until
// rounded up to the microsecond (the precision of stored times), or an
// error wrapping ErrInvalidQuery. Stores call it first in List.
func (q Query) Normalize() (Query, error) {
	switch {
	case q.AfterSeq < 0:
		return q, fmt.Errorf("audit: after_seq %d is negative: %w", q.AfterSeq, ErrInvalidQuery)
	case q.Limit < 0 || q.Limit > MaxListLimit:
		return q, fmt.Errorf("audit: limit %d outside 0..%d: %w", q.Limit, MaxListLimit, ErrInvalidQuery)
	case !q.Since.IsZero() && !q.Until.IsZero() && !q.Since.Before(q.Until):
		return q, fmt.Errorf("audit: since %s is not before until %s: %w", q.Since, q.Until, ErrInvalidQuery)
	}
	if q.Limit == 0 {
		q.Limit = DefaultListLimit
	}
	q.Since, q.Until = ceilMicro(q.Since), ceilMicro(q.Until)
	return q, nil
}

// ceilMicro rounds t up to a whole microsecond.
func ceilMicro(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	down := t.Truncate(time.Microsecond)
	if down.Before(t) {
		return down.Add(time.Microsecond)
	}
	return down
}
