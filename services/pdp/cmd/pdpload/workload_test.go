package main

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/proto"

	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/services/pdp/internal/decision"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policy"
)

// repo is the repository root, seen from this package.
const repo = "../../../.."

// drawnAt is when the tests' workloads are drawn.
var drawnAt = time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC)

func testSource() bundleSource {
	return bundleSource{
		Dir:     repo + "/policies",
		KeyFile: repo + "/deploy/policy-signing/demo.pub.pem",
		KeyID:   "gatehouse-demo",
	}
}

func TestGenerateIsSeededDistinctAndValid(t *testing.T) {
	t.Parallel()
	a, err := generate(7, 500, drawnAt)
	if err != nil {
		t.Fatal(err)
	}
	again, err := generate(7, 500, drawnAt)
	if err != nil {
		t.Fatal(err)
	}
	other, err := generate(8, 500, drawnAt)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, again) {
		t.Error("the same seed drew different requests")
	}
	if reflect.DeepEqual(a, other) {
		t.Error("different seeds drew the same requests")
	}
	seen := map[string]bool{}
	for i, req := range a {
		if _, err := decision.Normalize(req); err != nil {
			t.Errorf("request %d is invalid: %v", i, err)
		}
		raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(toProto(req))
		if err != nil {
			t.Fatal(err)
		}
		if seen[string(raw)] {
			t.Errorf("request %d is a duplicate", i)
		}
		seen[string(raw)] = true
		if req.Context.RequestID != "" || !req.Context.Time.IsZero() {
			t.Errorf("request %d carries a request id or time; the sender stamps those", i)
		}
		if at := req.Principal.AuthTime; !at.IsZero() {
			if age := drawnAt.Sub(at); age < 0 || age > freshAge && age < staleAge {
				t.Errorf("request %d: signed in %v before the workload was drawn; want fresh (< %v) or stale (> %v)", i, age, freshAge, staleAge)
			}
		}
	}
}

func TestGenerateRefusesEmptyWorkload(t *testing.T) {
	t.Parallel()
	if _, err := generate(1, 0, drawnAt); err == nil {
		t.Error("generate(1, 0, drawnAt) succeeded")
	}
}

func TestToProtoCarriesEveryField(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	req := decision.Request{
		Principal: decision.Principal{
			Subject: "sam", Tenant: "acme", Roles: []string{"support_agent"}, Scopes: []string{"support:read"},
			ClientID: "support-console", ACR: "mfa", AuthTime: at,
			ActorChain: []decision.Actor{{Subject: "agent-1", ClientID: "support-console"}},
		},
		Action: "invoice:read",
		Resource: decision.Resource{Type: "invoice", ID: "inv-1", Tenant: "acme", Attributes: map[string]any{
			"s": "x", "i": int64(3), "b": true, "f": 1.5,
		}},
		Context: decision.RequestContext{RequestID: "req-1", Time: at, SourceIP: "10.0.0.1"},
	}
	m := toProto(req)
	p := m.GetPrincipal()
	if p.GetSubject() != "sam" || p.GetTenant() != "acme" || p.GetClientId() != "support-console" || p.GetAcr() != "mfa" ||
		!p.GetAuthTime().AsTime().Equal(at) || len(p.GetActorChain()) != 1 || p.GetActorChain()[0].GetSubject() != "agent-1" ||
		!reflect.DeepEqual(p.GetRoles(), req.Principal.Roles) || !reflect.DeepEqual(p.GetScopes(), req.Principal.Scopes) {
		t.Errorf("principal = %v", p)
	}
	r := m.GetResource()
	attrs := r.GetAttributes()
	if r.GetType() != "invoice" || r.GetId() != "inv-1" || r.GetTenant() != "acme" || len(attrs) != 4 ||
		attrs["s"].GetStringValue() != "x" || attrs["i"].GetIntValue() != 3 || !attrs["b"].GetBoolValue() || attrs["f"].GetDoubleValue() != 1.5 {
		t.Errorf("resource = %v", r)
	}
	c := m.GetContext()
	if m.GetAction() != "invoice:read" || c.GetRequestId() != "req-1" || c.GetSourceIp() != "10.0.0.1" || !c.GetTime().AsTime().Equal(at) {
		t.Errorf("request = %v", m)
	}
}

