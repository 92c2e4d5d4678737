package cli_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/libs/audit"
	auditpostgres "github.com/gatehouse/gatehouse/libs/audit/postgres"
	libpostgres "github.com/gatehouse/gatehouse/libs/postgres"
	"github.com/gatehouse/gatehouse/libs/postgres/pgtest"
	"github.com/gatehouse/gatehouse/services/pdp/internal/cli"
)

// TestAuditVerify runs audit verify against a real audit chain in Postgres.
// It starts its own container, so the package's other tests need no
// Docker; it fails (never skips) when Docker or the image is missing.
func TestAuditVerify(t *testing.T) {
	t.Parallel()
	server, err := pgtest.Start(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := server.Terminate(ctx); err != nil {
			t.Error(err)
		}
	})
	dsn := server.NewDatabase(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	password, _ := u.User.Password()
	pool, err := libpostgres.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := auditpostgres.Migrate(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	var events []audit.Event
	for _, subject := range []string{"alice", "bob", "carol", "dave", "erin"} {
		events = append(events, audit.Event{Type: audit.TypeDecision, Subject: subject, Tenant: "acme",
			Action: "invoice:read", Resource: "invoice/inv-1", Decision: "ALLOW", ReasonCode: "allowed", PolicyVersion: "r1"})
	}
	stored, err := auditpostgres.New(pool).Append(t.Context(), events...)
	if err != nil {
		t.Fatal(err)
	}
	head := stored[len(stored)-1]
	noEnv := func(string) string { return "" }

	// check runs audit verify and checks that the password never shows.
	check := func(t *testing.T, env func(string) string, args ...string) result {
		t.Helper()
		res := run(t, env, append([]string{"audit", "verify"}, args...)...)
		if strings.Contains(res.stdout+res.stderr, password) {
			t.Errorf("output shows the database password:\nstdout:\n%s\nstderr:\n%s", res.stdout, res.stderr)
		}
		return res
	}

	t.Run("intact", func(t *testing.T) {
		res := check(t, noEnv, "-database-url", dsn)
		if res.code != cli.ExitOK {
			t.Fatalf("exit %d; stderr:\n%s", res.code, res.stderr)
		}
		want := "checked           5\nlast intact seq   5\nlast intact hash  " + head.Hash + "\nresult            intact\n"
		if res.stdout != want {
			t.Errorf("stdout:\n%s\nwant:\n%s", res.stdout, want)
		}
		if !strings.HasPrefix(res.stderr, "verifying the audit chain in postgres@") {
			t.Errorf("stderr = %q, want a progress line naming the database", res.stderr)
		}
	})

	t.Run("URL from the environment", func(t *testing.T) {
		res := check(t, func(k string) string {
			if k == cli.EnvDatabaseURL {
				return dsn
			}
			return ""
		})
		if res.code != cli.ExitOK {
			t.Fatalf("exit %d; stderr:\n%s", res.code, res.stderr)
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		bad := *u
		bad.User = url.UserPassword(u.User.Username(), "Wr0ng-pw-never-printed")
		res := check(t, noEnv, "-database-url", bad.String())
		if res.code != cli.ExitFailure {
			t.Errorf("exit %d, want %d", res.code, cli.ExitFailure)
		}
		if strings.Contains(res.stdout+res.stderr, "Wr0ng-pw-never-printed") {
			t.Errorf("output shows the wrong password:\n%s", res.stderr)
		}
	})

	t.Run("no audit schema", func(t *testing.T) {
		res := check(t, noEnv, "-database-url", server.NewDatabase(t))
		if res.code != cli.ExitFailure {
			t.Errorf("exit %d, want %d; stderr:\n%s", res.code, cli.ExitFailure, res.stderr)
		}
		if res.stdout != "" || !strings.Contains(res.stderr, `relation "audit_events" does not exist`) {
			t.Errorf("stdout:\n%s\nstderr:\n%s\nwant no report and the missing table", res.stdout, res.stderr)
		}
	})

	t.Run("tampered", func(t *testing.T) {
		// As a superuser could: with the append-only triggers off.
		err := pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(t.Context(), "SET LOCAL session_replication_role = replica"); err != nil {
				return err
			}
			_, err := tx.Exec(t.Context(), `UPDATE audit_events SET subject = 'mallory' WHERE seq = 3`)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		res := check(t, noEnv, "-database-url", dsn)
		if res.code != cli.ExitTampered {
			t.Fatalf("exit %d, want %d; stderr:\n%s", res.code, cli.ExitTampered, res.stderr)
		}
		for _, want := range []string{"checked           2\n", "last intact seq   2\n", "result            TAMPERED\n", "problem           changed\n", "at seq            3\n"} {
			if !strings.Contains(res.stdout, want) {
				t.Errorf("stdout:\n%s\nwant it to contain %q", res.stdout, want)
			}
		}
		if !strings.Contains(res.stderr, "gatehouse: audit verify: audit: chain not intact at seq 3: changed: ") {
			t.Errorf("stderr:\n%s\nwant the problem", res.stderr)
		}
	})
}
