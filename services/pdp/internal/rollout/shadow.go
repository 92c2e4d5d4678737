package rollout

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"

	"github.com/gatehouse/gatehouse/libs/audit"
	"github.com/gatehouse/gatehouse/services/pdp/internal/decision"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policystore"
)

// Defaults of ShadowOptions.
const (
	DefaultShadowQueueSize     = 4096
	DefaultShadowWorkers       = 2
	DefaultShadowBatchSize     = 256
	DefaultShadowFlushInterval = 200 * time.Millisecond
	DefaultShadowEvalTimeout   = 100 * time.Millisecond
	// flushTimeout bounds one RecordComparisons call of the background
	// flushes.
	flushTimeout = 10 * time.Second
)

// ShadowOptions configures a Shadower. Zero fields take their defaults.
type ShadowOptions struct {
	// QueueSize is how many jobs wait for a worker; Submit refuses a job
	// when the queue is full. It also bounds the comparisons kept per
	// bundle pair while the store cannot be written.
	QueueSize int
	// Workers is how many jobs are evaluated at once.
	Workers int
	// BatchSize is the most comparisons written in one RecordComparisons.
	BatchSize int
	// FlushInterval is how often comparisons are written when no batch
	// filled up.
	FlushInterval time.Duration
	// EvalTimeout bounds one evaluation; a slower one is Indeterminate with
	// evaluation_error, as in the Service.
	EvalTimeout time.Duration
	// Logger receives evaluation, audit and store failures; nil discards.
	Logger *slog.Logger
	// Meter records the Shadower's metrics; nil records none.
	Meter metric.Meter
}

// Shadower implements decision.Shadower: a bounded queue of jobs and a few
// workers that evaluate each job's other bundle, record the decision's
// audit event with the shadow result, and batch the comparisons into the
// policystore. It is safe for concurrent use.
type Shadower struct {
	store   policystore.Store
	emitter audit.Emitter
	opts    ShadowOptions
	log     *slog.Logger

	// mu is held for reading while a job is put on queue, and for writing
	// by Close to stop that for good before closing queue.
	mu     sync.RWMutex
	closed bool
	queue  chan decision.ShadowJob

	// stop is the workers' lifetime: cancelled when Close's context ends
	// (or Close returns), it cancels evaluations and waits for the audit
	// emitter.
	stop        context.Context
	abort       context.CancelFunc
	workersDone chan struct{}
	flushStop   chan struct{}
	flushDone   chan struct{}
	closeOnce   sync.Once
	unregister  sync.Once

	// pendingMu guards pending: the comparisons and drops not yet written,
	// by bundle pair.
	pendingMu sync.Mutex
	pending   map[pair]*pairBuf

	evaluations, dropped, flushErrors, auditErrors metric.Int64Counter
	agreed, diverged                               metric.AddOption
	depth                                          metric.Registration
}

// pair is a rollout's (active, candidate) revisions.
type pair struct{ active, candidate string }

// pairBuf is what waits to be written for one pair.
type pairBuf struct {
	comps   []policystore.Comparison
	dropped int64
}

