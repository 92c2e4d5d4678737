package catalog_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/pdp/internal/catalog"
)

// catalogPath is the repository's catalog.
const catalogPath = "../../../../policies/gatehouse/data.json"

func TestLoadRepositoryCatalog(t *testing.T) {
	t.Parallel()
	c, err := catalog.Load(catalogPath)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	// Every scope a demo client holds (DESIGN.md demo seed, plus the
	// service clients) is in the catalog.
	for _, s := range []string{"openid", "profile", "offline_access", "invoice:read", "invoice:write", "invoice:approve",
		"support:read", "support:write", "support:impersonate", "policy:admin", "keys:admin", "revocations:read"} {
		if _, ok := c.Scopes[s]; !ok {
			t.Errorf("scope %s is not in the catalog", s)
		}
	}
	if got := c.Roles["billing_approver"].Permissions; !slices.Equal(got, []string{"invoice:read", "invoice:write", "invoice:approve", "support:export"}) {
		t.Errorf("billing_approver permits %v", got)
	}
	if got := c.GrantingScopes("invoice:write"); !slices.Equal(got, []string{"invoice:write"}) {
		t.Errorf("GrantingScopes(invoice:write) = %v", got)
	}
	if got := c.GrantingRoles("invoice:read"); !slices.Equal(got, []string{"billing_approver", "billing_viewer", "support_agent"}) {
		t.Errorf("GrantingRoles(invoice:read) = %v", got)
	}
	// Impersonation: the agent's token and role must permit token:exchange.
	if got := c.GrantingScopes("token:exchange"); !slices.Equal(got, []string{"support:impersonate"}) {
		t.Errorf("GrantingScopes(token:exchange) = %v", got)
	}
	if got := c.GrantingRoles("token:exchange"); !slices.Equal(got, []string{"support_agent"}) {
		t.Errorf("GrantingRoles(token:exchange) = %v", got)
	}
	// The export is permitted wherever invoice:read is.
	if got := c.GrantingScopes("support:export"); !slices.Equal(got, []string{"invoice:read"}) {
		t.Errorf("GrantingScopes(support:export) = %v", got)
	}
	if got := c.GrantingRoles("support:export"); !slices.Equal(got, c.GrantingRoles("invoice:read")) {
		t.Errorf("GrantingRoles(support:export) = %v", got)
	}
	s := c.Scopes["invoice:read"]
	if s.Description != "View invoices of your organization." || s.Owner != "billing" || s.Expiry.String() != "2027-11-30" {
		t.Errorf("invoice:read = %+v", s)
	}
	if ops := c.Scopes["openid"].Operations; len(ops) != 0 {
		t.Errorf("openid grants %v", ops)
	}
}

