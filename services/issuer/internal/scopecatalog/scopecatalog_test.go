package scopecatalog_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/services/issuer/internal/scopecatalog"
)

// The catalog the issuer ships with: every scope a demo client may request
// must be described.
func TestLoadPolicyCatalog(t *testing.T) {
	t.Parallel()
	c, err := scopecatalog.Load("../../../../policies/gatehouse/data.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"openid", "profile", "offline_access", "invoice:read", "invoice:write",
		"invoice:approve", "support:read", "support:impersonate"} {
		if e := c.Describe(s); !e.Known || e.Description == "" || e.Description == s {
			t.Errorf("Describe(%q) = %+v, want a description", s, e)
		}
	}
	if got := c.Describe("invoice:read").Description; got != "View invoices of your organization." {
		t.Errorf("invoice:read = %q", got)
	}
}

func TestDescribeUnknown(t *testing.T) {
	t.Parallel()
	c, err := scopecatalog.Parse([]byte(`{"scopes": {"b": {"description": "Bee."}, "a": {"description": " Ay. "}}}`))
	if err != nil {
		t.Fatal(err)
	}
	got := c.DescribeAll([]string{"b", "zz:unknown", "a"})
	want := []scopecatalog.Entry{
		{Name: "b", Description: "Bee.", Known: true},
		{Name: "zz:unknown", Description: "zz:unknown"},
		{Name: "a", Description: "Ay.", Known: true},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("DescribeAll = %+v, want %+v", got, want)
	}
	if !slices.Equal(c.Scopes(), []string{"a", "b"}) {
		t.Fatalf("Scopes = %v", c.Scopes())
	}
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, data, wantErr string
	}{
		{name: "not JSON", data: `scopes: {}`, wantErr: "invalid character"},
		{name: "trailing data", data: `{"scopes": {"a": {"description": "A."}}} {}`, wantErr: "data after"},
		{name: "no scopes", data: `{"roles": {}}`, wantErr: "no \"scopes\""},
		{name: "empty scopes", data: `{"scopes": {}}`, wantErr: "no \"scopes\""},
		{name: "scopes not an object", data: `{"scopes": ["a"]}`, wantErr: "cannot unmarshal"},
		{name: "invalid scope name", data: `{"scopes": {"a b": {"description": "A."}}}`, wantErr: "not a valid scope"},
		{name: "no description", data: `{"scopes": {"a": {}}}`, wantErr: "no description"},
		{name: "null entry", data: `{"scopes": {"a": null}}`, wantErr: "no description"},
		{name: "blank description", data: `{"scopes": {"a": {"description": "  "}}}`, wantErr: "empty description"},
		{name: "control character", data: `{"scopes": {"a": {"description": "A.\nB."}}}`, wantErr: "control characters"},
		{name: "too long", data: `{"scopes": {"a": {"description": "` + strings.Repeat("x", scopecatalog.MaxDescriptionLen+1) + `"}}}`, wantErr: "longer than"},
		{name: "too large", data: strings.Repeat(" ", scopecatalog.MaxFileBytes+1), wantErr: "larger than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := scopecatalog.Parse([]byte(tc.data))
			if !errors.Is(err, scopecatalog.ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Parse = %v, want ErrInvalid mentioning %q", err, tc.wantErr)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	if _, err := scopecatalog.Load(filepath.Join(t.TempDir(), "missing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load of a missing file = %v, want ErrNotExist", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(bad, []byte(`{"scopes": {"a": {}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := scopecatalog.Load(bad); !errors.Is(err, scopecatalog.ErrInvalid) || !strings.Contains(err.Error(), bad) {
		t.Fatalf("Load of an invalid file = %v, want ErrInvalid naming the file", err)
	}
}
