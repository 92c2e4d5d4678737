// Package rollout is the end-to-end test of a staged policy rollout across
// two PDP replicas sharing one database, driven by the gatehouse CLI and the
// PolicyAdminService API. It has a stack of its own: the shadow report
// counts every decision, so no other test's traffic may reach these PDPs.
package rollout

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
	// cliPath is the gatehouse CLI, built from this checkout.
	cliPath string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "gatehouse-cli")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	cliPath = filepath.Join(dir, "gatehouse")
	build := exec.Command("go", "build", "-o", cliPath, "./cmd/gatehouse")
	build.Dir = filepath.Join("..", "..", "services", "pdp")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build the gatehouse CLI:", err)
		return 1
	}
	return stack.Main(m, &gh)
}
