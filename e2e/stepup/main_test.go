// Package stepup is the end-to-end test of step-up authentication (RFC 9470,
// docs/step-up.md): the demo client deploy/demo/cmd/stepup approving a
// 25,000.00 invoice in Debian's Chromium, the exact challenge through the
// gateway, and the tokens that must not get through (edited claims, another
// user, a refresh). It has a stack of its own: it promotes a policy whose
// step-up max_age is a few seconds, so that no test waits five minutes.
package stepup

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/gatehouse/gatehouse/e2e/stack"
)

var (
	// gh is the stack every test in this package runs against.
	gh *stack.Stack
	// gatehouseCLI is the gatehouse CLI and stepupCLI the step-up demo
	// client, both built from this checkout.
	gatehouseCLI, stepupCLI string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "gatehouse-stepup")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	gatehouseCLI = filepath.Join(dir, "gatehouse")
	stepupCLI = filepath.Join(dir, "stepup")
	for _, b := range []struct{ out, module, pkg string }{
		{gatehouseCLI, "services/pdp", "./cmd/gatehouse"},
		{stepupCLI, "deploy/demo", "./cmd/stepup"},
	} {
		build := exec.Command("go", "build", "-o", b.out, b.pkg)
		build.Dir = filepath.Join("..", "..", b.module)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: build %s: %v\n", b.pkg, err)
			return 1
		}
	}
	return stack.Main(m, &gh)
}
