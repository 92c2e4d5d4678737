package postgres_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/libs/audit"
	"github.com/gatehouse/gatehouse/libs/audit/postgres"
	libpostgres "github.com/gatehouse/gatehouse/libs/postgres"
)

// seed appends five decision events and returns them.
func seed(t *testing.T, s *postgres.Store) []audit.Event {
	t.Helper()
	var batch []audit.Event
	for _, subject := range []string{"alice", "bob", "carol", "dave", "erin"} {
		batch = append(batch, audit.Event{
			Type: audit.TypeDecision, Subject: subject, ClientID: "invoice-web", Tenant: "acme",
			Action: "invoice:read", Resource: "invoice/inv_1", Decision: "ALLOW", ReasonCode: "allowed",
			PolicyVersion: "v1", Shadow: &audit.Shadow{Decision: "DENY", ReasonCode: "denied", PolicyVersion: "v2"},
			Latency: time.Millisecond, Attributes: map[string]string{"scope": "invoice:read"},
		})
	}
	events, err := s.Append(t.Context(), batch...)
	if err != nil {
		t.Fatal(err)
	}
	return events
}

// tamper runs sql with the append-only triggers off, as a superuser (or
// anyone with direct write access to the table files' contents) could.
func tamper(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	err := pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(t.Context(), "SET LOCAL session_replication_role = replica"); err != nil {
			return err
		}
		_, err := tx.Exec(t.Context(), sql, args...)
		return err
	})
	if err != nil {
		t.Fatalf("tamper %q: %v", sql, err)
	}
}

// forge returns a copy of e changed by change, with a recomputed hash.
func forge(t *testing.T, e audit.Event, change func(*audit.Event)) audit.Event {
	t.Helper()
	f := e.Clone()
	change(&f)
	hash, err := f.ComputeHash()
	if err != nil {
		t.Fatal(err)
	}
	f.Hash = hash
	return f
}

// copyRowSQL inserts a copy of the row at seq $1 as seq $2, event id $3,
// prev_hash $4 and hash $5.
const copyRowSQL = `
	INSERT INTO audit_events (seq, event_id, occurred_at, type, subject, actor_chain, client_id,
		tenant, action, resource, decision, reason_code, policy_version, shadow, request_id,
		trace_id, latency_ns, attributes, prev_hash, hash, hash_version)
	SELECT $2, $3, occurred_at, type, subject, actor_chain, client_id,
		tenant, action, resource, decision, reason_code, policy_version, shadow, request_id,
		trace_id, latency_ns, attributes, $4, $5, hash_version
	FROM audit_events WHERE seq = $1`

