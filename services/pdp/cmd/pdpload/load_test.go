package main

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func nopLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestRunLoadMeasuresOnlyTheWindow(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	var mu sync.Mutex
	var events []string
	var windowStart time.Time
	// Every fifth operation fails, every seventh answers wrongly; the rest
	// return two decisions.
	op := func(ctx context.Context, w *worker) (int, error) {
		n := calls.Add(1)
		time.Sleep(100 * time.Microsecond)
		switch {
		case n%7 == 0:
			return 2, errWrongAnswer
		case n%5 == 0:
			return 0, errors.New("connection refused")
		}
		return 2, nil
	}
	cfg := loadConfig{Workers: 3, Warmup: 50 * time.Millisecond, Duration: 150 * time.Millisecond, Timeout: time.Second}
	m, err := runLoad(t.Context(), cfg, 10, op,
		func() { mu.Lock(); events = append(events, "start"); windowStart = time.Now(); mu.Unlock() },
		func() { mu.Lock(); events = append(events, "end"); mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(events, []string{"start", "end"}) {
		t.Errorf("hooks ran %v", events)
	}
	measured := int64(len(m.Latencies)) + m.Errors
	if measured == 0 || measured >= calls.Load() {
		t.Errorf("measured %d of %d operations; warm-up ones must not count", measured, calls.Load())
	}
	if m.Wrong == 0 || m.Errors <= m.Wrong {
		t.Errorf("errors %d, wrong %d; want both kinds counted", m.Errors, m.Wrong)
	}
	if m.Decisions != 2*int64(len(m.Latencies))+2*m.Wrong {
		t.Errorf("decisions %d for %d successes and %d wrong answers", m.Decisions, len(m.Latencies), m.Wrong)
	}
	if !slices.IsSorted(m.Latencies) || m.Latencies[0] < 100*time.Microsecond {
		t.Errorf("latencies unsorted or too short: first %v", m.Latencies[0])
	}
	if m.Elapsed < cfg.Duration-time.Millisecond || m.Elapsed > cfg.Duration+100*time.Millisecond {
		t.Errorf("elapsed %v, want about %v", m.Elapsed, cfg.Duration)
	}
	if m.FirstError == nil {
		t.Error("no first error kept")
	}
	if windowStart.IsZero() {
		t.Error("the window never opened")
	}
}

func TestRunLoadWorkersStartApart(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	starts := map[int]int{}
	op := func(ctx context.Context, w *worker) (int, error) {
		mu.Lock()
		if _, ok := starts[w.id]; !ok {
			starts[w.id] = w.next
		}
		mu.Unlock()
		w.take(1000, 1)
		return 1, nil
	}
	if _, err := runLoad(t.Context(), loadConfig{Workers: 4, Duration: 200 * time.Millisecond, Timeout: time.Second}, 1000, op, nil, nil); err != nil {
		t.Fatal(err)
	}
	want := map[int]int{0: 0, 1: 250, 2: 500, 3: 750}
	for id, at := range want {
		if got, ok := starts[id]; !ok || got != at {
			t.Errorf("worker %d started at item %d (ran: %v), want %d", id, got, ok, at)
		}
	}
}

func TestRunLoadStopsWithContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	op := func(ctx context.Context, w *worker) (int, error) { return 1, nil }
	_, err := runLoad(ctx, loadConfig{Workers: 2, Duration: time.Hour, Timeout: time.Second}, 1, op, nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the context's", err)
	}
}

func TestLoadConfigValidate(t *testing.T) {
	t.Parallel()
	ok := loadConfig{Workers: 1, Warmup: 0, Duration: time.Second, Timeout: time.Second}
	tests := []struct {
		name   string
		mutate func(*loadConfig)
	}{
		{"no workers", func(c *loadConfig) { c.Workers = 0 }},
		{"negative warm-up", func(c *loadConfig) { c.Warmup = -time.Second }},
		{"no duration", func(c *loadConfig) { c.Duration = 0 }},
		{"no timeout", func(c *loadConfig) { c.Timeout = 0 }},
	}
	if err := ok.validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	for _, tc := range tests {
		c := ok
		tc.mutate(&c)
		if err := c.validate(); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
		if _, err := runLoad(t.Context(), c, 1, nil, nil, nil); err == nil {
			t.Errorf("%s: runLoad accepted", tc.name)
		}
	}
	if _, err := runLoad(t.Context(), ok, 0, nil, nil, nil); err == nil {
		t.Error("runLoad accepted an empty workload")
	}
}

func TestWorkerTakeWraps(t *testing.T) {
	t.Parallel()
	w := &worker{next: 8}
	if got := w.take(10, 5); got != 8 || w.next != 3 {
		t.Errorf("take = %d, next %d; want 8, 3", got, w.next)
	}
	a, b := w.requestID(), w.requestID()
	if a == b || a != "load-0-1" {
		t.Errorf("request ids %q, %q", a, b)
	}
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	sorted := make([]time.Duration, 100)
	for i := range sorted {
		sorted[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		q    float64
		want time.Duration
	}{
		{0.5, 50 * time.Millisecond},
		{0.95, 95 * time.Millisecond},
		{0.99, 99 * time.Millisecond},
		{0.999, 100 * time.Millisecond},
		{1, 100 * time.Millisecond},
		{0.001, time.Millisecond},
	}
	for _, tc := range tests {
		if got := percentile(sorted, tc.q); got != tc.want {
			t.Errorf("percentile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile of nothing = %v", got)
	}
}
