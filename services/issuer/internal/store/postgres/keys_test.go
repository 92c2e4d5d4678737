package postgres_test

import (
	"testing"

	libpostgres "github.com/gatehouse/gatehouse/libs/postgres"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/postgres"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/storetest"
)

func TestKeyStoreContract(t *testing.T) {
	t.Parallel()
	storetest.RunKeyStore(t, func(t *testing.T) store.KeyStore {
		t.Helper()
		pool, err := libpostgres.Open(t.Context(), server.NewDatabase(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		if err := postgres.Migrate(t.Context(), pool); err != nil {
			t.Fatal(err)
		}
		return postgres.NewKeyStore(pool)
	})
}
