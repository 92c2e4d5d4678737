package decision_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/libs/audit"
	auditmemory "github.com/gatehouse/gatehouse/libs/audit/memory"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	"github.com/gatehouse/gatehouse/services/pdp/internal/decision"
)

// fakeEvaluator answers with a fixed decision or error, or blocks until its
// context is done. It counts its evaluations.
type fakeEvaluator struct {
	version string
	d       decision.Decision
	err     error
	block   bool

	mu    sync.Mutex
	got   decision.Request
	calls atomic.Int64
}

func (f *fakeEvaluator) Evaluate(ctx context.Context, req decision.Request) (decision.Decision, error) {
	f.calls.Add(1)
	f.mu.Lock()
	f.got = req
	f.mu.Unlock()
	if f.block {
		<-ctx.Done()
		return decision.Decision{}, ctx.Err()
	}
	d := f.d
	if d.PolicyVersion == "" {
		d.PolicyVersion = f.PolicyVersion()
	}
	return d, f.err
}

func (f *fakeEvaluator) PolicyVersion() string {
	if f.version == "" {
		return "v-test"
	}
	return f.version
}

func (f *fakeEvaluator) lastRequest() decision.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.got
}

type fixture struct {
	svc   *decision.Service
	audit *auditmemory.Store
	logs  *bytes.Buffer
}

func newFixture(t *testing.T, opts decision.Options) fixture {
	t.Helper()
	f := fixture{audit: auditmemory.New(), logs: &bytes.Buffer{}}
	opts.Audit = audit.NewSyncEmitter(f.audit)
	opts.Logger = slog.New(slog.NewJSONHandler(&lockedWriter{w: f.logs}, nil))
	if opts.Timeout == 0 {
		opts.Timeout = 20 * time.Millisecond
	}
	svc, err := decision.NewService(opts)
	if err != nil {
		t.Fatalf("NewService: %v", err)
	}
	f.svc = svc
	return f
}

func newService(t *testing.T, eval decision.Evaluator) fixture {
	t.Helper()
	return newFixture(t, decision.Options{Router: decision.Fixed{Evaluator: eval}})
}

// events returns the audit events recorded so far.
func (f fixture) events(t *testing.T) []audit.Event {
	t.Helper()
	events, err := f.audit.List(t.Context(), audit.Query{Limit: audit.MaxListLimit})
	if err != nil {
		t.Fatalf("audit list: %v", err)
	}
	return events
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

var decisionID = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestDecide(t *testing.T) {
	t.Parallel()
	allow := decision.Decision{State: decision.Allow, ReasonCode: reason.Allowed}
	tests := []struct {
		name      string
		eval      *fakeEvaluator
		req       decision.Request
		wantState decision.State
		wantCode  string
		wantEval  bool
	}{
		{"allow passes through", &fakeEvaluator{d: allow}, valid(), decision.Allow, reason.Allowed, true},
		{"deny passes through", &fakeEvaluator{d: decision.Decision{State: decision.Deny, ReasonCode: reason.TenantMismatch}}, valid(), decision.Deny, reason.TenantMismatch, true},
		{"not applicable passes through", &fakeEvaluator{d: decision.Decision{State: decision.NotApplicable, ReasonCode: reason.NoApplicablePolicy}}, valid(), decision.NotApplicable, reason.NoApplicablePolicy, true},
		{"missing input never reaches the policy", &fakeEvaluator{d: allow}, decision.Request{}, decision.Indeterminate, reason.MissingAttribute, false},
		{"invalid input never reaches the policy", &fakeEvaluator{d: allow}, func() decision.Request { r := valid(); r.Action = "invoice"; return r }(), decision.Indeterminate, reason.InvalidAttribute, false},
		{"evaluation error", &fakeEvaluator{err: errors.New("boom: policy source line 3")}, valid(), decision.Indeterminate, reason.EvaluationError, true},
		{"evaluation timeout", &fakeEvaluator{block: true}, valid(), decision.Indeterminate, reason.EvaluationError, true},
		{"evaluator returns no state", &fakeEvaluator{d: decision.Decision{ReasonCode: reason.Allowed}}, valid(), decision.Indeterminate, reason.EvaluationError, true},
		{"evaluator claims indeterminate", &fakeEvaluator{d: decision.Decision{State: decision.Indeterminate, ReasonCode: "x"}}, valid(), decision.Indeterminate, reason.EvaluationError, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newService(t, tc.eval)
			d := f.svc.Decide(t.Context(), tc.req)
			if d.State != tc.wantState || d.ReasonCode != tc.wantCode {
				t.Errorf("Decide = %s %s, want %s %s", d.State, d.ReasonCode, tc.wantState, tc.wantCode)
			}
			if got := tc.eval.calls.Load() > 0; got != tc.wantEval {
				t.Errorf("evaluated = %v, want %v", got, tc.wantEval)
			}
			if !decisionID.MatchString(d.ID) {
				t.Errorf("ID = %q, want 32 hex digits", d.ID)
			}
			if d.PolicyVersion != "v-test" {
				t.Errorf("PolicyVersion = %q, want v-test", d.PolicyVersion)
			}
			if d.State == decision.Indeterminate && d.Message == "" {
				t.Error("Indeterminate decision without a message")
			}
			if strings.Contains(d.Message, "boom") {
				t.Errorf("Message %q leaks the evaluation error", d.Message)
			}
			events := f.events(t)
			if len(events) != 1 || events[0].EventID != d.ID || events[0].Decision != decision.StateName(d.State) || events[0].ReasonCode != d.ReasonCode {
				t.Errorf("audit log = %+v, want one event for decision %s", events, d.ID)
			}
			if tc.wantCode == reason.EvaluationError && !strings.Contains(f.logs.String(), `"decision_id":"`+d.ID+`"`) {
				t.Errorf("log does not name the failed decision %s:\n%s", d.ID, f.logs.String())
			}
		})
	}
}