// NewShadower starts a Shadower writing comparisons to store and audit
// events to emitter. Call Close when done.
func NewShadower(store policystore.Store, emitter audit.Emitter, opts ShadowOptions) (*Shadower, error) {
	switch {
	case store == nil:
		return nil, errors.New("rollout: shadower: nil store")
	case emitter == nil:
		return nil, errors.New("rollout: shadower: nil audit emitter")
	case opts.QueueSize < 0 || opts.Workers < 0 || opts.BatchSize < 0:
		return nil, errors.New("rollout: shadower: negative queue size, workers or batch size")
	case opts.FlushInterval < 0 || opts.EvalTimeout < 0:
		return nil, errors.New("rollout: shadower: negative flush interval or evaluation timeout")
	}
	opts.QueueSize = cmp.Or(opts.QueueSize, DefaultShadowQueueSize)
	opts.Workers = cmp.Or(opts.Workers, DefaultShadowWorkers)
	opts.BatchSize = cmp.Or(opts.BatchSize, DefaultShadowBatchSize)
	opts.FlushInterval = cmp.Or(opts.FlushInterval, DefaultShadowFlushInterval)
	opts.EvalTimeout = cmp.Or(opts.EvalTimeout, DefaultShadowEvalTimeout)
	s := &Shadower{
		store:       store,
		emitter:     emitter,
		opts:        opts,
		log:         opts.Logger,
		queue:       make(chan decision.ShadowJob, opts.QueueSize),
		workersDone: make(chan struct{}),
		flushStop:   make(chan struct{}),
		flushDone:   make(chan struct{}),
		pending:     make(map[pair]*pairBuf),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if err := s.instrument(opts.Meter); err != nil {
		return nil, err
	}
	s.stop, s.abort = context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range opts.Workers {
		wg.Go(s.work)
	}
	go func() {
		wg.Wait()
		close(s.workersDone)
	}()
	go s.flushLoop()
	return s, nil
}

func (s *Shadower) instrument(meter metric.Meter) error {
	if meter == nil {
		meter = metricnoop.NewMeterProvider().Meter("")
	}
	var errs []error
	counter := func(name, desc, unit string) metric.Int64Counter {
		c, err := meter.Int64Counter(name, metric.WithDescription(desc), metric.WithUnit(unit))
		errs = append(errs, err)
		return c
	}
	s.evaluations = counter("gatehouse.pdp.shadow.evaluations",
		"Requests evaluated by both bundles of a rollout, by agreement (agreed or diverged).", "{evaluation}")
	s.dropped = counter("gatehouse.pdp.shadow.dropped",
		"Requests not compared because the shadow queue was full or the shadower was closing; counted in the rollout report.", "{request}")
	s.flushErrors = counter("gatehouse.pdp.shadow.flush.errors",
		"Failed writes of shadow comparisons to the policy store; they are retried at the next flush.", "{error}")
	s.auditErrors = counter("gatehouse.pdp.shadow.audit.errors",
		"Decisions whose audit event the shadower could not record; each is logged.", "{error}")
	s.agreed = metric.WithAttributeSet(attribute.NewSet(attribute.String("agreement", "agreed")))
	s.diverged = metric.WithAttributeSet(attribute.NewSet(attribute.String("agreement", "diverged")))
	depth, err := meter.Int64ObservableGauge("gatehouse.pdp.shadow.queue.depth",
		metric.WithDescription("Shadow evaluations waiting for a worker."), metric.WithUnit("{job}"))
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("rollout: shadower metrics: %w", err)
	}
	s.depth, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(depth, int64(len(s.queue)))
		return nil
	}, depth)
	if err != nil {
		return fmt.Errorf("rollout: shadower metrics: %w", err)
	}
	return nil
}