func TestWorkloadMixesDecisions(t *testing.T) {
	t.Parallel()
	wl, err := newWorkload(t.Context(), testSource(), 1, 1000, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if wl.revision == "" || len(wl.items) != 1000 {
		t.Fatalf("revision %q, %d items", wl.revision, len(wl.items))
	}
	count := map[authzv1.Decision]int{}
	for _, it := range wl.items {
		count[it.want.Decision]++
	}
	if count[authzv1.Decision_DECISION_INDETERMINATE] != 0 {
		t.Errorf("%d inputs are INDETERMINATE: the workload must be valid input", count[authzv1.Decision_DECISION_INDETERMINATE])
	}
	for _, d := range []authzv1.Decision{authzv1.Decision_DECISION_ALLOW, authzv1.Decision_DECISION_DENY, authzv1.Decision_DECISION_NOT_APPLICABLE} {
		if count[d] < 50 {
			t.Errorf("only %d of 1000 inputs are %s; want a mix", count[d], d)
		}
	}
}

// TestOPABodyIsWhatThePolicySees: OPA gets the very input document the
// PDP's policy evaluates (normalized, request id withheld, time to the
// second).
func TestOPABodyIsWhatThePolicySees(t *testing.T) {
	t.Parallel()
	reqs, err := generate(3, 50, drawnAt)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 26, 1, 2, 3, 456789000, time.FixedZone("CET", 3600))
	for i, req := range reqs {
		norm, err := decision.Normalize(req)
		if err != nil {
			t.Fatal(err)
		}
		prefix, suffix, err := opaBody(norm)
		if err != nil {
			t.Fatal(err)
		}
		it := item{opaPrefix: prefix, opaSuffix: suffix}
		var got struct{ Input any }
		if err := json.Unmarshal(it.appendOPABody(nil, now), &got); err != nil {
			t.Fatalf("request %d: body is not JSON: %v", i, err)
		}

		seen := norm
		seen.Context.RequestID = ""
		seen.Context.Time = now.Truncate(time.Second)
		want, err := ast.JSON(policy.Input(seen))
		if err != nil {
			t.Fatal(err)
		}
		var wantJSON any
		raw, _ := json.Marshal(want)
		if err := json.Unmarshal(raw, &wantJSON); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Input, wantJSON) {
			t.Errorf("request %d: OPA input\n%v\nwant\n%v", i, got.Input, wantJSON)
		}
	}
	var probe struct {
		Input struct{ Context struct{ Time string } }
	}
	prefix, suffix, _ := opaBody(decision.Request{})
	if err := json.Unmarshal((&item{opaPrefix: prefix, opaSuffix: suffix}).appendOPABody(nil, now), &probe); err != nil {
		t.Fatal(err)
	}
	if probe.Input.Context.Time != "2026-11-26T00:02:03Z" {
		t.Errorf("context time = %q, want UTC to the second", probe.Input.Context.Time)
	}
}

func TestAnswerOfOPA(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		body    string
		want    answer
		wantErr bool
	}{
		{"allow", `{"result":{"decision":"allow","reason_code":"allowed","message":"","required_scopes":[],"obligations":[]}}`,
			answer{Decision: authzv1.Decision_DECISION_ALLOW, ReasonCode: "allowed"}, false},
		{"deny with scopes and obligations", `{"result":{"decision":"deny","reason_code":"insufficient_scope","message":"m","required_scopes":["invoice:write"],
			"obligations":[{"type":"step_up","params":{"max_age":"300","acr":"mfa"}}]}}`,
			answer{Decision: authzv1.Decision_DECISION_DENY, ReasonCode: "insufficient_scope", Message: "m",
				RequiredScopes: []string{"invoice:write"}, Obligations: []string{"step_up acr=mfa max_age=300"}}, false},
		{"not applicable", `{"result":{"decision":"not_applicable","reason_code":"no_applicable_policy"}}`,
			answer{Decision: authzv1.Decision_DECISION_NOT_APPLICABLE, ReasonCode: "no_applicable_policy"}, false},
		{"unknown decision", `{"result":{"decision":"maybe","reason_code":"x"}}`,
			answer{Decision: authzv1.Decision_DECISION_UNSPECIFIED, ReasonCode: "x"}, false},
		{"undefined rule", `{}`, answer{}, true},
		{"not JSON", `<html>`, answer{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := answerOfOPA([]byte(tc.body))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if !got.equal(tc.want) {
				t.Errorf("answer = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestAnswerEqual(t *testing.T) {
	t.Parallel()
	base := answer{Decision: authzv1.Decision_DECISION_DENY, ReasonCode: "insufficient_scope", RequiredScopes: []string{"a"}}
	tests := []struct {
		name  string
		other answer
		want  bool
	}{
		{"same", base, true},
		{"empty lists equal nil lists", answer{Decision: base.Decision, ReasonCode: base.ReasonCode, RequiredScopes: []string{"a"}, Obligations: []string{}}, true},
		{"other decision", answer{Decision: authzv1.Decision_DECISION_ALLOW, ReasonCode: base.ReasonCode, RequiredScopes: []string{"a"}}, false},
		{"other reason", answer{Decision: base.Decision, ReasonCode: "tenant_mismatch", RequiredScopes: []string{"a"}}, false},
		{"other message", answer{Decision: base.Decision, ReasonCode: base.ReasonCode, Message: "x", RequiredScopes: []string{"a"}}, false},
		{"other scopes", answer{Decision: base.Decision, ReasonCode: base.ReasonCode}, false},
		{"an obligation more", answer{Decision: base.Decision, ReasonCode: base.ReasonCode, RequiredScopes: []string{"a"}, Obligations: []string{"step_up"}}, false},
	}
	for _, tc := range tests {
		if got := base.equal(tc.other); got != tc.want {
			t.Errorf("%s: equal = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestCheckRequestStampsTheCall(t *testing.T) {
	t.Parallel()
	wl, err := newWorkload(t.Context(), testSource(), 1, 10, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC)
	it := &wl.items[0]
	m := it.checkRequest("req-9", at)
	if m.GetContext().GetRequestId() != "req-9" || !m.GetContext().GetTime().AsTime().Equal(at) || m.GetContext().GetSourceIp() != it.sourceIP {
		t.Errorf("context = %v", m.GetContext())
	}
	if m.GetPrincipal() != it.principal || m.GetResource() != it.resource {
		t.Error("principal and resource are not the item's shared messages")
	}
	if !bytes.Contains(it.appendOPABody(nil, at), []byte(`"request_id":""`)) {
		t.Error("OPA's input carries a request id; the PDP withholds it from policies")
	}
}
