package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/services/pdp/internal/policystore"
)

// RolloutChannel is the LISTEN/NOTIFY channel every rollout change
// notifies, in its transaction, with the new generation as payload.
const RolloutChannel = "gatehouse_policy_rollout"

// ListenerApplicationName is the application_name of Subscribe's
// connections, so that operators can find them in pg_stat_activity.
const ListenerApplicationName = "gatehouse-pdp-rollout-listener"

const (
	// How long a listener waits before reconnecting: doubling from the
	// first delay up to the last.
	listenFirstRetry = 100 * time.Millisecond
	listenMaxRetry   = 10 * time.Second
	// listenPingInterval is how long a listener waits for a notification
	// before it checks that its connection is alive.
	listenPingInterval = 30 * time.Second
	// listenQueryTimeout bounds each statement on a listener connection.
	listenQueryTimeout = 10 * time.Second
)

// Rollout implements policystore.Store.
func (s *Store) Rollout(ctx context.Context) (policystore.Rollout, error) {
	var (
		r         policystore.Rollout
		mode      string
		updatedAt *time.Time
	)
	err := s.pool.QueryRow(ctx, `
		SELECT generation, active, candidate, mode, canary_percent, previous, updated_by, updated_at
		FROM policy_rollout`).
		Scan(&r.Generation, &r.Active, &r.Candidate, &mode, &r.CanaryPercent, &r.Previous, &r.UpdatedBy, &updatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, errors.New("policy store: policy_rollout has no row: is the schema migrated?")
	}
	if err != nil {
		return r, fmt.Errorf("policy store: read rollout: %w", err)
	}
	r.Mode = policystore.Mode(mode)
	if updatedAt != nil {
		r.UpdatedAt = updatedAt.UTC()
	}
	return r, nil
}

// UpdateRollout implements policystore.Store. The update is a
// compare-and-set on the rollout row's generation: of concurrent updates
// from the same generation, the first locks the row and the others, once
// it commits, find the generation moved and write nothing.
func (s *Store) UpdateRollout(ctx context.Context, expected int64, next policystore.Rollout, change policystore.Change) (policystore.Rollout, error) {
	if err := policystore.CheckUpdate(expected, next, change); err != nil {
		return policystore.Rollout{}, err
	}
	next.Generation, next.UpdatedBy = expected+1, change.Actor
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var missing string
		err := tx.QueryRow(ctx, `
			SELECT r FROM unnest($1::text[]) AS r
			WHERE NOT EXISTS (SELECT 1 FROM policy_bundles WHERE revision = r) LIMIT 1`,
			policystore.RolloutRevisions(next)).Scan(&missing)
		if err == nil {
			return fmt.Errorf("rollout names bundle %q: %w", missing, policystore.ErrNotFound)
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		err = tx.QueryRow(ctx, `
			UPDATE policy_rollout
			SET generation = $2, active = $3, candidate = $4, mode = $5, canary_percent = $6,
			    previous = $7, updated_by = $8, updated_at = now()
			WHERE generation = $1
			RETURNING updated_at`,
			expected, next.Generation, next.Active, next.Candidate, string(next.Mode), next.CanaryPercent,
			next.Previous, next.UpdatedBy).Scan(&next.UpdatedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("expected generation %d: %w", expected, policystore.ErrStaleGeneration)
		}
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO policy_rollout_history
				(generation, action, actor, from_revision, to_revision, forced, canary_percent, changed_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			next.Generation, string(change.Action), change.Actor, change.From, change.To, change.Forced,
			change.CanaryPercent, next.UpdatedAt); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `SELECT pg_notify($1, $2)`, RolloutChannel, strconv.FormatInt(next.Generation, 10))
		return err
	})
	if errors.Is(err, policystore.ErrNotFound) || errors.Is(err, policystore.ErrStaleGeneration) {
		return policystore.Rollout{}, err
	}
	if err != nil {
		return policystore.Rollout{}, fmt.Errorf("policy store: update rollout: %w", err)
	}
	next.UpdatedAt = next.UpdatedAt.UTC()
	return next, nil
}