// Submit queues job without blocking. It reports false, and counts the
// request as dropped for its rollout's report, when the queue is full or
// the Shadower is closed; the caller then records the audit event itself.
// A job without an Other evaluator is refused and not counted.
func (s *Shadower) Submit(job decision.ShadowJob) bool {
	if job.Selection.Other == nil || job.Selection.Decider == nil {
		return false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.closed {
		select {
		case s.queue <- job:
			return true
		default:
		}
	}
	s.drop(pairOf(job.Selection), 1)
	return false
}

// pairOf orients a selection as (active, candidate).
func pairOf(sel decision.Selection) pair {
	if sel.DeciderIsCandidate {
		return pair{active: sel.Other.PolicyVersion(), candidate: sel.Decider.PolicyVersion()}
	}
	return pair{active: sel.Decider.PolicyVersion(), candidate: sel.Other.PolicyVersion()}
}

// drop counts n requests of p as not compared, for the next flush.
func (s *Shadower) drop(p pair, n int64) {
	s.dropped.Add(context.Background(), n)
	s.pendingMu.Lock()
	s.buf(p).dropped += n
	s.pendingMu.Unlock()
}

// buf returns p's pending buffer; pendingMu must be held.
func (s *Shadower) buf(p pair) *pairBuf {
	b, ok := s.pending[p]
	if !ok {
		b = &pairBuf{}
		s.pending[p] = b
	}
	return b
}

// work evaluates jobs until Close closes the queue and it is empty.
func (s *Shadower) work() {
	for job := range s.queue {
		s.process(job)
	}
}

// process evaluates job's other bundle, records the audit event with the
// shadow result and adds the comparison to its pair's batch.
func (s *Shadower) process(job decision.ShadowJob) {
	if s.stop.Err() != nil {
		s.abandon(job)
		return
	}
	other := job.Selection.Other
	d, err := decision.Evaluate(s.stop, other, job.Request, s.opts.EvalTimeout)
	if err != nil {
		if s.stop.Err() != nil {
			// Cancelled by Close, not the policy's answer: comparing it
			// would report a divergence that is not there.
			s.abandon(job)
			return
		}
		s.log.LogAttrs(s.stop, slog.LevelWarn, "shadow evaluation failed",
			slog.String("decision_id", job.Decision.ID),
			slog.String("policy_version", other.PolicyVersion()),
			slog.Any("error", err))
	}
	if d.PolicyVersion == "" {
		d.PolicyVersion = other.PolicyVersion()
	}

	now := time.Now()
	event := job.Event
	event.Shadow = &audit.Shadow{
		Decision:      decision.StateName(d.State),
		ReasonCode:    d.ReasonCode,
		PolicyVersion: d.PolicyVersion,
	}
	s.record(event)

	active, candidate := job.Decision, d
	if job.Selection.DeciderIsCandidate {
		active, candidate = d, job.Decision
	}
	at := job.Event.Time
	if at.IsZero() {
		at = now
	}
	comp := policystore.Comparison{
		DecisionID:        job.Decision.ID,
		ActiveDecision:    active.State.String(),
		ActiveReason:      active.ReasonCode,
		CandidateDecision: candidate.State.String(),
		CandidateReason:   candidate.ReasonCode,
		Subject:           job.Request.Principal.Subject,
		Tenant:            job.Request.Principal.Tenant,
		Action:            job.Request.Action,
		Resource:          decision.ResourceName(job.Request.Resource),
		Time:              at,
	}
	if comp.Agreed() {
		s.evaluations.Add(s.stop, 1, s.agreed)
	} else {
		s.evaluations.Add(s.stop, 1, s.diverged)
	}
	s.add(pairOf(job.Selection), comp)
}

// abandon handles a job Close gave up on: counted as dropped, and its
// audit event recorded without a shadow result if the emitter takes it at
// once.
func (s *Shadower) abandon(job decision.ShadowJob) {
	s.drop(pairOf(job.Selection), 1)
	s.record(job.Event)
}

// record records e, waiting (for back-pressure) until Close gives up.
func (s *Shadower) record(e audit.Event) {
	if err := s.emitter.Record(s.stop, e); err != nil {
		s.auditErrors.Add(context.Background(), 1)
		s.log.LogAttrs(context.Background(), slog.LevelError, "decision not recorded in the audit log",
			slog.String("decision_id", e.EventID), slog.Any("error", err))
	}
}

// add appends c to p's batch and writes the batch once it is full.
func (s *Shadower) add(p pair, c policystore.Comparison) {
	s.pendingMu.Lock()
	b := s.buf(p)
	b.comps = append(b.comps, c)
	var full *pairBuf
	if len(b.comps) >= s.opts.BatchSize {
		full = b
		delete(s.pending, p)
	}
	s.pendingMu.Unlock()
	if full != nil {
		ctx, cancel := context.WithTimeout(s.stop, flushTimeout)
		defer cancel()
		_ = s.write(ctx, p, full) // logged; kept for the next flush
	}
}

// flushLoop writes what is pending every FlushInterval until Close.
func (s *Shadower) flushLoop() {
	defer close(s.flushDone)
	tick := time.NewTicker(s.opts.FlushInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.flushStop:
			return
		case <-tick.C:
			ctx, cancel := context.WithTimeout(s.stop, flushTimeout)
			_ = s.flush(ctx) // logged; kept for the next flush
			cancel()
		}
	}
}