func TestVerifyDetectsTampering(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		tamper func(t *testing.T, pool *pgxpool.Pool, events []audit.Event)
		kind   audit.ProblemKind
		seq    int64
	}{
		{name: "update subject", kind: audit.ProblemChanged, seq: 3,
			tamper: func(t *testing.T, pool *pgxpool.Pool, _ []audit.Event) {
				tamper(t, pool, `UPDATE audit_events SET subject = 'mallory' WHERE seq = 3`)
			}},
		{name: "update decision", kind: audit.ProblemChanged, seq: 2,
			tamper: func(t *testing.T, pool *pgxpool.Pool, _ []audit.Event) {
				tamper(t, pool, `UPDATE audit_events SET decision = 'DENY' WHERE seq = 2`)
			}},
		{name: "update attributes", kind: audit.ProblemChanged, seq: 4,
			tamper: func(t *testing.T, pool *pgxpool.Pool, _ []audit.Event) {
				tamper(t, pool, `UPDATE audit_events SET attributes = attributes || '{"scope": "admin"}' WHERE seq = 4`)
			}},
		{name: "update time", kind: audit.ProblemChanged, seq: 1,
			tamper: func(t *testing.T, pool *pgxpool.Pool, _ []audit.Event) {
				tamper(t, pool, `UPDATE audit_events SET occurred_at = occurred_at - interval '1 microsecond' WHERE seq = 1`)
			}},
		{name: "drop shadow", kind: audit.ProblemChanged, seq: 5,
			tamper: func(t *testing.T, pool *pgxpool.Pool, _ []audit.Event) {
				tamper(t, pool, `UPDATE audit_events SET shadow = NULL WHERE seq = 5`)
			}},
		{name: "update latency", kind: audit.ProblemChanged, seq: 2,
			tamper: func(t *testing.T, pool *pgxpool.Pool, _ []audit.Event) {
				tamper(t, pool, `UPDATE audit_events SET latency_ns = 0 WHERE seq = 2`)
			}},
		{name: "downgrade hash version", kind: audit.ProblemChanged, seq: 3,
			tamper: func(t *testing.T, pool *pgxpool.Pool, _ []audit.Event) {
				tamper(t, pool, `UPDATE audit_events SET hash_version = 0 WHERE seq = 3`)
			}},
		{name: "update and rehash", kind: audit.ProblemBrokenLink, seq: 4,
			tamper: func(t *testing.T, pool *pgxpool.Pool, events []audit.Event) {
				f := forge(t, events[2], func(e *audit.Event) { e.Decision = "DENY" })
				tamper(t, pool, `UPDATE audit_events SET decision = $1, hash = $2 WHERE seq = 3`, f.Decision, f.Hash)
			}},
		{name: "delete middle", kind: audit.ProblemRemoved, seq: 3,
			tamper: func(t *testing.T, pool *pgxpool.Pool, _ []audit.Event) {
				tamper(t, pool, `DELETE FROM audit_events WHERE seq = 3`)
			}},
		{name: "delete first", kind: audit.ProblemRemoved, seq: 1,
			tamper: func(t *testing.T, pool *pgxpool.Pool, _ []audit.Event) {
				tamper(t, pool, `DELETE FROM audit_events WHERE seq = 1`)
			}},
		{name: "delete last", kind: audit.ProblemRemoved, seq: 5,
			tamper: func(t *testing.T, pool *pgxpool.Pool, _ []audit.Event) {
				tamper(t, pool, `DELETE FROM audit_events WHERE seq = 5`)
			}},
		{name: "delete all", kind: audit.ProblemRemoved, seq: 1,
			tamper: func(t *testing.T, pool *pgxpool.Pool, _ []audit.Event) {
				tamper(t, pool, `DELETE FROM audit_events`)
			}},
		{name: "delete and renumber", kind: audit.ProblemChanged, seq: 3,
			tamper: func(t *testing.T, pool *pgxpool.Pool, _ []audit.Event) {
				tamper(t, pool, `DELETE FROM audit_events WHERE seq = 3`)
				tamper(t, pool, `UPDATE audit_events SET seq = seq - 1 WHERE seq = 4`)
				tamper(t, pool, `UPDATE audit_events SET seq = seq - 1 WHERE seq = 5`)
				tamper(t, pool, `UPDATE audit_chain_head SET seq = 4`)
			}},
		{name: "insert past the head", kind: audit.ProblemInserted, seq: 6,
			tamper: func(t *testing.T, pool *pgxpool.Pool, events []audit.Event) {
				f := forge(t, events[4], func(e *audit.Event) { e.Seq, e.EventID, e.PrevHash = 6, "forged", events[4].Hash })
				tamper(t, pool, copyRowSQL, 5, f.Seq, f.EventID, f.PrevHash, f.Hash)
			}},
		{name: "insert with a made-up hash", kind: audit.ProblemChanged, seq: 6,
			tamper: func(t *testing.T, pool *pgxpool.Pool, events []audit.Event) {
				tamper(t, pool, copyRowSQL, 5, 6, "forged", events[4].Hash, events[4].Hash)
				tamper(t, pool, `UPDATE audit_chain_head SET seq = 6`)
			}},
		{name: "rewrite the head", kind: audit.ProblemChanged, seq: 5,
			tamper: func(t *testing.T, pool *pgxpool.Pool, events []audit.Event) {
				tamper(t, pool, `UPDATE audit_chain_head SET hash = $1`, events[3].Hash)
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pool := newPool(t)
			s := postgres.New(pool)
			events := seed(t, s)
			if _, err := audit.Verify(t.Context(), s); err != nil {
				t.Fatalf("Verify before tampering = %v", err)
			}
			tc.tamper(t, pool, events)

			r, err := audit.Verify(t.Context(), s)
			t.Logf("Verify: %v", err)
			if !errors.Is(err, audit.ErrTampered) {
				t.Fatalf("Verify = %+v, %v; want ErrTampered", r, err)
			}
			var p *audit.Problem
			if !errors.As(err, &p) || p != r.Problem {
				t.Fatalf("Verify error %v is not the report's problem %+v", err, r.Problem)
			}
			if p.Kind != tc.kind || p.Seq != tc.seq {
				t.Fatalf("Verify found %s at seq %d, want %s at seq %d", p.Kind, p.Seq, tc.kind, tc.seq)
			}
		})
	}
}

