package policy_test

import (
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/pdp/internal/bundle"
	"github.com/gatehouse/gatehouse/services/pdp/internal/bundle/bundletest"
	"github.com/gatehouse/gatehouse/services/pdp/internal/decision"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policy"
)

// timePolicy allows each action "t:<case>" through a helper rule that reads
// the request time in one way (or not at all), so each case shows one way
// an evaluation can depend on the time.
const timePolicy = `package gatehouse.main

allow := {"decision": "allow", "reason_code": "allowed"}

default decision := {"decision": "deny", "reason_code": "role_not_permitted"}

decision := allow if {
	startswith(input.action, "t:")
	cases[substring(input.action, 2, -1)]
}

cases["plain"] if input.principal.subject == "alice"

cases["other-context"] if input.context.source_ip != ""

cases["ref"] if time.parse_rfc3339_ns(input.context.time) > 0

cases["context"] if {
	c := input.context
	c.time != ""
}

cases["whole"] if {
	x := input
	x.principal.subject != ""
}

cases["key-variable"] if {
	some k
	input[k].time != ""
}

cases["now"] if time.now_ns() > 0

cases["function"] if stamped(input.context)

stamped(c) if c.time != ""

cases["head"] if stamp.at != ""

stamp := {"at": input.context.time}

cases["index"] if not at_noon

at_noon if input.context.time == "2026-11-26T12:00:00Z"

cases["late"] if {
	input.principal.subject == "bob"
	stamped_now
}

stamped_now if input.context.time != ""

cases["comprehension"] if count([t | t := input.context.time]) == 1

cases["else"] if stamp_else != ""

stamp_else := "never" if {
	input.principal.subject == "nobody"
} else := input.context.time
`

// TestEvaluateReportsTimeReads: a decision is time-independent exactly
// when its evaluation did nothing that could read the request time. (A
// rule set whose bodies read the time at their top level counts as read
// whenever it is looked up: OPA's rule index may select its rules by the
// time without evaluating them, as with at_noon.)
func TestEvaluateReportsTimeReads(t *testing.T) {
	t.Parallel()
	b := bundletest.Open(t, bundletest.WriteDir(t, map[string]string{
		".manifest":           `{"revision": "time.1", "roots": ["gatehouse"]}`,
		"gatehouse/main.rego": timePolicy,
	}))
	e, err := policy.Compile(t.Context(), b)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	at := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	tests := []struct {
		action, subject string
		wantIndependent bool
	}{
		{"t:plain", "alice", true},
		{"t:other-context", "alice", true},
		{"t:none", "alice", true}, // no case: the default decision
		{"t:ref", "alice", false},
		{"t:context", "alice", false},
		{"t:whole", "alice", false},
		{"t:key-variable", "alice", false},
		{"t:now", "alice", false},
		{"t:function", "alice", false},
		{"t:head", "alice", false},
		{"t:index", "alice", false},
		{"t:late", "alice", true}, // fails before it reaches the time
		{"t:late", "bob", false},
		{"t:comprehension", "alice", false},
		{"t:else", "alice", false},
	}
	for _, tc := range tests {
		t.Run(tc.action+"/"+tc.subject, func(t *testing.T) {
			t.Parallel()
			req := decision.Request{
				Principal: decision.Principal{Subject: tc.subject, Tenant: "acme", ClientID: "invoice-web"},
				Action:    tc.action,
				Resource:  decision.Resource{Type: "t", Tenant: "acme"},
				Context:   decision.RequestContext{Time: at, SourceIP: "192.0.2.1"},
			}
			d, err := e.Evaluate(t.Context(), req)
			if err != nil {
				t.Fatalf("Evaluate: %v", err)
			}
			if d.TimeIndependent != tc.wantIndependent {
				t.Errorf("TimeIndependent = %v, want %v (decision %s/%s)", d.TimeIndependent, tc.wantIndependent, d.State, d.ReasonCode)
			}
			// Without the finding-out: the same decision, no claim.
			skipped, err := e.EvaluateWithoutTimeReads(t.Context(), req)
			if err != nil {
				t.Fatalf("EvaluateWithoutTimeReads: %v", err)
			}
			if skipped.State != d.State || skipped.ReasonCode != d.ReasonCode || skipped.TimeIndependent {
				t.Errorf("EvaluateWithoutTimeReads = %s/%s independent %v, want %s/%s and no claim",
					skipped.State, skipped.ReasonCode, skipped.TimeIndependent, d.State, d.ReasonCode)
			}
		})
	}
}

// TestBundleWithoutTimeReadsIsTimeIndependent: when nothing in a bundle
// can read the time, every decision is independent of it.
func TestBundleWithoutTimeReadsIsTimeIndependent(t *testing.T) {
	t.Parallel()
	e, err := policy.Compile(t.Context(), bundletest.Policy(t, "timeless.1", `{"decision": "allow", "reason_code": "allowed"}`))
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	d, err := e.Evaluate(t.Context(), request("invoice:read"))
	if err != nil {
		t.Fatalf("Evaluate: %v", err)
	}
	if d.State != decision.Allow || !d.TimeIndependent {
		t.Errorf("Evaluate = %+v, want a time-independent allow", d)
	}
}

// TestWithoutTimeReadsClaimsNothing: an engine compiled WithoutTimeReads
// calls no decision independent of the time, not even one that is.
func TestWithoutTimeReadsClaimsNothing(t *testing.T) {
	t.Parallel()
	for _, b := range []*bundle.Bundle{
		bundletest.Policy(t, "timeless.1", `{"decision": "allow", "reason_code": "allowed"}`),
		bundletest.Open(t, policyDir),
	} {
		e, err := policy.Compile(t.Context(), b, policy.WithoutTimeReads())
		if err != nil {
			t.Fatalf("Compile: %v", err)
		}
		d, err := e.Evaluate(t.Context(), request("invoice:read"))
		if err != nil {
			t.Fatalf("Evaluate: %v", err)
		}
		if d.TimeIndependent {
			t.Errorf("%s: Evaluate = %+v, want no claim of time independence", b.Revision, d)
		}
	}
}
