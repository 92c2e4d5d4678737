package postgres_test

import (
	"os"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/libs/audit"
	"github.com/gatehouse/gatehouse/libs/audit/postgres"
	"github.com/gatehouse/gatehouse/libs/audit/storetest"
	libpostgres "github.com/gatehouse/gatehouse/libs/postgres"
	"github.com/gatehouse/gatehouse/libs/postgres/pgtest"
)

// server is the package's Postgres container, set by TestMain before any
// test runs.
var server *pgtest.Server

// TestMain fails (never skips) when Docker or the image is unavailable.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &server)) }

// newPool returns a pool on a fresh, migrated database.
func newPool(t *testing.T) *pgxpool.Pool {
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

func TestContract(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) audit.Store { return postgres.New(newPool(t)) })
}
