package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const catalogPath = "../../../../policies/gatehouse/data.json"

func TestRunWritesTheCommittedPage(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "permissions.md")
	var stdout, stderr bytes.Buffer
	now := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	if err := run([]string{"-catalog", catalogPath, "-o", out}, &stdout, &stderr, now); err != nil {
		t.Fatalf("run: %v (stderr: %s)", err, stderr.String())
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("../../../../docs/permissions.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("the page written differs from docs/permissions.md: run `make generate`")
	}
	if stdout.Len() != 0 || stderr.Len() != 0 {
		t.Errorf("stdout %q, stderr %q; want both empty", stdout.String(), stderr.String())
	}
}

func TestRunWarnsAboutOverdueScopes(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if err := run([]string{"-catalog", catalogPath}, &stdout, &stderr, time.Date(2027, 6, 1, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stdout.String(), "<!-- Code generated") {
		t.Errorf("stdout does not hold the page: %.80q", stdout.String())
	}
	if !strings.Contains(stderr.String(), "scope support:impersonate is past its review date 2027-05-31") ||
		strings.Contains(stderr.String(), "invoice:read") {
		t.Errorf("stderr = %q, want a warning for each scope due by 2027-05-31 only", stderr.String())
	}
}

func TestRunFails(t *testing.T) {
	t.Parallel()
	bad := filepath.Join(t.TempDir(), "data.json")
	if err := os.WriteFile(bad, []byte(`{"scopes": {}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, args := range map[string][]string{
		"unknown flag":      {"-x"},
		"extra argument":    {"-catalog", catalogPath, "extra"},
		"missing catalog":   {"-catalog", filepath.Join(t.TempDir(), "none.json")},
		"invalid catalog":   {"-catalog", bad},
		"unwritable output": {"-catalog", catalogPath, "-o", filepath.Join(t.TempDir(), "no", "such", "dir.md")},
	} {
		var stdout, stderr bytes.Buffer
		if err := run(args, &stdout, &stderr, time.Now()); err == nil {
			t.Errorf("%s: run succeeded, want an error", name)
		}
	}
}
