// Package postgres is an audit.Store on PostgreSQL (pgx v5). Its schema
// lives in migrations/ and is applied by Migrate, which records its
// versions in a table of its own (VersionTable) so that the audit chain can
// share a service's database with the service's own migrations.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/libs/audit"
	libpostgres "github.com/gatehouse/gatehouse/libs/postgres"
)

// VersionTable is where Migrate records the audit schema's versions.
const VersionTable = "audit_goose_db_version"

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrate applies the audit schema's migrations to pool's database.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	migrations, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return fmt.Errorf("audit store: migrations: %w", err)
	}
	if err := libpostgres.Migrate(ctx, pool, migrations, libpostgres.WithVersionTable(VersionTable)); err != nil {
		return fmt.Errorf("audit store: %w", err)
	}
	return nil
}

// eventIDConstraint is the unique constraint on audit_events.event_id.
const eventIDConstraint = "audit_events_event_id_key"

// columnList names the columns of audit_events in the order row and
// scanEvent use.
const columnList = "seq, event_id, occurred_at, type, subject, actor_chain, client_id, tenant, " +
	"action, resource, decision, reason_code, policy_version, shadow, request_id, " +
	"trace_id, latency_ns, attributes, prev_hash, hash, hash_version"

// Store is an audit.Store on a pgx pool it does not own.
type Store struct {
	pool        *pgxpool.Pool
	columns     []string // columnList, for COPY
	asyncCommit bool
}

var _ audit.Store = (*Store)(nil)

// copyChunk is how many events Append seals and copies at a time.
const copyChunk = 200

// Option configures a Store.
type Option func(*Store)

// WithAsynchronousCommit makes every Append commit with PostgreSQL's
// synchronous_commit off, for that transaction only: the commit returns
// before its WAL record is flushed to disk. A high-volume log (the PDP's
// decision log) then writes at the rate of the CPU rather than of the
// disk's flushes. The cost: if the database server crashes (not a clean
// stop, and not a crash of the appending process), the appends of the last
// moments before the crash (up to three times wal_writer_delay, 600 ms by
// default) are gone. The chain head rolls back with them, so the chain
// stays verifiable; the loss does not show as tampering. The database never
// becomes inconsistent. docs/audit.md weighs this.
func WithAsynchronousCommit() Option { return func(s *Store) { s.asyncCommit = true } }

