package memory_test

import (
	"testing"

	"github.com/gatehouse/gatehouse/services/pdp/internal/policystore"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policystore/memory"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policystore/storetest"
)

func TestContract(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(*testing.T) policystore.Store { return memory.New() })
}
