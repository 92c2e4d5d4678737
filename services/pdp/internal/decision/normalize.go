package decision

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Input limits. They bound the work one request can cause and keep logs and
// the audit trail readable; nothing legitimate comes near them.
const (
	// MaxStringBytes bounds every string in a Request.
	MaxStringBytes = 256
	// MaxItems bounds every list (roles, scopes, actor chain) and the
	// number of resource attributes.
	MaxItems = 64
)

// Sentinel errors of Normalize; an *InputError wraps one of them.
var (
	// ErrMissingAttribute: a required field is empty.
	ErrMissingAttribute = errors.New("missing attribute")
	// ErrInvalidAttribute: a field is malformed.
	ErrInvalidAttribute = errors.New("invalid attribute")
)

// InputError says which field of a Request is missing or malformed, and
// how, without repeating the field's value: its Error text is safe to return
// to the caller.
type InputError struct {
	// Field is the field's path in the request, e.g. "principal.scopes[2]".
	Field string
	// Problem says what is wrong, e.g. "is required".
	Problem string
	// Err is ErrMissingAttribute or ErrInvalidAttribute.
	Err error
}

func (e *InputError) Error() string { return e.Field + " " + e.Problem }

// Unwrap returns the sentinel error, for errors.Is.
func (e *InputError) Unwrap() error { return e.Err }

func missing(field string) error {
	return &InputError{Field: field, Problem: "is required", Err: ErrMissingAttribute}
}

func invalid(field, problem string) error {
	return &InputError{Field: field, Problem: problem, Err: ErrInvalidAttribute}
}

// Normalize validates req and returns its normalized form, which is what
// policies see: action and resource type lowercased, roles and scopes
// deduplicated and sorted, an empty resource tenant replaced by the
// principal's tenant, the request time truncated to the second. req itself
// is not modified.
//
// principal.subject, principal.tenant, action and resource.type are
// required; a missing one is reported (as ErrMissingAttribute) before any
// malformed field (ErrInvalidAttribute). The returned error is an
// *InputError.
func Normalize(req Request) (Request, error) {
	p := &req.Principal
	switch {
	case p.Subject == "":
		return Request{}, missing("principal.subject")
	case p.Tenant == "":
		return Request{}, missing("principal.tenant")
	case req.Action == "":
		return Request{}, missing("action")
	case req.Resource.Type == "":
		return Request{}, missing("resource.type")
	}

	strs := [...]struct {
		field string
		value string
	}{
		{"principal.subject", p.Subject},
		{"principal.tenant", p.Tenant},
		{"principal.client_id", p.ClientID},
		{"principal.acr", p.ACR},
		{"action", req.Action},
		{"resource.type", req.Resource.Type},
		{"resource.id", req.Resource.ID},
		{"resource.tenant", req.Resource.Tenant},
		{"context.request_id", req.Context.RequestID},
		{"context.source_ip", req.Context.SourceIP},
	}
	for _, s := range strs {
		if problem := stringProblem(s.value); problem != "" {
			return Request{}, invalid(s.field, problem)
		}
	}

	// Lowercase ASCII only: strings.ToLower would also map some non-ASCII
	// letters (such as the Kelvin sign) onto ASCII ones.
	req.Action = asciiLower(req.Action)
	resourceType, verb, ok := strings.Cut(req.Action, ":")
	if !ok || !isName(resourceType) || !isName(verb) {
		return Request{}, invalid("action", "must be <resource_type>:<verb>, each [a-z][a-z0-9_]*")
	}
	req.Resource.Type = asciiLower(req.Resource.Type)
	if req.Resource.Type != resourceType {
		return Request{}, invalid("resource.type", "must equal the action's resource type")
	}
	// A collection-level check (no id) is about the principal's own tenant.
	// A check on one resource must say whose it is: guessing the principal's
	// tenant would turn a forgotten attribute into a same-tenant allow.
	if req.Resource.Tenant == "" {
		if req.Resource.ID != "" {
			return Request{}, missing("resource.tenant")
		}
		req.Resource.Tenant = p.Tenant
	}
	if req.Context.SourceIP != "" {
		if _, err := netip.ParseAddr(req.Context.SourceIP); err != nil {
			return Request{}, invalid("context.source_ip", "must be an IP address")
		}
	}

	var err error
	if p.Roles, err = normalizeSet("principal.roles", p.Roles, stringProblem); err != nil {
		return Request{}, err
	}
	if p.Scopes, err = normalizeSet("principal.scopes", p.Scopes, scopeProblem); err != nil {
		return Request{}, err
	}
	if err := checkActors(p.ActorChain); err != nil {
		return Request{}, err
	}
	if err := checkAttributes(req.Resource.Attributes); err != nil {
		return Request{}, err
	}
	// Policies decide at the second (auth_time is in seconds too); the
	// decision cache relies on it.
	req.Context.Time = req.Context.Time.Truncate(time.Second)
	return req, nil
}

