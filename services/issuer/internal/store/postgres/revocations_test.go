package postgres_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	libpostgres "github.com/gatehouse/gatehouse/libs/postgres"
	"github.com/gatehouse/gatehouse/services/issuer/internal/revocation"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/postgres"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/storetest"
)

// waitTimeout bounds every wait, so that a broken listener fails the test
// instead of hanging it.
const waitTimeout = 10 * time.Second

// noPoll is a poll interval no test lasts: a wake-up then proves a
// notification arrived.
const noPoll = time.Hour

func newRevocationPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := libpostgres.Open(t.Context(), server.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := postgres.Migrate(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	return pool
}

func newRevocationLog(pool *pgxpool.Pool, poll time.Duration) *postgres.RevocationLog {
	return postgres.NewRevocationLog(pool, slog.New(slog.DiscardHandler), poll)
}

func TestRevocationLogContract(t *testing.T) {
	t.Parallel()
	storetest.RunRevocationLog(t, func(t *testing.T) store.RevocationLog {
		return newRevocationLog(newRevocationPool(t), noPoll)
	})
}

// runListener runs l.Run until the test ends, and returns once it listens
// (Run wakes the waiters when it starts listening).
func runListener(t *testing.T, l *postgres.RevocationLog) {
	t.Helper()
	listening := l.Changed()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	await(t, listening, "Run did not start listening")
}

func await(t *testing.T, ch <-chan struct{}, msg string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitTimeout):
		t.Fatal(msg)
	}
}

func token(jti string) revocation.Event {
	now := time.Now().UTC().Truncate(time.Microsecond)
	return revocation.Event{Kind: revocation.KindToken, ID: jti, JTIs: []string{jti}, RevokedAt: now, ExpiresAt: now.Add(time.Minute)}
}

func TestRevocationListenerWakesOnOtherReplicasAppends(t *testing.T) {
	t.Parallel()
	pool := newRevocationPool(t)
	a, b := newRevocationLog(pool, noPoll), newRevocationLog(pool, noPoll)
	runListener(t, b)

	changed := b.Changed()
	if _, err := a.Append(t.Context(), token("jti-1")); err != nil {
		t.Fatal(err)
	}
	await(t, changed, "an append on replica a did not wake replica b's waiters")
	page, err := b.After(t.Context(), 0, 10)
	if err != nil || len(page.Events) != 1 || page.Events[0].ID != "jti-1" {
		t.Fatalf("replica b reads %+v, %v; want the event appended on a", page, err)
	}
}

func TestRevocationListenerPollsForMissedNotifications(t *testing.T) {
	t.Parallel()
	pool := newRevocationPool(t)
	l := newRevocationLog(pool, 20*time.Millisecond)
	runListener(t, l)

	changed := l.Changed()
	// An append whose notification is lost: only the poll can notice it.
	_, err := pool.Exec(t.Context(), `
		WITH next AS (UPDATE revocation_log SET head = head + 1 RETURNING head)
		INSERT INTO revocation_events (cursor, kind, revoked_id, jtis, subject, client_id, tenant, revoked_at, expires_at, reason)
		SELECT head, 'token', 'jti-1', '{jti-1}', '', '', '', now(), now(), '' FROM next`)
	if err != nil {
		t.Fatal(err)
	}
	await(t, changed, "the poll did not notice an append without notification")
}

func TestRevocationListenerReconnects(t *testing.T) {
	t.Parallel()
	pool := newRevocationPool(t)
	a, b := newRevocationLog(pool, noPoll), newRevocationLog(pool, noPoll)
	runListener(t, b)

	lost := b.Changed()
	tag, err := pool.Exec(t.Context(), `
		SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = $1`, postgres.ListenerApplicationName)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("terminate the listener: %v (%d rows)", err, tag.RowsAffected())
	}
	await(t, lost, "losing the connection did not wake the waiters")

	// From here only a new listener can wake b: by its first wake-up once
	// listening, or by the notification.
	if _, err := a.Append(t.Context(), token("jti-1")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	if seen := storetest.Tail(ctx, b, 1); len(seen) != 1 {
		t.Fatalf("after reconnecting, replica b saw %v; want the new event", seen)
	}
}

