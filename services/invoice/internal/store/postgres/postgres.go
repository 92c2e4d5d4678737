// Package postgres is the invoice service's invoice.Store on PostgreSQL (pgx
// v5). Its schema lives in migrations/ and is applied by Migrate at start.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	libpostgres "github.com/gatehouse/gatehouse/libs/postgres"
	"github.com/gatehouse/gatehouse/services/invoice/internal/invoice"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrate applies the invoice schema migrations to pool's database.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	migrations, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return fmt.Errorf("invoice store: migrations: %w", err)
	}
	if err := libpostgres.Migrate(ctx, pool, migrations); err != nil {
		return fmt.Errorf("invoice store: migrate: %w", err)
	}
	return nil
}

// uniqueViolation is PostgreSQL's SQLSTATE for a duplicate key.
const uniqueViolation = "23505"

// columns is the select list every query scans with scanInvoice.
const columns = `id, tenant, customer, amount_cents, currency, status, created_by, create_time, approved_by, approve_time`

// Store is an invoice.Store on a pgx pool it does not own.
type Store struct {
	pool *pgxpool.Pool
}

var _ invoice.Store = (*Store)(nil)

// New returns a Store using pool; the schema must be migrated (see Migrate).
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Create implements invoice.Store.
func (s *Store) Create(ctx context.Context, inv invoice.Invoice) error {
	_, err := s.pool.Exec(ctx, `
		INSERT INTO invoices (`+columns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		inv.ID, inv.Tenant, inv.Customer, inv.AmountCents, inv.Currency, string(inv.Status), inv.CreatedBy, inv.CreateTime,
		nullIfZero(inv.ApprovedBy), nullIfZero(inv.ApproveTime))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == uniqueViolation {
		return fmt.Errorf("invoice %q: %w", inv.ID, invoice.ErrDuplicateID)
	}
	if err != nil {
		return fmt.Errorf("invoice store: insert: %w", err)
	}
	return nil
}

// Get implements invoice.Store.
func (s *Store) Get(ctx context.Context, tenant, id string) (invoice.Invoice, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+columns+` FROM invoices WHERE tenant = $1 AND id = $2`, tenant, id)
	if err != nil {
		return invoice.Invoice{}, fmt.Errorf("invoice store: get: %w", err)
	}
	inv, err := pgx.CollectExactlyOneRow(rows, scanInvoice)
	if errors.Is(err, pgx.ErrNoRows) {
		return invoice.Invoice{}, fmt.Errorf("invoice %q: %w", id, invoice.ErrNotFound)
	}
	if err != nil {
		return invoice.Invoice{}, fmt.Errorf("invoice store: get: %w", err)
	}
	return inv, nil
}

// List implements invoice.Store. The row comparison (create_time, id) > (...)
// is answered from the (tenant, create_time, id) index.
func (s *Store) List(ctx context.Context, tenant string, after *invoice.Cursor, limit int) ([]invoice.Invoice, error) {
	if limit < 1 {
		return nil, fmt.Errorf("list invoices: limit %d is not positive", limit)
	}
	var (
		rows pgx.Rows
		err  error
	)
	if after == nil {
		rows, err = s.pool.Query(ctx, `
			SELECT `+columns+` FROM invoices
			WHERE tenant = $1
			ORDER BY create_time, id
			LIMIT $2`, tenant, limit)
	} else {
		rows, err = s.pool.Query(ctx, `
			SELECT `+columns+` FROM invoices
			WHERE tenant = $1 AND (create_time, id) > ($2, $3)
			ORDER BY create_time, id
			LIMIT $4`, tenant, after.CreateTime, after.ID, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("invoice store: list: %w", err)
	}
	invs, err := pgx.CollectRows(rows, scanInvoice)
	if err != nil {
		return nil, fmt.Errorf("invoice store: list: %w", err)
	}
	return invs, nil
}

// Approve implements invoice.Store. The UPDATE approves only a draft, so of
// concurrent approvals exactly one changes the row; when none does, a read
// tells a missing invoice from an approved one (a status never goes back
// to draft).
func (s *Store) Approve(ctx context.Context, tenant, id, subject string, at time.Time) (invoice.Invoice, error) {
	rows, err := s.pool.Query(ctx, `
		UPDATE invoices SET status = $3, approved_by = $4, approve_time = $5
		WHERE tenant = $1 AND id = $2 AND status = $6
		RETURNING `+columns,
		tenant, id, string(invoice.StatusApproved), subject, at, string(invoice.StatusDraft))
	if err != nil {
		return invoice.Invoice{}, fmt.Errorf("invoice store: approve: %w", err)
	}
	inv, err := pgx.CollectExactlyOneRow(rows, scanInvoice)
	if err == nil {
		return inv, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return invoice.Invoice{}, fmt.Errorf("invoice store: approve: %w", err)
	}
	if _, err := s.Get(ctx, tenant, id); err != nil {
		return invoice.Invoice{}, err
	}
	return invoice.Invoice{}, fmt.Errorf("invoice %q: %w", id, invoice.ErrAlreadyApproved)
}

// Ping implements invoice.Store.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("invoice store: ping: %w", err)
	}
	return nil
}

func scanInvoice(row pgx.CollectableRow) (invoice.Invoice, error) {
	var (
		inv         invoice.Invoice
		status      string
		approvedBy  *string
		approveTime *time.Time
	)
	if err := row.Scan(&inv.ID, &inv.Tenant, &inv.Customer, &inv.AmountCents, &inv.Currency, &status, &inv.CreatedBy, &inv.CreateTime,
		&approvedBy, &approveTime); err != nil {
		return invoice.Invoice{}, err
	}
	inv.Status = invoice.Status(status)
	inv.CreateTime = inv.CreateTime.UTC()
	if approvedBy != nil {
		inv.ApprovedBy = *approvedBy
	}
	if approveTime != nil {
		inv.ApproveTime = approveTime.UTC()
	}
	return inv, nil
}

// nullIfZero stores an unset field as NULL.
func nullIfZero[T comparable](v T) *T {
	var zero T
	if v == zero {
		return nil
	}
	return &v
}
