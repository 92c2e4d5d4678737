package memory_test

import (
	"testing"

	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/memory"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/storetest"
)

func TestKeyStoreContract(t *testing.T) {
	t.Parallel()
	storetest.RunKeyStore(t, func(*testing.T) store.KeyStore { return memory.NewKeyStore() })
}
