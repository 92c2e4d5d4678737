package pdp_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// Paths from services/pdp to the files this test keeps in step.
const (
	reasonSource = "../../libs/enforce/reason/reason.go"
	reasonDoc    = "../../docs/reference/reason-codes.md"
	policyDir    = "../../policies"
)

// reasonConstants returns the string constants declared in package reason.
func reasonConstants(t *testing.T) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), reasonSource, nil, 0)
	if err != nil {
		t.Fatalf("parse %s: %v", reasonSource, err)
	}
	codes := map[string]string{} // code -> constant name
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					t.Fatalf("reason.%s is not a string literal", name.Name)
				}
				code, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatalf("reason.%s: %v", name.Name, err)
				}
				if prev, dup := codes[code]; dup {
					t.Errorf("code %q is declared twice: reason.%s and reason.%s", code, prev, name.Name)
				}
				codes[code] = name.Name
			}
		}
	}
	if len(codes) == 0 {
		t.Fatalf("no constants found in %s", reasonSource)
	}
	return codes
}

// docRow matches a table row of reason-codes.md: | `code` | ... |
var docRow = regexp.MustCompile("(?m)^\\| `([a-z0-9_]+)` \\|")

// TestReasonCodesDocumented fails when a constant in libs/enforce/reason is
// missing from docs/reference/reason-codes.md, or the table lists a code
// that is not a constant.
func TestReasonCodesDocumented(t *testing.T) {
	t.Parallel()
	codes := reasonConstants(t)
	raw, err := os.ReadFile(reasonDoc)
	if err != nil {
		t.Fatalf("read %s: %v", reasonDoc, err)
	}
	documented := map[string]bool{}
	for _, m := range docRow.FindAllStringSubmatch(string(raw), -1) {
		if documented[m[1]] {
			t.Errorf("%s lists %q twice", reasonDoc, m[1])
		}
		documented[m[1]] = true
	}
	for code, name := range codes {
		if !documented[code] {
			t.Errorf("reason.%s (%q) is missing from the table in %s", name, code, reasonDoc)
		}
	}
	for code := range documented {
		if _, ok := codes[code]; !ok {
			t.Errorf("%s lists %q, which is not a constant in %s", reasonDoc, code, reasonSource)
		}
	}
}

// policyCode matches the reason codes a Rego policy returns.
var policyCode = regexp.MustCompile(`(?:"reason_code":\s*|outcome\.deny\()"([^"]*)"`)

// TestPolicyReasonCodesAreConstants fails when a policy returns a reason
// code that libs/enforce/reason (and so the documentation) does not know.
func TestPolicyReasonCodesAreConstants(t *testing.T) {
	t.Parallel()
	codes := reasonConstants(t)
	seen := 0
	err := filepath.WalkDir(policyDir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".rego") || strings.HasSuffix(path, "_test.rego") {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range policyCode.FindAllStringSubmatch(string(raw), -1) {
			seen++
			if _, ok := codes[m[1]]; !ok {
				t.Errorf("%s returns reason code %q, which is not a constant in %s", path, m[1], reasonSource)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", policyDir, err)
	}
	if seen == 0 {
		t.Errorf("found no reason codes in %s; has the decision shape changed?", policyDir)
	}
}
