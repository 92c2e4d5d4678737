// Package route is the gateway's route table: for each procedure (a Connect
// procedure path or a plain HTTP path) what it means for authorization (the
// PDP action and resource), which upstream serves it and how risky it is.
// The table is a JSON document: the built-in one (routes.json) or an
// operator's file. Anything not in the table is denied.
package route

import (
	"bytes"
	_ "embed" // the built-in route table
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Risk is a route's risk class. It decides how the gateway fails when what
// it relies on is degraded: a sensitive route fails closed as soon as the
// revocation feed is stale; only a low-risk, read-only route may be served
// from a stale decision while the PDP is down (and only when the operator
// enabled it).
type Risk string

// Risk classes.
const (
	// RiskLow: reads whose disclosure for a few more seconds after a
	// permission change is tolerable.
	RiskLow Risk = "low"
	// RiskStandard: ordinary reads and writes.
	RiskStandard Risk = "standard"
	// RiskSensitive: actions that move money, grant access or otherwise
	// must never run on a possibly revoked token.
	RiskSensitive Risk = "sensitive"
)

// IDFromNone says the gateway does not know the resource id: it asks the
// PDP about the collection (resource type and the principal's tenant), and
// the service checks the resource itself. The gateway never parses request
// bodies, so it is the only way a resource id can be identified today.
const IDFromNone = "none"

// Resource says which resource a route's action applies to.
type Resource struct {
	// Type is the PDP resource type; it is the action's prefix.
	Type string `json:"type"`
	// IDFrom says where the resource id comes from: IDFromNone.
	IDFrom string `json:"id_from"`
}

// Route is one entry of the route table.
type Route struct {
	// Path is the exact request path, e.g. "/gatehouse.invoice.v1.InvoiceService/GetInvoice".
	Path string `json:"path"`
	// Methods are the HTTP methods accepted (POST; GET too for
	// side-effect-free procedures, which Connect allows over GET).
	Methods []string `json:"methods"`
	// Action is the PDP action, "<resource_type>:<verb>".
	Action string `json:"action"`
	// Resource is what the action applies to.
	Resource Resource `json:"resource"`
	// Upstream names the service that serves the route.
	Upstream string `json:"upstream"`
	// Risk is the route's risk class.
	Risk Risk `json:"risk"`
	// ReadOnly says the route changes nothing.
	ReadOnly bool `json:"read_only"`
}

// Allows reports whether the route accepts method.
func (r Route) Allows(method string) bool { return slices.Contains(r.Methods, method) }

// Sensitive reports whether the route must fail closed when revocation data
// is stale.
func (r Route) Sensitive() bool { return r.Risk == RiskSensitive }

// StaleAllowEligible reports whether the route may be served from a stale
// ALLOW while the PDP is unavailable: only read-only, low-risk routes.
func (r Route) StaleAllowEligible() bool { return r.ReadOnly && r.Risk == RiskLow }

// NotExposed is a service deliberately left out of the table: the gateway
// denies its procedures like any unconfigured path. Listing it records the
// decision, so that the coverage test can tell it from a forgotten one.
type NotExposed struct {
	// Service is the service's full protobuf name, e.g. "gatehouse.authz.v1.DecisionService".
	Service string `json:"service"`
	// Why says why it is not exposed.
	Why string `json:"why"`
}

// Table is an immutable, validated route table keyed by exact path.
type Table struct {
	routes     map[string]Route
	notExposed []NotExposed
}

// document is the JSON form of a table. Every field is required; read_only
// is a pointer so that its absence can be told from false.
type document struct {
	Routes     []wireRoute  `json:"routes"`
	NotExposed []NotExposed `json:"not_exposed"`
}

type wireRoute struct {
	Path     string    `json:"path"`
	Methods  []string  `json:"methods"`
	Action   string    `json:"action"`
	Resource *Resource `json:"resource"`
	Upstream string    `json:"upstream"`
	Risk     Risk      `json:"risk"`
	ReadOnly *bool     `json:"read_only"`
}

// MaxDocumentBytes bounds a route table document.
const MaxDocumentBytes = 1 << 20

//go:embed routes.json
var builtin []byte

// Default returns the built-in route table, validated against upstreams
// (the names of the upstreams that exist).
func Default(upstreams []string) (*Table, error) {
	t, err := Parse(builtin, upstreams)
	if err != nil {
		return nil, fmt.Errorf("built-in route table: %w", err)
	}
	return t, nil
}

// Load returns the table in file, or the built-in one when file is "".
func Load(file string, upstreams []string) (*Table, error) {
	if file == "" {
		return Default(upstreams)
	}
	f, err := os.Open(filepath.Clean(file))
	if err != nil {
		return nil, fmt.Errorf("route table: %w", err)
	}
	defer func() { _ = f.Close() }()
	data, err := io.ReadAll(io.LimitReader(f, MaxDocumentBytes+1))
	if err != nil {
		return nil, fmt.Errorf("route table %s: %w", file, err)
	}
	t, err := Parse(data, upstreams)
	if err != nil {
		return nil, fmt.Errorf("route table %s: %w", file, err)
	}
	return t, nil
}

// ErrInvalid wraps every reason a route table document is refused.
var ErrInvalid = errors.New("invalid route table")

// Parse decodes and validates a route table document. It is strict: unknown
// or duplicate keys, keys in another case, trailing data, a missing field
// and any value out of its domain are errors wrapping ErrInvalid.
func Parse(data []byte, upstreams []string) (*Table, error) {
	if len(data) > MaxDocumentBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalid, MaxDocumentBytes)
	}
	if err := checkKeys(data); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var doc document
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: data after the document", ErrInvalid)
	}
	t, err := build(doc, upstreams)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return t, nil
}

