package postgres_test

import (
	"os"
	"testing"

	libpostgres "github.com/gatehouse/gatehouse/libs/postgres"
	"github.com/gatehouse/gatehouse/libs/postgres/pgtest"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/postgres"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/storetest"
)

// server is the package's Postgres container, set by TestMain before any
// test runs.
var server *pgtest.Server

// TestMain fails (never skips) when Docker or the image is unavailable.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &server)) }

func newStore(t *testing.T) *postgres.Store {
	t.Helper()
	dsn := server.NewDatabase(t)
	pool, err := libpostgres.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := postgres.Migrate(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	return postgres.New(pool)
}

func TestContract(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store { return newStore(t) })
}

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	dsn := server.NewDatabase(t)
	pool, err := libpostgres.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	for i := range 2 {
		if err := postgres.Migrate(t.Context(), pool); err != nil {
			t.Fatalf("migrate run %d: %v", i+1, err)
		}
	}
}
