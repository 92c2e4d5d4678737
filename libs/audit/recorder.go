package audit

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// Emitter is what services depend on to record audit events: a Recorder in
// production; in tests, a Recorder or SyncEmitter on a memory store.
type Emitter interface {
	// Record records e, filling an empty EventID and a zero Time. It
	// returns an error wrapping ErrInvalidEvent for an invalid event.
	Record(ctx context.Context, e Event) error
}

// SyncEmitter is an Emitter that appends each event to its Store before
// Record returns: for tests and tools that want no queue.
type SyncEmitter struct {
	store Store
}

// NewSyncEmitter returns a SyncEmitter writing to store.
func NewSyncEmitter(store Store) *SyncEmitter { return &SyncEmitter{store: store} }

// Record implements Emitter.
func (s *SyncEmitter) Record(ctx context.Context, e Event) error {
	_, err := s.store.Append(ctx, e)
	return err
}

// Errors of a Recorder.
var (
	// ErrClosed is returned by Record and Flush once Close has been called.
	ErrClosed = errors.New("audit recorder closed")
	// ErrEventsLost is wrapped by Close's error when its context ended
	// before every queued event was written.
	ErrEventsLost = errors.New("audit events not written")
)

// Defaults of RecorderOptions.
const (
	DefaultQueueSize     = 1024
	DefaultBatchSize     = 100
	DefaultAppendTimeout = 10 * time.Second
	DefaultMinRetryDelay = 100 * time.Millisecond
	DefaultMaxRetryDelay = 5 * time.Second
)

// RecorderOptions configures a Recorder. Zero fields take their defaults.
type RecorderOptions struct {
	// QueueSize is how many events (and pending Flush calls) wait for the
	// store before Record blocks.
	QueueSize int
	// BatchSize is the most events written in one Append, at most
	// MaxAppendBatch.
	BatchSize int
	// Meter records the metrics listed in docs/audit.md; nil records none.
	Meter metric.Meter
	// Logger receives append failures and rejected events; nil discards.
	Logger *slog.Logger
	// AppendTimeout bounds one Append attempt.
	AppendTimeout time.Duration
	// MinRetryDelay and MaxRetryDelay bound the wait between attempts to
	// append a batch after a transient error; it doubles each time.
	MinRetryDelay, MaxRetryDelay time.Duration
}

// Recorder is an Emitter that writes events to a Store in the background:
// Record validates an event and puts it on a bounded queue; one goroutine
// takes events off in batches and appends them, retrying transient errors
// with backoff for as long as it takes. When the queue is full, Record waits
// for space (back-pressure) rather than drop the event. Close drains the
// queue. Its methods are safe for concurrent use.
type Recorder struct {
	store Store
	opts  RecorderOptions
	log   *slog.Logger

	// mu is held for reading while an item is put on queue, and for writing
	// by Close to stop that for good before closing queue.
	mu      sync.RWMutex
	closed  bool
	queue   chan item
	closing chan struct{} // closed when Close starts: wakes blocked Records

	// stop is the worker's lifetime: cancelled (abort) when Close's context
	// ends, it cancels the append in flight and every retry.
	stop           context.Context
	abort          context.CancelFunc
	done           chan struct{} // closed when the worker has returned
	closeOnce      sync.Once
	unregisterOnce sync.Once
	lost           atomic.Int64
	lastErr        atomic.Pointer[error]

	written, rejected, lostCount, appendErrors metric.Int64Counter
	blocked                                    metric.Float64Histogram
	depth                                      metric.Registration
}

// item is an event to write, or (flushed != nil) a Flush waiting for every
// item before it.
type item struct {
	event   Event
	flushed chan struct{}
}

