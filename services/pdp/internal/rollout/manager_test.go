package rollout_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/pdp/internal/decision"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policystore"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policystore/memory"
	"github.com/gatehouse/gatehouse/services/pdp/internal/rollout"
)

// waitTimeout bounds every wait for the manager; the waits themselves are
// on events, never on time.
const waitTimeout = 10 * time.Second

// started returns a started Manager on store (bootstrapped with v1), closed
// with the test.
func started(t *testing.T, store policystore.Store, l *loader, opts rollout.Options) *rollout.Manager {
	t.Helper()
	m, err := rollout.NewManager(store, l.Load, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := m.Bootstrap(ctx, bundle("v1", "policy v1"), "pdp"); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func await(t *testing.T, m *rollout.Manager, gen int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := m.Await(ctx, gen); err != nil {
		t.Fatal(err)
	}
}

func versions(sel decision.Selection) (decider, other string) {
	if sel.Decider != nil {
		decider = sel.Decider.PolicyVersion()
	}
	if sel.Other != nil {
		other = sel.Other.PolicyVersion()
	}
	return decider, other
}

func TestSelect(t *testing.T) {
	t.Parallel()
	alice := decision.Principal{Tenant: "acme", Subject: "alice"} // bucket 43
	for _, tc := range []struct {
		name               string
		state              policystore.Rollout
		decider, other     string
		deciderIsCandidate bool
	}{
		{"none", policystore.Rollout{Active: "v1", Mode: policystore.ModeNone}, "v1", "", false},
		{"shadow", policystore.Rollout{Active: "v1", Candidate: "v2", Mode: policystore.ModeShadow}, "v1", "v2", false},
		{"canary, principal outside the share", policystore.Rollout{Active: "v1", Candidate: "v2", Mode: policystore.ModeCanary, CanaryPercent: 43}, "v1", "v2", false},
		{"canary, principal inside the share", policystore.Rollout{Active: "v1", Candidate: "v2", Mode: policystore.ModeCanary, CanaryPercent: 44}, "v2", "v1", true},
		{"canary 100", policystore.Rollout{Active: "v1", Candidate: "v2", Mode: policystore.ModeCanary, CanaryPercent: 100}, "v2", "v1", true},
		{"after promotion", policystore.Rollout{Active: "v2", Previous: "v1", Mode: policystore.ModeNone}, "v2", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			store := memory.New()
			putBundles(t, store, "v1", "v2")
			m := started(t, store, newLoader(), rollout.Options{})
			st := update(t, store, tc.state)
			await(t, m, st.Generation)

			sel := m.Select(alice)
			decider, other := versions(sel)
			if decider != tc.decider || other != tc.other || sel.DeciderIsCandidate != tc.deciderIsCandidate {
				t.Errorf("Select = decider %q, other %q, candidate decides %v; want %q, %q, %v",
					decider, other, sel.DeciderIsCandidate, tc.decider, tc.other, tc.deciderIsCandidate)
			}
			if got := m.State(); got.Generation != st.Generation || got.Active != tc.state.Active || got.Mode != tc.state.Mode {
				t.Errorf("State = %+v, want %+v", got, st)
			}
			if err := m.Ready(); err != nil {
				t.Errorf("Ready = %v", err)
			}
		})
	}
}

// TestSelectDoesNotAllocate is not parallel: AllocsPerRun counts the
// allocations of the whole process.
func TestSelectDoesNotAllocate(t *testing.T) {
	store := memory.New()
	putBundles(t, store, "v1", "v2")
	m := started(t, store, newLoader(), rollout.Options{})
	await(t, m, update(t, store, policystore.Rollout{Active: "v1", Candidate: "v2", Mode: policystore.ModeCanary, CanaryPercent: 50}).Generation)
	for _, p := range []decision.Principal{{Tenant: "acme", Subject: "alice"}, {Tenant: "acme", Subject: "bob"}} {
		if n := testing.AllocsPerRun(100, func() { m.Select(p) }); n != 0 {
			t.Errorf("Select(%s) allocates %v times", p.Subject, n)
		}
	}
}

func TestSelectBeforeStartFailsClosed(t *testing.T) {
	t.Parallel()
	m, err := rollout.NewManager(memory.New(), newLoader().Load, rollout.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	sel := m.Select(decision.Principal{Tenant: "acme", Subject: "alice"})
	if sel.Other != nil {
		t.Errorf("Other = %v, want nil", sel.Other)
	}
	if _, err := sel.Decider.Evaluate(context.Background(), decision.Request{}); !errors.Is(err, rollout.ErrNotLoaded) {
		t.Errorf("Evaluate before Start: %v, want ErrNotLoaded", err)
	}
	if err := m.Ready(); !errors.Is(err, rollout.ErrNotLoaded) {
		t.Errorf("Ready = %v, want ErrNotLoaded", err)
	}
}

func TestStartWithoutStateFails(t *testing.T) {
	t.Parallel()
	m, err := rollout.NewManager(memory.New(), newLoader().Load, rollout.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Start(context.Background()); !errors.Is(err, rollout.ErrNotInitialized) {
		t.Fatalf("Start = %v, want ErrNotInitialized", err)
	}
	if m.Ready() == nil {
		t.Error("Ready = nil after a failed Start")
	}
}

func TestStartFailsWhenABundleDoesNotLoad(t *testing.T) {
	t.Parallel()
	store := memory.New()
	if _, err := store.PutBundle(context.Background(), bundle("v1", "broken")); err != nil {
		t.Fatal(err)
	}
	l := newLoader()
	m, err := rollout.NewManager(store, l.Load, rollout.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Bootstrap(context.Background(), bundle("v1", "broken"), "pdp"); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); !errors.Is(err, errBroken) {
		t.Fatalf("Start = %v, want the load error", err)
	}
	if err := m.Ready(); !errors.Is(err, errBroken) {
		t.Errorf("Ready = %v, want the load error", err)
	}
}

func TestBootstrap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("first start initializes", func(t *testing.T) {
		t.Parallel()
		store := memory.New()
		var inits []policystore.Rollout
		m, _ := rollout.NewManager(store, newLoader().Load, rollout.Options{
			OnInit: func(_ context.Context, r policystore.Rollout) { inits = append(inits, r) },
		})
		defer m.Close()
		if err := m.Bootstrap(ctx, bundle("v1", "policy v1"), "pdp"); err != nil {
			t.Fatal(err)
		}
		st, _ := store.Rollout(ctx)
		if st.Generation != 1 || st.Active != "v1" || st.Mode != policystore.ModeNone || st.UpdatedBy != "pdp" {
			t.Errorf("rollout = %+v", st)
		}
		if len(inits) != 1 || inits[0].Generation != 1 || inits[0].Active != "v1" {
			t.Errorf("OnInit calls = %+v, want one with generation 1", inits)
		}
		// A second start finds the state written: no second init.
		if err := m.Bootstrap(ctx, bundle("v1", "policy v1"), "pdp"); err != nil || len(inits) != 1 {
			t.Errorf("second Bootstrap = %v, OnInit calls %d; want nil and 1", err, len(inits))
		}
		h, _ := store.History(ctx, 10)
		if len(h) != 1 || h[0].Action != policystore.ActionInit || h[0].To != "v1" {
			t.Errorf("history = %+v", h)
		}
	})

	t.Run("stored state wins", func(t *testing.T) {
		t.Parallel()
		store := memory.New()
		putBundles(t, store, "v1", "v2")
		update(t, store, policystore.Rollout{Active: "v2", Previous: "v1", Mode: policystore.ModeNone})
		m, _ := rollout.NewManager(store, newLoader().Load, rollout.Options{})
		defer m.Close()
		if err := m.Bootstrap(ctx, bundle("v3", "policy v3"), "pdp"); err != nil {
			t.Fatal(err)
		}
		st, _ := store.Rollout(ctx)
		if st.Generation != 1 || st.Active != "v2" {
			t.Errorf("rollout = %+v, want the stored one", st)
		}
		if _, err := store.Bundle(ctx, "v3"); err != nil {
			t.Errorf("initial bundle not stored: %v", err)
		}
	})

	t.Run("another replica initializes first", func(t *testing.T) {
		t.Parallel()
		store := &racingStore{Store: memory.New()}
		m, _ := rollout.NewManager(store, newLoader().Load, rollout.Options{})
		defer m.Close()
		if err := m.Bootstrap(ctx, bundle("v1", "policy v1"), "pdp"); err != nil {
			t.Fatal(err)
		}
		st, _ := store.Rollout(ctx)
		if st.Generation != 1 || st.UpdatedBy != "other-replica" {
			t.Errorf("rollout = %+v, want the other replica's", st)
		}
	})

	t.Run("revision stored with other content", func(t *testing.T) {
		t.Parallel()
		store := memory.New()
		putBundles(t, store, "v1")
		m, _ := rollout.NewManager(store, newLoader().Load, rollout.Options{})
		defer m.Close()
		if err := m.Bootstrap(ctx, bundle("v1", "edited without a new revision"), "pdp"); !errors.Is(err, policystore.ErrRevisionConflict) {
			t.Errorf("Bootstrap = %v, want ErrRevisionConflict", err)
		}
	})
}

// racingStore lets "another replica" initialize the rollout just before
// the first UpdateRollout.
type racingStore struct {
	policystore.Store
	once sync.Once
}

func (s *racingStore) UpdateRollout(ctx context.Context, expected int64, next policystore.Rollout, change policystore.Change) (policystore.Rollout, error) {
	s.once.Do(func() {
		other := change
		other.Actor = "other-replica"
		if _, err := s.Store.UpdateRollout(ctx, expected, next, other); err != nil {
			panic(err)
		}
	})
	return s.Store.UpdateRollout(ctx, expected, next, change)
}

// silentStore never signals a change: only polling finds them.
type silentStore struct {
	policystore.Store
	failSubscribe bool
}

func (s silentStore) Subscribe(ctx context.Context) (<-chan struct{}, error) {
	if s.failSubscribe {
		return nil, errors.New("listen connection refused")
	}
	ch := make(chan struct{})
	context.AfterFunc(ctx, func() { close(ch) })
	return ch, nil
}

func TestChangesReachTheManager(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		store func(policystore.Store) policystore.Store
		poll  time.Duration
	}{
		// An hour: only the notification can deliver within the test.
		{"through Subscribe", func(s policystore.Store) policystore.Store { return s }, time.Hour},
		{"by polling when notifications are lost", func(s policystore.Store) policystore.Store { return silentStore{Store: s} }, 10 * time.Millisecond},
		{"by polling when Subscribe fails", func(s policystore.Store) policystore.Store { return silentStore{Store: s, failSubscribe: true} }, 10 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mem := memory.New()
			putBundles(t, mem, "v1", "v2")
			changes := make(chan policystore.Rollout, 10)
			m := started(t, tc.store(mem), newLoader(), rollout.Options{
				PollInterval: tc.poll,
				OnChange:     func(r policystore.Rollout) { changes <- r },
			})
			if got := <-changes; got.Generation != 1 {
				t.Fatalf("first OnChange: generation %d, want 1", got.Generation)
			}
			st := update(t, mem, policystore.Rollout{Active: "v1", Candidate: "v2", Mode: policystore.ModeShadow})
			await(t, m, st.Generation)
			if _, other := versions(m.Select(decision.Principal{Subject: "bob", Tenant: "acme"})); other != "v2" {
				t.Errorf("Other = %q after the change, want v2", other)
			}
			select {
			case got := <-changes:
				if got.Generation != st.Generation || got.Candidate != "v2" {
					t.Errorf("OnChange(%+v), want generation %d", got, st.Generation)
				}
			default:
				t.Error("OnChange not called for the change")
			}
		})
	}
}

