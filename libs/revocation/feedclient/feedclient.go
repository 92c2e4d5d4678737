// Package feedclient follows the issuer's revocation feed
// (gatehouse.revocation.v1.RevocationFeedService/Subscribe): it subscribes,
// hands every event to a callback in cursor order, and after any failure
// subscribes again, with backoff, right after the last event the callback
// accepted, so that no event is lost and none is handed over twice. When
// the issuer's log is replaced (out_of_range, or a heartbeat naming
// another log) it starts over from the new log's beginning.
// docs/revocation-feed.md is the contract it follows.
//
// It depends only on the generated API and connect-go; package revocation
// (Follower) builds on it to keep a revocation Set current.
package feedclient

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
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
	// Client is the feed's client. A stream has no deadline (it lasts as
	// long as the issuer serves it); IdleTimeout detects a dead one.
	Client revocationv1connect.RevocationFeedServiceClient
	// ClientID and ClientSecret authenticate the subscriber as a
	// confidential OAuth client (HTTP Basic, RFC 6749 section 2.3.1), as the
	// issuer requires. Leave both empty when Client adds credentials itself.
	ClientID, ClientSecret string
	Handle                 Handler
	Logger                 *slog.Logger
	// Heard, when set, is called with the local time after each message
	// from the issuer (event or heartbeat) has been handled: the issuer was
	// alive then, and every event up to Position has been handled.
	Heard func(at time.Time)
	// Disconnected, when set, is called with the cause each time a
	// subscription ends, before the backoff (not when ctx ends).
	Disconnected func(ctx context.Context, err error)
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
	cfg Config
	// authorization is the Authorization header value, if any.
	authorization string
	mu            sync.Mutex
	pos           Position
	lastHeard     time.Time
}

// New returns a Subscriber for cfg; call Run to start it.
func New(cfg Config) (*Subscriber, error) {
	switch {
	case cfg.Client == nil || cfg.Handle == nil || cfg.Logger == nil:
		return nil, errors.New("feedclient: client, handler and logger are required")
	case cfg.IdleTimeout < 0 || cfg.MinBackoff < 0 || cfg.MaxBackoff < 0 || cfg.Start.Cursor < 0:
		return nil, errors.New("feedclient: negative timeout, backoff or cursor")
	case (cfg.ClientID == "") != (cfg.ClientSecret == ""):
		return nil, errors.New("feedclient: client id and client secret go together")
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
	s := &Subscriber{cfg: cfg, pos: cfg.Start}
	if cfg.ClientID != "" {
		s.authorization = "Basic " + base64.StdEncoding.EncodeToString(
			[]byte(url.QueryEscape(cfg.ClientID)+":"+url.QueryEscape(cfg.ClientSecret)))
	}
	return s, nil
}

// Position returns how far the subscriber has got; save it to resume
// after a restart.
func (s *Subscriber) Position() Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pos
}

// LastHeard returns when a message from the issuer (an event or a
// heartbeat) was last handled; zero before the first. A caller that must
// not accept tokens on stale revocation data compares it with its limit.
func (s *Subscriber) LastHeard() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastHeard
}

// Run follows the feed until ctx is done; call it once. When a stream
// ends, it subscribes again after a backoff (reset by every stream that
// delivered something) from its Position; when the issuer's log was
// replaced (out_of_range, or a heartbeat naming another log), it starts
// over from the beginning of the new log.
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
		if s.cfg.Disconnected != nil {
			s.cfg.Disconnected(ctx, err)
		}
		level := slog.LevelInfo
		switch code := connect.CodeOf(err); {
		case code == connect.CodeOutOfRange || errors.Is(err, errLogChanged):
			s.cfg.Logger.WarnContext(ctx, "the issuer's revocation log was reset; following the new log from its start",
				slog.String("log_id", s.Position().LogID), slog.Any("error", err))
			// Only the position starts over: what the handler applied from
			// the old log stays applied (see revocation.Follower).
			s.setPosition(Position{})
		case code == connect.CodeUnauthenticated || code == connect.CodePermissionDenied:
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

var (
	// errIdle ends a stream on which nothing arrived for the idle timeout.
	errIdle = errors.New("feedclient: no message within the idle timeout")
	// errLogChanged ends a stream whose heartbeat names another log than
	// the position's: its cursors mean nothing there.
	errLogChanged = errors.New("feedclient: the issuer's heartbeat names another log")
)

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
	req := connect.NewRequest(&revocationv1.SubscribeRequest{
		AfterCursor: pos.Cursor,
		LogId:       pos.LogID,
	})
	if s.authorization != "" {
		req.Header().Set("Authorization", s.authorization)
	}
	st, err := s.cfg.Client.Subscribe(ctx, req)
	if err != nil {
		return false, err
	}
	defer func() { _ = st.Close() }()
	for st.Receive() {
		// The idle timeout measures the issuer's silence, not the handler.
		timer.Stop()
		if hb := st.Msg().GetHeartbeat(); hb != nil && !heard {
			s.cfg.Logger.InfoContext(ctx, "revocation feed subscribed",
				slog.String("log_id", hb.GetLogId()), slog.Int64("after_cursor", pos.Cursor))
		}
		heard = true
		if pos, err = s.accept(ctx, pos, st.Msg()); err != nil {
			return heard, err
		}
		s.heard()
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
		if pos.LogID != "" && m.Heartbeat.GetLogId() != pos.LogID {
			return pos, errLogChanged
		}
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
	now := time.Now()
	s.mu.Lock()
	s.lastHeard = now
	s.mu.Unlock()
	if s.cfg.Heard != nil {
		s.cfg.Heard(now)
	}
}
