package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// loadConfig shapes a closed-loop run.
type loadConfig struct {
	// Workers is the number of concurrent closed-loop clients: each sends
	// its next operation as soon as the previous one is answered.
	Workers int
	// Warmup runs before measuring (connections, caches, GC settle).
	Warmup time.Duration
	// Duration is the measured window.
	Duration time.Duration
	// Timeout bounds one operation.
	Timeout time.Duration
}

func (c loadConfig) validate() error {
	switch {
	case c.Workers <= 0:
		return fmt.Errorf("workers must be positive, got %d", c.Workers)
	case c.Warmup < 0:
		return fmt.Errorf("warmup must not be negative, got %s", c.Warmup)
	case c.Duration <= 0:
		return fmt.Errorf("duration must be positive, got %s", c.Duration)
	case c.Timeout <= 0:
		return fmt.Errorf("timeout must be positive, got %s", c.Timeout)
	}
	return nil
}

// measurement is what the workers saw in the measured window.
type measurement struct {
	// Elapsed is from the window's start to the last measured operation's
	// end.
	Elapsed time.Duration
	// Latencies holds every measured successful operation's latency,
	// sorted.
	Latencies []time.Duration
	// Decisions counts decisions received in measured operations.
	Decisions int64
	// Errors counts failed measured operations (transport errors and
	// unexpected answers); Wrong counts the wrong answers among them and
	// Indeterminate the INDETERMINATE ones.
	Errors, Wrong, Indeterminate int64
	// FirstError is the first error seen, warm-up included.
	FirstError error
}

// runLoad drives op with cfg.Workers closed-loop workers over a workload
// of size items: warm-up, then the measured window. Operations that start
// in the window are measured; the window's end stops new operations.
// onStart and onEnd (may be nil) run when the window opens and closes.
func runLoad(ctx context.Context, cfg loadConfig, size int, op operation, onStart, onEnd func()) (measurement, error) {
	if err := cfg.validate(); err != nil {
		return measurement{}, err
	}
	if size <= 0 {
		return measurement{}, errors.New("empty workload")
	}
	var win struct{ start, end time.Time }
	win.start = time.Now().Add(cfg.Warmup)
	win.end = win.start.Add(cfg.Duration)

	hooks := make(chan struct{})
	go func() {
		defer close(hooks)
		if !sleepUntil(ctx, win.start) {
			return
		}
		if onStart != nil {
			onStart()
		}
		if !sleepUntil(ctx, win.end) {
			return
		}
		if onEnd != nil {
			onEnd()
		}
	}()

	type result struct {
		lat                   []time.Duration
		decisions             int64
		errs, wrong, indeterm int64
		firstErr              error
		firstErrAt, end       time.Time
	}
	results := make([]result, cfg.Workers)
	var wg sync.WaitGroup
	for i := range cfg.Workers {
		wg.Go(func() {
			w := &worker{id: i, next: i * size / cfg.Workers}
			r := &results[i]
			// Preallocate for a plausible rate so appends rarely copy.
			r.lat = make([]time.Duration, 0, 1<<14)
			for ctx.Err() == nil {
				start := time.Now()
				if !start.Before(win.end) {
					break
				}
				opCtx, cancel := context.WithTimeout(ctx, cfg.Timeout)
				n, err := op(opCtx, w)
				cancel()
				end := time.Now()
				if err != nil && r.firstErr == nil {
					r.firstErr, r.firstErrAt = err, end
				}
				if start.Before(win.start) {
					continue
				}
				r.end = end
				r.decisions += int64(n)
				if err != nil {
					r.errs++
					switch {
					case errors.Is(err, errWrongAnswer):
						r.wrong++
					case errors.Is(err, errIndeterminate):
						r.indeterm++
					}
					continue
				}
				r.lat = append(r.lat, end.Sub(start))
			}
		})
	}
	wg.Wait()
	<-hooks
	if err := ctx.Err(); err != nil {
		return measurement{}, err
	}

	var m measurement
	var last time.Time
	var firstErrAt time.Time
	for _, r := range results {
		m.Latencies = append(m.Latencies, r.lat...)
		m.Decisions += r.decisions
		m.Errors += r.errs
		m.Wrong += r.wrong
		m.Indeterminate += r.indeterm
		if r.end.After(last) {
			last = r.end
		}
		if r.firstErr != nil && (m.FirstError == nil || r.firstErrAt.Before(firstErrAt)) {
			m.FirstError, firstErrAt = r.firstErr, r.firstErrAt
		}
	}
	slices.Sort(m.Latencies)
	if last.After(win.start) {
		m.Elapsed = last.Sub(win.start)
	}
	return m, nil
}

// sleepUntil waits for t or ctx; it reports whether t came.
func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// percentile returns the nearest-rank q-quantile (0 < q <= 1) of sorted,
// or 0 when it is empty.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}
