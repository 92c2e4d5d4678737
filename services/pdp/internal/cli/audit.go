package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
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

// maxAuditList bounds what audit list prints.
const maxAuditList = 10000

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// auditList prints the audit events matching its filters from one or more
// audit logs (each service keeps its own chain: the issuer's holds token
// exchanges, the PDP's every decision), merged in time order. With -actor
// it answers "what did this agent do while acting for someone else".
func auditList(ctx context.Context, c *cli, cmd *command, args []string) error {
	fs := c.newFlagSet(cmd)
	var dsns stringList
	fs.Var(&dsns, "database-url", "Postgres URL of a database holding an audit log; repeat it to merge several (else $"+EnvDatabaseURL+")")
	var q audit.Query
	fs.StringVar(&q.Actor, "actor", "", "only events in whose actor chain this subject or client appears")
	fs.StringVar(&q.Subject, "subject", "", "only events about this subject")
	fs.StringVar(&q.Tenant, "tenant", "", "only events of this tenant")
	fs.StringVar(&q.ClientID, "client", "", "only events of this client_id")
	typ := fs.String("type", "", "only events of this type (decision, token.exchanged, ...)")
	since := fs.Duration("since", 0, "only events of the last DURATION (e.g. 1h); 0 means all")
	limit := fs.Int("limit", 100, "print at most N events (at most 10000), the oldest first")
	if _, err := c.parseN(cmd, fs, args, 0); err != nil {
		return err
	}
	if len(dsns) == 0 {
		if env := c.env(EnvDatabaseURL); env != "" {
			dsns = append(dsns, env)
		}
	}
	switch {
	case len(dsns) == 0:
		return cmd.usageErr("-database-url or $%s is required", EnvDatabaseURL)
	case *limit < 1 || *limit > maxAuditList:
		return cmd.usageErr("-limit must be in 1..%d, got %d", maxAuditList, *limit)
	case *since < 0:
		return cmd.usageErr("-since must not be negative")
	}
	q.Type = audit.Type(*typ)
	if *since > 0 {
		q.Since = time.Now().Add(-*since)
	}

	type found struct {
		event audit.Event
		db    string
	}
	var events []found
	for _, dsn := range dsns {
		openCtx, cancel := context.WithTimeout(ctx, c.timeout)
		// Open's errors never hold the password; the DSN itself is never printed.
		pool, err := libpostgres.Open(openCtx, dsn, libpostgres.WithStartupWait(0))
		cancel()
		if err != nil {
			return fmt.Errorf("audit list: %w", err)
		}
		cc := pool.Config().ConnConfig
		c.progress("reading the audit log in %s@%s:%d/%s", cc.User, cc.Host, cc.Port, cc.Database)
		store := &timeoutStore{store: auditpostgres.New(pool), timeout: c.timeout}
		page := q
		page.Limit = min(*limit, audit.MaxListLimit)
		for n := 0; n < *limit; {
			got, err := store.List(ctx, page)
			if err != nil {
				pool.Close()
				return fmt.Errorf("audit list: %s: %w", cc.Database, err)
			}
			for _, e := range got {
				events = append(events, found{event: e, db: cc.Database})
			}
			n += len(got)
			if len(got) < page.Limit {
				break
			}
			page.AfterSeq = got[len(got)-1].Seq
		}
		pool.Close()
	}
	slices.SortStableFunc(events, func(a, b found) int { return a.event.Time.Compare(b.event.Time) })
	if len(events) > *limit {
		events = events[:*limit]
	}
	t := newTable()
	t.row("TIME", "LOG", "TYPE", "SUBJECT", "ACTORS", "CLIENT", "TENANT", "ACTION", "RESOURCE", "DECISION", "REASON")
	for _, f := range events {
		e := f.event
		t.row(e.Time.UTC().Format(time.RFC3339Nano), f.db, string(e.Type), e.Subject, strings.Join(e.ActorChain, ">"),
			e.ClientID, e.Tenant, e.Action, e.Resource, e.Decision, e.ReasonCode)
	}
	if err := t.writeTo(c.stdout); err != nil {
		return err
	}
	c.progress("%d events", len(events))
	return nil
}
