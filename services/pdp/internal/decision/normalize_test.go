package decision_test

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/services/pdp/internal/decision"
)

// valid returns a request that Normalize accepts as is.
func valid() decision.Request {
	return decision.Request{
		Principal: decision.Principal{
			Subject: "bob", Tenant: "acme", ClientID: "invoice-web",
			Roles: []string{"billing_viewer"}, Scopes: []string{"invoice:read"},
		},
		Action:   "invoice:read",
		Resource: decision.Resource{Type: "invoice", ID: "inv-1", Tenant: "acme"},
	}
}

func TestNormalizeRejects(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", decision.MaxStringBytes+1)
	many := make([]string, decision.MaxItems+1)
	for i := range many {
		many[i] = "role_" + strings.Repeat("x", i)
	}
	tests := []struct {
		name   string
		mutate func(*decision.Request)
		want   error
		field  string
	}{
		{"no subject", func(r *decision.Request) { r.Principal.Subject = "" }, decision.ErrMissingAttribute, "principal.subject"},
		{"no tenant", func(r *decision.Request) { r.Principal.Tenant = "" }, decision.ErrMissingAttribute, "principal.tenant"},
		{"resource id without tenant", func(r *decision.Request) { r.Resource.Tenant = "" }, decision.ErrMissingAttribute, "resource.tenant"},
		{"no action", func(r *decision.Request) { r.Action = "" }, decision.ErrMissingAttribute, "action"},
		{"no resource type", func(r *decision.Request) { r.Resource.Type = "" }, decision.ErrMissingAttribute, "resource.type"},
		{"missing wins over malformed", func(r *decision.Request) { r.Principal.Subject = ""; r.Action = "bad" }, decision.ErrMissingAttribute, "principal.subject"},
		{"action without verb", func(r *decision.Request) { r.Action = "invoice" }, decision.ErrInvalidAttribute, "action"},
		{"action with empty verb", func(r *decision.Request) { r.Action = "invoice:" }, decision.ErrInvalidAttribute, "action"},
		{"action with two colons", func(r *decision.Request) { r.Action = "invoice:read:all" }, decision.ErrInvalidAttribute, "action"},
		{"action starting with digit", func(r *decision.Request) { r.Action = "1invoice:read" }, decision.ErrInvalidAttribute, "action"},
		{"action with space", func(r *decision.Request) { r.Action = "invoice: read" }, decision.ErrInvalidAttribute, "action"},
		{"action with Kelvin sign", func(r *decision.Request) { r.Action = "invoice:loc\u212A"; r.Resource.Type = "invoice" }, decision.ErrInvalidAttribute, "action"},
		{"type with Kelvin sign", func(r *decision.Request) { r.Action = "kiosk:read"; r.Resource.Type = "\u212Aiosk" }, decision.ErrInvalidAttribute, "resource.type"},
		{"action with wildcard", func(r *decision.Request) { r.Action = "invoice:*" }, decision.ErrInvalidAttribute, "action"},
		{"type differs from action prefix", func(r *decision.Request) { r.Resource.Type = "support" }, decision.ErrInvalidAttribute, "resource.type"},
		{"over-long subject", func(r *decision.Request) { r.Principal.Subject = long }, decision.ErrInvalidAttribute, "principal.subject"},
		{"over-long resource id", func(r *decision.Request) { r.Resource.ID = long }, decision.ErrInvalidAttribute, "resource.id"},
		{"control char in tenant", func(r *decision.Request) { r.Principal.Tenant = "acme\n" }, decision.ErrInvalidAttribute, "principal.tenant"},
		{"C1 control char in client id", func(r *decision.Request) { r.Principal.ClientID = "web\u0085" }, decision.ErrInvalidAttribute, "principal.client_id"},
		{"invalid UTF-8 in acr", func(r *decision.Request) { r.Principal.ACR = "\xff" }, decision.ErrInvalidAttribute, "principal.acr"},
		{"too many roles", func(r *decision.Request) { r.Principal.Roles = many }, decision.ErrInvalidAttribute, "principal.roles"},
		{"too many scopes", func(r *decision.Request) { r.Principal.Scopes = many }, decision.ErrInvalidAttribute, "principal.scopes"},
		{"empty role", func(r *decision.Request) { r.Principal.Roles = []string{"billing_viewer", ""} }, decision.ErrInvalidAttribute, "principal.roles[1]"},
		{"control char in role", func(r *decision.Request) { r.Principal.Roles = []string{"a\x00b"} }, decision.ErrInvalidAttribute, "principal.roles[0]"},
		{"scope with space", func(r *decision.Request) { r.Principal.Scopes = []string{"invoice:read openid"} }, decision.ErrInvalidAttribute, "principal.scopes[0]"},
		{"scope with quote", func(r *decision.Request) { r.Principal.Scopes = []string{`a"b`} }, decision.ErrInvalidAttribute, "principal.scopes[0]"},
		{"empty actor", func(r *decision.Request) { r.Principal.ActorChain = []decision.Actor{{}} }, decision.ErrInvalidAttribute, "principal.actor_chain[0]"},
		{"control char in actor", func(r *decision.Request) {
			r.Principal.ActorChain = []decision.Actor{{Subject: "sam\r"}}
		}, decision.ErrInvalidAttribute, "principal.actor_chain[0].subject"},
		{"bad source ip", func(r *decision.Request) { r.Context.SourceIP = "localhost" }, decision.ErrInvalidAttribute, "context.source_ip"},
		{"over-long request id", func(r *decision.Request) { r.Context.RequestID = long }, decision.ErrInvalidAttribute, "context.request_id"},
		{"attribute without value", func(r *decision.Request) { r.Resource.Attributes = map[string]any{"amount": nil} }, decision.ErrInvalidAttribute, "resource.attributes[amount]"},
		{"attribute of unsupported type", func(r *decision.Request) { r.Resource.Attributes = map[string]any{"amount": 5} }, decision.ErrInvalidAttribute, "resource.attributes[amount]"},
		{"NaN attribute", func(r *decision.Request) { r.Resource.Attributes = map[string]any{"rate": math.NaN()} }, decision.ErrInvalidAttribute, "resource.attributes[rate]"},
		{"over-long attribute", func(r *decision.Request) { r.Resource.Attributes = map[string]any{"note": long} }, decision.ErrInvalidAttribute, "resource.attributes[note]"},
		{"empty attribute key", func(r *decision.Request) { r.Resource.Attributes = map[string]any{"": "x"} }, decision.ErrInvalidAttribute, "resource.attributes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := valid()
			tc.mutate(&req)
			_, err := decision.Normalize(req)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Normalize error = %v, want %v", err, tc.want)
			}
			var ie *decision.InputError
			if !errors.As(err, &ie) || ie.Field != tc.field {
				t.Errorf("Normalize error = %#v, want an *InputError for field %q", err, tc.field)
			}
		})
	}
}

