package postgres_test

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	libpostgres "github.com/gatehouse/gatehouse/libs/postgres"
	"github.com/gatehouse/gatehouse/libs/postgres/pgtest"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policystore"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policystore/postgres"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policystore/storetest"
)

// server is the package's Postgres container, set by TestMain before any
// test runs.
var server *pgtest.Server

// TestMain fails (never skips) when Docker or the image is unavailable.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &server)) }

// newPool opens a pool on a fresh, migrated database.
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
	storetest.Run(t, func(t *testing.T) policystore.Store { return postgres.New(newPool(t)) })
}

func TestMigrateTwice(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	if err := postgres.Migrate(t.Context(), pool); err != nil {
		t.Fatalf("second Migrate = %v", err)
	}
	r, err := postgres.New(pool).Rollout(t.Context())
	if err != nil || r != (policystore.Rollout{}) {
		t.Fatalf("Rollout after migrating twice = %+v, %v; want the zero Rollout", r, err)
	}
}

// TestSubscribeAcrossStores: a change through one Store (a replica) is
// signalled to another's subscription on the same database.
func TestSubscribeAcrossStores(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	writer := postgres.New(pool)
	other, err := pgxpool.NewWithConfig(t.Context(), pool.Config())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	reader := postgres.New(other)

	ch, err := reader.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	putBundle(t, writer, "v1")
	if _, err := writer.UpdateRollout(t.Context(), 0, policystore.Rollout{Active: "v1", Mode: policystore.ModeNone},
		policystore.Change{Action: policystore.ActionInit, Actor: "pdp-1"}); err != nil {
		t.Fatal(err)
	}
	waitSignal(t, ch)
	r, err := reader.Rollout(t.Context())
	if err != nil || r.Generation != 1 || r.Active != "v1" {
		t.Fatalf("reader's Rollout = %+v, %v; want generation 1 with v1 active", r, err)
	}
}

// TestSubscribeReconnects: a subscription whose connection is killed
// reconnects, signals (a change may have been missed) and goes on
// signalling changes.
func TestSubscribeReconnects(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	s := postgres.New(pool)
	ch, err := s.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var killed int
	if err := pool.QueryRow(t.Context(), `
		SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1 AND datname = current_database()`,
		postgres.ListenerApplicationName).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed != 1 {
		t.Fatalf("terminated %d listener connections, want 1", killed)
	}
	waitSignal(t, ch)

	putBundle(t, s, "v1")
	if _, err := s.UpdateRollout(t.Context(), 0, policystore.Rollout{Active: "v1", Mode: policystore.ModeNone},
		policystore.Change{Action: policystore.ActionInit, Actor: "pdp"}); err != nil {
		t.Fatal(err)
	}
	waitSignal(t, ch)
}

func putBundle(t *testing.T, s policystore.Store, revision string) {
	t.Helper()
	b := policystore.Bundle{Revision: revision, Tarball: []byte("tarball " + revision)}
	sum := sha256.Sum256(b.Tarball)
	b.Digest = hex.EncodeToString(sum[:])
	if _, err := s.PutBundle(t.Context(), b); err != nil {
		t.Fatal(err)
	}
}

func waitSignal(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case _, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed, want a value")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no value within 10s")
	}
}
