package route_test

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/services/gateway/internal/route"
)

var upstreams = []string{"invoice"}

// doc returns a valid one-route document with route fields replaced by
// edits (each a "key": value fragment that replaces the key's line).
func doc(routeBody string, extra string) string {
	return `{"routes": [` + routeBody + `]` + extra + `}`
}

const validRoute = `{
  "path": "/a.v1.B/C",
  "methods": ["POST"],
  "action": "invoice:read",
  "resource": {"type": "invoice", "id_from": "none"},
  "upstream": "invoice",
  "risk": "standard",
  "read_only": false
}`

func withField(key, value string) string {
	lines := strings.Split(validRoute, "\n")
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), `"`+key+`"`) {
			comma := ","
			if !strings.HasSuffix(l, ",") {
				comma = ""
			}
			if value == "" {
				lines[i] = ""
				if comma == "" { // the last field: drop the previous comma
					lines[i-1] = strings.TrimSuffix(lines[i-1], ",")
				}
				continue
			}
			lines[i] = `  "` + key + `": ` + value + comma
		}
	}
	return strings.Join(lines, "\n")
}

func TestParseValid(t *testing.T) {
	t.Parallel()
	table, err := route.Parse([]byte(doc(validRoute, `, "not_exposed": [{"service": "x.v1.Y", "why": "internal"}]`)), upstreams)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := table.Lookup("/a.v1.B/C")
	want := route.Route{Path: "/a.v1.B/C", Methods: []string{http.MethodPost}, Action: "invoice:read",
		Resource: route.Resource{Type: "invoice", IDFrom: route.IDFromNone}, Upstream: "invoice", Risk: route.RiskStandard}
	if !ok || r.Path != want.Path || r.Action != want.Action || r.Resource != want.Resource || r.Upstream != want.Upstream ||
		r.Risk != want.Risk || r.ReadOnly || !r.Allows(http.MethodPost) || r.Allows(http.MethodGet) {
		t.Fatalf("got %+v, want %+v", r, want)
	}
	if _, ok := table.Lookup("/a.v1.B/D"); ok {
		t.Fatal("an unconfigured path was found")
	}
	if n := table.NotExposed(); len(n) != 1 || n[0].Service != "x.v1.Y" {
		t.Fatalf("not exposed: %v", n)
	}
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		doc  string
	}{
		{"empty document", ``},
		{"not an object", `[]`},
		{"no routes", `{"routes": []}`},
		{"routes missing", `{"not_exposed": []}`},
		{"unknown top-level key", doc(validRoute, `, "default": "allow"`)},
		{"unknown route key", doc(strings.Replace(validRoute, `"risk"`, `"allow_all": true, "risk"`, 1), "")},
		{"unknown resource key", doc(withField("resource", `{"type": "invoice", "id_from": "none", "owner": "x"}`), "")},
		{"key in another case", doc(strings.Replace(validRoute, `"path"`, `"Path"`, 1), "")},
		{"duplicate key", doc(strings.Replace(validRoute, `"risk": "standard"`, `"risk": "standard", "risk": "low"`, 1), "")},
		{"duplicate top-level key", `{"routes": [` + validRoute + `], "routes": [` + validRoute + `]}`},
		{"trailing data", doc(validRoute, "") + ` {}`},
		{"relative path", doc(withField("path", `"a.v1.B/C"`), "")},
		{"path with dot segment", doc(withField("path", `"/a.v1.B/../C"`), "")},
		{"path with query", doc(withField("path", `"/a.v1.B/C?x=1"`), "")},
		{"path with percent escape", doc(withField("path", `"/a.v1.B/%43"`), "")},
		{"path with trailing slash", doc(withField("path", `"/a.v1.B/C/"`), "")},
		{"missing path", doc(withField("path", ""), "")},
		{"no methods", doc(withField("methods", `[]`), "")},
		{"missing methods", doc(withField("methods", ""), "")},
		{"unknown method", doc(withField("methods", `["POST", "TRACE"]`), "")},
		{"lower-case method", doc(withField("methods", `["post"]`), "")},
		{"duplicate method", doc(withField("methods", `["POST", "POST"]`), "")},
		{"GET on a route that is not read-only", doc(withField("methods", `["POST", "GET"]`), "")},
		{"bad action", doc(withField("action", `"Invoice Read"`), "")},
		{"action without verb", doc(withField("action", `"invoice"`), "")},
		{"missing resource", doc(withField("resource", ""), "")},
		{"resource type not the action's prefix", doc(withField("resource", `{"type": "ticket", "id_from": "none"}`), "")},
		{"empty resource type", doc(withField("resource", `{"type": "", "id_from": "none"}`), "")},
		{"id from a body field", doc(withField("resource", `{"type": "invoice", "id_from": "invoice_id"}`), "")},
		{"missing id_from", doc(withField("resource", `{"type": "invoice"}`), "")},
		{"unknown upstream", doc(withField("upstream", `"billing"`), "")},
		{"missing upstream", doc(withField("upstream", ""), "")},
		{"unknown risk", doc(withField("risk", `"critical"`), "")},
		{"missing risk", doc(withField("risk", ""), "")},
		{"missing read_only", doc(withField("read_only", ""), "")},
		{"read_only not a bool", doc(withField("read_only", `"yes"`), "")},
		{"duplicate route", `{"routes": [` + validRoute + `,` + validRoute + `]}`},
		{"not_exposed bad name", doc(validRoute, `, "not_exposed": [{"service": "DecisionService", "why": "x"}]`)},
		{"not_exposed without why", doc(validRoute, `, "not_exposed": [{"service": "x.v1.Y", "why": " "}]`)},
		{"not_exposed twice", doc(validRoute, `, "not_exposed": [{"service": "x.v1.Y", "why": "a"}, {"service": "x.v1.Y", "why": "b"}]`)},
		{"not_exposed but routed", doc(validRoute, `, "not_exposed": [{"service": "a.v1.B", "why": "a"}]`)},
		{"too large", doc(validRoute, "") + strings.Repeat(" ", route.MaxDocumentBytes)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := route.Parse([]byte(tc.doc), upstreams); !errors.Is(err, route.ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid for\n%s", err, tc.doc)
			}
		})
	}
}

