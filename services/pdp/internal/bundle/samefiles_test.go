package bundle_test

import (
	"testing"

	"github.com/gatehouse/gatehouse/services/pdp/internal/bundle"
	"github.com/gatehouse/gatehouse/services/pdp/internal/bundle/bundletest"
)

func TestSameFiles(t *testing.T) {
	t.Parallel()
	kp := bundletest.Shared(t)
	files := map[string]string{
		".manifest":           `{"revision": "r1", "roots": ["gatehouse"]}`,
		"gatehouse/main.rego": "package gatehouse.main\n\ndefault decision := {\"decision\": \"allow\", \"reason_code\": \"allowed\"}\n",
	}
	dir := bundletest.WriteDir(t, files)
	if err := bundle.SignDir(dir, kp.Signer); err != nil {
		t.Fatal(err)
	}
	fromDir, err := bundle.LoadDir(dir, kp.Verifier)
	if err != nil {
		t.Fatal(err)
	}
	fromTar := bundletest.Open(t, bundletest.WriteDir(t, files))
	if !bundle.SameFiles(fromDir, fromTar) {
		t.Error("a directory and a tarball of the same files are not SameFiles")
	}
	files["gatehouse/main.rego"] += "\n# changed\n"
	other := bundletest.Open(t, bundletest.WriteDir(t, files))
	if bundle.SameFiles(fromDir, other) {
		t.Error("bundles with a changed file are SameFiles")
	}
}
