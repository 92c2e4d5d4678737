package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/libs/serve/envflag"
	gatewayapp "github.com/gatehouse/gatehouse/services/gateway/app"
	invoiceapp "github.com/gatehouse/gatehouse/services/invoice/app"
	issuerapp "github.com/gatehouse/gatehouse/services/issuer/app"
	pdpapp "github.com/gatehouse/gatehouse/services/pdp/app"
	supportapp "github.com/gatehouse/gatehouse/services/support/app"
)

var update = flag.Bool("update", false, "rewrite docs/reference/configuration.md")

const configDoc = "../../docs/reference/configuration.md"

// TestConfigurationReferenceIsCurrent renders every service's flags into the
// configuration reference and fails when the committed page differs, so the
// page cannot drift from the code. Regenerate with `make docs`.
func TestConfigurationReferenceIsCurrent(t *testing.T) {
	var buf bytes.Buffer
	buf.WriteString(`# Configuration reference

Generated from the services' flag definitions by ` + "`make docs`" + `; do not edit by hand.

Every flag of a service can also be set by an environment variable named
` + "`GATEHOUSE_<SERVICE>_<FLAG>`" + ` (upper case, dashes as underscores). A flag on
the command line wins over the environment. Secrets are never given as flag
values: the issuer reads its keys from files. Every service command also
takes ` + "`-log-level`" + ` (` + "`GATEHOUSE_<SERVICE>_LOG_LEVEL`" + `): debug, info (default), warn or error.
`)
	sections := []struct {
		name string
		bind func(*flag.FlagSet)
	}{
		{"issuer", new(issuerapp.Config).RegisterFlags},
		{"pdp", new(pdpapp.Config).RegisterFlags},
		{"gateway", new(gatewayapp.Config).RegisterFlags},
		{"invoice", new(invoiceapp.Config).RegisterFlags},
		{"support", new(supportapp.Config).RegisterFlags},
	}
	for _, s := range sections {
		fs := flag.NewFlagSet(s.name, flag.ContinueOnError)
		s.bind(fs)
		fmt.Fprintf(&buf, "\n## %s\n\n| flag | environment | default | meaning |\n|---|---|---|---|\n", s.name)
		fs.VisitAll(func(f *flag.Flag) {
			def := f.DefValue
			if def != "" {
				def = "`" + def + "`"
			}
			fmt.Fprintf(&buf, "| `-%s` | `%s` | %s | %s |\n", f.Name, envflag.Name(s.name, f.Name), def, strings.ReplaceAll(f.Usage, "|", "\\|"))
		})
	}
	if *update {
		if err := os.WriteFile(configDoc, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(configDoc)
	if err != nil {
		t.Fatalf("%v (run make docs)", err)
	}
	if !bytes.Equal(got, buf.Bytes()) {
		t.Fatalf("%s is stale: run make docs and commit it", configDoc)
	}
}