func TestRevocationListenerStops(t *testing.T) {
	t.Parallel()
	pool := newRevocationPool(t)
	l := newRevocationLog(pool, noPoll)
	listening := l.Changed()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.Run(ctx)
	}()
	await(t, listening, "Run did not start listening")
	cancel()
	await(t, done, "Run did not return when its context ended")
	waitForSQL(t, pool, `SELECT count(*) = 0 FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = $1`, postgres.ListenerApplicationName)
}

// TestRevocationAppendsCommitInCursorOrder holds one append after it took
// its cursor and before it commits: a later append must not commit before
// it, or a reader could move past the earlier cursor and never see it.
func TestRevocationAppendsCommitInCursorOrder(t *testing.T) {
	t.Parallel()
	pool := newRevocationPool(t)
	l := newRevocationLog(pool, noPoll)
	ctx := t.Context()
	// Appends with reason "stall" wait in a trigger, after the cursor is
	// taken, until the test releases advisory lock 4242.
	for _, sql := range []string{
		`CREATE FUNCTION stall_revocation() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.reason = 'stall' THEN PERFORM pg_advisory_xact_lock_shared(4242); END IF;
			RETURN NEW;
		END $$`,
		`CREATE TRIGGER stall BEFORE INSERT ON revocation_events FOR EACH ROW EXECUTE FUNCTION stall_revocation()`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	gate, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer gate.Release()
	if _, err := gate.Exec(ctx, `SELECT pg_advisory_lock(4242)`); err != nil {
		t.Fatal(err)
	}

	type result struct {
		ev  revocation.Event
		err error
	}
	appendAsync := func(ev revocation.Event) <-chan result {
		c := make(chan result, 1)
		go func() {
			got, err := l.Append(ctx, ev)
			c <- result{got, err}
		}()
		return c
	}
	stalled := token("jti-slow")
	stalled.Reason = "stall"
	slow := appendAsync(stalled)
	waitForSQL(t, pool, waitingOn, "advisory")
	fast := appendAsync(token("jti-fast"))
	// The later append must wait for the earlier one's transaction; stop
	// waiting too if it commits instead, and fail below.
	waitForSQL(t, pool, waitingOn+` OR EXISTS (SELECT 1 FROM revocation_events WHERE revoked_id = 'jti-fast')`, "transactionid")
	select {
	case r := <-fast:
		t.Fatalf("the later append committed (%+v, %v) while an earlier cursor was pending", r.ev, r.err)
	default:
	}
	if page, err := l.After(ctx, 0, 10); err != nil || len(page.Events) != 0 || page.Head.Cursor != 0 {
		t.Fatalf("a reader sees %+v, %v while both appends are pending; want nothing", page, err)
	}

	if _, err := gate.Exec(ctx, `SELECT pg_advisory_unlock(4242)`); err != nil {
		t.Fatal(err)
	}
	first, second := <-slow, <-fast
	if first.err != nil || second.err != nil {
		t.Fatalf("appends: %v, %v", first.err, second.err)
	}
	if first.ev.Cursor >= second.ev.Cursor {
		t.Fatalf("cursors %d then %d: want the first append's smaller", first.ev.Cursor, second.ev.Cursor)
	}
	page, err := l.After(ctx, 0, 10)
	if err != nil || len(page.Events) != 2 || page.Events[0].ID != "jti-slow" || page.Events[1].ID != "jti-fast" {
		t.Fatalf("After = %+v, %v; want the slow then the fast event", page, err)
	}
}

// waitingOn is true when a session of the test's database waits for a
// lock of the given kind.
const waitingOn = `SELECT count(*) > 0 FROM pg_stat_activity
	WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = $1`

// waitForSQL polls query, a boolean, until it is true. It waits for the
// state of other sessions, which Postgres cannot push to the test.
func waitForSQL(t *testing.T, pool *pgxpool.Pool, query string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		var ok bool
		if err := pool.QueryRow(ctx, query, args...).Scan(&ok); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		if ok {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("still false after %s: %s", waitTimeout, query)
		}
	}
}
