package rollout_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/libs/audit"
	auditmemory "github.com/gatehouse/gatehouse/libs/audit/memory"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	"github.com/gatehouse/gatehouse/services/pdp/internal/decision"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policystore"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policystore/memory"
	"github.com/gatehouse/gatehouse/services/pdp/internal/rollout"
)

// job is a decided request as the Service submits it: id, decided by
// sel.Decider with d.
func job(id string, sel decision.Selection, d decision.Decision) decision.ShadowJob {
	d.ID = id
	d.PolicyVersion = sel.Decider.PolicyVersion()
	req := decision.Request{
		Principal: decision.Principal{Subject: "alice", Tenant: "acme"},
		Action:    "invoice:approve",
		Resource:  decision.Resource{Type: "invoice", ID: "inv_1", Tenant: "acme"},
	}
	return decision.ShadowJob{
		Request:   req,
		Decision:  d,
		Selection: sel,
		Event: audit.Event{
			EventID: id, Type: audit.TypeDecision, Subject: "alice", Tenant: "acme",
			Action: req.Action, Resource: "invoice/inv_1", Decision: decision.StateName(d.State),
			ReasonCode: d.ReasonCode, PolicyVersion: d.PolicyVersion,
		},
	}
}

type shadowEnv struct {
	store  *memory.Store
	events *auditmemory.Store
	met    *metrics
	s      *rollout.Shadower
}

func newShadowEnv(t *testing.T, store policystore.Store, opts rollout.ShadowOptions) *shadowEnv {
	t.Helper()
	env := &shadowEnv{events: auditmemory.New(), met: newMetrics()}
	if store == nil {
		env.store = memory.New()
		putBundles(t, env.store, "active", "cand")
		store = env.store
	}
	opts.Meter = env.met.provider.Meter("test")
	s, err := rollout.NewShadower(store, audit.NewSyncEmitter(env.events), opts)
	if err != nil {
		t.Fatal(err)
	}
	env.s = s
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return env
}

func (env *shadowEnv) auditEvents(t *testing.T) map[string]audit.Event {
	t.Helper()
	evs, err := env.events.List(context.Background(), audit.Query{Limit: audit.MaxListLimit})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]audit.Event{}
	for _, e := range evs {
		byID[e.EventID] = e
	}
	return byID
}

