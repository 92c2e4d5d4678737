package postgres_test

import (
	"context"
	"os"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
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

func TestContractAsynchronousCommit(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) audit.Store {
		return postgres.New(newPool(t), postgres.WithAsynchronousCommit())
	})
}

// statements records the SQL a pool sends.
type statements struct {
	mu  sync.Mutex
	sql []string
}

func (s *statements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sql = append(s.sql, data.SQL)
	return ctx
}

func (*statements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (s *statements) count(sql string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, q := range s.sql {
		if q == sql {
			n++
		}
	}
	return n
}

// TestAsynchronousCommit checks that the option turns synchronous_commit
// off for each append's transaction, that the default leaves it alone, and
// that the setting never leaks to the pooled connection.
func TestAsynchronousCommit(t *testing.T) {
	t.Parallel()
	const setLocal = "SET LOCAL synchronous_commit = off"
	for _, tc := range []struct {
		name string
		opts []postgres.Option
		want int
	}{
		{name: "default", want: 0},
		{name: "asynchronous", opts: []postgres.Option{postgres.WithAsynchronousCommit()}, want: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dsn := server.NewDatabase(t)
			migrated := newPoolOn(t, dsn, nil)
			if err := postgres.Migrate(t.Context(), migrated); err != nil {
				t.Fatal(err)
			}
			trace := &statements{}
			// One connection: the SHOW below runs where the appends ran.
			pool := newPoolOn(t, dsn, func(c *pgxpool.Config) { c.ConnConfig.Tracer = trace; c.MaxConns = 1 })
			var before string
			if err := pool.QueryRow(t.Context(), "SHOW synchronous_commit").Scan(&before); err != nil {
				t.Fatal(err)
			}
			store := postgres.New(pool, tc.opts...)
			for range 2 {
				if _, err := store.Append(t.Context(), audit.Event{Type: audit.TypeDecision, Subject: "alice", Decision: "ALLOW"}); err != nil {
					t.Fatal(err)
				}
			}
			if got := trace.count(setLocal); got != tc.want {
				t.Errorf("%q sent %d times for 2 appends, want %d", setLocal, got, tc.want)
			}
			var setting string
			if err := pool.QueryRow(t.Context(), "SHOW synchronous_commit").Scan(&setting); err != nil {
				t.Fatal(err)
			}
			if setting != before {
				t.Errorf("synchronous_commit after the appends = %q, want the connection's setting before them, %q", setting, before)
			}
			events, err := store.List(t.Context(), audit.Query{})
			if err != nil {
				t.Fatal(err)
			}
			if len(events) != 2 {
				t.Errorf("listed %d events, want 2", len(events))
			}
		})
	}
}

func newPoolOn(t *testing.T, dsn string, configure func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if configure != nil {
		configure(cfg)
	}
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}
