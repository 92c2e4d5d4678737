package cli_test

import (
	"context"
	"net/url"
	"slices"
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

// TestAuditList merges two audit logs (an issuer's with token exchanges, a
// PDP's with decisions) and finds what an agent did while acting for
// customers.
func TestAuditList(t *testing.T) {
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
	t0 := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	logWith := func(events ...audit.Event) string {
		dsn := server.NewDatabase(t)
		pool, err := libpostgres.Open(t.Context(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		if err := auditpostgres.Migrate(t.Context(), pool); err != nil {
			t.Fatal(err)
		}
		if _, err := auditpostgres.New(pool).Append(t.Context(), events...); err != nil {
			t.Fatal(err)
		}
		return dsn
	}
	issuerLog := logWith(
		audit.Event{Time: t0, Type: audit.TypeTokenExchanged, Subject: "bob", ActorChain: []string{"sam"},
			ClientID: "support-console", Tenant: "acme", Decision: "ALLOW", ReasonCode: "allowed"},
		audit.Event{Time: t0.Add(3 * time.Second), Type: audit.TypeTokenIssued, Subject: "alice", ClientID: "invoice-web", Tenant: "acme"},
	)
	pdpLog := logWith(
		audit.Event{Time: t0.Add(time.Second), Type: audit.TypeDecision, Subject: "bob", ActorChain: []string{"sam"},
			ClientID: "support-console", Tenant: "acme", Action: "invoice:read", Resource: "invoice", Decision: "ALLOW", ReasonCode: "allowed"},
		audit.Event{Time: t0.Add(2 * time.Second), Type: audit.TypeDecision, Subject: "sam",
			ClientID: "support-console", Tenant: "acme", Action: "support:read", Resource: "ticket/tkt_1", Decision: "ALLOW", ReasonCode: "allowed"},
		audit.Event{Time: t0.Add(4 * time.Second), Type: audit.TypeDecision, Subject: "bob", ActorChain: []string{"sam"},
			ClientID: "support-console", Tenant: "acme", Action: "invoice:approve", Resource: "invoice/inv_1", Decision: "DENY", ReasonCode: "scope_not_permitted"},
	)
	dbName := func(dsn string) string {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimPrefix(u.Path, "/")
	}
	noEnv := func(string) string { return "" }

	t.Run("everything sam did for others, from both logs, in time order", func(t *testing.T) {
		res := run(t, noEnv, "audit", "list", "-actor", "sam", "-database-url", issuerLog, "-database-url", pdpLog)
		if res.code != cli.ExitOK {
			t.Fatalf("exit %d; stderr:\n%s", res.code, res.stderr)
		}
		lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
		if len(lines) != 4 {
			t.Fatalf("stdout:\n%s\nwant a header and 3 events", res.stdout)
		}
		for i, want := range [][]string{
			{"TIME", "LOG", "TYPE", "SUBJECT", "ACTORS"},
			{"2026-11-26T09:00:00Z", dbName(issuerLog), "token.exchanged", "bob", "sam", "support-console", "acme", "-", "-", "ALLOW"},
			{"2026-11-26T09:00:01Z", dbName(pdpLog), "decision", "bob", "sam", "support-console", "acme", "invoice:read", "invoice", "ALLOW", "allowed"},
			{"2026-11-26T09:00:04Z", dbName(pdpLog), "decision", "bob", "sam", "support-console", "acme", "invoice:approve", "invoice/inv_1", "DENY", "scope_not_permitted"},
		} {
			if got := strings.Fields(lines[i]); !slices.Equal(got[:len(want)], want) {
				t.Errorf("line %d = %q, want it to start with %q", i, lines[i], want)
			}
		}
		if !strings.HasSuffix(res.stderr, "3 events\n") {
			t.Errorf("stderr = %q, want the count", res.stderr)
		}
	})

	t.Run("filters combine", func(t *testing.T) {
		res := run(t, noEnv, "audit", "list", "-actor", "sam", "-type", "decision", "-database-url", pdpLog, "-limit", "1")
		if res.code != cli.ExitOK {
			t.Fatalf("exit %d; stderr:\n%s", res.code, res.stderr)
		}
		lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
		if len(lines) != 2 || !strings.Contains(lines[1], "invoice:read") {
			t.Errorf("stdout:\n%s\nwant only the first decision made for bob", res.stdout)
		}
	})

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{name: "no database", args: nil, want: "-database-url or $"},
		{name: "limit too large", args: []string{"-database-url", pdpLog, "-limit", "10001"}, want: "-limit must be in 1..10000"},
		{name: "negative since", args: []string{"-database-url", pdpLog, "-since", "-1h"}, want: "-since must not be negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := run(t, noEnv, append([]string{"audit", "list"}, tc.args...)...)
			if res.code != cli.ExitUsage || !strings.Contains(res.stderr, tc.want) || res.stdout != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want usage exit %d naming %q", res.code, res.stdout, res.stderr, cli.ExitUsage, tc.want)
			}
		})
	}
}
