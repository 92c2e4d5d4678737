// Package postgres connects Gatehouse services to PostgreSQL: Open returns a
// ready connection pool, waiting for a server that is still starting, and
// Migrate brings a database's schema up to date.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Pool settings Open applies unless the DSN sets them (connect_timeout,
// pool_max_conns, pool_max_conn_lifetime, pool_max_conn_idle_time).
const (
	defaultConnectTimeout  = 5 * time.Second
	defaultMaxConns        = 10
	defaultMaxConnLifetime = 30 * time.Minute
	defaultMaxConnIdleTime = 5 * time.Minute
)

// Retry schedule of Open's first ping.
const (
	defaultStartupWait = 30 * time.Second
	firstRetryDelay    = 100 * time.Millisecond
	maxRetryDelay      = 2 * time.Second
	// pingTimeout bounds one attempt beyond the connect timeout, for a server
	// that accepts the connection but does not answer.
	pingTimeout = 5 * time.Second
)

// ErrNotReady is wrapped by Open's error when the server did not accept a
// connection within the startup wait.
var ErrNotReady = errors.New("server not ready")

// Option changes how Open connects.
type Option func(*options)

type options struct {
	startupWait time.Duration
	logger      *slog.Logger
}

// WithStartupWait sets how long Open keeps retrying while the server is
// unreachable or still starting up (default 30s), so that a service and its
// database can start together. Zero means a single attempt.
func WithStartupWait(d time.Duration) Option {
	return func(o *options) { o.startupWait = max(d, 0) }
}

// WithLogger makes Open report each failed attempt to l while it waits. The
// records name the user, host, port and database, never the password.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// Open connects to the PostgreSQL server that dsn (a postgres:// URL or a
// keyword/value string) names and returns a pool once a ping succeeds.
// Connection failures and startup errors are retried for the startup wait
// (see WithStartupWait; then the error wraps ErrNotReady) or until ctx is
// done; authentication and other errors reported by the server fail at once.
// Errors never contain the DSN's password.
func Open(ctx context.Context, dsn string, opts ...Option) (*pgxpool.Pool, error) {
	o := options{startupWait: defaultStartupWait}
	for _, opt := range opts {
		opt(&o)
	}
	if strings.TrimSpace(dsn) == "" {
		return nil, errors.New("postgres: empty DSN")
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: invalid DSN: %w", err)
	}
	applyDefaults(cfg, dsn)
	password := cfg.ConnConfig.Password
	target := fmt.Sprintf("%s@%s:%d/%s", cfg.ConnConfig.User, cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database)

	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, redact(fmt.Errorf("postgres: %s: %w", target, err), password)
	}
	if err := ping(ctx, pool, cfg.ConnConfig.ConnectTimeout, o, target, password); err != nil {
		pool.Close()
		return nil, redact(fmt.Errorf("postgres: %s: %w", target, err), password)
	}
	return pool, nil
}

// applyDefaults sets the pool limits and connect timeout that dsn leaves unset.
func applyDefaults(cfg *pgxpool.Config, dsn string) {
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = defaultConnectTimeout
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns = defaultMaxConns
	}
	if !strings.Contains(dsn, "pool_max_conn_lifetime") {
		cfg.MaxConnLifetime = defaultMaxConnLifetime
	}
	if !strings.Contains(dsn, "pool_max_conn_idle_time") {
		cfg.MaxConnIdleTime = defaultMaxConnIdleTime
	}
}

// ping pings pool until it answers, retrying with backoff while the error is
// transient and the startup wait lasts.
func ping(ctx context.Context, pool *pgxpool.Pool, connectTimeout time.Duration, o options, target, password string) error {
	deadline := time.Now().Add(o.startupWait)
	delay := firstRetryDelay
	for attempt := 1; ; attempt++ {
		attemptCtx, cancel := context.WithTimeout(ctx, connectTimeout+pingTimeout)
		err := pool.Ping(attemptCtx)
		cancel()
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("waiting for the server: %w (last error: %w)", ctx.Err(), err)
		case !transient(err):
			return err
		}
		wait := min(delay, time.Until(deadline))
		if wait <= 0 {
			return fmt.Errorf("%w after %s (%d attempts): %w", ErrNotReady, o.startupWait, attempt, err)
		}
		if o.logger != nil {
			o.logger.InfoContext(ctx, "postgres not ready, retrying",
				slog.String("target", target), slog.Int("attempt", attempt),
				slog.Duration("retry_in", wait), slog.String("error", redact(err, password).Error()))
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("waiting for the server: %w (last error: %w)", ctx.Err(), err)
		case <-timer.C:
		}
		delay = min(2*delay, maxRetryDelay)
	}
}

// transient reports whether err may go away once the server has started:
// anything short of an answer from the server, or the server saying it is
// starting up, shutting down or full.
func transient(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return true
	}
	switch pgErr.Code {
	case "57P03", // cannot_connect_now: starting up or shutting down
		"53300": // too_many_connections
		return true
	}
	return strings.HasPrefix(pgErr.Code, "08") // connection exceptions
}

// redactedError masks a password in the text of the error it wraps. pgx keeps
// passwords out of its messages; this guards against any layer that echoes
// a connection string anyway.
type redactedError struct {
	err      error
	password string
}

func (e *redactedError) Error() string {
	return strings.ReplaceAll(e.err.Error(), e.password, "xxxxx")
}

func (e *redactedError) Unwrap() error { return e.err }

func redact(err error, password string) error {
	if err == nil || password == "" {
		return err
	}
	return &redactedError{err: err, password: password}
}
