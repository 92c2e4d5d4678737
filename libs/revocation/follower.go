package revocation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"

	"github.com/gatehouse/gatehouse/libs/revocation/feedclient"
	revocationv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1/revocationv1connect"
)

// FollowerConfig configures a Follower. Client, Set and Logger are
// required; so are ClientID and ClientSecret unless Client adds
// credentials itself.
type FollowerConfig struct {
	// Client is the issuer's feed (for the gateway: the issuer's internal
	// URL).
	Client revocationv1connect.RevocationFeedServiceClient
	// ClientID and ClientSecret authenticate the subscriber: a
	// confidential client with the revocations:read scope.
	ClientID, ClientSecret string
	// Set receives the events.
	Set    *Set
	Logger *slog.Logger
	// Meter records the metrics named in docs/revocation-feed.md; nil
	// records nothing.
	Meter metric.Meter
	// IdleTimeout, MinBackoff and MaxBackoff tune the subscriber (see
	// feedclient.Config; its defaults when zero).
	IdleTimeout, MinBackoff, MaxBackoff time.Duration
}

// Follower keeps a Set current with the issuer's revocation feed: it
// applies every event, marks the Set heard on every message, forgets
// expired events, and after a disconnect resumes from its cursor. When the
// issuer's log is replaced it follows the new log from its start and keeps
// the Set as it is: what the Set holds was revoked for real, and the new
// log (a restored backup, a restarted in-memory demo issuer) may not hold
// it any more; the Set only ever revokes more, and forgets each event when
// its tokens have expired anyway.
type Follower struct {
	set   *Set
	sub   *feedclient.Subscriber
	ready chan struct{}
	once  sync.Once

	applied    metric.Int64Counter
	reconnects metric.Int64Counter
	gauges     metric.Registration
}

// NewFollower returns a Follower for cfg; call Run to start it.
func NewFollower(cfg FollowerConfig) (*Follower, error) {
	if cfg.Set == nil {
		return nil, errors.New("revocation: follower: no set")
	}
	f := &Follower{set: cfg.Set, ready: make(chan struct{})}
	sub, err := feedclient.New(feedclient.Config{
		Client:       cfg.Client,
		ClientID:     cfg.ClientID,
		ClientSecret: cfg.ClientSecret,
		Handle:       f.apply,
		Logger:       cfg.Logger,
		Heard:        f.heard,
		Disconnected: f.disconnected,
		IdleTimeout:  cfg.IdleTimeout,
		MinBackoff:   cfg.MinBackoff,
		MaxBackoff:   cfg.MaxBackoff,
	})
	if err != nil {
		return nil, fmt.Errorf("revocation: follower: %w", err)
	}
	f.sub = sub
	if err := f.instrument(cfg.Meter); err != nil {
		return nil, err
	}
	return f, nil
}

// instrument creates the Follower's metrics.
func (f *Follower) instrument(m metric.Meter) error {
	if m == nil {
		m = metricnoop.NewMeterProvider().Meter("")
	}
	var errs []error
	counter := func(name, desc, unit string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithDescription(desc), metric.WithUnit(unit))
		errs = append(errs, err)
		return c
	}
	f.applied = counter("gatehouse.revocation.events_applied",
		"Revocation feed events applied to the revocation set.", "{event}")
	f.reconnects = counter("gatehouse.revocation.reconnects",
		"Revocation feed subscriptions that ended and were started again.", "{reconnect}")
	entries, err := m.Int64ObservableGauge("gatehouse.revocation.entries",
		metric.WithDescription("Revoked jtis and issued-before rules the revocation set holds."),
		metric.WithUnit("{entry}"))
	errs = append(errs, err)
	staleness, err := m.Float64ObservableGauge("gatehouse.revocation.staleness",
		metric.WithDescription("Time since the revocation feed was last heard from (very large before the first message)."),
		metric.WithUnit("s"))
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("revocation: follower metrics: %w", err)
	}
	f.gauges, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(entries, int64(f.set.Len()))
		o.ObserveFloat64(staleness, f.set.Staleness(time.Now()).Seconds())
		return nil
	}, entries, staleness)
	if err != nil {
		return fmt.Errorf("revocation: follower metrics: %w", err)
	}
	return nil
}

// Run follows the feed until ctx is done; call it once.
func (f *Follower) Run(ctx context.Context) {
	defer func() { _ = f.gauges.Unregister() }()
	f.sub.Run(ctx)
}

// Ready reports whether the issuer has been heard from at least once, so
// that the Set holds the revocations the issuer kept then. A resource
// server is not ready before that.
func (f *Follower) Ready() bool {
	select {
	case <-f.ready:
		return true
	default:
		return false
	}
}

// WaitReady waits until Ready or ctx is done, and returns ctx's error in
// the latter case.
func (f *Follower) WaitReady(ctx context.Context) error {
	select {
	case <-f.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("revocation: feed not heard from: %w", ctx.Err())
	}
}

// Staleness returns the Set's staleness at now (see Set.Staleness).
func (f *Follower) Staleness(now time.Time) time.Duration { return f.set.Staleness(now) }

// Position returns how far the Follower has got in the issuer's log.
func (f *Follower) Position() feedclient.Position { return f.sub.Position() }

func (f *Follower) apply(ctx context.Context, ev *revocationv1.Event) error {
	f.set.Apply(ev)
	f.applied.Add(ctx, 1)
	return nil
}

func (f *Follower) heard(at time.Time) {
	f.set.Heard(at)
	f.set.Sweep(at)
	f.once.Do(func() { close(f.ready) })
}

func (f *Follower) disconnected(ctx context.Context, _ error) {
	f.reconnects.Add(ctx, 1)
}
