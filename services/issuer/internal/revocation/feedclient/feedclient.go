// Package feedclient follows the issuer's revocation feed: it subscribes,
// hands every event to a callback in cursor order, and after any failure
// subscribes again, with backoff, right after the last event the callback
// accepted, so that no event is lost and none is handed over twice.
//
// It depends only on the generated API and connect-go, not on the issuer,
// so that it can move to libs/ when the gateway needs it.
package feedclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/cenkalti/backoff/v5"

	revocationv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1/revocationv1connect"
)

// Defaults of Config.
const (
	// DefaultIdleTimeout is three of the issuer's default heartbeats.
	DefaultIdleTimeout = 30 * time.Second
	DefaultMinBackoff  = 100 * time.Millisecond
	DefaultMaxBackoff  = 30 * time.Second
)

// Handler applies one event. An error leaves the event unaccepted: the
// subscriber reconnects after backoff and hands it over again.
type Handler func(ctx context.Context, ev *revocationv1.Event) error

// Position is how far a subscriber has got: every event of log LogID up
// to Cursor has been accepted. The zero Position is the start of any log.
type Position struct {
	LogID  string
	Cursor int64
}

// Config configures a Subscriber. Client, Handle and Logger are required.
type Config struct {
	// Client is the feed's client, with the subscriber's credentials (for
	// example an interceptor or an HTTP client that adds them).
	Client revocationv1connect.RevocationFeedServiceClient
	Handle Handler
	Logger *slog.Logger
	// Start is where to resume, such as a Position saved before a
	// restart; zero replays every event the issuer keeps.
	Start Position
	// IdleTimeout: a stream on which nothing arrives for this long is
	// considered dead and replaced (DefaultIdleTimeout when zero). Keep it
	// a few times the issuer's heartbeat interval.
	IdleTimeout time.Duration
	// MinBackoff and MaxBackoff bound the delay before subscribing again
	// (DefaultMinBackoff and DefaultMaxBackoff when zero).
	MinBackoff, MaxBackoff time.Duration
}

// Subscriber follows the feed. Its methods are safe for concurrent use.
type Subscriber struct {
	cfg       Config
	mu        sync.Mutex
	pos       Position
	lastHeard time.Time
}

// New returns a Subscriber for cfg; call Run to start it.
func New(cfg Config) (*Subscriber, error) {
	switch {
	case cfg.Client == nil || cfg.Handle == nil || cfg.Logger == nil:
		return nil, errors.New("feedclient: client, handler and logger are required")
	case cfg.IdleTimeout < 0 || cfg.MinBackoff < 0 || cfg.MaxBackoff < 0 || cfg.Start.Cursor < 0:
		return nil, errors.New("feedclient: negative timeout, backoff or cursor")
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	return &Subscriber{cfg: cfg, pos: cfg.Start}, nil
}

// Position returns how far the subscriber has got; save it to resume
// after a restart.
func (s *Subscriber) Position() Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pos
}

// LastHeard returns when the issuer was last heard from (an event or a
// heartbeat); zero before the first message. A caller that must not
// accept tokens on stale revocation data compares it with its own limit.
func (s *Subscriber) LastHeard() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastHeard
}

// Run follows the feed until ctx is done. When a stream ends, it
// subscribes again after a backoff (reset by every stream that delivered
// something); when the issuer answers out_of_range (its log was reset), it
// starts over from the beginning of the new log.
func (s *Subscriber) Run(ctx context.Context) {
	b := &backoff.ExponentialBackOff{
		InitialInterval:     s.cfg.MinBackoff,
		RandomizationFactor: backoff.DefaultRandomizationFactor,
		Multiplier:          2,
		MaxInterval:         s.cfg.MaxBackoff,
	}
	for {
		heard, err := s.stream(ctx)
		if ctx.Err() != nil {
			return
		}
		if heard {
			b.Reset()
		}
		level := slog.LevelInfo
		switch connect.CodeOf(err) {
		case connect.CodeOutOfRange:
			s.cfg.Logger.WarnContext(ctx, "the issuer's revocation log was reset; following the new log from its start",
				slog.String("log_id", s.Position().LogID), slog.Any("error", err))
			s.setPosition(Position{})
		case connect.CodeUnauthenticated, connect.CodePermissionDenied:
			level = slog.LevelError
		}
		delay := b.NextBackOff()
		s.cfg.Logger.Log(ctx, level, "revocation feed disconnected, subscribing again",
			slog.Any("error", err), slog.Int64("cursor", s.Position().Cursor), slog.Duration("retry_in", delay))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// errIdle ends a stream on which nothing arrived for the idle timeout.
var errIdle = errors.New("feedclient: no message within the idle timeout")

// stream runs one subscription until it ends, and reports whether it
// received anything.
func (s *Subscriber) stream(ctx context.Context) (heard bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var idle atomic.Bool
	timer := time.AfterFunc(s.cfg.IdleTimeout, func() {
		idle.Store(true)
		cancel()
	})
	defer timer.Stop()

	pos := s.Position()
	st, err := s.cfg.Client.Subscribe(ctx, connect.NewRequest(&revocationv1.SubscribeRequest{
		AfterCursor: pos.Cursor,
		LogId:       pos.LogID,
	}))
	if err != nil {
		return false, err
	}
	defer func() { _ = st.Close() }()
	for st.Receive() {
		// The idle timeout measures the issuer's silence, not the handler.
		timer.Stop()
		heard = true
		s.heard()
		if pos, err = s.accept(ctx, pos, st.Msg()); err != nil {
			return heard, err
		}
		timer.Reset(s.cfg.IdleTimeout)
	}
	if idle.Load() {
		return heard, errIdle
	}
	return heard, st.Err()
}

// accept applies one message at pos and returns the new position. An
// event at or before pos was already accepted (events are idempotent by
// cursor) and is skipped.
func (s *Subscriber) accept(ctx context.Context, pos Position, m *revocationv1.SubscribeResponse) (Position, error) {
	switch m := m.GetMessage().(type) {
	case *revocationv1.SubscribeResponse_Heartbeat:
		pos = Position{LogID: m.Heartbeat.GetLogId(), Cursor: max(pos.Cursor, m.Heartbeat.GetCursor())}
	case *revocationv1.SubscribeResponse_Event:
		if m.Event.GetCursor() <= pos.Cursor {
			return pos, nil
		}
		if err := s.cfg.Handle(ctx, m.Event); err != nil {
			return pos, fmt.Errorf("feedclient: handler refused event %d: %w", m.Event.GetCursor(), err)
		}
		pos.Cursor = m.Event.GetCursor()
	default:
		return pos, nil
	}
	s.setPosition(pos)
	return pos, nil
}

func (s *Subscriber) setPosition(p Position) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pos = p
}

func (s *Subscriber) heard() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastHeard = time.Now()
}