func TestLoadFails(t *testing.T) {
	t.Parallel()
	if _, err := catalog.Load(filepath.Join(t.TempDir(), "missing.json")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want not exist", err)
	}
	path := filepath.Join(t.TempDir(), "data.json")
	if err := os.WriteFile(path, []byte(`{"actions": {}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := catalog.Load(path)
	if !errors.Is(err, catalog.ErrInvalid) || !strings.Contains(err.Error(), path) {
		t.Errorf("Load(invalid) = %v, want ErrInvalid naming the file", err)
	}
}

// valid is a small valid catalog as JSON values, for tests to break.
func valid() map[string]any {
	return map[string]any{
		"actions": map[string]any{
			"doc:read":  map[string]any{"description": "Read a document."},
			"doc:write": map[string]any{"description": "Write a document."},
		},
		"roles": map[string]any{
			"reader": map[string]any{"description": "Reads.", "permissions": []any{"doc:read"}},
			"editor": map[string]any{"description": "Reads and writes.", "permissions": []any{"doc:read", "doc:write"}},
		},
		"scopes": map[string]any{
			"openid": map[string]any{"description": "Sign you in.", "purpose": "OIDC sign-in.", "owner": "identity",
				"operations": []any{}, "expiry": "2027-11-30"},
			"doc:read": map[string]any{"description": "View documents.", "purpose": "Read the document API.", "owner": "docs",
				"operations": []any{"doc:read"}, "expiry": "2027-11-30"},
			"doc:all": map[string]any{"description": "Manage documents.", "purpose": "Everything about documents.", "owner": "docs",
				"operations": []any{"doc:read", "doc:write"}, "expiry": "2027-05-31"},
		},
	}
}

// at returns the object at path in doc (each element a key).
func at(doc map[string]any, path ...string) map[string]any {
	for _, k := range path {
		doc = doc[k].(map[string]any)
	}
	return doc
}

func encode(t *testing.T, doc map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseValid(t *testing.T) {
	t.Parallel()
	c, err := catalog.Parse(encode(t, valid()))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got := c.ActionNames(); !slices.Equal(got, []string{"doc:read", "doc:write"}) {
		t.Errorf("ActionNames = %v", got)
	}
	if got := c.ScopeNames(); !slices.Equal(got, []string{"doc:all", "doc:read", "openid"}) {
		t.Errorf("ScopeNames = %v", got)
	}
	if got := c.RoleNames(); !slices.Equal(got, []string{"editor", "reader"}) {
		t.Errorf("RoleNames = %v", got)
	}
	if got := c.GrantingScopes("doc:read"); !slices.Equal(got, []string{"doc:all", "doc:read"}) {
		t.Errorf("GrantingScopes(doc:read) = %v", got)
	}
	if got := c.GrantingRoles("doc:write"); !slices.Equal(got, []string{"editor"}) {
		t.Errorf("GrantingRoles(doc:write) = %v", got)
	}
	if got := c.GrantingScopes("doc:delete"); got != nil {
		t.Errorf("GrantingScopes(undefined) = %v", got)
	}
	if !c.Defines("doc:read") || c.Defines("doc:delete") {
		t.Error("Defines is wrong")
	}
	if e := c.Scopes["doc:all"].Expiry; e != (catalog.Date{Year: 2027, Month: time.May, Day: 31}) {
		t.Errorf("doc:all expiry = %+v", e)
	}
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		edit func(doc map[string]any)
		want string
	}{
		// Shape.
		{"unknown top-level member", func(d map[string]any) { d["tenants"] = map[string]any{} }, `unknown field "tenants"`},
		{"unknown action field", func(d map[string]any) { at(d, "actions", "doc:read")["owner"] = "docs" }, `unknown field "owner"`},
		{"unknown role field", func(d map[string]any) { at(d, "roles", "reader")["scopes"] = []any{} }, `unknown field "scopes"`},
		{"unknown scope field", func(d map[string]any) { at(d, "scopes", "doc:read")["expires"] = "2027-01-01" }, `unknown field "expires"`},
		{"permissions not a list", func(d map[string]any) { at(d, "roles", "reader")["permissions"] = "doc:read" }, "cannot unmarshal"},
		{"no actions", func(d map[string]any) { delete(d, "actions") }, `no "actions"`},
		{"no roles", func(d map[string]any) { d["roles"] = map[string]any{} }, `no "roles"`},
		{"no scopes", func(d map[string]any) { delete(d, "scopes") }, `no "scopes"`},
		// Actions.
		{"action not type:verb", func(d map[string]any) { at(d, "actions")["docread"] = map[string]any{"description": "x"} }, `action "docread": not <resource_type>:<verb>`},
		{"action upper case", func(d map[string]any) { at(d, "actions")["Doc:Read"] = map[string]any{"description": "x"} }, `action "Doc:Read": not`},
		{"action with three parts", func(d map[string]any) { at(d, "actions")["doc:read:all"] = map[string]any{"description": "x"} }, `action "doc:read:all": not`},
		{"action without description", func(d map[string]any) { at(d, "actions", "doc:read")["description"] = "" }, `action "doc:read": description: empty`},
		{"action granted by no scope", func(d map[string]any) { at(d, "actions")["doc:delete"] = map[string]any{"description": "Delete."} }, `action "doc:delete": no scope grants it`},
		// Roles.
		{"role name", func(d map[string]any) { at(d, "roles")["Doc Reader"] = at(d, "roles", "reader") }, `role "Doc Reader": not a lower-case identifier`},
		{"role without description", func(d map[string]any) { delete(at(d, "roles", "reader"), "description") }, `role "reader": description: empty`},
		{"role without permissions", func(d map[string]any) { at(d, "roles", "reader")["permissions"] = []any{} }, `role "reader": no permissions`},
		{"role permits undefined action", func(d map[string]any) { at(d, "roles", "reader")["permissions"] = []any{"doc:read", "doc:delete"} }, `role "reader": permissions: action "doc:delete" is not defined`},
		{"role permits action twice", func(d map[string]any) { at(d, "roles", "reader")["permissions"] = []any{"doc:read", "doc:read"} }, `role "reader": permissions: action "doc:read" is listed twice`},
		// Scopes.
		{"scope name", func(d map[string]any) { at(d, "scopes")["doc read"] = at(d, "scopes", "doc:read") }, `scope "doc read": not a lower-case identifier`},
		{"scope without description", func(d map[string]any) { delete(at(d, "scopes", "doc:read"), "description") }, `scope "doc:read": description: empty`},
		{"description too long", func(d map[string]any) {
			at(d, "scopes", "doc:read")["description"] = strings.Repeat("x", catalog.MaxTextLen+1)
		}, "longer than 300 characters"},
		{"description on two lines", func(d map[string]any) { at(d, "scopes", "doc:read")["description"] = "View\ndocuments." }, "control characters"},
		{"description padded", func(d map[string]any) { at(d, "scopes", "doc:read")["description"] = " View documents." }, "leading or trailing space"},
		{"scope without purpose", func(d map[string]any) { delete(at(d, "scopes", "doc:read"), "purpose") }, `scope "doc:read": purpose: empty`},
		{"scope without owner", func(d map[string]any) { delete(at(d, "scopes", "doc:read"), "owner") }, `scope "doc:read": owner "" is not`},
		{"OIDC scope without owner", func(d map[string]any) { delete(at(d, "scopes", "openid"), "owner") }, `scope "openid": owner "" is not`},
		{"owner not a name", func(d map[string]any) { at(d, "scopes", "doc:read")["owner"] = "Docs Team" }, `owner "Docs Team" is not`},
		{"scope without expiry", func(d map[string]any) { delete(at(d, "scopes", "doc:read"), "expiry") }, `scope "doc:read": no expiry`},
		{"expiry null", func(d map[string]any) { at(d, "scopes", "doc:read")["expiry"] = nil }, `scope "doc:read": no expiry`},
		{"expiry not ISO", func(d map[string]any) { at(d, "scopes", "doc:read")["expiry"] = "30.11.2027" }, `date "30.11.2027" is not YYYY-MM-DD`},
		{"expiry no such day", func(d map[string]any) { at(d, "scopes", "doc:read")["expiry"] = "2027-02-30" }, `date "2027-02-30" is not YYYY-MM-DD`},
		{"expiry with time", func(d map[string]any) { at(d, "scopes", "doc:read")["expiry"] = "2027-11-30T00:00:00Z" }, "is not YYYY-MM-DD"},
		{"expiry a number", func(d map[string]any) { at(d, "scopes", "doc:read")["expiry"] = 20271130 }, "cannot unmarshal"},
		{"OIDC scope grants an action", func(d map[string]any) { at(d, "scopes", "openid")["operations"] = []any{"doc:read"} }, `scope "openid": an OpenID Connect scope grants no operations`},
		{"scope grants nothing", func(d map[string]any) { at(d, "scopes", "doc:read")["operations"] = []any{} }, `scope "doc:read": no operations`},
		{"scope without operations", func(d map[string]any) { delete(at(d, "scopes", "doc:read"), "operations") }, `scope "doc:read": no operations`},
		{"scope grants undefined action", func(d map[string]any) { at(d, "scopes", "doc:read")["operations"] = []any{"doc:list"} }, `scope "doc:read": operations: action "doc:list" is not defined`},
		{"scope grants action twice", func(d map[string]any) {
			at(d, "scopes", "doc:all")["operations"] = []any{"doc:read", "doc:write", "doc:read"}
		}, `scope "doc:all": operations: action "doc:read" is listed twice`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			doc := valid()
			tc.edit(doc)
			c, err := catalog.Parse(encode(t, doc))
			if err == nil {
				t.Fatalf("Parse = %+v, nil; want an error", c)
			}
			if !errors.Is(err, catalog.ErrInvalid) {
				t.Errorf("error %v is not ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %q, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestParseRejectsDocument(t *testing.T) {
	t.Parallel()
	base := string(encode(t, valid()))
	tests := []struct {
		name, data, want string
	}{
		{"not JSON", "actions:", "invalid character"},
		{"not an object", `["actions"]`, "cannot unmarshal array"},
		{"data after the object", base + `{}`, "data after the JSON object"},
		{"not UTF-8", strings.Replace(base, "View documents.", "View \xff.", 1), "not UTF-8"},
		{"too large", base + strings.Repeat(" ", catalog.MaxFileBytes), "larger than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := catalog.Parse([]byte(tc.data))
			if !errors.Is(err, catalog.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse = %v, want ErrInvalid mentioning %q", err, tc.want)
			}
		})
	}
}

// A catalog with several problems reports each of them, not just the first.
func TestParseReportsEveryProblem(t *testing.T) {
	t.Parallel()
	doc := valid()
	at(doc, "roles", "reader")["permissions"] = []any{"doc:list"}
	delete(at(doc, "scopes", "doc:all"), "owner")
	_, err := catalog.Parse(encode(t, doc))
	for _, want := range []string{`role "reader": permissions: action "doc:list"`, `scope "doc:all": owner`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error = %v, want it to mention %q", err, want)
		}
	}
}

func TestOverdue(t *testing.T) {
	t.Parallel()
	c, err := catalog.Parse(encode(t, valid()))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		now  time.Time
		want []string
	}{
		{time.Date(2027, 5, 31, 23, 59, 59, 0, time.UTC), nil},
		{time.Date(2027, 6, 1, 0, 0, 0, 0, time.UTC), []string{"doc:all"}},
		// 2027-06-01 01:00 in Berlin is still May 31 in UTC.
		{time.Date(2027, 6, 1, 1, 0, 0, 0, time.FixedZone("CEST", 2*60*60)), nil},
		{time.Date(2027, 12, 1, 0, 0, 0, 0, time.UTC), []string{"doc:all", "doc:read", "openid"}},
	}
	for _, tc := range tests {
		if got := c.Overdue(tc.now); !slices.Equal(got, tc.want) {
			t.Errorf("Overdue(%s) = %v, want %v", tc.now, got, tc.want)
		}
	}
}

func TestDate(t *testing.T) {
	t.Parallel()
	var d catalog.Date
	if !d.IsZero() {
		t.Error("zero Date is not IsZero")
	}
	if err := d.UnmarshalText([]byte("2027-01-09")); err != nil {
		t.Fatal(err)
	}
	if d.IsZero() || d.String() != "2027-01-09" {
		t.Errorf("Date = %+v (%s)", d, d)
	}
}

func TestIsOIDCScope(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"openid", "profile", "email", "address", "phone", "offline_access"} {
		if !catalog.IsOIDCScope(s) {
			t.Errorf("IsOIDCScope(%s) = false", s)
		}
	}
	for _, s := range []string{"invoice:read", "OpenID", "", "openid profile"} {
		if catalog.IsOIDCScope(s) {
			t.Errorf("IsOIDCScope(%q) = true", s)
		}
	}
}