// TestParseAcceptsEveryRiskAndReadOnlyGET guards the rejection table: the
// same document with valid variations must pass, so each rejection above is
// about the one thing it changes.
func TestParseAcceptsVariations(t *testing.T) {
	t.Parallel()
	for _, d := range []string{
		doc(withField("risk", `"low"`), ""),
		doc(withField("risk", `"sensitive"`), ""),
		doc(strings.Replace(withField("methods", `["POST", "GET"]`), `"read_only": false`, `"read_only": true`, 1), ""),
		doc(withField("methods", `["PUT", "DELETE", "PATCH"]`), ""),
		doc(withField("path", `"/api/v1/invoices"`), ""),
		doc(validRoute, `, "not_exposed": []`),
	} {
		if _, err := route.Parse([]byte(d), upstreams); err != nil {
			t.Errorf("%v for\n%s", err, d)
		}
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	builtin, err := route.Load("", route.Upstreams())
	if err != nil || len(builtin.Routes()) == 0 {
		t.Fatalf("built-in table: %v", err)
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "routes.json")
	if err := os.WriteFile(good, []byte(doc(validRoute, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	table, err := route.Load(good, upstreams)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := table.Lookup("/gatehouse.invoice.v1.InvoiceService/ListInvoices"); ok {
		t.Fatal("a file table must replace the built-in one, not extend it")
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"routes": [{"path": "/x"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := route.Load(bad, upstreams); !errors.Is(err, route.ErrInvalid) {
		t.Fatalf("invalid file: got %v", err)
	}
	if _, err := route.Load(filepath.Join(dir, "missing.json"), upstreams); err == nil {
		t.Fatal("a missing file was accepted")
	}
	if _, err := route.Default(nil); err == nil {
		t.Fatal("the built-in table names the invoice upstream; without it, it must be refused")
	}
}

func TestRouteClasses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		risk                  route.Risk
		readOnly              bool
		wantSensitive, wantSA bool
	}{
		{route.RiskLow, true, false, true},
		{route.RiskLow, false, false, false},
		{route.RiskStandard, true, false, false},
		{route.RiskSensitive, true, true, false},
		{route.RiskSensitive, false, true, false},
	}
	for _, tc := range tests {
		r := route.Route{Risk: tc.risk, ReadOnly: tc.readOnly}
		if r.Sensitive() != tc.wantSensitive || r.StaleAllowEligible() != tc.wantSA {
			t.Errorf("%s read_only=%v: sensitive=%v stale-allow=%v, want %v %v", tc.risk, tc.readOnly, r.Sensitive(), r.StaleAllowEligible(), tc.wantSensitive, tc.wantSA)
		}
	}
}