func report(t *testing.T, store policystore.Store, active, candidate string) policystore.Report {
	t.Helper()
	r, err := store.Report(context.Background(), active, candidate, policystore.MaxSamplesPerGroup)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var (
	allow = decision.Decision{State: decision.Allow, ReasonCode: reason.Allowed}
	deny  = decision.Decision{State: decision.Deny, ReasonCode: reason.RoleNotPermitted}
)

func TestShadowerComparesAndAudits(t *testing.T) {
	t.Parallel()
	activeDenies := &fakeEval{version: "active", state: decision.Deny, reason: reason.RoleNotPermitted}
	candAllows := &fakeEval{version: "cand", state: decision.Allow, reason: reason.Allowed}
	candDenies := &fakeEval{version: "cand", state: decision.Deny, reason: reason.RoleNotPermitted}
	candFails := &fakeEval{version: "cand", err: errors.New("boom")}

	for _, tc := range []struct {
		name       string
		job        decision.ShadowJob
		transition string // "" when they agree
		reasons    [2]string
		shadow     audit.Shadow
	}{
		{
			name:       "shadow: candidate would allow what active denies",
			job:        job("d1", decision.Selection{Decider: activeDenies, Other: candAllows}, deny),
			transition: "deny->allow", reasons: [2]string{reason.RoleNotPermitted, reason.Allowed},
			shadow: audit.Shadow{Decision: "ALLOW", ReasonCode: reason.Allowed, PolicyVersion: "cand"},
		},
		{
			name:       "canary principal: the candidate decided allow, active would deny",
			job:        job("d2", decision.Selection{Decider: candAllows, Other: activeDenies, DeciderIsCandidate: true}, allow),
			transition: "deny->allow", reasons: [2]string{reason.RoleNotPermitted, reason.Allowed},
			shadow: audit.Shadow{Decision: "DENY", ReasonCode: reason.RoleNotPermitted, PolicyVersion: "active"},
		},
		{
			name:   "agreement",
			job:    job("d3", decision.Selection{Decider: activeDenies, Other: candDenies}, deny),
			shadow: audit.Shadow{Decision: "DENY", ReasonCode: reason.RoleNotPermitted, PolicyVersion: "cand"},
		},
		{
			name:       "candidate fails: indeterminate",
			job:        job("d4", decision.Selection{Decider: activeDenies, Other: candFails}, deny),
			transition: "deny->indeterminate", reasons: [2]string{reason.RoleNotPermitted, reason.EvaluationError},
			shadow: audit.Shadow{Decision: "INDETERMINATE", ReasonCode: reason.EvaluationError, PolicyVersion: "cand"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := newShadowEnv(t, nil, rollout.ShadowOptions{})
			if !env.s.Submit(tc.job) {
				t.Fatal("Submit refused the job")
			}
			if err := env.s.Close(context.Background()); err != nil {
				t.Fatal(err)
			}

			ev, ok := env.auditEvents(t)[tc.job.Decision.ID]
			if !ok {
				t.Fatal("audit event not recorded")
			}
			if ev.Shadow == nil || *ev.Shadow != tc.shadow {
				t.Errorf("event shadow = %+v, want %+v", ev.Shadow, tc.shadow)
			}
			if ev.Decision != tc.job.Event.Decision || ev.PolicyVersion != tc.job.Event.PolicyVersion {
				t.Errorf("event decision %s by %s, want the decider's %s by %s", ev.Decision, ev.PolicyVersion, tc.job.Event.Decision, tc.job.Event.PolicyVersion)
			}

			r := report(t, env.store, "active", "cand")
			wantAgreed, wantDiverged := int64(1), int64(0)
			if tc.transition != "" {
				wantAgreed, wantDiverged = 0, 1
			}
			if r.Compared != 1 || r.Agreed != wantAgreed || r.Dropped != 0 {
				t.Fatalf("report = %+v", r)
			}
			if got := env.met.sum(t, "gatehouse.pdp.shadow.evaluations", "agreement=diverged"); got != wantDiverged {
				t.Errorf("diverged evaluations counted: %d, want %d", got, wantDiverged)
			}
			if tc.transition == "" {
				return
			}
			g := r.Groups[0]
			if g.Transition != tc.transition || g.ActiveReason != tc.reasons[0] || g.CandidateReason != tc.reasons[1] {
				t.Errorf("group = %s %s/%s, want %s %s/%s", g.Transition, g.ActiveReason, g.CandidateReason, tc.transition, tc.reasons[0], tc.reasons[1])
			}
			if g.Loosens() != (tc.transition == "deny->allow") {
				t.Errorf("Loosens = %v", g.Loosens())
			}
			s := g.Samples[0]
			if s.DecisionID != tc.job.Decision.ID || s.Subject != "alice" || s.Tenant != "acme" ||
				s.Action != "invoice:approve" || s.Resource != "invoice/inv_1" || s.Time.IsZero() {
				t.Errorf("sample = %+v", s)
			}
		})
	}
}

func TestShadowerDropsWhenFull(t *testing.T) {
	t.Parallel()
	started := make(chan struct{}, 1)
	gate := make(chan struct{})
	active := &fakeEval{version: "active", state: decision.Deny, reason: reason.RoleNotPermitted}
	slow := &fakeEval{version: "cand", state: decision.Deny, reason: reason.RoleNotPermitted, started: started, gate: gate}
	env := newShadowEnv(t, nil, rollout.ShadowOptions{QueueSize: 1, Workers: 1, EvalTimeout: time.Minute})
	sel := decision.Selection{Decider: active, Other: slow}

	if !env.s.Submit(job("j1", sel, deny)) {
		t.Fatal("first job refused")
	}
	<-started // the worker holds j1; the queue is empty
	if !env.s.Submit(job("j2", sel, deny)) {
		t.Fatal("second job refused with room in the queue")
	}
	for _, id := range []string{"j3", "j4"} {
		if env.s.Submit(job(id, sel, deny)) {
			t.Fatalf("%s taken by a full queue", id)
		}
	}
	close(gate)
	if err := env.s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := report(t, env.store, "active", "cand")
	if r.Compared != 2 || r.Dropped != 2 {
		t.Errorf("report compared %d, dropped %d; want 2 and 2", r.Compared, r.Dropped)
	}
	if got := env.met.sum(t, "gatehouse.pdp.shadow.dropped"); got != 2 {
		t.Errorf("dropped counted: %d, want 2", got)
	}
	events := env.auditEvents(t)
	for _, id := range []string{"j1", "j2"} {
		if events[id].Shadow == nil {
			t.Errorf("%s: no shadow result in the audit event", id)
		}
	}
	for _, id := range []string{"j3", "j4"} {
		if _, ok := events[id]; ok {
			t.Errorf("%s recorded by the shadower; the caller records refused jobs", id)
		}
	}
	if env.s.Submit(job("j5", sel, deny)) {
		t.Error("Submit after Close took the job")
	}
}

func TestShadowerCloseDrainsTheQueue(t *testing.T) {
	t.Parallel()
	started := make(chan struct{}, 100)
	gate := make(chan struct{})
	active := &fakeEval{version: "active", state: decision.Allow, reason: reason.Allowed}
	cand := &fakeEval{version: "cand", state: decision.Allow, reason: reason.Allowed, started: started, gate: gate}
	env := newShadowEnv(t, nil, rollout.ShadowOptions{QueueSize: 1000, Workers: 1, EvalTimeout: time.Minute})
	sel := decision.Selection{Decider: active, Other: cand}
	const n = 50
	for i := range n {
		if !env.s.Submit(job(fmt.Sprintf("d%d", i), sel, allow)) {
			t.Fatalf("job %d refused", i)
		}
	}
	<-started // the worker holds d0; d1..d49 are queued

	closed := make(chan error, 1)
	go func() { closed <- env.s.Close(context.Background()) }()
	// Wait until Close has stopped taking jobs: then Submit refuses a job
	// although the queue has room.
	probe := decision.Selection{Decider: &fakeEval{version: "p1"}, Other: &fakeEval{version: "p2"}}
	for env.s.Submit(job("probe", probe, allow)) {
		runtime.Gosched()
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while jobs were queued", err)
	default:
	}
	close(gate)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	events := env.auditEvents(t)
	for i := range n {
		if e, ok := events[fmt.Sprintf("d%d", i)]; !ok || e.Shadow == nil {
			t.Fatalf("d%d: recorded %v, shadow %v; want recorded with a shadow result", i, ok, e.Shadow)
		}
	}
	if r := report(t, env.store, "active", "cand"); r.Compared != n || r.Agreed != n {
		t.Errorf("report compared %d, agreed %d; want %d", r.Compared, r.Agreed, n)
	}
}

func TestShadowerCloseGivesUpWhenContextEnds(t *testing.T) {
	t.Parallel()
	started := make(chan struct{}, 100)
	never := make(chan struct{})
	active := &fakeEval{version: "active", state: decision.Allow, reason: reason.Allowed}
	stuck := &fakeEval{version: "cand", started: started, gate: never}
	env := newShadowEnv(t, nil, rollout.ShadowOptions{Workers: 1, EvalTimeout: time.Minute})
	sel := decision.Selection{Decider: active, Other: stuck}
	for i := range 5 {
		if !env.s.Submit(job(fmt.Sprintf("d%d", i), sel, allow)) {
			t.Fatalf("job %d refused", i)
		}
	}
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := env.s.Close(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close = %v, want context.Canceled", err)
	}
	// Nothing was compared: the abandoned requests count as dropped, and
	// their decisions are still in the audit log, without a shadow result.
	if r := report(t, env.store, "active", "cand"); r.Compared != 0 || r.Dropped != 5 {
		t.Errorf("report compared %d, dropped %d; want 0 and 5", r.Compared, r.Dropped)
	}
	events := env.auditEvents(t)
	for i := range 5 {
		if e, ok := events[fmt.Sprintf("d%d", i)]; !ok || e.Shadow != nil {
			t.Errorf("d%d: recorded %v, shadow %v; want recorded without shadow", i, ok, e.Shadow)
		}
	}
}

// flakyStore fails RecordComparisons once, then signals every success.
type flakyStore struct {
	policystore.Store
	failed  atomic.Bool
	written chan int
}

func (s *flakyStore) RecordComparisons(ctx context.Context, active, candidate string, comps []policystore.Comparison, dropped int64) error {
	if !s.failed.Swap(true) {
		return errors.New("connection reset")
	}
	err := s.Store.RecordComparisons(ctx, active, candidate, comps, dropped)
	if err == nil {
		s.written <- len(comps)
	}
	return err
}

func TestShadowerRetriesFailedWrites(t *testing.T) {
	t.Parallel()
	mem := memory.New()
	putBundles(t, mem, "active", "cand")
	store := &flakyStore{Store: mem, written: make(chan int, 100)}
	env := newShadowEnv(t, store, rollout.ShadowOptions{FlushInterval: 5 * time.Millisecond, BatchSize: 1000})
	sel := decision.Selection{
		Decider: &fakeEval{version: "active", state: decision.Allow, reason: reason.Allowed},
		Other:   &fakeEval{version: "cand", state: decision.Deny, reason: reason.RoleNotPermitted},
	}
	const n = 3
	for i := range n {
		if !env.s.Submit(job(fmt.Sprintf("d%d", i), sel, allow)) {
			t.Fatal("job refused")
		}
	}
	for total := 0; total < n; {
		total += <-store.written
	}
	if r := report(t, mem, "active", "cand"); r.Compared != n || r.Groups[0].Transition != "allow->deny" {
		t.Errorf("report = %+v", r)
	}
	if got := env.met.sum(t, "gatehouse.pdp.shadow.flush.errors"); got != 1 {
		t.Errorf("flush errors counted: %d, want 1", got)
	}
}

func TestShadowerRefusesJobsWithoutOther(t *testing.T) {
	t.Parallel()
	env := newShadowEnv(t, nil, rollout.ShadowOptions{})
	if env.s.Submit(job("d", decision.Selection{Decider: &fakeEval{version: "active"}}, allow)) {
		t.Error("job without Other taken")
	}
}
