// Package flows holds Gatehouse's end-to-end flow tests: real OAuth clients
// against the containerised stack, through the gateway.
package flows

import (
	"os"
	"testing"

	"github.com/gatehouse/gatehouse/e2e/stack"
)

// gh is the stack every test in this package runs against.
var gh *stack.Stack

func TestMain(m *testing.M) {
	os.Exit(stack.Main(m, &gh))
}
