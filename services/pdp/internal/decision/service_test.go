package decision_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric/noop"

	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	"github.com/gatehouse/gatehouse/services/pdp/internal/decision"
)

// fakeEvaluator answers with a fixed decision or error, or blocks until its
// context is done.
type fakeEvaluator struct {
	d     decision.Decision
	err   error
	block bool
	got   decision.Request
}

func (f *fakeEvaluator) Evaluate(ctx context.Context, req decision.Request) (decision.Decision, error) {
	f.got = req
	if f.block {
		<-ctx.Done()
		return decision.Decision{}, ctx.Err()
	}
	return f.d, f.err
}

func (f *fakeEvaluator) PolicyVersion() string { return "v-test" }

func newService(t *testing.T, eval decision.Evaluator, logs *bytes.Buffer) *decision.Service {
	t.Helper()
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	svc, err := decision.NewService(eval, 20*time.Millisecond, logger, noop.NewMeterProvider().Meter("test"))
	if err != nil {
		t.Fatalf("NewService: %v", err)
	}
	return svc
}

var decisionID = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestDecide(t *testing.T) {
	t.Parallel()
	allow := decision.Decision{State: decision.Allow, ReasonCode: reason.Allowed, PolicyVersion: "v-test"}
	tests := []struct {
		name      string
		eval      *fakeEvaluator
		req       decision.Request
		wantState decision.State
		wantCode  string
	}{
		{"allow passes through", &fakeEvaluator{d: allow}, valid(), decision.Allow, reason.Allowed},
		{"deny passes through", &fakeEvaluator{d: decision.Decision{State: decision.Deny, ReasonCode: reason.TenantMismatch, PolicyVersion: "v-test"}}, valid(), decision.Deny, reason.TenantMismatch},
		{"missing input never reaches the policy", &fakeEvaluator{d: allow}, decision.Request{}, decision.Indeterminate, reason.MissingAttribute},
		{"invalid input never reaches the policy", &fakeEvaluator{d: allow}, func() decision.Request { r := valid(); r.Action = "invoice"; return r }(), decision.Indeterminate, reason.InvalidAttribute},
		{"evaluation error", &fakeEvaluator{err: errors.New("boom: policy source line 3")}, valid(), decision.Indeterminate, reason.EvaluationError},
		{"evaluation timeout", &fakeEvaluator{block: true}, valid(), decision.Indeterminate, reason.EvaluationError},
		{"evaluator returns no state", &fakeEvaluator{d: decision.Decision{ReasonCode: reason.Allowed}}, valid(), decision.Indeterminate, reason.EvaluationError},
		{"evaluator claims indeterminate", &fakeEvaluator{d: decision.Decision{State: decision.Indeterminate, ReasonCode: "x"}}, valid(), decision.Indeterminate, reason.EvaluationError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			d := newService(t, tc.eval, &logs).Decide(t.Context(), tc.req)
			if d.State != tc.wantState || d.ReasonCode != tc.wantCode {
				t.Errorf("Decide = %s %s, want %s %s", d.State, d.ReasonCode, tc.wantState, tc.wantCode)
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
			if !strings.Contains(logs.String(), `"decision_id":"`+d.ID+`"`) {
				t.Errorf("log does not mention decision %s:\n%s", d.ID, logs.String())
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
	newService(t, eval, &bytes.Buffer{}).Decide(t.Context(), req)
	if eval.got.Action != "invoice:read" || eval.got.Resource.Type != "invoice" || eval.got.Resource.Tenant != "acme" {
		t.Errorf("evaluated %+v, want the normalized request", eval.got)
	}
}

func TestDecideLogsOneLinePerDecision(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	svc := newService(t, &fakeEvaluator{d: decision.Decision{State: decision.Deny, ReasonCode: reason.RoleNotPermitted, PolicyVersion: "v-test"}}, &logs)
	d := svc.Decide(t.Context(), valid())

	var line map[string]any
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
		t.Fatalf("log is not one JSON line: %v\n%s", err, logs.String())
	}
	want := map[string]any{
		"msg": "decision", "decision_id": d.ID, "decision": "deny", "reason_code": reason.RoleNotPermitted,
		"policy_version": "v-test", "action": "invoice:read", "subject": "bob", "tenant": "acme",
	}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("log %s = %v, want %v", k, line[k], v)
		}
	}
	if _, ok := line["latency"]; !ok {
		t.Error("log has no latency")
	}
}

func TestDecideIDsAreUnique(t *testing.T) {
	t.Parallel()
	svc := newService(t, &fakeEvaluator{d: decision.Decision{State: decision.Allow, ReasonCode: reason.Allowed}}, &bytes.Buffer{})
	seen := map[string]bool{}
	for range 1000 {
		id := svc.Decide(t.Context(), valid()).ID
		if seen[id] {
			t.Fatalf("decision id %s repeated", id)
		}
		seen[id] = true
	}
}

func TestNewServiceRejectsZeroTimeout(t *testing.T) {
	t.Parallel()
	_, err := decision.NewService(&fakeEvaluator{}, 0, slog.New(slog.DiscardHandler), noop.NewMeterProvider().Meter("test"))
	if err == nil {
		t.Error("NewService with timeout 0 succeeded, want an error")
	}
}
