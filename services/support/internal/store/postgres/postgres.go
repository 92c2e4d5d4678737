// Package postgres is the support service's support.Store on PostgreSQL
// (pgx v5). Its schema lives in migrations/ and is applied by Migrate at
// start.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	libpostgres "github.com/gatehouse/gatehouse/libs/postgres"
	"github.com/gatehouse/gatehouse/services/support/internal/support"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrate applies the support schema migrations to pool's database.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	migrations, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return fmt.Errorf("support store: migrations: %w", err)
	}
	if err := libpostgres.Migrate(ctx, pool, migrations); err != nil {
		return fmt.Errorf("support store: migrate: %w", err)
	}
	return nil
}

// uniqueViolation is PostgreSQL's SQLSTATE for a duplicate key.
const uniqueViolation = "23505"

// The select lists every query scans with scanTicket and scanSession.
const (
	ticketColumns  = `id, tenant, customer, summary, status, access, create_time, close_time, closed_by`
	sessionColumns = `id, ticket_id, tenant, customer, agent, jti, scopes, start_time, expire_time, end_time`
)

// Store is a support.Store on a pgx pool it does not own.
type Store struct {
	pool *pgxpool.Pool
}

var _ support.Store = (*Store)(nil)

// New returns a Store using pool; the schema must be migrated (see Migrate).
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// CreateTicket implements support.Store.
func (s *Store) CreateTicket(ctx context.Context, t support.Ticket) error {
	_, err := s.pool.Exec(ctx, `
		INSERT INTO tickets (`+ticketColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		t.ID, t.Tenant, t.Customer, t.Summary, string(t.Status), string(t.Access), t.CreateTime,
		nullIfZero(t.CloseTime), nullIfZero(t.ClosedBy))
	if isUniqueViolation(err) {
		return fmt.Errorf("ticket %q: %w", t.ID, support.ErrDuplicateID)
	}
	if err != nil {
		return fmt.Errorf("support store: insert ticket: %w", err)
	}
	return nil
}

// GetTicket implements support.Store.
func (s *Store) GetTicket(ctx context.Context, tenant, id string) (support.Ticket, error) {
	return getTicket(ctx, s.pool, tenant, id, "")
}

// ListTickets implements support.Store. The row comparison (create_time,
// id) > (...) is answered from the tenant (and customer) indexes.
func (s *Store) ListTickets(ctx context.Context, f support.TicketFilter, after *support.Cursor, limit int) ([]support.Ticket, error) {
	if limit < 1 {
		return nil, fmt.Errorf("list tickets: limit %d is not positive", limit)
	}
	where := []string{"tenant = $1"}
	args := []any{f.Tenant}
	add := func(cond string, vals ...any) {
		for _, v := range vals {
			args = append(args, v)
			cond = strings.Replace(cond, "?", "$"+strconv.Itoa(len(args)), 1)
		}
		where = append(where, cond)
	}
	if f.Customer != "" {
		add("customer = ?", f.Customer)
	}
	if f.Status != "" {
		add("status = ?", string(f.Status))
	}
	if after != nil {
		add("(create_time, id) > (?, ?)", after.CreateTime, after.ID)
	}
	args = append(args, limit)
	rows, err := s.pool.Query(ctx, `SELECT `+ticketColumns+` FROM tickets WHERE `+strings.Join(where, " AND ")+
		` ORDER BY create_time, id LIMIT $`+strconv.Itoa(len(args)), args...)
	if err != nil {
		return nil, fmt.Errorf("support store: list tickets: %w", err)
	}
	tickets, err := pgx.CollectRows(rows, scanTicket)
	if err != nil {
		return nil, fmt.Errorf("support store: list tickets: %w", err)
	}
	return tickets, nil
}

