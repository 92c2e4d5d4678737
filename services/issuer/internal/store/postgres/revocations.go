package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/services/issuer/internal/revocation"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
)

// RevocationChannel is the LISTEN/NOTIFY channel every append notifies,
// in the appending transaction, with the new cursor as payload.
const RevocationChannel = "gatehouse_revocations"

// ListenerApplicationName is the application_name of Run's connection, so
// that operators can find it in pg_stat_activity.
const ListenerApplicationName = "gatehouse-issuer-revocation-listener"

// DefaultRevocationPoll is how often Run checks the log's head when no
// notification arrives, unless NewRevocationLog is given another interval.
const DefaultRevocationPoll = time.Second

// How long Run waits before reconnecting after losing its connection:
// doubling from the first delay up to the last.
const (
	listenFirstRetry = 100 * time.Millisecond
	listenMaxRetry   = 10 * time.Second
	// listenQueryTimeout bounds each statement on the listener connection,
	// so that a dead connection is noticed.
	listenQueryTimeout = 10 * time.Second
)

// RevocationLog is a store.RevocationLog on a pgx pool it does not own
// (tables revocation_log and revocation_events, migration 00006). Run
// must be running for Changed to report other replicas' appends.
type RevocationLog struct {
	pool   *pgxpool.Pool
	logger *slog.Logger
	poll   time.Duration
	signal revocation.Signal
}

var _ store.RevocationLog = (*RevocationLog)(nil)

// NewRevocationLog returns a RevocationLog using pool (the schema must be
// migrated, see Migrate) whose Run logs to logger and checks the head
// every poll (DefaultRevocationPoll when poll is not positive), which
// bounds how late an event of another replica is noticed when a
// notification is missed.
func NewRevocationLog(pool *pgxpool.Pool, logger *slog.Logger, poll time.Duration) *RevocationLog {
	if poll <= 0 {
		poll = DefaultRevocationPoll
	}
	return &RevocationLog{pool: pool, logger: logger, poll: poll}
}

// Append implements store.RevocationLog. Incrementing the head locks the
// log's row until commit, so appends commit in cursor order.
func (l *RevocationLog) Append(ctx context.Context, ev revocation.Event) (revocation.Event, error) {
	if ev.Cursor != 0 {
		return revocation.Event{}, fmt.Errorf("%w: the cursor is assigned by the log, got %d", revocation.ErrInvalid, ev.Cursor)
	}
	if err := ev.Validate(); err != nil {
		return revocation.Event{}, err
	}
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `UPDATE revocation_log SET head = head + 1 RETURNING head`).Scan(&ev.Cursor); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO revocation_events (cursor, kind, revoked_id, jtis, subject, client_id, tenant,
			                               issued_before, revoked_at, expires_at, reason)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
			ev.Cursor, string(ev.Kind), ev.ID, nonNil(ev.JTIs), ev.Subject, ev.ClientID, ev.Tenant,
			optionalTime(ev.IssuedBefore), ev.RevokedAt, ev.ExpiresAt, ev.Reason); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, RevocationChannel, strconv.FormatInt(ev.Cursor, 10))
		return err
	})
	if err != nil {
		return revocation.Event{}, fmt.Errorf("issuer store: append revocation: %w", err)
	}
	l.signal.Broadcast()
	return ev.Clone(), nil
}

// After implements store.RevocationLog. The head is read before the
// events, in one round trip: whatever the events' read sees, it sees at
// least every event up to that head.
func (l *RevocationLog) After(ctx context.Context, cursor int64, limit int) (revocation.Page, error) {
	if err := store.CheckRevocationPage(cursor, limit); err != nil {
		return revocation.Page{}, err
	}
	var page revocation.Page
	batch := &pgx.Batch{}
	batch.Queue(`SELECT log_id, head FROM revocation_log`).QueryRow(func(row pgx.Row) error {
		return row.Scan(&page.Head.LogID, &page.Head.Cursor)
	})
	batch.Queue(`
		SELECT cursor, kind, revoked_id, jtis, subject, client_id, tenant,
		       issued_before, revoked_at, expires_at, reason
		FROM revocation_events WHERE cursor > $1 ORDER BY cursor LIMIT $2`, cursor, limit).
		Query(func(rows pgx.Rows) error {
			events, err := pgx.CollectRows(rows, scanRevocation)
			page.Events = events
			return err
		})
	if err := l.pool.SendBatch(ctx, batch).Close(); err != nil {
		return revocation.Page{}, fmt.Errorf("issuer store: read revocations: %w", err)
	}
	return page, nil
}

