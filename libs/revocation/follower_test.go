package revocation_test

import (
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/gatehouse/gatehouse/libs/revocation"
	"github.com/gatehouse/gatehouse/libs/revocation/feedclient"
	"github.com/gatehouse/gatehouse/libs/revocation/revocationtest"
	revocationv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1/revocationv1connect"
)

// waitTimeout bounds every wait, so a broken follower fails the test
// instead of hanging it.
const waitTimeout = 10 * time.Second

// The gateway's demo credentials (docs/revocation-feed.md).
const (
	gatewayID     = "gateway"
	gatewaySecret = "gateway-secret"
)

// following is a Follower running against a fake feed until the test
// ends.
type following struct {
	feed     *revocationtest.Feed
	set      *revocation.Set
	follower *revocation.Follower
	reader   *sdkmetric.ManualReader
	cut      func() // cuts every connection to the feed
}

// follow starts a Follower of a new fake feed with opts, edited by edit.
// The Set runs on the real clock, so the tests publish live events.
func follow(t *testing.T, opts revocationtest.FeedOptions, edit func(*revocation.FollowerConfig)) *following {
	t.Helper()
	opts.ClientID, opts.ClientSecret = gatewayID, gatewaySecret
	f := revocationtest.NewFeed(opts)
	srv := revocationtest.NewServer(t, f)
	reader := sdkmetric.NewManualReader()
	set := revocation.NewSet(revocation.SetOptions{})
	cfg := revocation.FollowerConfig{
		Client:       revocationv1connect.NewRevocationFeedServiceClient(srv.Client(), srv.URL),
		ClientID:     gatewayID,
		ClientSecret: gatewaySecret,
		Set:          set,
		Logger:       slog.New(slog.DiscardHandler),
		Meter:        sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test"),
		MinBackoff:   5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
	}
	if edit != nil {
		edit(&cfg)
	}
	fl, err := revocation.NewFollower(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		fl.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return &following{feed: f, set: set, follower: fl, reader: reader, cut: srv.CloseClientConnections}
}

// live makes ev expire long after the test, so the real clock keeps it.
func live(ev *revocationv1.Event) *revocationv1.Event {
	ev.ExpiresAt = ts(time.Now().Add(time.Hour))
	return ev
}

// eventually waits (bounded) until cond holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(waitTimeout)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

func (fo *following) waitRevoked(t *testing.T, tk revocation.Token) {
	t.Helper()
	eventually(t, "the token is revoked", func() bool { return fo.set.Revoked(tk) })
}

func (fo *following) waitPosition(t *testing.T, want feedclient.Position) {
	t.Helper()
	eventually(t, "position is "+want.LogID, func() bool { return fo.follower.Position() == want })
}

// metrics collects the Follower's metrics by name (sums and gauges).
func (fo *following) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := fo.reader.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					got[m.Name] += float64(dp.Value)
				}
			case metricdata.Gauge[int64]:
				for _, dp := range d.DataPoints {
					got[m.Name] = float64(dp.Value)
				}
			case metricdata.Gauge[float64]:
				for _, dp := range d.DataPoints {
					got[m.Name] = dp.Value
				}
			}
		}
	}
	return got
}

