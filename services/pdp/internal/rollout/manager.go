// Package rollout runs the PDP's staged policy rollouts in each replica.
//
// The Manager keeps the replica's policy in step with the rollout state in
// the policystore: it loads (verifies and compiles) the bundles the state
// names and routes every request, from one immutable snapshot, to the
// active bundle or, for principals in the canary share, to the candidate
// (decision.Router). The Shadower evaluates the other bundle of a rollout off
// the caller's path, records how the two compare for the rollout report, and
// records the decision's audit event with the shadow result
// (decision.Shadower).
package rollout

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
	metricnoop "go.opentelemetry.io/otel/metric/noop"

	"github.com/gatehouse/gatehouse/services/pdp/internal/decision"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policystore"
)

// Defaults and bounds of the Manager.
const (
	// DefaultPollInterval is how often a Manager re-reads the rollout state
	// besides the store's change notifications.
	DefaultPollInterval = 500 * time.Millisecond
	// syncTimeout bounds one sync: reading the state and loading the
	// bundles it names.
	syncTimeout = 30 * time.Second
)

// Errors of a Manager.
var (
	// ErrNotLoaded: no policy is loaded yet (Start has not succeeded). A
	// request routed before that is decided by an evaluator that fails
	// with this error, so it is Indeterminate, never allowed.
	ErrNotLoaded = errors.New("rollout: no policy loaded yet")
	// ErrNotInitialized: the store holds no rollout state; Bootstrap
	// writes the first one.
	ErrNotInitialized = errors.New("rollout: the policy store holds no rollout state")
)

// Loader verifies and compiles a stored bundle into an Evaluator whose
// PolicyVersion is the bundle's revision. The app passes bundle.Open
// followed by policy.Compile.
type Loader func(ctx context.Context, b policystore.Bundle) (decision.Evaluator, error)

// Options configures a Manager. Zero fields take their defaults.
type Options struct {
	// Logger receives sync failures and changes; nil discards.
	Logger *slog.Logger
	// Meter records the Manager's metrics; nil records none.
	Meter metric.Meter
	// PollInterval is how often the state is re-read even without a
	// change notification (DefaultPollInterval when zero).
	PollInterval time.Duration
	// OnChange, when set, is called after every swap to a new snapshot,
	// with the state now served (the app purges its decision cache there).
	// It runs on the sync goroutine and should return quickly.
	OnChange func(policystore.Rollout)
	// OnInit, when set, is called once Bootstrap has activated the initial
	// bundle on a never-written state (only on the replica that won), with
	// the state written: the app audits that first policy change there.
	OnInit func(context.Context, policystore.Rollout)
}

// Manager keeps a replica's policy in step with the shared rollout state
// and routes requests by it. It is safe for concurrent use.
type Manager struct {
	store policystore.Store
	load  Loader
	opts  Options
	log   *slog.Logger

	// snap is what Select reads: replaced whole, never modified.
	snap atomic.Pointer[snapshot]
	// loadErr is the last sync's failure to load the state's bundles; nil
	// once a sync succeeds.
	loadErr atomic.Pointer[error]

	// syncMu serializes syncs and guards cache and failedGen.
	syncMu sync.Mutex
	// cache holds compiled evaluators by revision: those the served state
	// names, plus those a failed sync already loaded.
	cache map[string]decision.Evaluator
	// failedGen is the generation whose load last failed (logged once at
	// error level, retried at every sync).
	failedGen int64

	// lifeMu guards started and cancel.
	lifeMu  sync.Mutex
	started bool
	cancel  context.CancelFunc
	done    chan struct{} // closed when the sync goroutine returned (or never ran)

	loadErrors metric.Int64Counter
	generation metric.Registration
}

// snapshot is one consistent policy state: the rollout and the evaluators
// of its active and candidate revisions.
type snapshot struct {
	state     policystore.Rollout
	active    decision.Evaluator
	candidate decision.Evaluator // nil with ModeNone
	// superseded is closed when a newer snapshot replaces this one.
	superseded chan struct{}
}

