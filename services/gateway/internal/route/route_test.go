package route_test

import (
	"net/http"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
	"github.com/gatehouse/gatehouse/services/gateway/internal/route"
)

// TestDefaultCoversEveryProcedure fails when a service behind the gateway
// exposes an RPC that the route table does not cover, or when the table
// routes a procedure that no longer exists.
func TestDefaultCoversEveryProcedure(t *testing.T) {
	t.Parallel()
	table, err := route.NewTable(route.Default(), []string{route.UpstreamInvoice})
	if err != nil {
		t.Fatal(err)
	}
	files := []protoreflect.FileDescriptor{invoicev1.File_gatehouse_invoice_v1_invoice_proto}
	exposed := map[string]bool{}
	for _, f := range files {
		for i := range f.Services().Len() {
			svc := f.Services().Get(i)
			for j := range svc.Methods().Len() {
				m := svc.Methods().Get(j)
				path := "/" + string(svc.FullName()) + "/" + string(m.Name())
				exposed[path] = true
				r, ok := table.Lookup(path)
				if !ok {
					t.Errorf("procedure %s has no route: add it to route.Default", path)
					continue
				}
				if !r.Allows(http.MethodPost) {
					t.Errorf("route %s must accept POST", path)
				}
			}
		}
	}
	for _, p := range table.Paths() {
		if !exposed[p] {
			t.Errorf("route %s matches no exposed procedure", p)
		}
	}
}

func TestNewTableRejects(t *testing.T) {
	t.Parallel()
	ok := route.Route{Path: "/a.B/C", Methods: []string{http.MethodPost}, Action: "invoice:read", ResourceType: "invoice", Upstream: "invoice"}
	tests := []struct {
		name string
		edit func(*route.Route)
	}{
		{"relative path", func(r *route.Route) { r.Path = "a.B/C" }},
		{"bad action", func(r *route.Route) { r.Action = "Invoice Read" }},
		{"no resource type", func(r *route.Route) { r.ResourceType = "" }},
		{"unknown upstream", func(r *route.Route) { r.Upstream = "billing" }},
		{"no methods", func(r *route.Route) { r.Methods = nil }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := ok
			tc.edit(&r)
			if _, err := route.NewTable([]route.Route{r}, []string{"invoice"}); err == nil {
				t.Fatal("want error")
			}
		})
	}
	if _, err := route.NewTable([]route.Route{ok, ok}, []string{"invoice"}); err == nil {
		t.Fatal("duplicate route accepted")
	}
}
