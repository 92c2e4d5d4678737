package memory_test

import (
	"testing"

	"github.com/gatehouse/gatehouse/services/issuer/internal/store/memory"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/storetest"
)

func TestGrantStoreContract(t *testing.T) {
	t.Parallel()
	storetest.RunGrantStore(t, func(*testing.T) storetest.GrantBackend { return memory.New() })
}
