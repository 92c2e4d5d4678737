// Package catalog reads Gatehouse's permission and scope catalog: the data
// document policies/gatehouse/data.json, which the Rego policies read as
// data.gatehouse. It is the one source of truth for the set of actions
// ("<resource_type>:<verb>"), the role -> permission matrix, and the scopes
// (what each grants, who owns it, when it must be reviewed, and the consent
// text the issuer shows). Parse refuses a catalog that is malformed or
// inconsistent, and Markdown renders it as docs/permissions.md.
package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Bounds on a catalog file.
const (
	// MaxFileBytes is the largest catalog file read.
	MaxFileBytes = 1 << 20
	// MaxTextLen is the longest description or purpose accepted, in
	// characters (the issuer's consent page accepts no longer description).
	MaxTextLen = 300
)

// ErrInvalid marks a catalog that cannot be used.
var ErrInvalid = errors.New("invalid catalog")

// Catalog is the parsed catalog. Parse returns it validated; treat it as
// read-only.
type Catalog struct {
	// Actions defines every action, keyed by "<resource_type>:<verb>".
	Actions map[string]Action `json:"actions"`
	// Roles maps a role name to the actions it permits.
	Roles map[string]Role `json:"roles"`
	// Scopes maps an OAuth 2.0 scope to the actions it grants.
	Scopes map[string]Scope `json:"scopes"`
}

// Action is one action a policy may decide.
type Action struct {
	// Description says what the action lets a principal do.
	Description string `json:"description"`
}

// Role is a set of permissions a user may hold.
type Role struct {
	// Description says who holds the role.
	Description string `json:"description"`
	// Permissions are the actions the role permits.
	Permissions []string `json:"permissions"`
}

// Scope is an OAuth 2.0 scope a token may carry.
type Scope struct {
	// Description is the user-facing consent text the issuer shows.
	Description string `json:"description"`
	// Purpose says, for engineers, what the scope is for.
	Purpose string `json:"purpose"`
	// Owner is the team or service that owns the scope.
	Owner string `json:"owner"`
	// Operations are the actions the scope grants; none for the OpenID
	// Connect scopes (see IsOIDCScope).
	Operations []string `json:"operations"`
	// Expiry is the day by which the scope must be reviewed.
	Expiry Date `json:"expiry"`
}

// Date is a calendar day, written YYYY-MM-DD in the catalog.
type Date struct {
	Year  int
	Month time.Month
	Day   int
}

// UnmarshalText parses a YYYY-MM-DD date.
func (d *Date) UnmarshalText(b []byte) error {
	t, err := time.Parse(time.DateOnly, string(b))
	if err != nil {
		return fmt.Errorf("date %q is not YYYY-MM-DD: %w", b, err)
	}
	*d = Date{Year: t.Year(), Month: t.Month(), Day: t.Day()}
	return nil
}

// String returns the date as YYYY-MM-DD.
func (d Date) String() string {
	return fmt.Sprintf("%04d-%02d-%02d", d.Year, int(d.Month), d.Day)
}

// IsZero reports whether the date is unset.
func (d Date) IsZero() bool { return d == Date{} }

// IsOIDCScope reports whether scope is one of the OpenID Connect scopes
// (OpenID Connect Core 1.0, sections 3.1.2.1, 5.4 and 11). They concern the
// user's identity and the session, so they grant no action.
func IsOIDCScope(scope string) bool {
	switch scope {
	case "openid", "profile", "email", "address", "phone", "offline_access":
		return true
	}
	return false
}

// Name patterns. Scope names are stricter than RFC 6749's scope-token so
// that they read the same in the catalog, in tokens and in the docs.
var (
	actionPattern = regexp.MustCompile(`^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*$`)
	rolePattern   = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	scopePattern  = regexp.MustCompile(`^[a-z][a-z0-9_]*(:[a-z][a-z0-9_]*)?$`)
	ownerPattern  = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)
)

// Load reads and validates the catalog in the JSON file at path (see Parse).
func Load(path string) (*Catalog, error) {
	f, err := os.Open(path) //nolint:gosec // G304: the path is the operator's or the build's choice.
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	defer func() { _ = f.Close() }() // read-only: nothing to flush
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("catalog: read %s: %w", path, err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return c, nil
}

// Parse decodes and validates a catalog. It refuses unknown fields at every
// level and reports every problem it finds, wrapped in ErrInvalid:
//
//   - "actions", "roles" and "scopes" are each present and not empty;
//   - names are well-formed: actions "<resource_type>:<verb>", roles and
//     owners lower-case identifiers, scopes an identifier or an action-shaped
//     name;
//   - every description and purpose is one line of printable text of at
//     most MaxTextLen characters;
//   - every role permission and scope operation is a defined action, listed
//     once; every role permits at least one action;
//   - every scope names its owner and a valid review date (expiry); an
//     OpenID Connect scope grants no action, any other scope at least one;
//   - every action is granted by at least one scope (no token could carry
//     an action no scope grants).
func Parse(data []byte) (*Catalog, error) {
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalid, MaxFileBytes)
	}
	if !utf8.Valid(data) {
		// encoding/json would quietly replace the bad bytes.
		return nil, fmt.Errorf("%w: not UTF-8", ErrInvalid)
	}
	var c Catalog
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrInvalid)
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return &c, nil
}

