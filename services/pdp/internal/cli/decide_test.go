package cli_test

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/services/pdp/internal/cli"
)

func str(s string) *authzv1.AttributeValue {
	return &authzv1.AttributeValue{Kind: &authzv1.AttributeValue_StringValue{StringValue: s}}
}

func integer(i int64) *authzv1.AttributeValue {
	return &authzv1.AttributeValue{Kind: &authzv1.AttributeValue_IntValue{IntValue: i}}
}

func boolean(b bool) *authzv1.AttributeValue {
	return &authzv1.AttributeValue{Kind: &authzv1.AttributeValue_BoolValue{BoolValue: b}}
}

func TestDecideRequest(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	res := run(t, h.env(nil), "decide",
		"-subject", "bob", "-tenant", "acme", "-roles", "billing_viewer, billing_approver,", "-scopes", "invoice:read  invoice:approve",
		"-client-id", "invoice-web", "-acr", "urn:gatehouse:acr:mfa",
		"-action", "invoice:approve", "-resource", "invoice/inv-1001/v2", "-resource-tenant", "acme",
		"-attr", "amount=1200", "-attr", "negative=-5", "-attr", "huge=99999999999999999999",
		"-attr", "zip=007", "-attr", "plus=+5", "-attr", "approved=true", "-attr", "draft=false",
		"-attr", "shouty=TRUE", "-attr", "note=a=b", "-attr", "empty=", "-attr", "ratio=1.5")
	if res.code != cli.ExitOK {
		t.Fatalf("exit %d; stderr:\n%s", res.code, res.stderr)
	}
	want := &authzv1.CheckRequest{
		Principal: &authzv1.Principal{
			Subject: "bob", Tenant: "acme", Roles: []string{"billing_viewer", "billing_approver"},
			Scopes: []string{"invoice:read", "invoice:approve"}, ClientId: "invoice-web", Acr: "urn:gatehouse:acr:mfa",
		},
		Action: "invoice:approve",
		Resource: &authzv1.Resource{
			Type: "invoice", Id: "inv-1001/v2", Tenant: "acme",
			Attributes: map[string]*authzv1.AttributeValue{
				"amount":   integer(1200),
				"negative": integer(-5),
				"huge":     str("99999999999999999999"),
				"zip":      str("007"),
				"plus":     str("+5"),
				"approved": boolean(true),
				"draft":    boolean(false),
				"shouty":   str("TRUE"),
				"note":     str("a=b"),
				"empty":    str(""),
				"ratio":    str("1.5"),
			},
		},
	}
	got := request[*authzv1.CheckRequest](t, h.pdp, "Check")
	if !proto.Equal(got, want) {
		t.Errorf("CheckRequest:\n%v\nwant:\n%v", got, want)
	}
	if auth := h.pdp.authHeaders(); !slices.Equal(auth, []string{""}) {
		t.Errorf("Check sent Authorization %q, want none", auth)
	}
	if len(h.issuer.received()) != 0 {
		t.Error("decide fetched a token; Check needs none")
	}
}

func TestDecideCollection(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	res := run(t, h.env(nil), "decide", "-subject", "reporting-job", "-tenant", "acme", "-action", "invoice:read", "-resource", "invoice")
	if res.code != cli.ExitOK {
		t.Fatalf("exit %d; stderr:\n%s", res.code, res.stderr)
	}
	got := request[*authzv1.CheckRequest](t, h.pdp, "Check")
	want := &authzv1.CheckRequest{
		Principal: &authzv1.Principal{Subject: "reporting-job", Tenant: "acme"},
		Action:    "invoice:read",
		Resource:  &authzv1.Resource{Type: "invoice"},
	}
	if !proto.Equal(got, want) {
		t.Errorf("CheckRequest = %v, want %v", got, want)
	}
}

func TestDecideOutput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		answer     *authzv1.CheckResponse
		wantCode   int
		wantStdout string
	}{
		{
			name: "allow",
			answer: &authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_ALLOW, ReasonCode: "allowed",
				PolicyVersion: "r1", DecisionId: "dec-1"},
			wantCode: cli.ExitOK,
			wantStdout: `decision         ALLOW
reason_code      allowed
policy_version   r1
decision_id      dec-1
obligations      -
required_scopes  -
`,
		},
		{
			name: "deny for a missing scope",
			answer: &authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_DENY, ReasonCode: "insufficient_scope",
				Message: "the token lacks invoice:write", PolicyVersion: "r1", DecisionId: "dec-2", RequiredScopes: []string{"invoice:write", "invoice:admin"}},
			wantCode: cli.ExitNotAllowed,
			wantStdout: `decision         DENY
reason_code      insufficient_scope
message          the token lacks invoice:write
policy_version   r1
decision_id      dec-2
obligations      -
required_scopes  invoice:write invoice:admin
`,
		},
		{
			name: "step up",
			answer: &authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_DENY, ReasonCode: "step_up_required",
				PolicyVersion: "r1", DecisionId: "dec-3", Obligations: []*authzv1.Obligation{
					{Type: "step_up", Params: map[string]string{"max_age": "300", "acr": "mfa"}},
					{Type: "notify"},
				}},
			wantCode: cli.ExitNotAllowed,
			wantStdout: `decision         DENY
reason_code      step_up_required
policy_version   r1
decision_id      dec-3
obligation       step_up acr=mfa max_age=300
obligation       notify
required_scopes  -
`,
		},
		{
			name:     "not applicable",
			answer:   &authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_NOT_APPLICABLE, ReasonCode: "no_applicable_policy", PolicyVersion: "r1", DecisionId: "dec-4"},
			wantCode: cli.ExitNotAllowed,
		},
		{
			name:     "indeterminate",
			answer:   &authzv1.CheckResponse{Decision: authzv1.Decision_DECISION_INDETERMINATE, ReasonCode: "missing_attribute", DecisionId: "dec-5"},
			wantCode: cli.ExitNotAllowed,
		},
		{
			name:     "unspecified fails closed",
			answer:   &authzv1.CheckResponse{},
			wantCode: cli.ExitNotAllowed,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.pdp.check = tc.answer
			res := run(t, h.env(nil), "decide", "-subject", "bob", "-tenant", "acme", "-action", "invoice:write", "-resource", "invoice/inv-1", "-resource-tenant", "acme")
			if res.code != tc.wantCode {
				t.Errorf("exit %d, want %d; stderr:\n%s", res.code, tc.wantCode, res.stderr)
			}
			if tc.wantStdout != "" && res.stdout != tc.wantStdout {
				t.Errorf("stdout:\n%s\nwant:\n%s", res.stdout, tc.wantStdout)
			}
			if res.stderr != "" {
				t.Errorf("stderr = %q, want nothing: a decision is a result, not an error", res.stderr)
			}
		})
	}
}