// NewManager returns a Manager reading store and loading bundles with load.
// It serves nothing until Start.
func NewManager(store policystore.Store, load Loader, opts Options) (*Manager, error) {
	switch {
	case store == nil:
		return nil, errors.New("rollout: manager: nil store")
	case load == nil:
		return nil, errors.New("rollout: manager: nil loader")
	case opts.PollInterval < 0:
		return nil, fmt.Errorf("rollout: manager: negative poll interval %s", opts.PollInterval)
	}
	opts.PollInterval = cmp.Or(opts.PollInterval, DefaultPollInterval)
	m := &Manager{
		store: store,
		load:  load,
		opts:  opts,
		log:   opts.Logger,
		cache: make(map[string]decision.Evaluator),
		done:  make(chan struct{}),
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.snap.Store(&snapshot{active: unloaded{}, superseded: make(chan struct{})})
	if err := m.instrument(opts.Meter); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Manager) instrument(meter metric.Meter) error {
	if meter == nil {
		meter = metricnoop.NewMeterProvider().Meter("")
	}
	var err error
	if m.loadErrors, err = meter.Int64Counter("gatehouse.pdp.rollout.load_errors",
		metric.WithDescription("Failed attempts to load the bundles the rollout state names; the replica keeps serving its previous state meanwhile."),
		metric.WithUnit("{error}")); err != nil {
		return fmt.Errorf("rollout: manager metrics: %w", err)
	}
	gen, err := meter.Int64ObservableGauge("gatehouse.pdp.rollout.generation",
		metric.WithDescription("Rollout generation this replica serves; replicas that agree serve the same policy."))
	if err != nil {
		return fmt.Errorf("rollout: manager metrics: %w", err)
	}
	m.generation, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(gen, m.snap.Load().state.Generation)
		return nil
	}, gen)
	if err != nil {
		return fmt.Errorf("rollout: manager metrics: %w", err)
	}
	return nil
}

// Bootstrap stores initial, the signed bundle the PDP starts with (storing
// it again is a no-op), and makes it active if the rollout state was never
// written. When a state exists, it wins: a restarted replica serves what
// the fleet serves, not what it shipped with. actor names the change in the
// history.
func (m *Manager) Bootstrap(ctx context.Context, initial policystore.Bundle, actor string) error {
	if _, err := m.store.PutBundle(ctx, initial); err != nil {
		return fmt.Errorf("rollout: store initial bundle %q: %w", initial.Revision, err)
	}
	st, err := m.store.Rollout(ctx)
	if err != nil {
		return fmt.Errorf("rollout: read rollout: %w", err)
	}
	if st.Generation != 0 {
		return nil
	}
	next := policystore.Rollout{Active: initial.Revision, Mode: policystore.ModeNone}
	change := policystore.Change{Action: policystore.ActionInit, Actor: actor, To: initial.Revision}
	st, err = m.store.UpdateRollout(ctx, 0, next, change)
	switch {
	case err == nil:
		m.log.LogAttrs(ctx, slog.LevelInfo, "rollout initialized",
			slog.String("active", st.Active), slog.Int64("generation", st.Generation))
		if m.opts.OnInit != nil {
			m.opts.OnInit(ctx, st)
		}
		return nil
	case errors.Is(err, policystore.ErrStaleGeneration):
		// Another replica initialized it meanwhile; its state wins.
		st, err = m.store.Rollout(ctx)
		if err != nil {
			return fmt.Errorf("rollout: read rollout: %w", err)
		}
		if st.Generation == 0 {
			return fmt.Errorf("rollout: initialize: %w, yet the state reads as never written", policystore.ErrStaleGeneration)
		}
		return nil
	default:
		return fmt.Errorf("rollout: initialize: %w", err)
	}
}