func TestNormalizeNeverEchoesValues(t *testing.T) {
	t.Parallel()
	req := valid()
	req.Principal.Subject = "secret-subject-\x07"
	_, err := decision.Normalize(req)
	if err == nil || strings.Contains(err.Error(), "secret-subject") {
		t.Errorf("Normalize error = %v, want an error that does not repeat the value", err)
	}
}

func TestNormalize(t *testing.T) {
	t.Parallel()
	in := valid()
	in.Action = "Invoice:READ"
	in.Resource.Type = "INVOICE"
	in.Resource.ID = ""
	in.Resource.Tenant = ""
	in.Principal.Roles = []string{"support_agent", "billing_viewer", "support_agent"}
	in.Principal.Scopes = []string{"openid", "invoice:read", "openid"}
	in.Resource.Attributes = map[string]any{"amount_cents": int64(1), "paid": true, "rate": 0.5, "currency": "EUR"}
	in.Context.SourceIP = "2001:db8::1"
	rolesBefore := append([]string(nil), in.Principal.Roles...)

	got, err := decision.Normalize(in)
	if err != nil {
		t.Fatalf("Normalize: %v", err)
	}
	want := in
	want.Action = "invoice:read"
	want.Resource.Type = "invoice"
	want.Resource.Tenant = "acme"
	want.Principal.Roles = []string{"billing_viewer", "support_agent"}
	want.Principal.Scopes = []string{"invoice:read", "openid"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Normalize =\n%+v\nwant\n%+v", got, want)
	}
	if !reflect.DeepEqual(in.Principal.Roles, rolesBefore) {
		t.Errorf("Normalize modified its input's roles: %v, was %v", in.Principal.Roles, rolesBefore)
	}
}

func TestNormalizeKeepsResourceTenant(t *testing.T) {
	t.Parallel()
	in := valid()
	in.Resource.Tenant = "globex"
	got, err := decision.Normalize(in)
	if err != nil {
		t.Fatalf("Normalize: %v", err)
	}
	if got.Resource.Tenant != "globex" {
		t.Errorf("Resource.Tenant = %q, want globex (only an empty tenant takes the principal's)", got.Resource.Tenant)
	}
}
