package memory_test

import (
	"testing"

	"github.com/gatehouse/gatehouse/libs/audit"
	"github.com/gatehouse/gatehouse/libs/audit/memory"
	"github.com/gatehouse/gatehouse/libs/audit/storetest"
)

func TestContract(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(*testing.T) audit.Store { return memory.New() })
}
