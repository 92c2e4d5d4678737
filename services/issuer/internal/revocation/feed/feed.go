// Package feed serves gatehouse.revocation.v1.RevocationFeedService over
// Connect, gRPC and gRPC-Web: it streams a revocation log to gateways,
// first the events after the subscriber's cursor, then new ones as they are
// appended, with heartbeats in between. docs/revocation-feed.md is the
// contract.
package feed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/protobuf/types/known/timestamppb"

	revocationv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1/revocationv1connect"
	"github.com/gatehouse/gatehouse/services/issuer/internal/revocation"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
)

// Defaults of Config.
const (
	DefaultHeartbeat      = 10 * time.Second
	DefaultMaxBatch       = 100
	DefaultMaxSubscribers = 1000
)

// MaxLogIDLen bounds SubscribeRequest.log_id, in bytes.
const MaxLogIDLen = 64

// Errors an Authorizer returns (wrapped or not) to refuse a subscriber.
var (
	// ErrUnauthenticated: the caller did not prove who it is. Subscribe
	// answers unauthenticated.
	ErrUnauthenticated = errors.New("revocation feed: subscriber not authenticated")
	// ErrForbidden: the caller is known but may not read the feed.
	// Subscribe answers permission_denied.
	ErrForbidden = errors.New("revocation feed: subscriber may not read the feed")
)

// Authorizer authenticates a subscriber from its request headers and
// decides whether it may read the feed. It returns the subscriber's id for
// logs and metrics, or an error wrapping ErrUnauthenticated or
// ErrForbidden; any other error means it could not decide, and Subscribe
// answers unavailable.
type Authorizer func(ctx context.Context, h http.Header) (subscriberID string, err error)

// Log is the revocation log the feed reads; store.RevocationLog
// implements it.
type Log interface {
	After(ctx context.Context, cursor int64, limit int) (revocation.Page, error)
	Changed() <-chan struct{}
}

// Config configures a Handler. Log, Authorize and Logger are required.
type Config struct {
	Log       Log
	Authorize Authorizer
	Logger    *slog.Logger
	// Meter records the number of open subscriptions and of events sent;
	// nil records nothing.
	Meter metric.Meter
	// Heartbeat is the interval between heartbeats (DefaultHeartbeat when
	// zero). It also bounds how late an event is when a wake-up is missed.
	Heartbeat time.Duration
	// MaxBatch is how many events one read of the log returns
	// (DefaultMaxBatch when zero; at most store.MaxRevocationPage).
	MaxBatch int
	// MaxSubscribers bounds the open subscriptions (DefaultMaxSubscribers
	// when zero); beyond it Subscribe answers resource_exhausted.
	MaxSubscribers int
}

// Handler implements revocationv1connect.RevocationFeedServiceHandler.
type Handler struct {
	cfg         Config
	subscribers metric.Int64UpDownCounter
	sent        metric.Int64Counter
	open        atomic.Int64
	closing     chan struct{}
	closeOnce   sync.Once
}

var _ revocationv1connect.RevocationFeedServiceHandler = (*Handler)(nil)