func TestDecideEvaluatesNormalizedRequest(t *testing.T) {
	t.Parallel()
	eval := &fakeEvaluator{d: decision.Decision{State: decision.Allow, ReasonCode: reason.Allowed}}
	req := valid()
	req.Action = "INVOICE:Read"
	req.Resource.Type = "Invoice"
	req.Resource.ID = ""
	req.Resource.Tenant = ""
	req.Context = decision.RequestContext{RequestID: "req-1", Time: time.Date(2026, 11, 26, 1, 2, 3, 456, time.UTC)}
	newService(t, eval).svc.Decide(t.Context(), req)
	got := eval.lastRequest()
	if got.Action != "invoice:read" || got.Resource.Type != "invoice" || got.Resource.Tenant != "acme" {
		t.Errorf("evaluated %+v, want the normalized request", got)
	}
	if got.Context.RequestID != "" {
		t.Errorf("policy saw request id %q; it must not (decisions are cached across requests)", got.Context.RequestID)
	}
	if want := time.Date(2026, 11, 26, 1, 2, 3, 0, time.UTC); !got.Context.Time.Equal(want) {
		t.Errorf("policy saw time %s, want %s (truncated to the second)", got.Context.Time, want)
	}
}

// TestDecisionLogEvent: every field DESIGN.md lists for a decision event.
func TestDecisionLogEvent(t *testing.T) {
	t.Parallel()
	f := newService(t, &fakeEvaluator{d: decision.Decision{State: decision.Deny, ReasonCode: reason.RoleNotPermitted}})
	req := valid()
	req.Principal.ActorChain = []decision.Actor{{Subject: "sam", ClientID: "support-console"}, {ClientID: "batch"}}
	req.Context.RequestID = "req-42"
	d := f.svc.Decide(t.Context(), req)

	events := f.events(t)
	if len(events) != 1 {
		t.Fatalf("audit events = %d, want 1", len(events))
	}
	e := events[0]
	want := audit.Event{
		EventID: d.ID, Type: audit.TypeDecision, Subject: "bob", ClientID: "invoice-web", Tenant: "acme",
		Action: "invoice:read", Resource: "invoice/inv-1", Decision: "DENY", ReasonCode: reason.RoleNotPermitted,
		PolicyVersion: "v-test", RequestID: "req-42",
	}
	if e.EventID != want.EventID || e.Type != want.Type || e.Subject != want.Subject || e.ClientID != want.ClientID ||
		e.Tenant != want.Tenant || e.Action != want.Action || e.Resource != want.Resource || e.Decision != want.Decision ||
		e.ReasonCode != want.ReasonCode || e.PolicyVersion != want.PolicyVersion || e.RequestID != want.RequestID {
		t.Errorf("event = %+v\nwant   %+v", e, want)
	}
	if strings.Join(e.ActorChain, ",") != "sam,batch" {
		t.Errorf("actor chain = %v, want [sam batch]", e.ActorChain)
	}
	if e.Latency <= 0 {
		t.Errorf("latency = %s, want > 0", e.Latency)
	}
	if e.Time.IsZero() || e.Time.After(time.Now()) {
		t.Errorf("time = %s, want when the decision began", e.Time)
	}
	if e.Shadow != nil {
		t.Errorf("shadow = %+v without a rollout", e.Shadow)
	}
}

// TestDecisionLogInvalidInput: garbage input is still audited, cut to size
// and without control characters, so it neither floods nor breaks the log.
func TestDecisionLogInvalidInput(t *testing.T) {
	t.Parallel()
	f := newService(t, &fakeEvaluator{})
	req := valid()
	req.Principal.Subject = strings.Repeat("x", 5000) + "\x00\n"
	req.Action = "bad\x01action"
	d := f.svc.Decide(t.Context(), req)
	if d.ReasonCode != reason.InvalidAttribute {
		t.Fatalf("reason = %s, want invalid_attribute", d.ReasonCode)
	}
	events := f.events(t)
	if len(events) != 1 {
		t.Fatalf("audit events = %d, want 1", len(events))
	}
	if len(events[0].Subject) != decision.MaxStringBytes || events[0].Action != "badaction" {
		t.Errorf("audited subject %d bytes, action %q; want %d bytes and badaction", len(events[0].Subject), events[0].Action, decision.MaxStringBytes)
	}
}

func TestDecideIDsAreUnique(t *testing.T) {
	t.Parallel()
	f := newService(t, &fakeEvaluator{d: decision.Decision{State: decision.Allow, ReasonCode: reason.Allowed}})
	seen := map[string]bool{}
	for range 1000 {
		id := f.svc.Decide(t.Context(), valid()).ID
		if seen[id] {
			t.Fatalf("decision id %s repeated", id)
		}
		seen[id] = true
	}
}

func TestNewServiceRequires(t *testing.T) {
	t.Parallel()
	router := decision.Fixed{Evaluator: &fakeEvaluator{}}
	emitter := audit.NewSyncEmitter(auditmemory.New())
	for name, opts := range map[string]decision.Options{
		"timeout": {Router: router, Audit: emitter},
		"router":  {Audit: emitter, Timeout: time.Second},
		"audit":   {Router: router, Timeout: time.Second},
	} {
		if _, err := decision.NewService(opts); err == nil {
			t.Errorf("NewService without %s succeeded, want an error", name)
		}
	}
}
