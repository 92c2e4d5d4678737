package decisionrpc_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/services/pdp/internal/decision"
	"github.com/gatehouse/gatehouse/services/pdp/internal/decisionrpc"
)

// recorder answers with a fixed decision and keeps the request it got.
type recorder struct {
	answer decision.Decision
	got    decision.Request
}

func (r *recorder) Decide(_ context.Context, req decision.Request) decision.Decision {
	r.got = req
	return r.answer
}

func TestCheckTranslatesRequest(t *testing.T) {
	t.Parallel()
	authTime := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	reqTime := authTime.Add(time.Minute)
	rec := &recorder{answer: decision.Decision{State: decision.Allow}}
	msg := &authzv1.CheckRequest{
		Principal: &authzv1.Principal{
			Subject: "sam", Tenant: "acme", ClientId: "support-console", Acr: "mfa",
			Roles: []string{"support_agent"}, Scopes: []string{"support:read"},
			AuthTime:   timestamppb.New(authTime),
			ActorChain: []*authzv1.Actor{{Subject: "sam", ClientId: "support-console"}},
		},
		Action: "invoice:read",
		Resource: &authzv1.Resource{Type: "invoice", Id: "inv-1", Tenant: "acme", Attributes: map[string]*authzv1.AttributeValue{
			"s": {Kind: &authzv1.AttributeValue_StringValue{StringValue: "x"}},
			"i": {Kind: &authzv1.AttributeValue_IntValue{IntValue: 7}},
			"b": {Kind: &authzv1.AttributeValue_BoolValue{BoolValue: true}},
			"d": {Kind: &authzv1.AttributeValue_DoubleValue{DoubleValue: 1.5}},
			"n": {},
		}},
		Context: &authzv1.RequestContext{RequestId: "req-1", Time: timestamppb.New(reqTime), SourceIp: "192.0.2.1"},
	}
	if _, err := decisionrpc.NewHandler(rec).Check(t.Context(), connect.NewRequest(msg)); err != nil {
		t.Fatalf("Check: %v", err)
	}
	want := decision.Request{
		Principal: decision.Principal{
			Subject: "sam", Tenant: "acme", ClientID: "support-console", ACR: "mfa",
			Roles: []string{"support_agent"}, Scopes: []string{"support:read"},
			AuthTime:   authTime,
			ActorChain: []decision.Actor{{Subject: "sam", ClientID: "support-console"}},
		},
		Action: "invoice:read",
		Resource: decision.Resource{Type: "invoice", ID: "inv-1", Tenant: "acme", Attributes: map[string]any{
			"s": "x", "i": int64(7), "b": true, "d": 1.5, "n": nil,
		}},
		Context: decision.RequestContext{RequestID: "req-1", Time: reqTime, SourceIP: "192.0.2.1"},
	}
	if !reflect.DeepEqual(rec.got, want) {
		t.Errorf("decided\n%+v\nwant\n%+v", rec.got, want)
	}
}

func TestCheckTranslatesDecision(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   decision.Decision
		want *authzv1.CheckResponse
	}{
		{"allow", decision.Decision{State: decision.Allow, ReasonCode: "allowed", PolicyVersion: "v1", ID: "id1"},
			&authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_ALLOW, ReasonCode: "allowed", PolicyVersion: "v1", DecisionId: "id1"}},
		{"deny with scopes", decision.Decision{State: decision.Deny, ReasonCode: "insufficient_scope", Message: "m", RequiredScopes: []string{"invoice:write"}},
			&authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_DENY, ReasonCode: "insufficient_scope", Message: "m", RequiredScopes: []string{"invoice:write"}}},
		{"obligations", decision.Decision{State: decision.Deny, ReasonCode: "x", Obligations: []decision.Obligation{{Type: "step_up", Params: map[string]string{"acr": "mfa"}}}},
			&authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_DENY, ReasonCode: "x", Obligations: []*authzv1.Obligation{{Type: "step_up", Params: map[string]string{"acr": "mfa"}}}}},
		{"not applicable", decision.Decision{State: decision.NotApplicable, ReasonCode: "no_applicable_policy"},
			&authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_NOT_APPLICABLE, ReasonCode: "no_applicable_policy"}},
		{"indeterminate", decision.Decision{State: decision.Indeterminate, ReasonCode: "evaluation_error"},
			&authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_INDETERMINATE, ReasonCode: "evaluation_error"}},
		{"unspecified never permits", decision.Decision{},
			&authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_INDETERMINATE}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp, err := decisionrpc.NewHandler(&recorder{answer: tc.in}).Check(t.Context(), connect.NewRequest(&authzv1.CheckRequest{}))
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if !proto.Equal(resp.Msg, tc.want) {
				t.Errorf("Check = %v, want %v", resp.Msg, tc.want)
			}
		})
	}
}
