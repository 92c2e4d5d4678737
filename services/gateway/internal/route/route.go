// Package route maps what a client asks for (a Connect procedure path) to
// what it means for authorization: the action, the resource type, and the
// upstream that serves it. Anything not in the table is denied.
package route

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
)

// Route is one entry of the route table.
type Route struct {
	// Path is the exact request path, e.g. "/gatehouse.invoice.v1.InvoiceService/GetInvoice".
	Path string
	// Methods are the HTTP methods accepted (POST; GET too for
	// side-effect-free procedures, which Connect allows over GET).
	Methods []string
	// Action is the PDP action, "<resource_type>:<verb>".
	Action string
	// ResourceType is the type of the resource the action applies to.
	ResourceType string
	// Upstream names the service that serves the route.
	Upstream string
}

var actionPattern = regexp.MustCompile(`^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*$`)

// Table is an immutable set of routes keyed by exact path.
type Table struct {
	routes map[string]Route
}

// NewTable validates routes and builds a table. upstreams lists the names
// of the upstreams that exist; a route naming another is an error.
func NewTable(routes []Route, upstreams []string) (*Table, error) {
	t := &Table{routes: make(map[string]Route, len(routes))}
	for _, r := range routes {
		switch {
		case r.Path == "" || r.Path[0] != '/':
			return nil, fmt.Errorf("route %q: path must start with /", r.Path)
		case !actionPattern.MatchString(r.Action):
			return nil, fmt.Errorf("route %s: action %q is not <type>:<verb>", r.Path, r.Action)
		case r.ResourceType == "":
			return nil, fmt.Errorf("route %s: resource type is required", r.Path)
		case !slices.Contains(upstreams, r.Upstream):
			return nil, fmt.Errorf("route %s: unknown upstream %q", r.Path, r.Upstream)
		case len(r.Methods) == 0:
			return nil, fmt.Errorf("route %s: no methods", r.Path)
		}
		if _, dup := t.routes[r.Path]; dup {
			return nil, fmt.Errorf("route %s: defined twice", r.Path)
		}
		t.routes[r.Path] = r
	}
	return t, nil
}

// Lookup returns the route for an exact path.
func (t *Table) Lookup(path string) (Route, bool) {
	r, ok := t.routes[path]
	return r, ok
}

// Allows reports whether the route accepts method.
func (r Route) Allows(method string) bool { return slices.Contains(r.Methods, method) }

// Paths returns every configured path.
func (t *Table) Paths() []string {
	paths := make([]string, 0, len(t.routes))
	for p := range t.routes {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	return paths
}

// Upstream names.
const (
	UpstreamInvoice = "invoice"
)

const invoiceService = "/gatehouse.invoice.v1.InvoiceService/"

// Default is Gatehouse's route table. The route-table test fails when a
// service exposes a procedure this table does not cover.
func Default() []Route {
	read := []string{http.MethodPost, http.MethodGet}
	write := []string{http.MethodPost}
	return []Route{
		{Path: invoiceService + "CreateInvoice", Methods: write, Action: "invoice:write", ResourceType: "invoice", Upstream: UpstreamInvoice},
		{Path: invoiceService + "GetInvoice", Methods: read, Action: "invoice:read", ResourceType: "invoice", Upstream: UpstreamInvoice},
		{Path: invoiceService + "ListInvoices", Methods: read, Action: "invoice:read", ResourceType: "invoice", Upstream: UpstreamInvoice},
	}
}