var (
	actionPattern   = regexp.MustCompile(`^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*$`)
	typePattern     = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	pathPattern     = regexp.MustCompile(`^/[A-Za-z0-9._~/-]{1,255}$`)
	servicePattern  = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*\.[A-Z][A-Za-z0-9]*$`)
	keyPattern      = regexp.MustCompile(`^[a-z][a-z_]*$`)
	knownMethods    = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}
	readOnlyMethods = []string{http.MethodGet, http.MethodHead}
	risks           = []Risk{RiskLow, RiskStandard, RiskSensitive}
)

const maxWhyBytes = 300

func build(doc document, upstreams []string) (*Table, error) {
	if len(doc.Routes) == 0 {
		return nil, errors.New(`"routes" is required and must not be empty`)
	}
	t := &Table{routes: make(map[string]Route, len(doc.Routes))}
	for i, w := range doc.Routes {
		r, err := w.route(upstreams)
		if err != nil {
			return nil, fmt.Errorf("routes[%d] %q: %w", i, w.Path, err)
		}
		if _, dup := t.routes[r.Path]; dup {
			return nil, fmt.Errorf("routes[%d] %q: defined twice", i, r.Path)
		}
		t.routes[r.Path] = r
	}
	seen := map[string]bool{}
	for i, n := range doc.NotExposed {
		switch {
		case !servicePattern.MatchString(n.Service):
			return nil, fmt.Errorf("not_exposed[%d]: service %q is not a full protobuf service name", i, n.Service)
		case strings.TrimSpace(n.Why) == "" || len(n.Why) > maxWhyBytes:
			return nil, fmt.Errorf("not_exposed[%d] %s: why must say why, in at most %d bytes", i, n.Service, maxWhyBytes)
		case seen[n.Service]:
			return nil, fmt.Errorf("not_exposed[%d] %s: listed twice", i, n.Service)
		}
		seen[n.Service] = true
		for p := range t.routes {
			if strings.HasPrefix(p, "/"+n.Service+"/") {
				return nil, fmt.Errorf("not_exposed[%d] %s: route %s exposes it", i, n.Service, p)
			}
		}
		t.notExposed = append(t.notExposed, n)
	}
	return t, nil
}

func (w wireRoute) route(upstreams []string) (Route, error) {
	switch {
	case !pathPattern.MatchString(w.Path) || path.Clean(w.Path) != w.Path:
		return Route{}, errors.New("path must be an absolute, clean path of letters, digits and ._~/- (at most 256 bytes)")
	case len(w.Methods) == 0:
		return Route{}, errors.New("methods is required")
	case !actionPattern.MatchString(w.Action):
		return Route{}, fmt.Errorf("action %q is not <resource_type>:<verb>", w.Action)
	case w.Resource == nil:
		return Route{}, errors.New("resource is required")
	case !typePattern.MatchString(w.Resource.Type):
		return Route{}, fmt.Errorf("resource type %q is not snake_case", w.Resource.Type)
	case !strings.HasPrefix(w.Action, w.Resource.Type+":"):
		return Route{}, fmt.Errorf("action %q does not apply to resource type %q (the PDP requires the type as the action's prefix)", w.Action, w.Resource.Type)
	case w.Resource.IDFrom != IDFromNone:
		return Route{}, fmt.Errorf("resource id_from %q: only %q is supported (the gateway does not parse request bodies; the service checks the resource itself)", w.Resource.IDFrom, IDFromNone)
	case !slices.Contains(upstreams, w.Upstream):
		return Route{}, fmt.Errorf("unknown upstream %q (known: %s)", w.Upstream, strings.Join(upstreams, ", "))
	case !slices.Contains(risks, w.Risk):
		return Route{}, fmt.Errorf("risk %q is not low, standard or sensitive", w.Risk)
	case w.ReadOnly == nil:
		return Route{}, errors.New("read_only is required")
	}
	for i, m := range w.Methods {
		switch {
		case !slices.Contains(knownMethods, m):
			return Route{}, fmt.Errorf("method %q is not one of %s", m, strings.Join(knownMethods, ", "))
		case slices.Contains(w.Methods[:i], m):
			return Route{}, fmt.Errorf("method %s listed twice", m)
		case slices.Contains(readOnlyMethods, m) && !*w.ReadOnly:
			return Route{}, fmt.Errorf("method %s is only for read_only routes (it must not change anything)", m)
		}
	}
	return Route{
		Path: w.Path, Methods: slices.Clone(w.Methods), Action: w.Action, Resource: *w.Resource,
		Upstream: w.Upstream, Risk: w.Risk, ReadOnly: *w.ReadOnly,
	}, nil
}

// checkKeys walks the document and refuses object keys that encoding/json
// would match loosely: duplicates (the last would silently win) and keys
// that are not lower snake_case (encoding/json matches field names
// case-insensitively, so "Path" would be taken for "path").
func checkKeys(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	var stack []*frame
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.wantKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				markValueDone(stack)
				continue
			}
			key, _ := tok.(string)
			if !keyPattern.MatchString(key) {
				return fmt.Errorf("key %q is not lower snake_case", key)
			}
			if top.keys[key] {
				return fmt.Errorf("key %q appears twice in one object", key)
			}
			top.keys[key] = true
			top.wantKey = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, keys: map[string]bool{}, wantKey: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
			markValueDone(stack)
		default:
			markValueDone(stack)
		}
	}
}

// frame is an open object or array of the document checkKeys walks.
type frame struct {
	object bool
	keys   map[string]bool
	// wantKey: in an object, the next token is a key (or the end).
	wantKey bool
}

// markValueDone records that the value of the innermost object's current
// key is complete, so the next token is a key again.
func markValueDone(stack []*frame) {
	if len(stack) > 0 && stack[len(stack)-1].object {
		stack[len(stack)-1].wantKey = true
	}
}

// Lookup returns the route for an exact path.
func (t *Table) Lookup(path string) (Route, bool) {
	r, ok := t.routes[path]
	return r, ok
}

// Routes returns every route, sorted by path.
func (t *Table) Routes() []Route {
	routes := make([]Route, 0, len(t.routes))
	for _, r := range t.routes {
		routes = append(routes, r)
	}
	slices.SortFunc(routes, func(a, b Route) int { return strings.Compare(a.Path, b.Path) })
	return routes
}

// NotExposed returns the services the table deliberately leaves out.
func (t *Table) NotExposed() []NotExposed { return slices.Clone(t.notExposed) }

// Upstream names.
const (
	UpstreamInvoice = "invoice"
	UpstreamSupport = "support"
)

// Upstreams returns the names of the services the gateway routes to.
func Upstreams() []string { return []string{UpstreamInvoice, UpstreamSupport} }