// CloseTicket implements support.Store. In one transaction: the UPDATE
// closes only an open ticket, so of concurrent closes exactly one changes
// the row (the others wait for its lock, then find it closed); then every
// active session of the ticket is ended. A CreateSession holds a share
// lock on the ticket until it commits, so its session is either seen here
// or finds the ticket closed.
func (s *Store) CloseTicket(ctx context.Context, tenant, id, subject string, at time.Time) (support.Ticket, []support.Session, error) {
	var (
		closed support.Ticket
		ended  []support.Session
	)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			UPDATE tickets SET status = 'closed', close_time = $3, closed_by = $4
			WHERE tenant = $1 AND id = $2 AND status = 'open'
			RETURNING `+ticketColumns, tenant, id, at, subject)
		if err != nil {
			return fmt.Errorf("support store: close ticket: %w", err)
		}
		closed, err = pgx.CollectExactlyOneRow(rows, scanTicket)
		if errors.Is(err, pgx.ErrNoRows) {
			// Missing (or another tenant's), or closed already: a status
			// never goes back to open.
			if _, err := getTicket(ctx, tx, tenant, id, ""); err != nil {
				return err
			}
			return fmt.Errorf("ticket %q: %w", id, support.ErrTicketClosed)
		}
		if err != nil {
			return fmt.Errorf("support store: close ticket: %w", err)
		}
		rows, err = tx.Query(ctx, `
			UPDATE impersonation_sessions SET end_time = $3
			WHERE tenant = $1 AND ticket_id = $2 AND end_time IS NULL AND expire_time > $3
			RETURNING `+sessionColumns, tenant, id, at)
		if err != nil {
			return fmt.Errorf("support store: end sessions: %w", err)
		}
		ended, err = pgx.CollectRows(rows, scanSession)
		if err != nil {
			return fmt.Errorf("support store: end sessions: %w", err)
		}
		return nil
	})
	if err != nil {
		return support.Ticket{}, nil, err
	}
	return closed, ended, nil
}

// CreateSession implements support.Store: the ticket is read FOR SHARE, so
// a concurrent CloseTicket waits for this transaction (and then ends the
// new session) or wins first (and the ticket is found closed).
func (s *Store) CreateSession(ctx context.Context, sess support.Session) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		t, err := getTicket(ctx, tx, sess.Tenant, sess.TicketID, "FOR SHARE")
		if err != nil {
			return err
		}
		if t.Status != support.StatusOpen {
			return fmt.Errorf("ticket %q: %w", t.ID, support.ErrTicketClosed)
		}
		scopes := sess.Scopes
		if scopes == nil {
			scopes = []string{}
		}
		_, err = tx.Exec(ctx, `
			INSERT INTO impersonation_sessions (`+sessionColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			sess.ID, sess.TicketID, sess.Tenant, sess.Customer, sess.Agent, sess.JTI, scopes,
			sess.StartTime, sess.ExpireTime, nullIfZero(sess.EndTime))
		if isUniqueViolation(err) {
			return fmt.Errorf("session %q: %w", sess.ID, support.ErrDuplicateID)
		}
		if err != nil {
			return fmt.Errorf("support store: insert session: %w", err)
		}
		return nil
	})
}

// GetSession implements support.Store.
func (s *Store) GetSession(ctx context.Context, tenant, id string) (support.Session, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+sessionColumns+` FROM impersonation_sessions WHERE tenant = $1 AND id = $2`, tenant, id)
	if err != nil {
		return support.Session{}, fmt.Errorf("support store: get session: %w", err)
	}
	sess, err := pgx.CollectExactlyOneRow(rows, scanSession)
	if errors.Is(err, pgx.ErrNoRows) {
		return support.Session{}, fmt.Errorf("session %q: %w", id, support.ErrSessionNotFound)
	}
	if err != nil {
		return support.Session{}, fmt.Errorf("support store: get session: %w", err)
	}
	return sess, nil
}

// EndSession implements support.Store. The UPDATE ends only an active
// session; when none changes, a read tells a missing session from one that
// is over (an ended session never reopens).
func (s *Store) EndSession(ctx context.Context, tenant, id string, at time.Time) (support.Session, error) {
	rows, err := s.pool.Query(ctx, `
		UPDATE impersonation_sessions SET end_time = $3
		WHERE tenant = $1 AND id = $2 AND end_time IS NULL AND expire_time > $3
		RETURNING `+sessionColumns, tenant, id, at)
	if err != nil {
		return support.Session{}, fmt.Errorf("support store: end session: %w", err)
	}
	sess, err := pgx.CollectExactlyOneRow(rows, scanSession)
	if err == nil {
		return sess, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return support.Session{}, fmt.Errorf("support store: end session: %w", err)
	}
	if _, err := s.GetSession(ctx, tenant, id); err != nil {
		return support.Session{}, err
	}
	return support.Session{}, fmt.Errorf("session %q: %w", id, support.ErrSessionOver)
}

// Ping implements support.Store.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("support store: ping: %w", err)
	}
	return nil
}

// querier is a pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// getTicket reads ticket id of tenant through q, with an optional locking
// clause.
func getTicket(ctx context.Context, q querier, tenant, id, lock string) (support.Ticket, error) {
	rows, err := q.Query(ctx, `SELECT `+ticketColumns+` FROM tickets WHERE tenant = $1 AND id = $2 `+lock, tenant, id)
	if err != nil {
		return support.Ticket{}, fmt.Errorf("support store: get ticket: %w", err)
	}
	t, err := pgx.CollectExactlyOneRow(rows, scanTicket)
	if errors.Is(err, pgx.ErrNoRows) {
		return support.Ticket{}, fmt.Errorf("ticket %q: %w", id, support.ErrTicketNotFound)
	}
	if err != nil {
		return support.Ticket{}, fmt.Errorf("support store: get ticket: %w", err)
	}
	return t, nil
}

func scanTicket(row pgx.CollectableRow) (support.Ticket, error) {
	var (
		t              support.Ticket
		status, access string
		closeTime      *time.Time
		closedBy       *string
	)
	if err := row.Scan(&t.ID, &t.Tenant, &t.Customer, &t.Summary, &status, &access, &t.CreateTime, &closeTime, &closedBy); err != nil {
		return support.Ticket{}, err
	}
	t.Status, t.Access = support.Status(status), support.Access(access)
	t.CreateTime = t.CreateTime.UTC()
	if closeTime != nil {
		t.CloseTime = closeTime.UTC()
	}
	if closedBy != nil {
		t.ClosedBy = *closedBy
	}
	return t, nil
}

func scanSession(row pgx.CollectableRow) (support.Session, error) {
	var (
		sess    support.Session
		endTime *time.Time
	)
	if err := row.Scan(&sess.ID, &sess.TicketID, &sess.Tenant, &sess.Customer, &sess.Agent, &sess.JTI, &sess.Scopes,
		&sess.StartTime, &sess.ExpireTime, &endTime); err != nil {
		return support.Session{}, err
	}
	sess.StartTime, sess.ExpireTime = sess.StartTime.UTC(), sess.ExpireTime.UTC()
	if endTime != nil {
		sess.EndTime = endTime.UTC()
	}
	if len(sess.Scopes) == 0 {
		sess.Scopes = nil
	}
	return sess, nil
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == uniqueViolation
}

// nullIfZero stores an unset field as NULL.
func nullIfZero[T comparable](v T) *T {
	var zero T
	if v == zero {
		return nil
	}
	return &v
}