// New returns a Store using pool; the schema must be migrated (see Migrate).
func New(pool *pgxpool.Pool, opts ...Option) *Store {
	s := &Store{pool: pool, columns: strings.Split(columnList, ", ")}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Append implements audit.Store. One transaction per call locks the chain
// head row, so concurrent appends, from any process, take turns.
func (s *Store) Append(ctx context.Context, events ...audit.Event) ([]audit.Event, error) {
	if len(events) == 0 {
		return nil, nil
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit store: append: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	if s.asyncCommit {
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
			return nil, fmt.Errorf("audit store: append: %w", err)
		}
	}
	var head audit.Head
	if err := tx.QueryRow(ctx, `SELECT seq, hash FROM audit_chain_head FOR UPDATE`).Scan(&head.Seq, &head.Hash); err != nil {
		return nil, fmt.Errorf("audit store: append: lock chain head: %w", err)
	}
	// Seal and copy in chunks, each chained after the last: the same chain
	// as one Seal of the whole batch. A chunk is about a millisecond of CPU
	// (hashing, encoding); a batch of a thousand would hold the process
	// for several, and where it has one processor (a PDP on one core) every
	// request waits that long. Each chunk's COPY waits for the database,
	// which lets waiting requests run in between.
	if len(events) > audit.MaxAppendBatch {
		return nil, fmt.Errorf("audit store: append: %d events, at most %d: %w", len(events), audit.MaxAppendBatch, audit.ErrInvalidEvent)
	}
	all := make([]audit.Event, 0, len(events))
	ids := make(map[string]struct{}, len(events))
	for chunk := range slices.Chunk(events, copyChunk) {
		sealed, err := audit.Seal(head, chunk)
		if err != nil {
			return nil, err
		}
		for _, e := range sealed {
			if _, dup := ids[e.EventID]; dup {
				return nil, fmt.Errorf("audit store: append: event id %q twice in one append: %w", e.EventID, audit.ErrDuplicateEvent)
			}
			ids[e.EventID] = struct{}{}
		}
		_, err = tx.CopyFrom(ctx, pgx.Identifier{"audit_events"}, s.columns, pgx.CopyFromSlice(len(sealed), func(i int) ([]any, error) {
			return row(sealed[i]), nil
		}))
		if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.ConstraintName == eventIDConstraint {
			return nil, fmt.Errorf("audit store: append: %s: %w", pgErr.Detail, audit.ErrDuplicateEvent)
		}
		if err != nil {
			return nil, fmt.Errorf("audit store: append: %w", err)
		}
		all = append(all, sealed...)
		last := sealed[len(sealed)-1]
		head = audit.Head{Seq: last.Seq, Hash: last.Hash}
	}
	if _, err := tx.Exec(ctx, `UPDATE audit_chain_head SET seq = $1, hash = $2`, head.Seq, head.Hash); err != nil {
		return nil, fmt.Errorf("audit store: append: move chain head: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("audit store: append: commit: %w", err)
	}
	return all, nil
}

// row returns e's values in the order of columnList.
func row(e audit.Event) []any {
	actors := e.ActorChain
	if actors == nil {
		actors = []string{}
	}
	attrs := e.Attributes
	if attrs == nil {
		attrs = map[string]string{}
	}
	return []any{
		e.Seq, e.EventID, e.Time, string(e.Type), e.Subject, actors, e.ClientID, e.Tenant,
		e.Action, e.Resource, e.Decision, e.ReasonCode, e.PolicyVersion, e.Shadow, e.RequestID,
		e.TraceID, int64(e.Latency), attrs, e.PrevHash, e.Hash, e.HashVersion,
	}
}

// List implements audit.Store.
func (s *Store) List(ctx context.Context, q audit.Query) ([]audit.Event, error) {
	q, err := q.Normalize()
	if err != nil {
		return nil, err
	}
	var sql strings.Builder
	args := []any{q.AfterSeq}
	sql.WriteString("SELECT " + columnList + " FROM audit_events WHERE seq > $1")
	where := func(cond string, arg any) {
		args = append(args, arg)
		sql.WriteString(" AND " + cond + " $" + strconv.Itoa(len(args)))
	}
	if q.Type != "" {
		where("type =", string(q.Type))
	}
	if q.Subject != "" {
		where("subject =", q.Subject)
	}
	if q.ClientID != "" {
		where("client_id =", q.ClientID)
	}
	if q.Tenant != "" {
		where("tenant =", q.Tenant)
	}
	if q.Actor != "" {
		args = append(args, q.Actor)
		sql.WriteString(" AND $" + strconv.Itoa(len(args)) + " = ANY(actor_chain)")
	}
	if !q.Since.IsZero() {
		where("occurred_at >=", q.Since)
	}
	if !q.Until.IsZero() {
		where("occurred_at <", q.Until)
	}
	args = append(args, q.Limit)
	sql.WriteString(" ORDER BY seq LIMIT $" + strconv.Itoa(len(args)))

	rows, err := s.pool.Query(ctx, sql.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("audit store: list: %w", err)
	}
	events, err := pgx.CollectRows(rows, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("audit store: list: %w", err)
	}
	return events, nil
}

func scanEvent(row pgx.CollectableRow) (audit.Event, error) {
	var (
		e       audit.Event
		typ     string
		latency int64
	)
	err := row.Scan(&e.Seq, &e.EventID, &e.Time, &typ, &e.Subject, &e.ActorChain, &e.ClientID, &e.Tenant,
		&e.Action, &e.Resource, &e.Decision, &e.ReasonCode, &e.PolicyVersion, &e.Shadow, &e.RequestID,
		&e.TraceID, &latency, &e.Attributes, &e.PrevHash, &e.Hash, &e.HashVersion)
	if err != nil {
		return e, err
	}
	e.Type, e.Latency, e.Time = audit.Type(typ), time.Duration(latency), e.Time.UTC()
	if len(e.ActorChain) == 0 {
		e.ActorChain = nil
	}
	if len(e.Attributes) == 0 {
		e.Attributes = nil
	}
	return e, nil
}

// Head implements audit.Store.
func (s *Store) Head(ctx context.Context) (audit.Head, error) {
	var h audit.Head
	if err := s.pool.QueryRow(ctx, `SELECT seq, hash FROM audit_chain_head`).Scan(&h.Seq, &h.Hash); err != nil {
		return h, fmt.Errorf("audit store: head: %w", err)
	}
	return h, nil
}