func TestFollowerKeepsTheSetCurrent(t *testing.T) {
	t.Parallel()
	before := time.Now().Add(-time.Second)
	old := before.Add(-time.Minute)
	fo := follow(t, revocationtest.FeedOptions{}, nil)
	// The backlog: alice signed out.
	fo.feed.Publish(live(sessionEvent("alice", before)))
	if err := fo.follower.WaitReady(ctxTimeout(t)); err != nil {
		t.Fatal(err)
	}
	fo.waitRevoked(t, tok("jti-a", "alice", "invoice-web", old))

	// Live events of every kind reach the Set.
	for _, tc := range []struct {
		ev *revocationv1.Event
		tk revocation.Token
	}{
		{tokenEvent("jti-1"), tok("jti-1", "alice", "invoice-web", time.Now())},
		{familyEvent("jti-2", "jti-3"), tok("jti-3", "bob", "invoice-web", time.Now())},
		{clientEvent("billing-bot", before), tok("jti-4", "billing-bot", "billing-bot", old)},
		{consentEvent("bob", "invoice-web", before), tok("jti-5", "bob", "invoice-web", old)},
	} {
		fo.feed.Publish(live(tc.ev))
		fo.waitRevoked(t, tc.tk)
	}
	fo.waitPosition(t, feedclient.Position{LogID: revocationtest.DefaultLogID, Cursor: 5})
	if fo.set.Revoked(tok("jti-6", "bob", "support-console", old)) {
		t.Fatal("a token no event covers is revoked")
	}
	if !fo.follower.Ready() || fo.follower.Staleness(time.Now()) > waitTimeout {
		t.Fatalf("Ready %v, staleness %v after events", fo.follower.Ready(), fo.follower.Staleness(time.Now()))
	}
	m := fo.metrics(t)
	if m["gatehouse.revocation.events_applied"] != 5 || m["gatehouse.revocation.entries"] != 6 ||
		m["gatehouse.revocation.reconnects"] != 0 || m["gatehouse.revocation.staleness"] > waitTimeout.Seconds() {
		t.Fatalf("metrics = %v; want 5 events applied, 6 entries (3 jtis, 3 rules), no reconnect, fresh", m)
	}
}

func ctxTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// TestFollowerResumesAfterDisconnects: the feed drops the stream (as an
// issuer replica does on shutdown) and the connection is cut; events
// published meanwhile arrive, and each subscription resumes from the
// Follower's cursor.
func TestFollowerResumesAfterDisconnects(t *testing.T) {
	t.Parallel()
	fo := follow(t, revocationtest.FeedOptions{}, nil)
	fo.feed.Publish(live(tokenEvent("jti-1")))
	fo.waitRevoked(t, tok("jti-1", "alice", "invoice-web", t0))
	fo.waitPosition(t, feedclient.Position{LogID: revocationtest.DefaultLogID, Cursor: 1})

	fo.feed.Refuse(connect.CodeUnavailable)
	fo.feed.Drop()
	n := len(awaitRequests(t, fo.feed, 2))
	fo.feed.Publish(live(tokenEvent("jti-2")))
	fo.feed.Refuse(0)
	fo.waitRevoked(t, tok("jti-2", "alice", "invoice-web", t0))
	fo.waitPosition(t, feedclient.Position{LogID: revocationtest.DefaultLogID, Cursor: 2})

	m := len(fo.feed.Requests())
	fo.cut()
	awaitRequests(t, fo.feed, m+1)
	fo.feed.Publish(live(tokenEvent("jti-3")))
	fo.waitRevoked(t, tok("jti-3", "alice", "invoice-web", t0))

	reqs := fo.feed.Requests()
	if r := reqs[n]; r.AfterCursor != 1 || r.LogID != revocationtest.DefaultLogID {
		t.Errorf("after the drop: %+v, want after cursor 1 of %s", r, revocationtest.DefaultLogID)
	}
	if r := reqs[m]; r.AfterCursor != 2 || r.LogID != revocationtest.DefaultLogID || r.Code != 0 {
		t.Errorf("after the cut: %+v, want after cursor 2 of %s", r, revocationtest.DefaultLogID)
	}
	if got := fo.metrics(t)["gatehouse.revocation.reconnects"]; got < 3 {
		t.Errorf("reconnects = %v, want at least 3 (drop, refusal, cut)", got)
	}
	if !fo.set.Revoked(tok("jti-1", "alice", "invoice-web", t0)) || fo.set.Len() != 3 {
		t.Errorf("set lost revocations across reconnects: len %d", fo.set.Len())
	}
}

func awaitRequests(t *testing.T, f *revocationtest.Feed, n int) []revocationtest.Request {
	t.Helper()
	reqs, err := f.AwaitRequests(ctxTimeout(t), n)
	if err != nil {
		t.Fatalf("%v; requests %+v", err, reqs)
	}
	return reqs
}

