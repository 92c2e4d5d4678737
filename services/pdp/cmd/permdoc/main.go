// Command permdoc generates docs/permissions.md from the permission and
// scope catalog (policies/gatehouse/data.json); `make generate` runs it:
//
//	go run ./cmd/permdoc -catalog ../../policies/gatehouse/data.json -o ../../docs/permissions.md
//
// It refuses an invalid catalog, and warns on standard error about scopes
// past their review date.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/gatehouse/gatehouse/services/pdp/internal/catalog"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr, time.Now()); err != nil {
		fmt.Fprintln(os.Stderr, "permdoc:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer, now time.Time) error {
	fs := flag.NewFlagSet("permdoc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("catalog", "policies/gatehouse/data.json", "the catalog to document")
	out := fs.String("o", "", "the Markdown file to write; standard output when empty")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c, err := catalog.Load(*path)
	if err != nil {
		return err
	}
	for _, s := range c.Overdue(now) {
		_, _ = fmt.Fprintf(stderr, "permdoc: warning: scope %s is past its review date %s\n", s, c.Scopes[s].Expiry)
	}
	var doc bytes.Buffer
	if err := catalog.Markdown(&doc, c); err != nil {
		return err
	}
	if *out == "" {
		_, err := stdout.Write(doc.Bytes())
		return err
	}
	// A documentation page, readable by everyone like the rest of the tree.
	if err := os.WriteFile(*out, doc.Bytes(), 0o644); err != nil { //nolint:gosec // G306: see above.
		return fmt.Errorf("write %s: %w", *out, err)
	}
	return nil
}