// History implements policystore.Store.
func (s *Store) History(ctx context.Context, limit int) ([]policystore.HistoryEntry, error) {
	if err := policystore.CheckHistoryLimit(limit); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `
		SELECT generation, action, actor, from_revision, to_revision, forced, canary_percent, changed_at
		FROM policy_rollout_history ORDER BY generation DESC LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("policy store: history: %w", err)
	}
	entries, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (policystore.HistoryEntry, error) {
		var (
			e      policystore.HistoryEntry
			action string
		)
		err := row.Scan(&e.Generation, &action, &e.Actor, &e.From, &e.To, &e.Forced, &e.CanaryPercent, &e.Time)
		e.Action, e.Time = policystore.Action(action), e.Time.UTC()
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("policy store: history: %w", err)
	}
	return entries, nil
}

// Subscribe implements policystore.Store. Each subscription listens on a
// connection of its own, outside the pool, and is listening when Subscribe
// returns. When the connection fails, it reconnects with backoff and then
// sends a value, since a change may have been missed meanwhile.
func (s *Store) Subscribe(ctx context.Context) (<-chan struct{}, error) {
	conn, err := s.listen(ctx)
	if err != nil {
		return nil, fmt.Errorf("policy store: subscribe: %w", err)
	}
	ch := make(chan struct{}, 1)
	go s.watch(ctx, conn, ch)
	return ch, nil
}

// listen opens a connection that listens on RolloutChannel.
func (s *Store) listen(ctx context.Context) (*pgx.Conn, error) {
	cfg := s.pool.Config().ConnConfig
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["application_name"] = ListenerApplicationName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := exec(ctx, conn, "LISTEN "+RolloutChannel); err != nil {
		closeConn(ctx, conn)
		return nil, err
	}
	return conn, nil
}

// watch signals ch at every notification until ctx ends, reconnecting when
// the connection fails, then closes ch.
func (s *Store) watch(ctx context.Context, conn *pgx.Conn, ch chan<- struct{}) {
	defer close(ch)
	for {
		err := wait(ctx, conn, ch)
		closeConn(ctx, conn)
		if ctx.Err() != nil {
			return
		}
		s.logger.WarnContext(ctx, "policy store: rollout listener lost its connection, reconnecting", slog.Any("error", err))
		if conn = s.reconnect(ctx); conn == nil {
			return
		}
		signal(ch)
	}
}

// reconnect retries listen with backoff until it succeeds or ctx ends
// (then it returns nil).
func (s *Store) reconnect(ctx context.Context) *pgx.Conn {
	delay := listenFirstRetry
	for {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		conn, err := s.listen(ctx)
		if err == nil {
			return conn
		}
		if ctx.Err() != nil {
			return nil
		}
		delay = min(2*delay, listenMaxRetry)
		s.logger.WarnContext(ctx, "policy store: rollout listener cannot reconnect",
			slog.Duration("retry_in", delay), slog.Any("error", err))
	}
}

// wait signals ch at every notification on conn until ctx ends (nil) or
// conn fails; while no notification comes, it pings conn now and then.
func wait(ctx context.Context, conn *pgx.Conn, ch chan<- struct{}) error {
	for {
		waitCtx, cancel := context.WithTimeout(ctx, listenPingInterval)
		_, err := conn.WaitForNotification(waitCtx)
		timedOut := waitCtx.Err() != nil
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil:
			signal(ch)
		case !timedOut:
			return err
		default:
			// A notification arriving meanwhile is queued, not lost.
			if err := exec(ctx, conn, "SELECT 1"); err != nil {
				return err
			}
		}
	}
}

// signal sends a value on ch unless one is pending already.
func signal(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func exec(ctx context.Context, conn *pgx.Conn, sql string) error {
	ctx, cancel := context.WithTimeout(ctx, listenQueryTimeout)
	defer cancel()
	_, err := conn.Exec(ctx, sql)
	return err
}

func closeConn(ctx context.Context, conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), listenQueryTimeout)
	defer cancel()
	_ = conn.Close(ctx)
}
