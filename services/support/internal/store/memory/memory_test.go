package memory_test

import (
	"testing"

	"github.com/gatehouse/gatehouse/services/support/internal/store/memory"
	"github.com/gatehouse/gatehouse/services/support/internal/store/storetest"
	"github.com/gatehouse/gatehouse/services/support/internal/support"
)

func TestContract(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(*testing.T) support.Store { return memory.New() })
}