// TestFollowerKeepsRevocationsAcrossALogReset: the issuer's log is
// replaced by an empty one; the Follower follows the new log from its
// start and still refuses what the old log revoked.
func TestFollowerKeepsRevocationsAcrossALogReset(t *testing.T) {
	t.Parallel()
	fo := follow(t, revocationtest.FeedOptions{}, nil)
	fo.feed.Publish(live(tokenEvent("jti-1")))
	fo.feed.Publish(live(sessionEvent("alice", t0)))
	fo.waitPosition(t, feedclient.Position{LogID: revocationtest.DefaultLogID, Cursor: 2})

	fo.feed.Reset("log-2")
	fo.feed.Publish(live(tokenEvent("jti-9")))
	fo.waitRevoked(t, tok("jti-9", "alice", "invoice-web", t0))
	fo.waitPosition(t, feedclient.Position{LogID: "log-2", Cursor: 1})
	if !fo.set.Revoked(tok("jti-1", "alice", "invoice-web", t0)) || !fo.set.Revoked(tok("jti-x", "alice", "billing-bot", t0.Add(-time.Second))) {
		t.Fatal("the old log's revocations were lost")
	}
	if last := fo.feed.Requests()[len(fo.feed.Requests())-1]; last.AfterCursor != 0 || last.LogID != "" {
		t.Fatalf("resubscribed with %+v, want the new log from its start", last)
	}
}

// TestFollowerStaleness: heartbeats keep the Set fresh; when they stop
// (an issuer that hangs without closing the stream), staleness grows past
// any limit; when they resume, it falls back.
func TestFollowerStaleness(t *testing.T) {
	t.Parallel()
	const beat = 5 * time.Millisecond
	const limit = 40 * beat
	fo := follow(t, revocationtest.FeedOptions{Heartbeat: beat}, func(c *revocation.FollowerConfig) {
		c.IdleTimeout = time.Hour // detect staleness, not a dead stream
	})
	if err := fo.follower.WaitReady(ctxTimeout(t)); err != nil {
		t.Fatal(err)
	}
	fresh := func() bool { return fo.follower.Staleness(time.Now()) < limit }
	eventually(t, "fresh", fresh)

	fo.feed.SetHeartbeats(false)
	eventually(t, "stale", func() bool { return !fresh() })
	if got := fo.metrics(t)["gatehouse.revocation.staleness"]; got < limit.Seconds() {
		t.Errorf("staleness gauge = %vs, want at least %v", got, limit)
	}
	if n := len(fo.feed.Requests()); n != 1 {
		t.Errorf("%d subscriptions; the test wants one quiet stream", n)
	}

	fo.feed.SetHeartbeats(true)
	eventually(t, "fresh again", fresh)
}

// TestFollowerNotReadyWithoutTheFeed: refused credentials leave the
// Follower not ready and its Set infinitely stale.
func TestFollowerNotReadyWithoutTheFeed(t *testing.T) {
	t.Parallel()
	fo := follow(t, revocationtest.FeedOptions{}, func(c *revocation.FollowerConfig) { c.ClientSecret = "wrong" })
	fo.feed.Publish(live(tokenEvent("jti-1")))
	for _, r := range awaitRequests(t, fo.feed, 3) {
		if r.Code != connect.CodeUnauthenticated {
			t.Fatalf("request %+v, want unauthenticated", r)
		}
	}
	if fo.follower.Ready() || fo.set.Staleness(time.Now()) != revocation.NeverHeard || fo.set.Len() != 0 {
		t.Fatalf("Ready %v, staleness %v, len %d without the feed", fo.follower.Ready(), fo.set.Staleness(time.Now()), fo.set.Len())
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if err := fo.follower.WaitReady(ctx); err == nil {
		t.Fatal("WaitReady returned nil without the feed")
	}
}

func TestNewFollowerRejectsBadConfig(t *testing.T) {
	t.Parallel()
	c := revocationv1connect.NewRevocationFeedServiceClient(http.DefaultClient, "http://127.0.0.1:1")
	set := revocation.NewSet(revocation.SetOptions{})
	logger := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		name string
		cfg  revocation.FollowerConfig
	}{
		{"no set", revocation.FollowerConfig{Client: c, Logger: logger}},
		{"no client", revocation.FollowerConfig{Set: set, Logger: logger}},
		{"no logger", revocation.FollowerConfig{Client: c, Set: set}},
		{"secret without id", revocation.FollowerConfig{Client: c, Set: set, Logger: logger, ClientSecret: "x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := revocation.NewFollower(tc.cfg); err == nil {
				t.Fatal("NewFollower accepted the config")
			}
		})
	}
}