// TestVerifyNeedsAnAnchorForTruncation documents the limit of a keyless
// chain: whoever can rewrite the head too can cut off the newest events
// unnoticed by Verify alone, but not unnoticed by a head recorded elsewhere.
func TestVerifyNeedsAnAnchorForTruncation(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	s := postgres.New(pool)
	events := seed(t, s)
	anchor, err := s.Head(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	tamper(t, pool, `DELETE FROM audit_events WHERE seq = 5`)
	tamper(t, pool, `UPDATE audit_chain_head SET seq = 4, hash = $1`, events[3].Hash)

	r, err := audit.Verify(t.Context(), s)
	if err != nil {
		t.Fatalf("Verify = %v; a consistently truncated chain verifies", err)
	}
	if r.Verified == anchor {
		t.Fatalf("Verified %+v equals the anchor taken before truncation", r.Verified)
	}
}

func TestAppendOnly(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	s := postgres.New(pool)
	seed(t, s)
	for _, sql := range []string{
		`UPDATE audit_events SET subject = 'mallory' WHERE seq = 1`,
		`DELETE FROM audit_events WHERE seq = 5`,
		`TRUNCATE audit_events`,
	} {
		_, err := pool.Exec(t.Context(), sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Errorf("%s = %v, want insufficient_privilege (42501)", sql, err)
		}
	}
	if r, err := audit.Verify(t.Context(), s); err != nil || r.Checked != 5 {
		t.Fatalf("Verify = %+v, %v; want 5 intact events", r, err)
	}
}

func TestReplicasShareOneChain(t *testing.T) {
	t.Parallel()
	dsn := server.NewDatabase(t)
	var stores []*postgres.Store
	for range 2 { // two replicas, each with its own pool
		pool, err := libpostgres.Open(t.Context(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		if err := postgres.Migrate(t.Context(), pool); err != nil {
			t.Fatal(err)
		}
		stores = append(stores, postgres.New(pool))
	}
	const perReplica = 40
	var wg sync.WaitGroup
	errs := make([]error, len(stores))
	for i, s := range stores {
		wg.Go(func() {
			for range perReplica {
				if _, err := s.Append(t.Context(), audit.Event{Type: audit.TypeTokenIssued}); err != nil {
					errs[i] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	r, err := audit.Verify(t.Context(), stores[1])
	if err != nil || r.Checked != 2*perReplica {
		t.Fatalf("Verify = %+v, %v; want %d intact events", r, err, 2*perReplica)
	}
}

// TestMigrateSharesDatabase runs the audit migrations in a database that
// already has a service's goose migrations, numbered from 1 as well.
func TestMigrateSharesDatabase(t *testing.T) {
	t.Parallel()
	pool, err := libpostgres.Open(t.Context(), server.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	service := fstest.MapFS{
		"00001_clients.sql": {Data: []byte("-- +goose Up\nCREATE TABLE clients (id text PRIMARY KEY);\n")},
		"00002_users.sql":   {Data: []byte("-- +goose Up\nCREATE TABLE users (id text PRIMARY KEY);\n")},
		"00003_roles.sql":   {Data: []byte("-- +goose Up\nCREATE TABLE roles (id text PRIMARY KEY);\n")},
	}
	for range 2 { // in either order, any number of times
		if err := postgres.Migrate(t.Context(), pool); err != nil {
			t.Fatalf("audit Migrate: %v", err)
		}
		if err := libpostgres.Migrate(t.Context(), pool, service); err != nil {
			t.Fatalf("service Migrate: %v", err)
		}
	}
	versions := map[string]int64{"goose_db_version": 3, postgres.VersionTable: 2}
	for table, want := range versions {
		var got int64
		if err := pool.QueryRow(t.Context(), "SELECT max(version_id) FROM "+table).Scan(&got); err != nil {
			t.Fatalf("read %s: %v", table, err)
		}
		if got != want {
			t.Errorf("%s at version %d, want %d", table, got, want)
		}
	}
	if _, err := postgres.New(pool).Append(context.Background(), audit.Event{Type: audit.TypeKeyCreated}); err != nil {
		t.Fatalf("Append after migrating: %v", err)
	}
}
