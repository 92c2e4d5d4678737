package cli

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/gatehouse/gatehouse/libs/audit"
	auditpostgres "github.com/gatehouse/gatehouse/libs/audit/postgres"
	libpostgres "github.com/gatehouse/gatehouse/libs/postgres"
)

func auditVerify(ctx context.Context, c *cli, cmd *command, args []string) error {
	fs := c.newFlagSet(cmd)
	dsn := fs.String("database-url", "", "Postgres URL of the database holding the audit log (else $"+EnvDatabaseURL+")")
	if _, err := c.parseN(cmd, fs, args, 0); err != nil {
		return err
	}
	if *dsn == "" {
		*dsn = c.env(EnvDatabaseURL)
	}
	if *dsn == "" {
		return cmd.usageErr("-database-url or $%s is required", EnvDatabaseURL)
	}
	openCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	// Open's errors never hold the password; the DSN itself is never printed.
	pool, err := libpostgres.Open(openCtx, *dsn, libpostgres.WithStartupWait(0))
	if err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	defer pool.Close()
	cc := pool.Config().ConnConfig
	c.progress("verifying the audit chain in %s@%s:%d/%s", cc.User, cc.Host, cc.Port, cc.Database)

	// Verify is read-only: the schema is not migrated here.
	report, verr := audit.Verify(ctx, &timeoutStore{store: auditpostgres.New(pool), timeout: c.timeout})
	if verr != nil && report.Problem == nil {
		return fmt.Errorf("audit verify: %w", verr) // the chain could not be read
	}
	t := newTable()
	t.row("checked", strconv.FormatInt(report.Checked, 10))
	t.row("last intact seq", strconv.FormatInt(report.Verified.Seq, 10))
	t.row("last intact hash", report.Verified.Hash)
	if p := report.Problem; p != nil {
		t.row("result", "TAMPERED")
		t.row("problem", string(p.Kind))
		t.row("at seq", strconv.FormatInt(p.Seq, 10))
		t.row("detail", p.Detail)
	} else {
		t.row("result", "intact")
	}
	if err := t.writeTo(c.stdout); err != nil {
		return err
	}
	if verr != nil {
		return fmt.Errorf("audit verify: %w", verr)
	}
	return nil
}

// timeoutStore gives each read of the chain its own deadline, so a walk of
// any length proceeds while no single page can hang. It is read-only.
type timeoutStore struct {
	store   audit.Store
	timeout time.Duration
}

var _ audit.Store = (*timeoutStore)(nil)

// errReadOnly is Append's error: verifying never writes.
var errReadOnly = errors.New("audit verify: the store is read-only")

func (s *timeoutStore) Append(context.Context, ...audit.Event) ([]audit.Event, error) {
	return nil, errReadOnly
}

func (s *timeoutStore) List(ctx context.Context, q audit.Query) ([]audit.Event, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.store.List(ctx, q)
}

func (s *timeoutStore) Head(ctx context.Context) (audit.Head, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.store.Head(ctx)
}