// NewHandler returns a Handler for cfg.
func NewHandler(cfg Config) (*Handler, error) {
	switch {
	case cfg.Log == nil:
		return nil, errors.New("revocation feed: no log")
	case cfg.Authorize == nil:
		return nil, errors.New("revocation feed: no authorizer")
	case cfg.Logger == nil:
		return nil, errors.New("revocation feed: no logger")
	case cfg.Heartbeat < 0 || cfg.MaxBatch < 0 || cfg.MaxSubscribers < 0:
		return nil, errors.New("revocation feed: negative heartbeat, batch or subscriber limit")
	case cfg.MaxBatch > store.MaxRevocationPage:
		return nil, fmt.Errorf("revocation feed: max batch %d above %d", cfg.MaxBatch, store.MaxRevocationPage)
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.MaxSubscribers == 0 {
		cfg.MaxSubscribers = DefaultMaxSubscribers
	}
	if cfg.Meter == nil {
		cfg.Meter = noop.NewMeterProvider().Meter("")
	}
	subscribers, err := cfg.Meter.Int64UpDownCounter("gatehouse.issuer.revocation_feed.subscribers",
		metric.WithDescription("Open revocation feed subscriptions."))
	if err != nil {
		return nil, fmt.Errorf("revocation feed: metric: %w", err)
	}
	sent, err := cfg.Meter.Int64Counter("gatehouse.issuer.revocation_feed.events_sent",
		metric.WithDescription("Revocation events sent to subscribers."))
	if err != nil {
		return nil, fmt.Errorf("revocation feed: metric: %w", err)
	}
	return &Handler{cfg: cfg, subscribers: subscribers, sent: sent, closing: make(chan struct{})}, nil
}

// Close ends every open subscription with unavailable, so that subscribers
// move to another replica, and refuses new ones. Call it when the server
// starts shutting down: a stream never ends on its own, and an HTTP
// server's graceful shutdown would wait for it. Close is idempotent.
func (h *Handler) Close() {
	h.closeOnce.Do(func() { close(h.closing) })
}

// Subscribe streams the log to an authorized subscriber: a heartbeat, the
// events after the request's cursor, then new events and a heartbeat
// every interval, until the subscriber leaves, the log cannot be read, or
// Close is called.
func (h *Handler) Subscribe(ctx context.Context, req *connect.Request[revocationv1.SubscribeRequest], stream *connect.ServerStream[revocationv1.SubscribeResponse]) error {
	select {
	case <-h.closing:
		return errShuttingDown()
	default:
	}
	subscriber, err := h.authorize(ctx, req.Header())
	if err != nil {
		return err
	}
	after, logID := req.Msg.GetAfterCursor(), req.Msg.GetLogId()
	if after < 0 {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("after_cursor must not be negative"))
	}
	if len(logID) > MaxLogIDLen {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("log_id is longer than %d bytes", MaxLogIDLen))
	}
	if h.open.Add(1) > int64(h.cfg.MaxSubscribers) {
		h.open.Add(-1)
		h.cfg.Logger.WarnContext(ctx, "revocation feed subscriber refused: too many subscriptions",
			slog.String("subscriber", subscriber), slog.Int("max_subscribers", h.cfg.MaxSubscribers))
		return connect.NewError(connect.CodeResourceExhausted, errors.New("too many revocation feed subscriptions; retry later"))
	}
	defer h.open.Add(-1)
	h.subscribers.Add(ctx, 1)
	defer h.subscribers.Add(context.WithoutCancel(ctx), -1)

	s := &subscription{h: h, stream: stream, subscriber: subscriber, cursor: after, logID: logID}
	h.cfg.Logger.InfoContext(ctx, "revocation feed subscription started",
		slog.String("subscriber", subscriber), slog.Int64("after_cursor", after))
	err = s.run(ctx)
	h.cfg.Logger.InfoContext(ctx, "revocation feed subscription ended",
		slog.String("subscriber", subscriber), slog.Int64("cursor", s.cursor),
		slog.Int("events_sent", s.events), slog.String("code", connect.CodeOf(err).String()))
	return err
}

// authorize runs the Authorizer and turns its refusal into a Connect
// error; the cause stays in the log.
func (h *Handler) authorize(ctx context.Context, header http.Header) (string, error) {
	subscriber, err := h.cfg.Authorize(ctx, header)
	switch {
	case err == nil:
		return subscriber, nil
	case errors.Is(err, ErrUnauthenticated):
		h.cfg.Logger.InfoContext(ctx, "revocation feed subscriber not authenticated", slog.Any("error", err))
		return "", connect.NewError(connect.CodeUnauthenticated,
			errors.New("authenticate as a client that may read the revocation feed"))
	case errors.Is(err, ErrForbidden):
		h.cfg.Logger.InfoContext(ctx, "revocation feed subscriber refused", slog.String("subscriber", subscriber), slog.Any("error", err))
		return "", connect.NewError(connect.CodePermissionDenied,
			errors.New("this client may not read the revocation feed"))
	default:
		h.cfg.Logger.WarnContext(ctx, "revocation feed subscriber could not be authorized", slog.Any("error", err))
		return "", connect.NewError(connect.CodeUnavailable,
			errors.New("the subscriber could not be authorized; retry later"))
	}
}

// subscription is one open stream.
type subscription struct {
	h          *Handler
	stream     *connect.ServerStream[revocationv1.SubscribeResponse]
	subscriber string
	// cursor: every event up to it has been sent (or precedes the request's
	// cursor, or was deleted).
	cursor int64
	// logID is the log's id, from the request, then from the first read.
	logID  string
	events int
}

