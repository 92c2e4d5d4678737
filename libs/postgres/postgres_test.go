package postgres_test

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/libs/postgres"
	"github.com/gatehouse/gatehouse/libs/postgres/pgtest"
)

var server *pgtest.Server

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &server)) }

func migrations(t *testing.T) fs.FS {
	t.Helper()
	fsys, err := fs.Sub(os.DirFS("testdata"), "migrations")
	if err != nil {
		t.Fatal(err)
	}
	return fsys
}

func open(t *testing.T, dsn string) *pgxpool.Pool {
	t.Helper()
	pool, err := postgres.Open(t.Context(), dsn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func TestOpen(t *testing.T) {
	t.Parallel()
	pool := open(t, server.NewDatabase(t))
	var one int
	if err := pool.QueryRow(t.Context(), "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 = %d, %v", one, err)
	}
}

func TestOpenInvalidDSN(t *testing.T) {
	t.Parallel()
	const secret = "hunter2-secret"
	tests := []struct {
		name string
		dsn  string
		want string
	}{
		{name: "empty", dsn: "  ", want: "empty DSN"},
		{name: "bad port", dsn: "postgres://app:" + secret + "@localhost:notaport/app", want: "invalid DSN"},
		{name: "bad keyword value", dsn: "host=localhost password=" + secret + " sslmode=sometimes", want: "invalid DSN"},
		{name: "unknown scheme", dsn: "mysql://app:" + secret + "@localhost/app", want: "invalid DSN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pool, err := postgres.Open(t.Context(), tc.dsn)
			if err == nil {
				pool.Close()
				t.Fatal("Open succeeded")
			}
			t.Logf("error: %v", err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q contains the password", err)
			}
		})
	}
}

func TestOpenWrongPassword(t *testing.T) {
	t.Parallel()
	const secret = "Wr0ng-pa55word-xyz"
	u, err := url.Parse(server.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), secret)

	start := time.Now()
	pool, err := postgres.Open(t.Context(), u.String())
	if err == nil {
		pool.Close()
		t.Fatal("Open succeeded with a wrong password")
	}
	t.Logf("error: %v", err)
	if strings.Contains(err.Error(), secret) {
		t.Errorf("error %q contains the password", err)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Errorf("error %q is not invalid_password (28P01)", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Open took %s: authentication failures must not be retried", elapsed)
	}
}

func TestOpenUnreachable(t *testing.T) {
	t.Parallel()
	dsn := "postgres://app:secret@" + closedPort(t) + "/app?sslmode=disable"

	t.Run("startup wait", func(t *testing.T) {
		t.Parallel()
		_, err := postgres.Open(t.Context(), dsn, postgres.WithStartupWait(500*time.Millisecond))
		t.Logf("error: %v", err)
		if !errors.Is(err, postgres.ErrNotReady) {
			t.Errorf("error %v does not wrap ErrNotReady", err)
		}
	})
	t.Run("context deadline", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := postgres.Open(ctx, dsn)
		t.Logf("error: %v", err)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
		}
		if elapsed := time.Since(start); elapsed > 5*time.Second {
			t.Errorf("Open returned %s after its context ended", elapsed)
		}
	})
}

// closedPort returns a loopback address on which nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	pool := open(t, server.NewDatabase(t))
	for range 2 { // the second run finds nothing to do
		if err := postgres.Migrate(t.Context(), pool, migrations(t)); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
	}
	assertMigrated(t, pool)
}

func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	dsn := server.NewDatabase(t)
	// Two replicas starting together, each with its own pool.
	pools := []*pgxpool.Pool{open(t, dsn), open(t, dsn)}
	fsys := migrations(t)
	errs := make([]error, len(pools))
	var wg sync.WaitGroup
	for i, pool := range pools {
		wg.Go(func() { errs[i] = postgres.Migrate(t.Context(), pool, fsys) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Migrate %d: %v", i, err)
		}
	}
	assertMigrated(t, pools[0])
}

func TestMigrateVersionTable(t *testing.T) {
	t.Parallel()
	pool := open(t, server.NewDatabase(t))
	// A second set, numbered from 1 like the first, for the same database.
	gadgets := fstest.MapFS{
		"00001_gadgets.sql": {Data: []byte("-- +goose Up\nCREATE TABLE gadgets (id bigint PRIMARY KEY);\n" +
			"INSERT INTO gadgets VALUES (1);\n-- +goose Down\nDROP TABLE gadgets;\n")},
	}
	for range 2 { // the second round finds nothing to do in either set
		if err := postgres.Migrate(t.Context(), pool, migrations(t)); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
		if err := postgres.Migrate(t.Context(), pool, gadgets, postgres.WithVersionTable("gadgets_db_version")); err != nil {
			t.Fatalf("Migrate with version table: %v", err)
		}
	}
	assertMigrated(t, pool)
	var version int64
	if err := pool.QueryRow(t.Context(), "SELECT max(version_id) FROM gadgets_db_version").Scan(&version); err != nil {
		t.Fatalf("read gadgets version: %v", err)
	}
	if version != 1 {
		t.Errorf("gadgets schema version = %d, want 1", version)
	}
	var rows int
	if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM gadgets").Scan(&rows); err != nil {
		t.Fatalf("count gadgets: %v", err)
	}
	if rows != 1 {
		t.Errorf("%d gadget rows, want 1", rows)
	}
}

func TestMigrateInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		fsys fs.FS
	}{
		{name: "no migrations", fsys: fstest.MapFS{}},
		{name: "bad SQL", fsys: fstest.MapFS{
			"00001_bad.sql": {Data: []byte("-- +goose Up\nCREATE TABLE (;\n")},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pool := open(t, server.NewDatabase(t))
			err := postgres.Migrate(t.Context(), pool, tc.fsys)
			if err == nil {
				t.Fatal("Migrate succeeded")
			}
			t.Logf("error: %v", err)
		})
	}
}

// assertMigrated checks that both test migrations ran, each exactly once.
func assertMigrated(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	var version int64
	if err := pool.QueryRow(t.Context(), "SELECT max(version_id) FROM goose_db_version").Scan(&version); err != nil {
		t.Fatalf("read version: %v", err)
	}
	if version != 2 {
		t.Errorf("schema version = %d, want 2", version)
	}
	var seeds int
	if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM widgets WHERE name = 'seed' AND color = 'blue'").Scan(&seeds); err != nil {
		t.Fatalf("count seed rows: %v", err)
	}
	if seeds != 1 {
		t.Errorf("%d seed rows, want 1: a migration ran more than once", seeds)
	}
}