func scanRevocation(row pgx.CollectableRow) (revocation.Event, error) {
	var (
		ev           revocation.Event
		kind         string
		issuedBefore *time.Time
	)
	if err := row.Scan(&ev.Cursor, &kind, &ev.ID, &ev.JTIs, &ev.Subject, &ev.ClientID, &ev.Tenant,
		&issuedBefore, &ev.RevokedAt, &ev.ExpiresAt, &ev.Reason); err != nil {
		return ev, err
	}
	ev.Kind = revocation.Kind(kind)
	if len(ev.JTIs) == 0 {
		ev.JTIs = nil
	}
	if issuedBefore != nil {
		ev.IssuedBefore = issuedBefore.UTC()
	}
	ev.RevokedAt, ev.ExpiresAt = ev.RevokedAt.UTC(), ev.ExpiresAt.UTC()
	return ev, nil
}

// Changed implements store.RevocationLog: the channel closes at this
// process's next append and, while Run runs, at any replica's.
func (l *RevocationLog) Changed() <-chan struct{} { return l.signal.Changed() }

// DeleteExpired implements store.RevocationLog.
func (l *RevocationLog) DeleteExpired(ctx context.Context, before time.Time) (int64, error) {
	tag, err := l.pool.Exec(ctx, `DELETE FROM revocation_events WHERE expires_at <= $1`, before)
	if err != nil {
		return 0, fmt.Errorf("issuer store: delete expired revocations: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Run listens for other replicas' appends until ctx is done, on a
// connection of its own (outside the pool), and wakes Changed's waiters at
// each notification. It also reads the head every poll interval and wakes
// them when it moved, so a missed notification costs at most that
// interval; a failed read means a dead connection. When the connection
// fails, Run wakes the waiters (a notification may be lost), logs, and
// reconnects with backoff. Run one per RevocationLog.
func (l *RevocationLog) Run(ctx context.Context) {
	delay := listenFirstRetry
	for {
		listened, err := l.listen(ctx)
		l.signal.Broadcast()
		if listened {
			delay = listenFirstRetry
		}
		if ctx.Err() != nil {
			return
		}
		l.logger.WarnContext(ctx, "revocation listener lost its connection, reconnecting",
			slog.Duration("retry_in", delay), slog.Any("error", err))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(2*delay, listenMaxRetry)
	}
}

// listen runs one listener connection until ctx is done (nil error) or
// the connection fails, and reports whether it got as far as listening.
func (l *RevocationLog) listen(ctx context.Context) (listened bool, err error) {
	cfg := l.pool.Config().ConnConfig
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["application_name"] = ListenerApplicationName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), listenQueryTimeout)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if err := exec(ctx, conn, "LISTEN "+RevocationChannel); err != nil {
		return false, err
	}
	head, err := readHead(ctx, conn)
	if err != nil {
		return false, err
	}
	// Events appended while nobody listened.
	l.signal.Broadcast()
	for {
		waitCtx, cancel := context.WithTimeout(ctx, l.poll)
		_, err := conn.WaitForNotification(waitCtx)
		timedOut := waitCtx.Err() != nil
		cancel()
		switch {
		case ctx.Err() != nil:
			return true, nil
		case err == nil:
			l.signal.Broadcast()
			continue
		case !timedOut:
			return true, err
		}
		// Poll. A notification that arrived meanwhile is queued, not lost.
		now, err := readHead(ctx, conn)
		if err != nil {
			if ctx.Err() != nil {
				return true, nil
			}
			return true, err
		}
		if now != head {
			head = now
			l.signal.Broadcast()
		}
	}
}

func exec(ctx context.Context, conn *pgx.Conn, sql string) error {
	ctx, cancel := context.WithTimeout(ctx, listenQueryTimeout)
	defer cancel()
	_, err := conn.Exec(ctx, sql)
	return err
}

func readHead(ctx context.Context, conn *pgx.Conn) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, listenQueryTimeout)
	defer cancel()
	var head int64
	err := conn.QueryRow(ctx, `SELECT head FROM revocation_log`).Scan(&head)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, errors.New("revocation_log has no row: is the schema migrated?")
	}
	return head, err
}