func (s *subscription) run(ctx context.Context) error {
	cfg := s.h.cfg
	ticker := time.NewTicker(cfg.Heartbeat)
	defer ticker.Stop()
	first := true
	for {
		// Taken before the read: an append after the read closes it.
		changed := cfg.Log.Changed()
		page, err := cfg.Log.After(ctx, s.cursor, cfg.MaxBatch)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			cfg.Logger.WarnContext(ctx, "revocation feed cannot read the log",
				slog.String("subscriber", s.subscriber), slog.Any("error", err))
			return connect.NewError(connect.CodeUnavailable, errors.New("the revocation log cannot be read; retry later"))
		}
		if err := s.checkHead(page.Head, first); err != nil {
			cfg.Logger.WarnContext(ctx, "revocation feed cursor outside the log",
				slog.String("subscriber", s.subscriber), slog.Int64("cursor", s.cursor),
				slog.Int64("head", page.Head.Cursor), slog.Any("error", err))
			return connect.NewError(connect.CodeOutOfRange, err)
		}
		if first {
			first = false
			s.logID = page.Head.LogID
			if err := s.heartbeat(); err != nil {
				return err
			}
		}
		for _, ev := range page.Events {
			if err := s.stream.Send(&revocationv1.SubscribeResponse{
				Message: &revocationv1.SubscribeResponse_Event{Event: toProto(ev)},
			}); err != nil {
				return err
			}
			s.cursor = ev.Cursor
			s.events++
			s.h.sent.Add(ctx, 1)
		}
		if len(page.Events) == cfg.MaxBatch {
			// More to read: only check that nobody asked to stop.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-s.h.closing:
				return errShuttingDown()
			default:
				continue
			}
		}
		// Every event up to the head was in this page or deleted.
		s.cursor = max(s.cursor, page.Head.Cursor)
		select {
		case <-changed:
		case <-ticker.C:
			if err := s.heartbeat(); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-s.h.closing:
			return errShuttingDown()
		}
	}
}

// checkHead reports a cursor that does not belong to the log: another log
// id, or a cursor beyond the head (a store reset or restored from a
// backup). On the first read the cursor is the subscriber's.
func (s *subscription) checkHead(head revocation.Head, first bool) error {
	if s.logID != "" && s.logID != head.LogID {
		if first {
			return errors.New("log_id names another log (the issuer's revocation store was reset): subscribe again from after_cursor 0 without log_id")
		}
		return errors.New("the revocation log was replaced: subscribe again from after_cursor 0 without log_id")
	}
	if s.cursor > head.Cursor {
		return fmt.Errorf("cursor %d is beyond the newest event %d (the issuer's revocation store was reset or restored): subscribe again from after_cursor 0 without log_id", s.cursor, head.Cursor)
	}
	return nil
}

func (s *subscription) heartbeat() error {
	return s.stream.Send(&revocationv1.SubscribeResponse{
		Message: &revocationv1.SubscribeResponse_Heartbeat{Heartbeat: &revocationv1.Heartbeat{
			Cursor: s.cursor,
			LogId:  s.logID,
			Time:   timestamppb.Now(),
		}},
	})
}

func errShuttingDown() error {
	return connect.NewError(connect.CodeUnavailable, errors.New("the issuer is shutting down: subscribe again"))
}

// toProto returns the wire form of ev.
func toProto(ev revocation.Event) *revocationv1.Event {
	m := &revocationv1.Event{
		Cursor:    ev.Cursor,
		Kind:      toKind(ev.Kind),
		Id:        ev.ID,
		Jtis:      ev.JTIs,
		Subject:   ev.Subject,
		ClientId:  ev.ClientID,
		Tenant:    ev.Tenant,
		RevokedAt: timestamppb.New(ev.RevokedAt),
		ExpiresAt: timestamppb.New(ev.ExpiresAt),
		Reason:    ev.Reason,
	}
	if !ev.IssuedBefore.IsZero() {
		m.IssuedBefore = timestamppb.New(ev.IssuedBefore)
	}
	return m
}

func toKind(k revocation.Kind) revocationv1.Kind {
	switch k {
	case revocation.KindToken:
		return revocationv1.Kind_KIND_TOKEN
	case revocation.KindRefreshFamily:
		return revocationv1.Kind_KIND_REFRESH_FAMILY
	case revocation.KindSession:
		return revocationv1.Kind_KIND_SESSION
	case revocation.KindClient:
		return revocationv1.Kind_KIND_CLIENT
	case revocation.KindConsent:
		return revocationv1.Kind_KIND_CONSENT
	default:
		return revocationv1.Kind_KIND_UNSPECIFIED
	}
}