// Start loads the state's bundles once, failing when it cannot, and then
// keeps the replica in step until ctx ends or Close is called: it re-syncs
// on every change notification of the store and every PollInterval, so
// that a lost notification delays a change by one interval at most.
func (m *Manager) Start(ctx context.Context) error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.started {
		return errors.New("rollout: manager already started or closed")
	}
	m.started = true
	runCtx, cancel := context.WithCancel(ctx)
	m.cancel = cancel
	// Subscribe before the first sync, so that no change falls between.
	sub := m.subscribe(runCtx)
	if err := m.sync(runCtx); err != nil {
		cancel()
		close(m.done)
		return err
	}
	go m.run(runCtx, sub)
	return nil
}

// Close stops the sync goroutine and waits for it. The last snapshot stays
// served. It is safe to call more than once, and before Start (which then
// fails).
func (m *Manager) Close() {
	m.lifeMu.Lock()
	if !m.started {
		m.started = true
		close(m.done) // never started: nothing runs
	}
	if m.cancel != nil {
		m.cancel()
	}
	m.lifeMu.Unlock()
	<-m.done
	_ = m.generation.Unregister()
}

// subscribe returns the store's change notifications, or nil (a channel
// that never delivers) when the subscription failed: polling covers it
// until run subscribes again.
func (m *Manager) subscribe(ctx context.Context) <-chan struct{} {
	ch, err := m.store.Subscribe(ctx)
	if err != nil {
		m.log.LogAttrs(ctx, slog.LevelWarn, "rollout: subscribe to policy changes failed; polling meanwhile",
			slog.Any("error", err))
		return nil
	}
	return ch
}

func (m *Manager) run(ctx context.Context, sub <-chan struct{}) {
	defer close(m.done)
	tick := time.NewTicker(m.opts.PollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-sub:
			if !ok {
				if ctx.Err() != nil {
					return
				}
				m.log.LogAttrs(ctx, slog.LevelWarn, "rollout: change notifications ended; polling until subscribed again")
				sub = nil
			}
		case <-tick.C:
			if sub == nil {
				sub = m.subscribe(ctx)
			}
		}
		// Errors are logged and counted by sync; the next signal or tick
		// retries.
		_ = m.sync(ctx)
	}
}

// sync reads the rollout state and, when it differs from the one served,
// loads its bundles and swaps in a new snapshot. When a bundle fails to
// load, the previous snapshot stays and Ready reports the failure.
func (m *Manager) sync(parent context.Context) error {
	ctx, cancel := context.WithTimeout(parent, syncTimeout)
	defer cancel()
	m.syncMu.Lock()
	defer m.syncMu.Unlock()

	st, err := m.store.Rollout(ctx)
	if err != nil {
		if parent.Err() == nil {
			m.log.LogAttrs(ctx, slog.LevelWarn, "rollout: read rollout state failed", slog.Any("error", err))
		}
		return fmt.Errorf("rollout: read rollout: %w", err)
	}
	if st.Generation == 0 {
		return m.fail(parent, st, ErrNotInitialized)
	}
	cur := m.snap.Load()
	if st.Generation == cur.state.Generation && m.loadErr.Load() == nil {
		return nil
	}
	next := &snapshot{state: st, superseded: make(chan struct{})}
	if next.active, err = m.evaluator(ctx, st.Active); err != nil {
		return m.fail(parent, st, fmt.Errorf("rollout: load active revision %q: %w", st.Active, err))
	}
	if st.Mode != policystore.ModeNone && st.Candidate != "" {
		if next.candidate, err = m.evaluator(ctx, st.Candidate); err != nil {
			return m.fail(parent, st, fmt.Errorf("rollout: load candidate revision %q: %w", st.Candidate, err))
		}
	}
	for rev := range m.cache {
		if rev != st.Active && (next.candidate == nil || rev != st.Candidate) {
			delete(m.cache, rev)
		}
	}
	m.snap.Store(next)
	m.loadErr.Store(nil)
	m.failedGen = 0
	m.log.LogAttrs(ctx, slog.LevelInfo, "rollout: serving policy state",
		slog.Int64("generation", st.Generation), slog.String("active", st.Active),
		slog.String("candidate", st.Candidate), slog.String("mode", string(st.Mode)),
		slog.Int("canary_percent", st.CanaryPercent))
	if m.opts.OnChange != nil {
		m.opts.OnChange(st)
	}
	close(cur.superseded) // wakes Await only once OnChange has run
	return nil
}

