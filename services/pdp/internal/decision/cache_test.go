package decision_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	"github.com/gatehouse/gatehouse/services/pdp/internal/decision"
)

func newCache(t *testing.T, size int) *decision.Cache {
	t.Helper()
	c, err := decision.NewCache(size)
	if err != nil {
		t.Fatalf("NewCache: %v", err)
	}
	return c
}

func TestCacheHitsOnlyTheSameQuestion(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC)
	base := func() decision.Request {
		r := valid()
		r.Context = decision.RequestContext{RequestID: "req-1", Time: at, SourceIP: "192.0.2.1"}
		r.Resource.Attributes = map[string]any{"amount": int64(100), "status": "draft"}
		return r
	}
	tests := []struct {
		name    string
		mutate  func(*decision.Request)
		wantHit bool
	}{
		{"same question", func(*decision.Request) {}, true},
		{"another request id", func(r *decision.Request) { r.Context.RequestID = "req-2" }, true},
		{"same second", func(r *decision.Request) { r.Context.Time = at.Add(900 * time.Millisecond) }, true},
		{"roles in another order, duplicated", func(r *decision.Request) { r.Principal.Roles = []string{"billing_viewer", "billing_viewer"} }, true},
		{"next second", func(r *decision.Request) { r.Context.Time = at.Add(time.Second) }, false},
		{"no time", func(r *decision.Request) { r.Context.Time = time.Time{} }, false},
		{"another subject", func(r *decision.Request) { r.Principal.Subject = "alice" }, false},
		{"another tenant", func(r *decision.Request) { r.Principal.Tenant = "globex" }, false},
		{"another role", func(r *decision.Request) { r.Principal.Roles = []string{"billing_approver"} }, false},
		{"another scope", func(r *decision.Request) { r.Principal.Scopes = append(r.Principal.Scopes, "invoice:write") }, false},
		{"another client", func(r *decision.Request) { r.Principal.ClientID = "billing-bot" }, false},
		{"another acr", func(r *decision.Request) { r.Principal.ACR = "mfa" }, false},
		{"an auth time", func(r *decision.Request) { r.Principal.AuthTime = at }, false},
		{"an actor", func(r *decision.Request) { r.Principal.ActorChain = []decision.Actor{{Subject: "sam"}} }, false},
		{"another resource id", func(r *decision.Request) { r.Resource.ID = "inv-2" }, false},
		{"another resource tenant", func(r *decision.Request) { r.Resource.Tenant = "globex" }, false},
		{"another action", func(r *decision.Request) { r.Action = "invoice:write" }, false},
		{"another attribute value", func(r *decision.Request) { r.Resource.Attributes["amount"] = int64(101) }, false},
		{"attribute of another type", func(r *decision.Request) { r.Resource.Attributes["amount"] = "100" }, false},
		{"one attribute fewer", func(r *decision.Request) { delete(r.Resource.Attributes, "status") }, false},
		{"another source ip", func(r *decision.Request) { r.Context.SourceIP = "192.0.2.2" }, false},
		// Length-prefixed encoding: moving bytes between fields is another question.
		{"bytes moved between fields", func(r *decision.Request) { r.Principal.Subject = "bo"; r.Principal.Tenant = "bacme" }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			eval := &fakeEvaluator{d: decision.Decision{State: decision.Allow, ReasonCode: reason.Allowed}}
			f := newFixture(t, decision.Options{Router: decision.Fixed{Evaluator: eval}, Cache: newCache(t, 100)})
			first := f.svc.Decide(t.Context(), base())
			req := base()
			tc.mutate(&req)
			second := f.svc.Decide(t.Context(), req)
			if hit := eval.calls.Load() == 1; hit != tc.wantHit {
				t.Errorf("cache hit = %v, want %v (evaluations: %d)", hit, tc.wantHit, eval.calls.Load())
			}
			if first.ID == second.ID {
				t.Error("a cached decision reused the decision id")
			}
			if got := len(f.events(t)); got != 2 {
				t.Errorf("audit events = %d, want 2: a cache hit is a decision too", got)
			}
		})
	}
}

