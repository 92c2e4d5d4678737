package memory_test

import (
	"testing"

	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/memory"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/storetest"
)

func TestBrowserSessionStoreContract(t *testing.T) {
	t.Parallel()
	storetest.RunBrowserSessionStore(t, func(*testing.T) store.BrowserSessionStore { return memory.NewBrowserSessionStore() })
}

func TestInteractionStoreContract(t *testing.T) {
	t.Parallel()
	storetest.RunInteractionStore(t, func(*testing.T) store.InteractionStore { return memory.NewInteractionStore() })
}

func TestConsentStoreContract(t *testing.T) {
	t.Parallel()
	storetest.RunConsentStore(t, func(*testing.T) store.ConsentStore { return memory.NewConsentStore() })
}
