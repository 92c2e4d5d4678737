package breaker_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/libs/enforce"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/services/gateway/internal/breaker"
)

// pdp answers with the outcome at the head of its script (the last one
// repeats) and counts calls. A nil outcome blocks until release is closed.
type pdp struct {
	mu      sync.Mutex
	calls   int
	script  []outcome
	entered chan struct{}
	release chan struct{}
}

type outcome int

const (
	ok outcome = iota
	fail
	denied
	block
)

func (p *pdp) Check(ctx context.Context, _ *authzv1.CheckRequest) (enforce.Decision, error) {
	p.mu.Lock()
	p.calls++
	o := p.script[0]
	if len(p.script) > 1 {
		p.script = p.script[1:]
	}
	p.mu.Unlock()
	switch o {
	case fail:
		return enforce.Decision{}, enforce.ErrPDPUnavailable
	case denied:
		return enforce.Decision{State: authzv1.Decision_DECISION_DENY, ReasonCode: "role_not_permitted"}, nil
	case block:
		p.entered <- struct{}{}
		<-p.release
	}
	if ctx.Err() != nil {
		return enforce.Decision{}, enforce.ErrPDPUnavailable
	}
	return enforce.Decision{State: authzv1.Decision_DECISION_ALLOW}, nil
}

func (p *pdp) count() int { p.mu.Lock(); defer p.mu.Unlock(); return p.calls }

func (p *pdp) then(o ...outcome) { p.mu.Lock(); defer p.mu.Unlock(); p.script = o }

// coolDown is short enough to wait out, and long enough that a state
// asserted right after a transition is still the state.
const coolDown = 250 * time.Millisecond

func newBreaker(t *testing.T, p *pdp) *breaker.Breaker {
	t.Helper()
	return newBreakerWith(t, p, coolDown)
}

func newBreakerWith(t *testing.T, p *pdp, coolDown time.Duration) *breaker.Breaker {
	t.Helper()
	b, err := breaker.New(breaker.Config{PDP: p, Failures: 3, CoolDown: coolDown, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func check(t *testing.T, b *breaker.Breaker) error {
	t.Helper()
	_, err := b.Check(t.Context(), &authzv1.CheckRequest{})
	return err
}

// open drives b open with three failures.
func open(t *testing.T, b *breaker.Breaker, p *pdp) {
	t.Helper()
	p.then(fail)
	for range 3 {
		if err := check(t, b); !errors.Is(err, enforce.ErrPDPUnavailable) || errors.Is(err, breaker.ErrOpen) {
			t.Fatalf("failure passed through as %v", err)
		}
	}
	if b.State() != "open" {
		t.Fatalf("state %s after 3 consecutive failures, want open", b.State())
	}
}

// coolDownPassed waits out the cool-down: the breaker's own clock.
func coolDownPassed(t *testing.T, b *breaker.Breaker) {
	t.Helper()
	time.Sleep(2 * coolDown)
	if b.State() != "half-open" {
		t.Fatalf("state %s after the cool-down, want half-open", b.State())
	}
}

func TestConsecutiveFailuresOpen(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		script   []outcome
		wantOpen bool
	}{
		{"three failures", []outcome{fail, fail, fail}, true},
		{"a success in between resets the run", []outcome{fail, fail, ok, fail, fail}, false},
		{"a deny is an answer, not a failure", []outcome{fail, fail, denied, fail, fail}, false},
		{"answers only", []outcome{ok, denied, ok, ok}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := &pdp{script: tc.script}
			b := newBreakerWith(t, p, time.Hour)
			for range tc.script {
				_ = check(t, b)
			}
			if got := b.State() == "open"; got != tc.wantOpen {
				t.Fatalf("state %s, want open=%v", b.State(), tc.wantOpen)
			}
		})
	}
}

func TestOpenFailsFastWithoutCalling(t *testing.T) {
	t.Parallel()
	p := &pdp{}
	b := newBreakerWith(t, p, time.Hour)
	open(t, b, p)
	p.then(ok)
	before := p.count()
	for range 10 {
		err := check(t, b)
		if !errors.Is(err, breaker.ErrOpen) || !errors.Is(err, enforce.ErrPDPUnavailable) {
			t.Fatalf("open circuit: got %v, want ErrOpen and ErrPDPUnavailable", err)
		}
	}
	if n := p.count() - before; n != 0 {
		t.Fatalf("the open circuit called the PDP %d times", n)
	}
}

func TestHalfOpen(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		probe     outcome
		wantState string
	}{
		{"a successful probe closes", ok, "closed"},
		{"a deny is a successful probe", denied, "closed"},
		{"a failed probe opens again", fail, "open"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := &pdp{}
			b := newBreaker(t, p)
			open(t, b, p)
			coolDownPassed(t, b)
			p.then(tc.probe)
			before := p.count()
			_ = check(t, b)
			if p.count() != before+1 {
				t.Fatal("the half-open circuit did not let the probe through")
			}
			if b.State() != tc.wantState {
				t.Fatalf("state %s after the probe, want %s", b.State(), tc.wantState)
			}
		})
	}
}

// TestHalfOpenLetsOneProbeAtATime: while the probe is in flight, other
// requests are refused at once rather than piling onto a recovering PDP.
func TestHalfOpenLetsOneProbeAtATime(t *testing.T) {
	t.Parallel()
	p := &pdp{entered: make(chan struct{}), release: make(chan struct{})}
	b := newBreaker(t, p)
	open(t, b, p)
	coolDownPassed(t, b)
	p.then(block, ok)
	done := make(chan error)
	go func() { done <- check(t, b) }()
	<-p.entered
	if err := check(t, b); !errors.Is(err, breaker.ErrOpen) {
		t.Fatalf("second request while the probe is in flight: %v, want ErrOpen", err)
	}
	close(p.release)
	if err := <-done; err != nil {
		t.Fatalf("probe: %v", err)
	}
	if b.State() != "closed" {
		t.Fatalf("state %s, want closed", b.State())
	}
}

// TestCallerGoneDoesNotOpen: clients hanging up must not open the circuit
// for everyone.
func TestCallerGoneDoesNotOpen(t *testing.T) {
	t.Parallel()
	p := &pdp{script: []outcome{fail}}
	b := newBreakerWith(t, p, time.Hour)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for range 10 {
		if _, err := b.Check(ctx, &authzv1.CheckRequest{}); err == nil {
			t.Fatal("a failure was reported as success")
		}
	}
	if b.State() != "closed" {
		t.Fatalf("state %s after cancelled calls, want closed", b.State())
	}
}

func TestNewRejects(t *testing.T) {
	t.Parallel()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	for name, cfg := range map[string]breaker.Config{
		"no pdp":            {Logger: logger},
		"no logger":         {PDP: &pdp{}},
		"negative cooldown": {PDP: &pdp{}, Logger: logger, CoolDown: -time.Second},
	} {
		if _, err := breaker.New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
