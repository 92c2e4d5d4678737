package postgres_test

import (
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	libpostgres "github.com/gatehouse/gatehouse/libs/postgres"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/postgres"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/storetest"
)

// interactionPool returns a pool on a fresh, migrated database.
func interactionPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := libpostgres.Open(t.Context(), server.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := postgres.Migrate(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	return pool
}

func TestBrowserSessionStoreContract(t *testing.T) {
	t.Parallel()
	storetest.RunBrowserSessionStore(t, func(t *testing.T) store.BrowserSessionStore {
		return postgres.NewBrowserSessionStore(interactionPool(t))
	})
}

func TestInteractionStoreContract(t *testing.T) {
	t.Parallel()
	storetest.RunInteractionStore(t, func(t *testing.T) store.InteractionStore {
		return postgres.NewInteractionStore(interactionPool(t))
	})
}

func TestConsentStoreContract(t *testing.T) {
	t.Parallel()
	storetest.RunConsentStore(t, func(t *testing.T) store.ConsentStore {
		return postgres.NewConsentStore(interactionPool(t))
	})
}
