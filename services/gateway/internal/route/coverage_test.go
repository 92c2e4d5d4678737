package route_test

import (
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	// Every generated package of proto/gen registers its services here;
	// TestEveryGeneratedPackageIsImported fails when one is missing.
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
	revocationv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1"
	supportv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/support/v1"

	"github.com/gatehouse/gatehouse/services/gateway/internal/route"
)

// genRoot is the generated code of every Gatehouse API.
const genRoot = "../../../../proto/gen/gatehouse"

// imported names one descriptor of each generated package this file imports.
var imported = []protoreflect.FileDescriptor{
	authzv1.File_gatehouse_authz_v1_decision_proto,
	invoicev1.File_gatehouse_invoice_v1_invoice_proto,
	revocationv1.File_gatehouse_revocation_v1_revocation_proto,
	supportv1.File_gatehouse_support_v1_support_proto,
}

// gatehouseServices returns every service of every Gatehouse proto package
// linked into this test.
func gatehouseServices() []protoreflect.ServiceDescriptor {
	var services []protoreflect.ServiceDescriptor
	protoregistry.GlobalFiles.RangeFiles(func(f protoreflect.FileDescriptor) bool {
		if strings.HasPrefix(string(f.Package()), "gatehouse.") {
			for i := range f.Services().Len() {
				services = append(services, f.Services().Get(i))
			}
		}
		return true
	})
	return services
}

// TestEveryGeneratedPackageIsImported fails when proto/gen gains a package
// (a new service such as support) that this file does not import: its RPCs
// would escape TestDefaultCoversEveryProcedure.
func TestEveryGeneratedPackageIsImported(t *testing.T) {
	t.Parallel()
	dirs, err := filepath.Glob(filepath.Join(genRoot, "*", "*", "*.pb.go"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no generated code under %s (%v)", genRoot, err)
	}
	linked := map[string]bool{}
	for _, f := range imported {
		linked[string(f.Package())] = true
	}
	protoregistry.GlobalFiles.RangeFiles(func(f protoreflect.FileDescriptor) bool {
		linked[string(f.Package())] = true
		return true
	})
	for _, file := range dirs {
		rel, _ := filepath.Rel(genRoot, filepath.Dir(file))
		pkg := "gatehouse." + strings.ReplaceAll(filepath.ToSlash(rel), "/", ".")
		if !linked[pkg] {
			t.Errorf("proto/gen/gatehouse/%s (package %s) is not imported by coverage_test.go: import it so its RPCs are checked", rel, pkg)
		}
	}
}

// TestDefaultCoversEveryProcedure fails when a Gatehouse service exposes an
// RPC that the built-in route table neither routes nor lists as not
// exposed, or when the table routes a procedure that does not exist.
func TestDefaultCoversEveryProcedure(t *testing.T) {
	t.Parallel()
	table, err := route.Default(route.Upstreams())
	if err != nil {
		t.Fatal(err)
	}
	notExposed := map[string]bool{}
	for _, n := range table.NotExposed() {
		notExposed[n.Service] = true
	}
	services := gatehouseServices()
	if len(services) < len(imported) {
		t.Fatalf("found %d services, want at least %d", len(services), len(imported))
	}
	procedures := map[string]protoreflect.MethodDescriptor{}
	knownServices := map[string]bool{}
	for _, svc := range services {
		name := string(svc.FullName())
		knownServices[name] = true
		for j := range svc.Methods().Len() {
			m := svc.Methods().Get(j)
			path := "/" + name + "/" + string(m.Name())
			procedures[path] = m
			r, routed := table.Lookup(path)
			switch {
			case notExposed[name] && routed:
				t.Errorf("%s is routed, but its service is listed as not exposed", path)
			case notExposed[name]:
			case !routed:
				t.Errorf("procedure %s has no route: add it to internal/route/routes.json (or list %s under not_exposed)", path, name)
			case !r.Allows(http.MethodPost):
				t.Errorf("route %s must accept POST", path)
			case r.Allows(http.MethodGet) && !noSideEffects(m):
				t.Errorf("route %s accepts GET, but the procedure is not marked idempotency_level = NO_SIDE_EFFECTS", path)
			case r.Allows(http.MethodGet) && !r.ReadOnly:
				t.Errorf("route %s accepts GET but is not read_only", path)
			}
		}
	}
	for n := range notExposed {
		if !knownServices[n] {
			t.Errorf("not_exposed lists %s, which no generated package defines", n)
		}
	}
	for _, r := range table.Routes() {
		if _, ok := procedures[r.Path]; !ok {
			t.Errorf("route %s matches no procedure of any Gatehouse service", r.Path)
		}
	}
}

func noSideEffects(m protoreflect.MethodDescriptor) bool {
	opts, ok := m.Options().(*descriptorpb.MethodOptions)
	return ok && opts.GetIdempotencyLevel() == descriptorpb.MethodOptions_NO_SIDE_EFFECTS
}

// TestDefaultRiskClasses pins what the built-in table says about risk:
// approving or writing is never low-risk, and only read-only routes are.
func TestDefaultRiskClasses(t *testing.T) {
	t.Parallel()
	table, err := route.Default(route.Upstreams())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range table.Routes() {
		verb := r.Action[strings.IndexByte(r.Action, ':')+1:]
		if r.Risk == route.RiskLow && (!r.ReadOnly || verb != "read") {
			t.Errorf("route %s is low-risk but not a read-only read", r.Path)
		}
		if slices.Contains([]string{"approve", "impersonate"}, verb) && r.Risk != route.RiskSensitive {
			t.Errorf("route %s (%s) must be sensitive", r.Path, r.Action)
		}
	}
}