// TestCacheKeepsTimeIndependentDecisions: a decision its evaluator calls
// independent of the request time answers the same question at any other
// time (and without one); any other decision answers its second only.
func TestCacheKeepsTimeIndependentDecisions(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC)
	ask := func(when time.Time) decision.Request {
		r := valid()
		r.Context = decision.RequestContext{RequestID: "req-1", Time: when}
		return r
	}
	tests := []struct {
		name            string
		timeIndependent bool
		then            time.Time
		wantHit         bool
	}{
		{"independent, same second", true, at.Add(900 * time.Millisecond), true},
		{"independent, next second", true, at.Add(time.Second), true},
		{"independent, a day later", true, at.Add(24 * time.Hour), true},
		{"independent, no time", true, time.Time{}, true},
		{"dependent, same second", false, at.Add(900 * time.Millisecond), true},
		{"dependent, next second", false, at.Add(time.Second), false},
		{"dependent, a second earlier", false, at.Add(-time.Second), false},
		{"dependent, no time", false, time.Time{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			eval := &fakeEvaluator{d: decision.Decision{State: decision.Allow, ReasonCode: reason.Allowed, TimeIndependent: tc.timeIndependent}}
			cache := newCache(t, 100)
			f := newFixture(t, decision.Options{Router: decision.Fixed{Evaluator: eval}, Cache: cache})
			f.svc.Decide(t.Context(), ask(at))
			f.svc.Decide(t.Context(), ask(tc.then))
			if hit := eval.calls.Load() == 1; hit != tc.wantHit {
				t.Errorf("cache hit = %v, want %v (evaluations: %d)", hit, tc.wantHit, eval.calls.Load())
			}
			// A dependent decision is kept under its second, with a note
			// under the time-free key: a repeat in either second hits.
			f.svc.Decide(t.Context(), ask(at))
			f.svc.Decide(t.Context(), ask(tc.then))
			if want := 2 - btoi(tc.wantHit); eval.calls.Load() != int64(want) {
				t.Errorf("after repeating both questions: evaluations = %d, want %d", eval.calls.Load(), want)
			}
			wantLen := 1
			if !tc.timeIndependent {
				wantLen = 1 + 2 - btoi(tc.wantHit) // the note and each second's decision
			}
			if cache.Len() != wantLen {
				t.Errorf("cache holds %d entries, want %d", cache.Len(), wantLen)
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestCacheKeyedByPolicyVersion(t *testing.T) {
	t.Parallel()
	v1 := &fakeEvaluator{version: "v1", d: decision.Decision{State: decision.Allow, ReasonCode: reason.Allowed, TimeIndependent: true}}
	v2 := &fakeEvaluator{version: "v2", d: decision.Decision{State: decision.Deny, ReasonCode: reason.RoleNotPermitted, TimeIndependent: true}}
	router := &switchRouter{}
	router.set(v1)
	cache := newCache(t, 100)
	f := newFixture(t, decision.Options{Router: router, Cache: cache})

	if d := f.svc.Decide(t.Context(), valid()); d.State != decision.Allow || d.PolicyVersion != "v1" {
		t.Fatalf("v1 decided %s by %s", d.State, d.PolicyVersion)
	}
	// No purge: the version in the key alone keeps v1's answer from v2's requests.
	router.set(v2)
	if d := f.svc.Decide(t.Context(), valid()); d.State != decision.Deny || d.PolicyVersion != "v2" {
		t.Fatalf("after the switch: %s by %s, want deny by v2", d.State, d.PolicyVersion)
	}
	if cache.Len() != 2 {
		t.Errorf("cache holds %d decisions, want 2", cache.Len())
	}
	cache.Purge()
	if cache.Len() != 0 {
		t.Errorf("cache holds %d decisions after Purge", cache.Len())
	}
}

func TestCacheSkipsIndeterminate(t *testing.T) {
	t.Parallel()
	eval := &fakeEvaluator{block: true}
	f := newFixture(t, decision.Options{Router: decision.Fixed{Evaluator: eval}, Cache: newCache(t, 100), Timeout: time.Millisecond})
	for range 2 {
		if d := f.svc.Decide(t.Context(), valid()); d.ReasonCode != reason.EvaluationError {
			t.Fatalf("reason = %s, want evaluation_error", d.ReasonCode)
		}
	}
	if eval.calls.Load() != 2 {
		t.Errorf("evaluations = %d, want 2: a failed evaluation must not be cached", eval.calls.Load())
	}
}

func TestNewCacheRejectsSize(t *testing.T) {
	t.Parallel()
	if _, err := decision.NewCache(0); err == nil {
		t.Error("NewCache(0) succeeded")
	}
}

// switchRouter selects whichever evaluator was set last.
type switchRouter struct {
	mu   sync.Mutex
	eval decision.Evaluator
}

func (s *switchRouter) set(e decision.Evaluator) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.eval = e
}

func (s *switchRouter) Select(decision.Principal) decision.Selection {
	s.mu.Lock()
	defer s.mu.Unlock()
	return decision.Selection{Decider: s.eval}
}

// rolloutRouter always selects a decider and another evaluator.
type rolloutRouter struct{ sel decision.Selection }

func (r rolloutRouter) Select(decision.Principal) decision.Selection { return r.sel }

// recordingShadower takes jobs (or refuses them all).
type recordingShadower struct {
	refuse bool
	mu     sync.Mutex
	jobs   []decision.ShadowJob
}

func (s *recordingShadower) Submit(job decision.ShadowJob) bool {
	if s.refuse {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jobs = append(s.jobs, job)
	return true
}

func TestDecideHandsRolloutsToTheShadower(t *testing.T) {
	t.Parallel()
	// Each subtest gets its own evaluators: they count their calls.
	evaluators := func() (active, candidate *fakeEvaluator) {
		return &fakeEvaluator{version: "v1", d: decision.Decision{State: decision.Allow, ReasonCode: reason.Allowed}},
			&fakeEvaluator{version: "v2", d: decision.Decision{State: decision.Deny, ReasonCode: reason.RoleNotPermitted}}
	}

	t.Run("shadow job carries the audit event", func(t *testing.T) {
		t.Parallel()
		active, candidate := evaluators()
		sh := &recordingShadower{}
		f := newFixture(t, decision.Options{Router: rolloutRouter{decision.Selection{Decider: active, Other: candidate}}, Shadower: sh})
		d := f.svc.Decide(t.Context(), valid())
		if d.State != decision.Allow || d.PolicyVersion != "v1" {
			t.Errorf("decided %s by %s, want allow by the active v1", d.State, d.PolicyVersion)
		}
		if candidate.calls.Load() != 0 {
			t.Error("the candidate ran on the caller's path")
		}
		if len(sh.jobs) != 1 || sh.jobs[0].Event.EventID != d.ID || sh.jobs[0].Selection.Other != candidate || sh.jobs[0].Request.Action != "invoice:read" {
			t.Fatalf("shadow jobs = %+v, want one for decision %s", sh.jobs, d.ID)
		}
		if n := len(f.events(t)); n != 0 {
			t.Errorf("service recorded %d events itself; the shadower records them", n)
		}
	})
	t.Run("canary: the candidate decides and says so", func(t *testing.T) {
		t.Parallel()
		active, candidate := evaluators()
		sh := &recordingShadower{}
		f := newFixture(t, decision.Options{Router: rolloutRouter{decision.Selection{Decider: candidate, Other: active, DeciderIsCandidate: true}}, Shadower: sh})
		d := f.svc.Decide(t.Context(), valid())
		if d.State != decision.Deny || d.PolicyVersion != "v2" || sh.jobs[0].Event.PolicyVersion != "v2" {
			t.Errorf("decided %s by %s, want deny by the candidate v2", d.State, d.PolicyVersion)
		}
	})
	t.Run("a full shadow queue loses no audit event", func(t *testing.T) {
		t.Parallel()
		active, candidate := evaluators()
		f := newFixture(t, decision.Options{Router: rolloutRouter{decision.Selection{Decider: active, Other: candidate}}, Shadower: &recordingShadower{refuse: true}})
		d := f.svc.Decide(t.Context(), valid())
		events := f.events(t)
		if len(events) != 1 || events[0].EventID != d.ID || events[0].Shadow != nil {
			t.Errorf("events = %+v, want decision %s without a shadow result", events, d.ID)
		}
	})
	t.Run("invalid input is not shadowed", func(t *testing.T) {
		t.Parallel()
		active, candidate := evaluators()
		sh := &recordingShadower{}
		f := newFixture(t, decision.Options{Router: rolloutRouter{decision.Selection{Decider: active, Other: candidate}}, Shadower: sh})
		f.svc.Decide(t.Context(), decision.Request{})
		if len(sh.jobs) != 0 || len(f.events(t)) != 1 {
			t.Errorf("jobs %d, events %d; want 0 and 1", len(sh.jobs), len(f.events(t)))
		}
	})
}

// TestEvaluateFailsClosed: the helper the shadower uses turns every
// failure into evaluation_error.
func TestEvaluateFailsClosed(t *testing.T) {
	t.Parallel()
	d, err := decision.Evaluate(context.Background(), &fakeEvaluator{block: true}, valid(), time.Millisecond)
	if err == nil || d.State != decision.Indeterminate || d.ReasonCode != reason.EvaluationError || d.PolicyVersion != "v-test" {
		t.Errorf("Evaluate = %+v, %v; want indeterminate evaluation_error", d, err)
	}
}

// skippingEvaluator is a TimeReadSkipper whose decisions depend on the
// time; it counts how it was asked.
type skippingEvaluator struct {
	fakeEvaluator
	skipped atomic.Int64
}

func (s *skippingEvaluator) EvaluateWithoutTimeReads(ctx context.Context, req decision.Request) (decision.Decision, error) {
	s.skipped.Add(1)
	return s.Evaluate(ctx, req)
}

// TestCacheSkipsTimeReadsOnceKnown: a question is evaluated with the
// finding-out once; in later seconds, the cache knowing its decision
// depends on the time, without.
func TestCacheSkipsTimeReadsOnceKnown(t *testing.T) {
	t.Parallel()
	eval := &skippingEvaluator{fakeEvaluator: fakeEvaluator{d: decision.Decision{State: decision.Allow, ReasonCode: reason.Allowed}}}
	f := newFixture(t, decision.Options{Router: decision.Fixed{Evaluator: eval}, Cache: newCache(t, 100)})
	at := time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC)
	for i := range 3 {
		r := valid()
		r.Context.Time = at.Add(time.Duration(i) * time.Second)
		f.svc.Decide(t.Context(), r)
	}
	if all, skipped := eval.calls.Load(), eval.skipped.Load(); all != 3 || skipped != 2 {
		t.Errorf("evaluations %d, %d of them without the finding-out; want 3 and 2", all, skipped)
	}
	// A different question starts over.
	r := valid()
	r.Principal.Subject = "alice"
	f.svc.Decide(t.Context(), r)
	if eval.skipped.Load() != 2 {
		t.Error("a first question was evaluated without finding out")
	}
}
