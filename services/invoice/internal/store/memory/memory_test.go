package memory_test

import (
	"testing"

	"github.com/gatehouse/gatehouse/services/invoice/internal/invoice"
	"github.com/gatehouse/gatehouse/services/invoice/internal/store/memory"
	"github.com/gatehouse/gatehouse/services/invoice/internal/store/storetest"
)

func TestContract(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(*testing.T) invoice.Store { return memory.New() })
}
