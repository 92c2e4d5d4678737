// Package attacks runs Gatehouse's attack-scenario catalogue
// (e2e/attacks/catalogue) against the containerised stack: every scenario
// must get exactly its expected answer, and leave what it tried to change
// as it was.
package attacks

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