// NewRecorder starts a Recorder writing to store. Call Close when done.
func NewRecorder(store Store, opts RecorderOptions) (*Recorder, error) {
	switch {
	case store == nil:
		return nil, errors.New("audit: recorder: nil store")
	case opts.QueueSize < 0:
		return nil, fmt.Errorf("audit: recorder: negative queue size %d", opts.QueueSize)
	case opts.BatchSize < 0 || opts.BatchSize > MaxAppendBatch:
		return nil, fmt.Errorf("audit: recorder: batch size %d outside 0..%d", opts.BatchSize, MaxAppendBatch)
	case opts.AppendTimeout < 0 || opts.MinRetryDelay < 0 || opts.MaxRetryDelay < 0:
		return nil, errors.New("audit: recorder: negative append timeout or retry delay")
	}
	opts.QueueSize = cmp.Or(opts.QueueSize, DefaultQueueSize)
	opts.BatchSize = cmp.Or(opts.BatchSize, DefaultBatchSize)
	opts.AppendTimeout = cmp.Or(opts.AppendTimeout, DefaultAppendTimeout)
	opts.MinRetryDelay = cmp.Or(opts.MinRetryDelay, DefaultMinRetryDelay)
	opts.MaxRetryDelay = max(cmp.Or(opts.MaxRetryDelay, DefaultMaxRetryDelay), opts.MinRetryDelay)
	if opts.Meter == nil {
		opts.Meter = noop.NewMeterProvider().Meter("")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Recorder{
		store:   store,
		opts:    opts,
		log:     log,
		queue:   make(chan item, opts.QueueSize),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	if err := r.instrument(opts.Meter); err != nil {
		return nil, err
	}
	r.stop, r.abort = context.WithCancel(context.Background())
	go r.run()
	return r, nil
}

// instrument creates the Recorder's metrics (named in docs/audit.md).
func (r *Recorder) instrument(m metric.Meter) error {
	var errs []error
	counter := func(name, desc, unit string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithDescription(desc), metric.WithUnit(unit))
		errs = append(errs, err)
		return c
	}
	r.written = counter("gatehouse.audit.events.written",
		"Audit events appended to the store.", "{event}")
	r.rejected = counter("gatehouse.audit.events.rejected",
		"Audit events the store refused for good (such as a duplicate event id); each is logged.", "{event}")
	r.lostCount = counter("gatehouse.audit.events.lost",
		"Audit events still queued when Close gave up waiting for the store; each is logged.", "{event}")
	r.appendErrors = counter("gatehouse.audit.append.errors",
		"Failed attempts to append a batch of audit events.", "{error}")
	blocked, err := m.Float64Histogram("gatehouse.audit.record.blocked.duration",
		metric.WithDescription("Time Record waited for space on a full queue (back-pressure); calls that did not wait are not counted."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.0001, 0.001, 0.01, 0.1, 0.5, 1, 5, 10, 30))
	r.blocked = blocked
	errs = append(errs, err)
	depth, err := m.Int64ObservableGauge("gatehouse.audit.queue.depth",
		metric.WithDescription("Audit events waiting for the store."), metric.WithUnit("{event}"))
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("audit: recorder metrics: %w", err)
	}
	r.depth, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(depth, int64(len(r.queue)))
		return nil
	}, depth)
	if err != nil {
		return fmt.Errorf("audit: recorder metrics: %w", err)
	}
	return nil
}

// Record validates e, fills an empty EventID and a zero Time, and queues a
// copy for the store; the store writes it later (see Flush). When the queue
// is full, Record waits for space until ctx is done and then returns an
// error: an event is never dropped without its caller learning of it. ctx
// only bounds that wait, not the write.
func (r *Recorder) Record(ctx context.Context, e Event) error {
	e = e.Clone()
	e.fill(time.Now())
	if err := e.Validate(); err != nil {
		return err
	}
	return r.enqueue(ctx, item{event: e})
}

// Flush waits until every event recorded before it has been written (or
// rejected by the store, which is logged), or ctx is done.
func (r *Recorder) Flush(ctx context.Context) error {
	it := item{flushed: make(chan struct{})}
	if err := r.enqueue(ctx, it); err != nil {
		return err
	}
	select {
	case <-it.flushed:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("audit: flush: %w", context.Cause(ctx))
	case <-r.done:
		select {
		case <-it.flushed:
			return nil
		default:
			return fmt.Errorf("audit: flush: recorder stopped before writing everything: %w", ErrClosed)
		}
	}
}

func (r *Recorder) enqueue(ctx context.Context, it item) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return ErrClosed
	}
	select {
	case r.queue <- it:
		return nil
	default:
	}
	start := time.Now()
	defer func() { r.blocked.Record(ctx, time.Since(start).Seconds()) }()
	select {
	case r.queue <- it:
		return nil
	case <-r.closing:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("audit: record: queue full: %w", context.Cause(ctx))
	}
}

