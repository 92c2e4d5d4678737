// Package breaker puts a circuit breaker (github.com/sony/gobreaker) in
// front of the PDP. After a run of consecutive failures (no answer within
// the timeout, a transport error) the circuit opens: for a cool-down every
// decision fails at once, without a call, so a PDP outage costs each
// request nothing but a quick denial, and the PDP is not hammered while it
// recovers. Then a few probe requests go through (half-open): if they
// succeed the circuit closes, if one fails it opens again.
//
// Only failures to answer count. A DENY is an answer, and a call abandoned
// because its own client went away says nothing about the PDP.
package breaker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"

	"github.com/gatehouse/gatehouse/libs/enforce"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
)

// Decider asks the PDP (an *enforce.Client).
type Decider interface {
	Check(ctx context.Context, req *authzv1.CheckRequest) (enforce.Decision, error)
}

// Defaults of Config.
const (
	DefaultFailures = 5
	DefaultCoolDown = 5 * time.Second
	DefaultProbes   = 1
)

// Config configures a Breaker.
type Config struct {
	// PDP answers the decisions. Required.
	PDP Decider
	// Failures is how many consecutive failures open the circuit
	// (DefaultFailures when zero).
	Failures uint32
	// CoolDown is how long the circuit stays open before it lets probes
	// through (DefaultCoolDown when zero).
	CoolDown time.Duration
	// Probes is how many requests the half-open circuit lets through at a
	// time; that many successes in a row close it (DefaultProbes when zero).
	Probes uint32
	// Logger records state changes. Required.
	Logger *slog.Logger
	// Meter records state changes and refusals; nil records nothing.
	Meter metric.Meter
}

// ErrOpen is returned, wrapped together with enforce.ErrPDPUnavailable,
// for a decision refused without calling the PDP: the circuit is open, or
// half-open with its probes already in flight.
var ErrOpen = errors.New("breaker: pdp circuit open")

// errCallerGone marks a failure caused by the caller's own context: it
// neither opens nor closes the circuit.
var errCallerGone = errors.New("breaker: caller gone")

// Breaker is a Decider that guards another with a circuit breaker. Safe for
// concurrent use.
type Breaker struct {
	pdp      Decider
	cb       *gobreaker.CircuitBreaker[enforce.Decision]
	rejected metric.Int64Counter
}

// New returns a Breaker for cfg.
func New(cfg Config) (*Breaker, error) {
	if cfg.PDP == nil || cfg.Logger == nil {
		return nil, errors.New("breaker: pdp and logger are required")
	}
	if cfg.CoolDown < 0 {
		return nil, fmt.Errorf("breaker: negative cool-down %v", cfg.CoolDown)
	}
	if cfg.Failures == 0 {
		cfg.Failures = DefaultFailures
	}
	if cfg.CoolDown == 0 {
		cfg.CoolDown = DefaultCoolDown
	}
	if cfg.Probes == 0 {
		cfg.Probes = DefaultProbes
	}
	if cfg.Meter == nil {
		cfg.Meter = metricnoop.NewMeterProvider().Meter("")
	}
	transitions, err := cfg.Meter.Int64Counter("gatehouse.gateway.pdp_breaker.transitions",
		metric.WithDescription("PDP circuit breaker state changes, by new state (open, half-open, closed)."))
	if err != nil {
		return nil, fmt.Errorf("breaker: counter: %w", err)
	}
	rejected, err := cfg.Meter.Int64Counter("gatehouse.gateway.pdp_breaker.rejected",
		metric.WithDescription("Decisions refused without calling the PDP because the circuit was open."))
	if err != nil {
		return nil, fmt.Errorf("breaker: counter: %w", err)
	}
	failures := cfg.Failures
	b := &Breaker{pdp: cfg.PDP, rejected: rejected}
	b.cb = gobreaker.NewCircuitBreaker[enforce.Decision](gobreaker.Settings{
		Name:        "pdp",
		MaxRequests: cfg.Probes,
		// Interval 0: counts are cleared only by a state change or a
		// success, so "consecutive" means consecutive, however slow.
		Timeout:     cfg.CoolDown,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		IsExcluded:  func(err error) bool { return errors.Is(err, errCallerGone) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			level := slog.LevelWarn
			if to == gobreaker.StateClosed {
				level = slog.LevelInfo
			}
			cfg.Logger.Log(context.Background(), level, "pdp circuit breaker",
				slog.String("from", from.String()), slog.String("to", to.String()))
			transitions.Add(context.Background(), 1, metric.WithAttributes(attribute.String("to", to.String())))
		},
	})
	if _, err := cfg.Meter.Int64ObservableGauge("gatehouse.gateway.pdp_breaker.state",
		metric.WithDescription("PDP circuit breaker state: 0 closed, 1 half-open, 2 open."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(int64(b.cb.State()))
			return nil
		})); err != nil {
		return nil, fmt.Errorf("breaker: gauge: %w", err)
	}
	return b, nil
}

// Check asks the PDP through the circuit. An open circuit answers at once
// with an error wrapping both ErrOpen and enforce.ErrPDPUnavailable.
func (b *Breaker) Check(ctx context.Context, req *authzv1.CheckRequest) (enforce.Decision, error) {
	d, err := b.cb.Execute(func() (enforce.Decision, error) {
		d, err := b.pdp.Check(ctx, req)
		if err != nil && ctx.Err() != nil {
			return d, fmt.Errorf("%w: %w", errCallerGone, err)
		}
		return d, err
	})
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		b.rejected.Add(ctx, 1)
		return enforce.Decision{}, fmt.Errorf("%w: %w", enforce.ErrPDPUnavailable, ErrOpen)
	}
	return d, err
}

// State returns the circuit's state: "closed", "half-open" or "open".
func (b *Breaker) State() string { return b.cb.State().String() }
