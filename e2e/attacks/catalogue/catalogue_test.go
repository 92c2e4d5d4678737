package catalogue_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gatehouse/gatehouse/e2e/attacks/catalogue"
)

var update = flag.Bool("update", false, "rewrite docs/security/attack-scenarios.md")

var doc = filepath.Join("..", "..", "..", "docs", "security", "attack-scenarios.md")

// TestCatalogueDoc renders the catalogue and fails when the committed page
// differs, so the page cannot drift from the scenarios the suite runs.
func TestCatalogueDoc(t *testing.T) {
	got := catalogue.Render(catalogue.Scenarios())
	if *update {
		if err := os.MkdirAll(filepath.Dir(doc), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(doc, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(doc)
	if err != nil {
		t.Fatalf("%v (run go test ./attacks/catalogue -run TestCatalogueDoc -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale: run go test ./attacks/catalogue -run TestCatalogueDoc -update and commit it", doc)
	}
}

// TestCatalogueIsComplete checks every entry is fully described.
func TestCatalogueIsComplete(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range catalogue.Scenarios() {
		switch {
		case s.Name == "" || s.Reference == "" || s.Request == "":
			t.Errorf("scenario %q: name, reference and request are required", s.Name)
		case seen[s.Name]:
			t.Errorf("scenario %q: the name is not unique", s.Name)
		case !slices.Contains(catalogue.Categories(), s.Category):
			t.Errorf("scenario %q: unknown category %q", s.Name, s.Category)
		case s.Send == nil:
			t.Errorf("scenario %q: no Send", s.Name)
		case s.Expect.Status == 0 || (s.Expect.Code != "" && s.Expect.Reason == "") ||
			(s.Expect.Reason != "" && s.Expect.Code == "" && s.Expect.OAuthError == ""):
			t.Errorf("scenario %q: outcome %+v needs a status, and a reason exactly with a Connect code (or with an OAuth error)", s.Name, s.Expect)
		case s.Expect.Dropped > 0 && (s.Expect.Code != "" || s.Expect.OAuthError != "" || s.Expect.Location != "" || s.Expect.Challenge != ""):
			t.Errorf("scenario %q: a dropped connection has only a status, the one of the answer it may get before the close", s.Name)
		case s.Expect.Status < 300 && (s.Verify == nil || s.Verify.Name == "" || s.Verify.Check == nil):
			t.Errorf("scenario %q: an accepted attack needs a Verify that it achieved nothing", s.Name)
		case s.State != nil && (s.State.Name == "" || s.State.Read == nil):
			t.Errorf("scenario %q: a state needs a name and a Read", s.Name)
		}
		seen[s.Name] = true
	}
}