// stringProblem rejects over-long strings, invalid UTF-8 and control
// characters; it returns "" for an acceptable s.
func stringProblem(s string) string {
	switch {
	case len(s) > MaxStringBytes:
		return fmt.Sprintf("exceeds %d bytes", MaxStringBytes)
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	case strings.ContainsFunc(s, unicode.IsControl):
		return "contains a control character"
	}
	return ""
}

// scopeProblem accepts an RFC 6749 section 3.3 scope-token.
func scopeProblem(s string) string {
	if len(s) > MaxStringBytes {
		return fmt.Sprintf("exceeds %d bytes", MaxStringBytes)
	}
	for i := range len(s) {
		if c := s[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return "is not an RFC 6749 scope token"
		}
	}
	return ""
}

// asciiLower lowercases the ASCII letters of s and leaves every other byte
// alone.
func asciiLower(s string) string {
	for i := range len(s) {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return strings.Map(func(r rune) rune {
				if 'A' <= r && r <= 'Z' {
					return r + ('a' - 'A')
				}
				return r
			}, s)
		}
	}
	return s
}

// isName reports whether s matches [a-z][a-z0-9_]*.
func isName(s string) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// normalizeSet checks every entry of a set-valued field and returns a sorted
// copy without duplicates (nil when empty).
func normalizeSet(field string, in []string, problemOf func(string) string) ([]string, error) {
	if len(in) > MaxItems {
		return nil, invalid(field, fmt.Sprintf("has more than %d entries", MaxItems))
	}
	for i, s := range in {
		problem := problemOf(s)
		if s == "" {
			problem = "is empty"
		}
		if problem != "" {
			return nil, invalid(fmt.Sprintf("%s[%d]", field, i), problem)
		}
	}
	if len(in) == 0 {
		return nil, nil
	}
	out := slices.Clone(in)
	slices.Sort(out)
	return slices.Compact(out), nil
}

func checkActors(chain []Actor) error {
	if len(chain) > MaxItems {
		return invalid("principal.actor_chain", fmt.Sprintf("has more than %d entries", MaxItems))
	}
	for i, a := range chain {
		if a.Subject == "" && a.ClientID == "" {
			return invalid(fmt.Sprintf("principal.actor_chain[%d]", i), "names neither a subject nor a client_id")
		}
		if problem := stringProblem(a.Subject); problem != "" {
			return invalid(fmt.Sprintf("principal.actor_chain[%d].subject", i), problem)
		}
		if problem := stringProblem(a.ClientID); problem != "" {
			return invalid(fmt.Sprintf("principal.actor_chain[%d].client_id", i), problem)
		}
	}
	return nil
}

func checkAttributes(attrs map[string]any) error {
	if len(attrs) > MaxItems {
		return invalid("resource.attributes", fmt.Sprintf("has more than %d entries", MaxItems))
	}
	for k, v := range attrs {
		if k == "" {
			return invalid("resource.attributes", "has an empty key")
		}
		if problem := stringProblem(k); problem != "" {
			return invalid("resource.attributes key", problem)
		}
		if problem := valueProblem(v); problem != "" {
			return invalid("resource.attributes["+k+"]", problem)
		}
	}
	return nil
}

// valueProblem accepts the attribute value types of Resource.Attributes.
func valueProblem(v any) string {
	switch v := v.(type) {
	case string:
		return stringProblem(v)
	case int64, bool:
		return ""
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return "is not a finite number"
		}
		return ""
	default:
		return "has no value of a supported type (string, int, bool, double)"
	}
}