func (c *Catalog) validate() error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for _, member := range []struct {
		key string
		n   int
	}{{"actions", len(c.Actions)}, {"roles", len(c.Roles)}, {"scopes", len(c.Scopes)}} {
		if member.n == 0 {
			fail("no %q, or it is empty", member.key)
		}
	}
	for _, name := range c.ActionNames() {
		if !actionPattern.MatchString(name) {
			fail("action %q: not <resource_type>:<verb> in lower case", name)
		}
		if err := validateText(c.Actions[name].Description); err != nil {
			fail("action %q: description: %w", name, err)
		}
	}
	for _, name := range c.RoleNames() {
		r := c.Roles[name]
		if !rolePattern.MatchString(name) {
			fail("role %q: not a lower-case identifier", name)
		}
		if err := validateText(r.Description); err != nil {
			fail("role %q: description: %w", name, err)
		}
		if len(r.Permissions) == 0 {
			fail("role %q: no permissions", name)
		}
		for _, err := range c.checkActions(r.Permissions) {
			fail("role %q: permissions: %w", name, err)
		}
	}
	for _, name := range c.ScopeNames() {
		s := c.Scopes[name]
		if !scopePattern.MatchString(name) {
			fail("scope %q: not a lower-case identifier or <resource_type>:<verb>", name)
		}
		if err := validateText(s.Description); err != nil {
			fail("scope %q: description: %w", name, err)
		}
		if err := validateText(s.Purpose); err != nil {
			fail("scope %q: purpose: %w", name, err)
		}
		if !ownerPattern.MatchString(s.Owner) {
			fail("scope %q: owner %q is not a lower-case team or service name", name, s.Owner)
		}
		if s.Expiry.IsZero() {
			fail("scope %q: no expiry (review date, YYYY-MM-DD)", name)
		}
		switch oidc := IsOIDCScope(name); {
		case oidc && len(s.Operations) > 0:
			fail("scope %q: an OpenID Connect scope grants no operations", name)
		case !oidc && len(s.Operations) == 0:
			fail("scope %q: no operations", name)
		}
		for _, err := range c.checkActions(s.Operations) {
			fail("scope %q: operations: %w", name, err)
		}
	}
	for _, name := range c.ActionNames() {
		if len(c.GrantingScopes(name)) == 0 {
			fail("action %q: no scope grants it", name)
		}
	}
	return errors.Join(errs...)
}

// checkActions reports the entries of actions that are undefined or repeated.
func (c *Catalog) checkActions(actions []string) []error {
	var errs []error
	seen := make(map[string]bool, len(actions))
	for _, a := range actions {
		if _, ok := c.Actions[a]; !ok {
			errs = append(errs, fmt.Errorf("action %q is not defined in \"actions\"", a))
		}
		if seen[a] {
			errs = append(errs, fmt.Errorf("action %q is listed twice", a))
		}
		seen[a] = true
	}
	return errs
}

func validateText(s string) error {
	switch {
	case strings.TrimSpace(s) == "":
		return errors.New("empty")
	case strings.TrimSpace(s) != s:
		return errors.New("leading or trailing space")
	case utf8.RuneCountInString(s) > MaxTextLen:
		return fmt.Errorf("longer than %d characters", MaxTextLen)
	case strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }):
		return errors.New("contains control characters")
	}
	return nil
}

// ActionNames returns the defined actions, sorted.
func (c *Catalog) ActionNames() []string { return slices.Sorted(maps.Keys(c.Actions)) }

// RoleNames returns the role names, sorted.
func (c *Catalog) RoleNames() []string { return slices.Sorted(maps.Keys(c.Roles)) }

// ScopeNames returns the scope names, sorted.
func (c *Catalog) ScopeNames() []string { return slices.Sorted(maps.Keys(c.Scopes)) }

// Defines reports whether action is a defined action.
func (c *Catalog) Defines(action string) bool {
	_, ok := c.Actions[action]
	return ok
}

// GrantingScopes returns the scopes whose operations include action,
// sorted: a token needs one of them (the policy's scope check).
func (c *Catalog) GrantingScopes(action string) []string {
	var out []string
	for _, name := range c.ScopeNames() {
		if slices.Contains(c.Scopes[name].Operations, action) {
			out = append(out, name)
		}
	}
	return out
}

// GrantingRoles returns the roles whose permissions include action, sorted.
func (c *Catalog) GrantingRoles(action string) []string {
	var out []string
	for _, name := range c.RoleNames() {
		if slices.Contains(c.Roles[name].Permissions, action) {
			out = append(out, name)
		}
	}
	return out
}

// Overdue returns the scopes whose review date (Expiry) has passed at now,
// in UTC, sorted.
func (c *Catalog) Overdue(now time.Time) []string {
	var out []string
	for _, name := range c.ScopeNames() {
		e := c.Scopes[name].Expiry
		if !now.Before(time.Date(e.Year, e.Month, e.Day+1, 0, 0, 0, 0, time.UTC)) {
			out = append(out, name)
		}
	}
	return out
}