// Close stops accepting events and waits until everything queued is in the
// store. When ctx ends first, Close cancels the append in flight, gives up
// on what is left and returns an error that counts the events not written
// (each also counted by gatehouse.audit.events.lost and logged). Later calls
// wait for the same end and return the same kind of answer.
func (r *Recorder) Close(ctx context.Context) error {
	r.closeOnce.Do(func() {
		close(r.closing)
		r.mu.Lock() // waits out every enqueue in progress
		r.closed = true
		close(r.queue)
		r.mu.Unlock()
	})
	select {
	case <-r.done:
	case <-ctx.Done():
		r.abort()
		<-r.done
	}
	r.abort()
	var errs []error
	r.unregisterOnce.Do(func() {
		if err := r.depth.Unregister(); err != nil {
			errs = append(errs, fmt.Errorf("audit: close: unregister metrics: %w", err))
		}
	})
	if n := r.lost.Load(); n > 0 {
		errs = append(errs, fmt.Errorf("audit: close: %d %w", n, ErrEventsLost), context.Cause(ctx))
		if last := r.lastErr.Load(); last != nil {
			errs = append(errs, fmt.Errorf("last store error: %w", *last))
		}
	}
	return errors.Join(errs...)
}

// run is the worker: it writes batches until Close closes the queue.
func (r *Recorder) run() {
	defer close(r.done)
	batch := make([]Event, 0, r.opts.BatchSize)
	var flushes []chan struct{}
	for it := range r.queue {
		batch, flushes = r.collect(it, batch[:0], flushes[:0])
		r.write(batch, false)
		for _, f := range flushes {
			close(f)
		}
		clear(batch) // drop references to written events
	}
}

// collect adds first and whatever else is queued to batch, up to BatchSize
// events, stopping after a Flush marker so that the Flush returns promptly.
func (r *Recorder) collect(first item, batch []Event, flushes []chan struct{}) ([]Event, []chan struct{}) {
	it := first
	for {
		if it.flushed != nil {
			return batch, append(flushes, it.flushed)
		}
		batch = append(batch, it.event)
		if len(batch) == r.opts.BatchSize {
			return batch, flushes
		}
		var ok bool
		select {
		case it, ok = <-r.queue:
			if !ok {
				return batch, flushes
			}
		default:
			return batch, flushes
		}
	}
}

// write appends batch, retrying transient errors with backoff until it
// succeeds or Close gives up. A permanent error (an invalid or duplicate
// event) sends the events one by one, so that one bad event does not hold
// back the others. retried says whether an earlier attempt at these events
// failed with an unknown outcome.
func (r *Recorder) write(batch []Event, retried bool) {
	if len(batch) == 0 {
		return
	}
	delay := r.opts.MinRetryDelay
	for attempt := 1; ; attempt++ {
		if r.stop.Err() != nil {
			r.lose(batch)
			return
		}
		ctx, cancel := context.WithTimeout(r.stop, r.opts.AppendTimeout)
		_, err := r.store.Append(ctx, batch...)
		cancel()
		if err == nil {
			r.written.Add(context.Background(), int64(len(batch)))
			return
		}
		r.appendErrors.Add(context.Background(), 1)
		r.lastErr.Store(&err)
		if errors.Is(err, ErrInvalidEvent) || errors.Is(err, ErrDuplicateEvent) {
			if len(batch) > 1 {
				for i := range batch {
					r.write(batch[i:i+1], retried)
				}
				return
			}
			r.reject(batch[0], err, retried)
			return
		}
		retried = true
		r.log.LogAttrs(context.Background(), slog.LevelWarn, "audit append failed, retrying",
			slog.Int("events", len(batch)), slog.Int("attempt", attempt),
			slog.Duration("retry_in", delay), slog.String("error", err.Error()))
		select {
		case <-r.stop.Done():
		case <-time.After(delay):
		}
		delay = min(2*delay, r.opts.MaxRetryDelay)
	}
}

// reject reports an event the store refused for good. A duplicate id after
// an attempt with an unknown outcome (a commit whose answer was lost) means
// that attempt did write it.
func (r *Recorder) reject(e Event, err error, retried bool) {
	if retried && errors.Is(err, ErrDuplicateEvent) {
		r.written.Add(context.Background(), 1)
		r.log.LogAttrs(context.Background(), slog.LevelInfo, "audit event was written by an earlier attempt",
			slog.String("event_id", e.EventID), slog.String("type", string(e.Type)))
		return
	}
	r.rejected.Add(context.Background(), 1)
	r.log.LogAttrs(context.Background(), slog.LevelError, "audit event rejected by the store",
		slog.String("event_id", e.EventID), slog.String("type", string(e.Type)), slog.String("error", err.Error()))
}

// lose reports events given up on because Close's context ended.
func (r *Recorder) lose(batch []Event) {
	r.lost.Add(int64(len(batch)))
	r.lostCount.Add(context.Background(), int64(len(batch)))
	for _, e := range batch {
		r.log.LogAttrs(context.Background(), slog.LevelError, "audit event not written: recorder closed before the store accepted it",
			slog.String("event_id", e.EventID), slog.String("type", string(e.Type)))
	}
}