func TestFailedLoadKeepsTheServedSnapshot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := memory.New()
	putBundles(t, store, "v1")
	if _, err := store.PutBundle(ctx, bundle("v2", "broken")); err != nil {
		t.Fatal(err)
	}
	logs := make(chan string, 100)
	met := newMetrics()
	m := started(t, store, newLoader(), rollout.Options{
		Logger: slog.New(logSignal{ch: logs}),
		Meter:  met.provider.Meter("test"),
	})

	broken := update(t, store, policystore.Rollout{Active: "v1", Candidate: "v2", Mode: policystore.ModeShadow})
	for msg := range logs {
		if msg == "rollout: cannot load the policy state; still serving the previous one" {
			break
		}
	}
	if err := m.Ready(); !errors.Is(err, errBroken) {
		t.Errorf("Ready = %v, want the load error", err)
	}
	if got := m.State().Generation; got != broken.Generation-1 {
		t.Errorf("serving generation %d, want the previous %d", got, broken.Generation-1)
	}
	if decider, other := versions(m.Select(decision.Principal{Subject: "bob", Tenant: "acme"})); decider != "v1" || other != "" {
		t.Errorf("Select = %q, %q; want the previous snapshot (v1, none)", decider, other)
	}
	if n := met.sum(t, "gatehouse.pdp.rollout.load_errors"); n < 1 {
		t.Errorf("load errors counted: %d", n)
	}

	// Withdrawing the broken candidate heals the replica.
	fixed := update(t, store, policystore.Rollout{Active: "v1", Mode: policystore.ModeNone})
	await(t, m, fixed.Generation)
	if err := m.Ready(); err != nil {
		t.Errorf("Ready = %v after the state was fixed", err)
	}
}

