package memory_test

import (
	"testing"

	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/memory"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/storetest"
)

func TestUserStoreContract(t *testing.T) {
	t.Parallel()
	storetest.RunUserStore(t, func(*testing.T) store.UserStore { return memory.NewUserStore() })
}
