// Package policybundle prepares policy bundle sources for the e2e suites
// that change the PDP's policy (rollouts, step-up, the policy fault test):
// a copy of the repository's policies to edit, JSON edits, and a source
// directory's revision. Signing and pushing stay with the gatehouse CLI.
package policybundle

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Copy copies the policy sources under src (the repository's policies/)
// into dst, without Rego tests, test data and the signature file: what a
// new bundle is built from.
func Copy(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		switch {
		case d.IsDir() && d.Name() == "testdata":
			return filepath.SkipDir
		case d.IsDir():
			return os.MkdirAll(filepath.Join(dst, rel), 0o750)
		case strings.HasSuffix(d.Name(), "_test.rego") || d.Name() == ".signatures.json":
			return nil
		}
		raw, err := os.ReadFile(path) //nolint:gosec // G122: the repository's policies
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), raw, 0o600) //nolint:gosec // G703: rel is a path under src, found by the walk
	})
}

// EditJSON rewrites the JSON object in the file at path with edit; an
// error of edit (an edit that does not apply) leaves the file as it was.
func EditJSON(path string, edit func(map[string]any) error) error {
	raw, err := os.ReadFile(path) //nolint:gosec // G304: a file of the test's own copy
	if err != nil {
		return err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := edit(m); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if raw, err = json.MarshalIndent(m, "", "  "); err != nil {
		return err
	}
	return os.WriteFile(path, raw, 0o600)
}

// SetRevision sets the revision in dir's .manifest.
func SetRevision(dir, revision string) error {
	return EditJSON(filepath.Join(dir, ".manifest"), func(m map[string]any) error {
		m["revision"] = revision
		return nil
	})
}

// Revision is the revision in dir's .manifest.
func Revision(dir string) (string, error) {
	raw, err := os.ReadFile(filepath.Join(dir, ".manifest")) //nolint:gosec // G304: the repository's policies
	if err != nil {
		return "", err
	}
	var m struct{ Revision string }
	if err := json.Unmarshal(raw, &m); err != nil {
		return "", fmt.Errorf("%s/.manifest: %w", dir, err)
	}
	if m.Revision == "" {
		return "", errors.New(dir + "/.manifest: no revision")
	}
	return m.Revision, nil
}