func TestEvaluatorsAreCachedForTheStateOnly(t *testing.T) {
	t.Parallel()
	store := memory.New()
	putBundles(t, store, "v1", "v2")
	l := newLoader()
	m := started(t, store, l, rollout.Options{})
	for _, next := range []policystore.Rollout{
		{Active: "v1", Candidate: "v2", Mode: policystore.ModeShadow},
		{Active: "v1", Candidate: "v2", Mode: policystore.ModeCanary, CanaryPercent: 10},
		{Active: "v2", Previous: "v1", Mode: policystore.ModeNone}, // v1 leaves the cache
		{Active: "v2", Candidate: "v1", Mode: policystore.ModeShadow},
	} {
		await(t, m, update(t, store, next).Generation)
	}
	if got := l.count("v2"); got != 1 {
		t.Errorf("v2 loaded %d times, want 1 (cached while named)", got)
	}
	if got := l.count("v1"); got != 2 {
		t.Errorf("v1 loaded %d times, want 2 (dropped when no longer named)", got)
	}
}

func TestCloseStopsWhenContextEnds(t *testing.T) {
	t.Parallel()
	store := memory.New()
	m, err := rollout.NewManager(store, newLoader().Load, rollout.Options{PollInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Bootstrap(context.Background(), bundle("v1", "policy v1"), "pdp"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err == nil {
		t.Error("second Start succeeded")
	}
	cancel()
	m.Close() // returns only once the goroutine has stopped
	m.Close()
	if err := m.Ready(); err != nil {
		t.Errorf("Ready = %v after Close; the last snapshot stays served", err)
	}
}

// TestSelectionsAreConsistentUnderChange flips the state between two
// generations with different revisions while goroutines select and
// evaluate: every Selection must come from one of the two states whole.
func TestSelectionsAreConsistentUnderChange(t *testing.T) {
	t.Parallel()
	store := memory.New()
	putBundles(t, store, "v1", "v2", "v3", "v4")
	m := started(t, store, newLoader(), rollout.Options{})
	states := []policystore.Rollout{
		{Active: "v1", Candidate: "v2", Mode: policystore.ModeShadow},
		{Active: "v3", Candidate: "v4", Mode: policystore.ModeCanary, CanaryPercent: 50},
	}
	// valid holds every (decider, other, candidate decides) the two states
	// can give.
	valid := map[string]bool{
		"v1  false":   true, // generation 1, before the first flip
		"v1 v2 false": true,
		"v3 v4 false": true,
		"v4 v3 true":  true,
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				p := decision.Principal{Tenant: "acme", Subject: fmt.Sprintf("user-%d-%d", g, i%200)}
				sel := m.Select(p)
				decider, other := versions(sel)
				key := fmt.Sprintf("%s %s %v", decider, other, sel.DeciderIsCandidate)
				if !valid[key] {
					errs <- fmt.Errorf("inconsistent selection %q", key)
					return
				}
				if _, err := sel.Decider.Evaluate(ctx, decision.Request{Principal: p}); err != nil {
					errs <- err
					return
				}
				if sel.Other != nil {
					if _, err := sel.Other.Evaluate(ctx, decision.Request{Principal: p}); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	for i := range 200 {
		await(t, m, update(t, store, states[i%2]).Generation)
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
