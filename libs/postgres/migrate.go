package postgres

import (
	"context"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// Migrations wait this long for another process's migration run to finish:
// checks every second, up to five minutes.
const (
	migrationLockPeriodSeconds = 1
	migrationLockChecks        = 300
)

// MigrateOption changes how Migrate records what it applied.
type MigrateOption func(*migrateOptions)

type migrateOptions struct {
	versionTable string
}

// WithVersionTable makes Migrate record applied versions in table instead of
// goose_db_version, so that a second, independently numbered set of
// migrations (a library's schema, such as libs/audit's) can share a
// database with the service's own.
func WithVersionTable(table string) MigrateOption {
	return func(o *migrateOptions) { o.versionTable = table }
}

// Migrate applies the migrations in migrations that the database has not
// applied yet, in version order, and records them in goose_db_version
// (see WithVersionTable).
//
// migrations holds goose SQL files at its root, named VERSION_NAME.sql
// (00001_init.sql) with "-- +goose Up" (and Down) annotations; pass
// fs.Sub of an embedded migrations directory. Replicas that start together
// take turns on a PostgreSQL advisory lock, so each migration runs once;
// running Migrate on an up-to-date database does nothing.
func Migrate(ctx context.Context, pool *pgxpool.Pool, migrations fs.FS, opts ...MigrateOption) error {
	var o migrateOptions
	for _, opt := range opts {
		opt(&o)
	}
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(migrationLockPeriodSeconds, migrationLockChecks))
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	providerOpts := []goose.ProviderOption{
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
	}
	if o.versionTable != "" {
		providerOpts = append(providerOpts, goose.WithTableName(o.versionTable))
	}
	// Closing db (through the provider) leaves pool open.
	db := stdlib.OpenDBFromPool(pool)
	provider, err := goose.NewProvider(goose.DialectPostgres, db, migrations, providerOpts...)
	if err != nil {
		_ = db.Close()
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	defer func() { _ = provider.Close() }()
	if _, err := provider.Up(ctx); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	return nil
}