// fail records a failed load of st: the previous snapshot stays served.
// ctx is the sync's parent context.
func (m *Manager) fail(ctx context.Context, st policystore.Rollout, err error) error {
	if ctx.Err() != nil {
		// Shutting down: not the bundle's fault.
		return err
	}
	m.loadErr.Store(&err)
	m.loadErrors.Add(ctx, 1)
	level := slog.LevelError
	if m.failedGen == st.Generation {
		level = slog.LevelDebug // already reported; retried at every sync
	}
	m.failedGen = st.Generation
	m.log.LogAttrs(ctx, level, "rollout: cannot load the policy state; still serving the previous one",
		slog.Int64("generation", st.Generation),
		slog.Int64("served_generation", m.snap.Load().state.Generation),
		slog.Any("error", err))
	return err
}

// evaluator returns the compiled revision, loading it when not cached.
func (m *Manager) evaluator(ctx context.Context, revision string) (decision.Evaluator, error) {
	if e, ok := m.cache[revision]; ok {
		return e, nil
	}
	b, err := m.store.Bundle(ctx, revision)
	if err != nil {
		return nil, err
	}
	e, err := m.load(ctx, b)
	if err != nil {
		return nil, err
	}
	if v := e.PolicyVersion(); v != revision {
		return nil, fmt.Errorf("bundle stored as revision %q has revision %q", revision, v)
	}
	m.cache[revision] = e
	return e, nil
}

// Ready reports whether the replica serves the current rollout state: an
// error wrapping ErrNotLoaded before the first successful sync, or the load
// failure while the state's bundles cannot be loaded (the previous state is
// served meanwhile). A failure to read the store is not reported here: the
// loaded policy keeps deciding.
func (m *Manager) Ready() error {
	if err := m.loadErr.Load(); err != nil {
		return *err
	}
	if m.snap.Load().state.Generation == 0 {
		return ErrNotLoaded
	}
	return nil
}

// State returns the rollout state the replica serves (Generation 0 before
// the first successful sync).
func (m *Manager) State() policystore.Rollout {
	return m.snap.Load().state
}

// Await returns once the replica serves generation or a later one (and
// OnChange has run for it), or with ctx's error when ctx ends first.
func (m *Manager) Await(ctx context.Context, generation int64) error {
	for {
		s := m.snap.Load()
		if s.state.Generation >= generation {
			return nil
		}
		select {
		case <-s.superseded:
		case <-ctx.Done():
			return fmt.Errorf("rollout: await generation %d (serving %d): %w", generation, s.state.Generation, context.Cause(ctx))
		}
	}
}

// Select implements decision.Router: the active bundle decides, the
// candidate (if any) is the one to compare with, except for principals in
// the canary share, for whom it is the other way round. Both come from one
// snapshot. It does not allocate.
func (m *Manager) Select(p decision.Principal) decision.Selection {
	s := m.snap.Load()
	switch {
	case s.candidate == nil:
		return decision.Selection{Decider: s.active}
	case s.state.Mode == policystore.ModeCanary && InCanary(p.Tenant, p.Subject, s.state.CanaryPercent):
		return decision.Selection{Decider: s.candidate, Other: s.active, DeciderIsCandidate: true}
	default:
		return decision.Selection{Decider: s.active, Other: s.candidate}
	}
}

// unloaded is the Decider before the first sync: it fails every
// evaluation, so a request routed too early is Indeterminate.
type unloaded struct{}

func (unloaded) Evaluate(context.Context, decision.Request) (decision.Decision, error) {
	return decision.Decision{}, ErrNotLoaded
}

func (unloaded) PolicyVersion() string { return "" }