// flush writes everything pending.
func (s *Shadower) flush(ctx context.Context) error {
	s.pendingMu.Lock()
	if len(s.pending) == 0 {
		s.pendingMu.Unlock()
		return nil
	}
	taken := s.pending
	s.pending = make(map[pair]*pairBuf)
	s.pendingMu.Unlock()
	var errs []error
	for p, b := range taken {
		errs = append(errs, s.write(ctx, p, b))
	}
	return errors.Join(errs...)
}

// write records b's comparisons and drops for p. On failure it puts them
// back for the next flush, keeping at most QueueSize comparisons per pair;
// the rest, and all of a batch the store refused as invalid, are counted as
// dropped, so the report still shows that requests went uncompared.
func (s *Shadower) write(ctx context.Context, p pair, b *pairBuf) error {
	if len(b.comps) == 0 && b.dropped == 0 {
		return nil
	}
	err := s.store.RecordComparisons(ctx, p.active, p.candidate, b.comps, b.dropped)
	if err == nil {
		return nil
	}
	s.flushErrors.Add(context.Background(), 1)
	s.log.LogAttrs(context.Background(), slog.LevelError, "shadow comparisons not written; retrying at the next flush",
		slog.String("active", p.active), slog.String("candidate", p.candidate),
		slog.Int("comparisons", len(b.comps)), slog.Int64("dropped", b.dropped), slog.Any("error", err))
	s.pendingMu.Lock()
	cur := s.buf(p)
	keep := min(len(b.comps), max(0, s.opts.QueueSize-len(cur.comps)))
	if errors.Is(err, policystore.ErrInvalid) {
		keep = 0 // refused for good: retrying would fail again
	}
	cur.comps = append(cur.comps, b.comps[:keep]...)
	lost := int64(len(b.comps) - keep)
	cur.dropped += b.dropped + lost
	s.pendingMu.Unlock()
	if lost > 0 {
		s.dropped.Add(context.Background(), lost)
	}
	return fmt.Errorf("rollout: record comparisons of %q against %q: %w", p.candidate, p.active, err)
}

// Close stops taking jobs, waits until every queued job is evaluated and
// its audit event recorded, and writes the pending comparisons. When ctx
// ends first, the jobs still queued are recorded without a shadow result
// (if the emitter takes them at once) and counted as dropped, and Close
// returns an error. Later calls return once the first has finished its
// work.
func (s *Shadower) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.mu.Lock() // waits out every Submit in progress
		s.closed = true
		close(s.queue)
		s.mu.Unlock()
	})
	var errs []error
	select {
	case <-s.workersDone:
	case <-ctx.Done():
		s.abort()
		<-s.workersDone
		errs = append(errs, fmt.Errorf("rollout: shadower close: queue not drained: %w", context.Cause(ctx)))
	}
	s.unregister.Do(func() {
		close(s.flushStop)
		<-s.flushDone
		if err := s.depth.Unregister(); err != nil {
			errs = append(errs, fmt.Errorf("rollout: shadower close: unregister metrics: %w", err))
		}
	})
	if err := s.flush(ctx); err != nil {
		errs = append(errs, err)
	}
	s.abort()
	return errors.Join(errs...)
}

var _ decision.Shadower = (*Shadower)(nil)
var _ decision.Router = (*Manager)(nil)
