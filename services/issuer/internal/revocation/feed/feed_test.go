package feed_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	libpostgres "github.com/gatehouse/gatehouse/libs/postgres"
	"github.com/gatehouse/gatehouse/libs/postgres/pgtest"
	revocationv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1/revocationv1connect"
	"github.com/gatehouse/gatehouse/services/issuer/internal/revocation"
	"github.com/gatehouse/gatehouse/services/issuer/internal/revocation/feed"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/memory"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/postgres"
)

// server is the package's Postgres container, for the cross-replica test.
var server *pgtest.Server

// TestMain fails (never skips) when Docker or the image is unavailable.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &server)) }

// waitTimeout bounds every stream of a test, so a broken feed fails it
// instead of hanging it.
const waitTimeout = 10 * time.Second

// Bearer values the test authorizer knows.
const (
	gatewayToken   = "Bearer gateway"
	forbiddenToken = "Bearer invoice-web"
	brokenToken    = "Bearer broken"
)

// authorize admits the gateway, refuses another known client, and fails
// to decide for brokenToken.
func authorize(_ context.Context, h http.Header) (string, error) {
	switch h.Get("Authorization") {
	case gatewayToken:
		return "gateway", nil
	case forbiddenToken:
		return "invoice-web", feed.ErrForbidden
	case brokenToken:
		return "", errors.New("client store unreachable")
	default:
		return "", feed.ErrUnauthenticated
	}
}

// serve mounts a handler for cfg (Authorize and Logger filled in) on an
// HTTP/2-capable test server and returns it with a client for opts.
func serve(t *testing.T, cfg feed.Config, opts ...connect.ClientOption) (*feed.Handler, revocationv1connect.RevocationFeedServiceClient) {
	t.Helper()
	if cfg.Authorize == nil {
		cfg.Authorize = authorize
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	h, err := feed.NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(revocationv1connect.NewRevocationFeedServiceHandler(h))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	t.Cleanup(h.Close) // before srv.Close, which waits for the streams
	return h, revocationv1connect.NewRevocationFeedServiceClient(srv.Client(), srv.URL, opts...)
}

// subscribe opens a stream as the gateway, bounded by waitTimeout.
func subscribe(t *testing.T, client revocationv1connect.RevocationFeedServiceClient, msg *revocationv1.SubscribeRequest, auth string) *connect.ServerStreamForClient[revocationv1.SubscribeResponse] {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	t.Cleanup(cancel)
	req := connect.NewRequest(msg)
	if auth != "" {
		req.Header().Set("Authorization", auth)
	}
	st, err := client.Subscribe(ctx, req)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func receive(t *testing.T, st *connect.ServerStreamForClient[revocationv1.SubscribeResponse]) *revocationv1.SubscribeResponse {
	t.Helper()
	if !st.Receive() {
		t.Fatalf("stream ended: %v", st.Err())
	}
	return st.Msg()
}

func receiveHeartbeat(t *testing.T, st *connect.ServerStreamForClient[revocationv1.SubscribeResponse]) *revocationv1.Heartbeat {
	t.Helper()
	m := receive(t, st)
	if m.GetHeartbeat() == nil {
		t.Fatalf("got %v, want a heartbeat", m)
	}
	return m.GetHeartbeat()
}

// receiveEvents receives n events and returns their cursors.
func receiveEvents(t *testing.T, st *connect.ServerStreamForClient[revocationv1.SubscribeResponse], n int) []int64 {
	t.Helper()
	var cursors []int64
	for len(cursors) < n {
		m := receive(t, st)
		if m.GetEvent() == nil {
			t.Fatalf("got %v, want an event", m)
		}
		cursors = append(cursors, m.GetEvent().GetCursor())
	}
	return cursors
}

func assertCursors(t *testing.T, got []int64, want ...int64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("cursors %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("cursors %v, want %v", got, want)
		}
	}
}

func revokedAt() time.Time { return time.Date(2026, 11, 25, 9, 30, 0, 123456000, time.UTC) }

func tokenEvent(jti string) revocation.Event {
	at := revokedAt()
	return revocation.Event{Kind: revocation.KindToken, ID: jti, JTIs: []string{jti},
		Subject: "alice", ClientID: "invoice-web", Tenant: "acme",
		RevokedAt: at, ExpiresAt: at.Add(5 * time.Minute), Reason: "client_request"}
}

func appendEvents(t *testing.T, l interface {
	Append(context.Context, revocation.Event) (revocation.Event, error)
}, jtis ...string) {
	t.Helper()
	for _, jti := range jtis {
		if _, err := l.Append(t.Context(), tokenEvent(jti)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSubscribe(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts []connect.ClientOption
	}{
		{name: "connect"},
		{name: "grpc", opts: []connect.ClientOption{connect.WithGRPC()}},
		{name: "grpc-web", opts: []connect.ClientOption{connect.WithGRPCWeb()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			log := memory.NewRevocationLog()
			at := revokedAt()
			session := revocation.Event{Kind: revocation.KindSession, ID: "session-1", JTIs: []string{"jti-s1", "jti-s2"},
				Subject: "alice", Tenant: "acme", IssuedBefore: at,
				RevokedAt: at, ExpiresAt: at.Add(time.Hour), Reason: "user_logout"}
			if _, err := log.Append(t.Context(), session); err != nil {
				t.Fatal(err)
			}
			appendEvents(t, log, "jti-2")
			_, client := serve(t, feed.Config{Log: log}, tc.opts...)
			st := subscribe(t, client, &revocationv1.SubscribeRequest{}, gatewayToken)

			// A heartbeat first: the stream's position and the log's id.
			hb := receiveHeartbeat(t, st)
			if hb.GetCursor() != 0 || hb.GetLogId() == "" || hb.GetTime() == nil {
				t.Fatalf("first heartbeat = %v; want cursor 0, a log id and a time", hb)
			}
			// The backlog, in order, every field on the wire.
			want := &revocationv1.Event{
				Cursor: 1, Kind: revocationv1.Kind_KIND_SESSION, Id: "session-1", Jtis: []string{"jti-s1", "jti-s2"},
				Subject: "alice", Tenant: "acme", IssuedBefore: timestamppb.New(at),
				RevokedAt: timestamppb.New(at), ExpiresAt: timestamppb.New(at.Add(time.Hour)), Reason: "user_logout",
			}
			if got := receive(t, st).GetEvent(); !proto.Equal(got, want) {
				t.Fatalf("event = %v\nwant %v", got, want)
			}
			token := receive(t, st).GetEvent()
			if token.GetCursor() != 2 || token.GetKind() != revocationv1.Kind_KIND_TOKEN || token.GetIssuedBefore() != nil ||
				token.GetClientId() != "invoice-web" || len(token.GetJtis()) != 1 || token.GetJtis()[0] != "jti-2" {
				t.Fatalf("event = %v; want the token event at cursor 2", token)
			}
			// Then live events, as they are appended.
			appendEvents(t, log, "jti-3", "jti-4")
			assertCursors(t, receiveEvents(t, st, 2), 3, 4)
		})
	}
}

func TestSubscribeResumesAfterCursor(t *testing.T) {
	t.Parallel()
	log := memory.NewRevocationLog()
	appendEvents(t, log, "jti-1", "jti-2", "jti-3", "jti-4")
	_, client := serve(t, feed.Config{Log: log, MaxBatch: 1})
	first := subscribe(t, client, &revocationv1.SubscribeRequest{}, gatewayToken)
	logID := receiveHeartbeat(t, first).GetLogId()

	for _, tc := range []struct {
		name  string
		req   *revocationv1.SubscribeRequest
		heard int64
		want  []int64
	}{
		{name: "cursor only", req: &revocationv1.SubscribeRequest{AfterCursor: 2}, heard: 2, want: []int64{3, 4}},
		{name: "cursor and log id", req: &revocationv1.SubscribeRequest{AfterCursor: 1, LogId: logID}, heard: 1, want: []int64{2, 3, 4}},
		{name: "at the head", req: &revocationv1.SubscribeRequest{AfterCursor: 4, LogId: logID}, heard: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := subscribe(t, client, tc.req, gatewayToken)
			if hb := receiveHeartbeat(t, st); hb.GetCursor() != tc.heard || hb.GetLogId() != logID {
				t.Fatalf("heartbeat = %v; want cursor %d of log %s", hb, tc.heard, logID)
			}
			assertCursors(t, receiveEvents(t, st, len(tc.want)), tc.want...)
		})
	}
}

func TestHeartbeats(t *testing.T) {
	t.Parallel()
	log := memory.NewRevocationLog()
	appendEvents(t, log, "jti-1", "jti-2")
	// Both events expire and are deleted: the stream's position still moves
	// to the head, so a resumption does not start over.
	if _, err := log.DeleteExpired(t.Context(), revokedAt().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	_, client := serve(t, feed.Config{Log: log, Heartbeat: 5 * time.Millisecond})
	st := subscribe(t, client, &revocationv1.SubscribeRequest{}, gatewayToken)
	if hb := receiveHeartbeat(t, st); hb.GetCursor() != 0 {
		t.Fatalf("first heartbeat = %v, want cursor 0", hb)
	}
	// A quiet stream keeps beating, at the head.
	for range 3 {
		if hb := receiveHeartbeat(t, st); hb.GetCursor() != 2 {
			t.Fatalf("heartbeat = %v, want cursor 2", hb)
		}
	}
	appendEvents(t, log, "jti-3")
	for {
		m := receive(t, st)
		if ev := m.GetEvent(); ev != nil {
			if ev.GetCursor() != 3 {
				t.Fatalf("event %v, want cursor 3", ev)
			}
			break
		}
	}
	if hb := receiveHeartbeat(t, st); hb.GetCursor() != 3 {
		t.Fatalf("heartbeat after the event = %v, want cursor 3", hb)
	}
}

func TestSubscribeRefuses(t *testing.T) {
	t.Parallel()
	log := memory.NewRevocationLog()
	appendEvents(t, log, "jti-1")
	_, client := serve(t, feed.Config{Log: log})
	for _, tc := range []struct {
		name string
		auth string
		req  *revocationv1.SubscribeRequest
		want connect.Code
	}{
		{name: "no credentials", req: &revocationv1.SubscribeRequest{}, want: connect.CodeUnauthenticated},
		{name: "unknown credentials", auth: "Bearer nobody", req: &revocationv1.SubscribeRequest{}, want: connect.CodeUnauthenticated},
		{name: "client not allowed", auth: forbiddenToken, req: &revocationv1.SubscribeRequest{}, want: connect.CodePermissionDenied},
		{name: "authorizer fails", auth: brokenToken, req: &revocationv1.SubscribeRequest{}, want: connect.CodeUnavailable},
		{name: "negative cursor", auth: gatewayToken, req: &revocationv1.SubscribeRequest{AfterCursor: -1}, want: connect.CodeInvalidArgument},
		{name: "log id too long", auth: gatewayToken, req: &revocationv1.SubscribeRequest{LogId: strings.Repeat("x", feed.MaxLogIDLen+1)}, want: connect.CodeInvalidArgument},
		{name: "cursor beyond the head", auth: gatewayToken, req: &revocationv1.SubscribeRequest{AfterCursor: 2}, want: connect.CodeOutOfRange},
		{name: "another log", auth: gatewayToken, req: &revocationv1.SubscribeRequest{AfterCursor: 1, LogId: "another-log"}, want: connect.CodeOutOfRange},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := subscribe(t, client, tc.req, tc.auth)
			if st.Receive() {
				t.Fatalf("received %v, want %v", st.Msg(), tc.want)
			}
			if got := connect.CodeOf(st.Err()); got != tc.want {
				t.Fatalf("error = %v, want %v", st.Err(), tc.want)
			}
		})
	}
}

// failingLog cannot be read.
type failingLog struct{ memory.RevocationLog }

func (*failingLog) After(context.Context, int64, int) (revocation.Page, error) {
	return revocation.Page{}, errors.New("connection refused")
}

func TestSubscribeStoreUnavailable(t *testing.T) {
	t.Parallel()
	_, client := serve(t, feed.Config{Log: &failingLog{}})
	st := subscribe(t, client, &revocationv1.SubscribeRequest{}, gatewayToken)
	if st.Receive() || connect.CodeOf(st.Err()) != connect.CodeUnavailable {
		t.Fatalf("Subscribe on a failing store: %v, want unavailable", st.Err())
	}
	if strings.Contains(st.Err().Error(), "connection refused") {
		t.Fatalf("the store's error reached the subscriber: %v", st.Err())
	}
}

// swappableLog reads from whichever log is current, like a store whose
// database is replaced under a running issuer.
type swappableLog struct {
	current atomic.Pointer[memory.RevocationLog]
}

func (s *swappableLog) After(ctx context.Context, cursor int64, limit int) (revocation.Page, error) {
	return s.current.Load().After(ctx, cursor, limit)
}

func (s *swappableLog) Changed() <-chan struct{} { return s.current.Load().Changed() }

func TestSubscribeEndsWhenTheLogIsReplaced(t *testing.T) {
	t.Parallel()
	old := memory.NewRevocationLog()
	appendEvents(t, old, "jti-1")
	log := &swappableLog{}
	log.current.Store(old)
	_, client := serve(t, feed.Config{Log: log})
	st := subscribe(t, client, &revocationv1.SubscribeRequest{}, gatewayToken)
	receiveHeartbeat(t, st)
	assertCursors(t, receiveEvents(t, st, 1), 1)

	fresh := memory.NewRevocationLog()
	appendEvents(t, fresh, "jti-a", "jti-b")
	log.current.Store(fresh)
	appendEvents(t, old, "jti-2") // wakes the stream
	if st.Receive() || connect.CodeOf(st.Err()) != connect.CodeOutOfRange {
		t.Fatalf("after the log was replaced: %v, %v; want out_of_range", st.Msg(), st.Err())
	}
}

func TestCloseEndsStreams(t *testing.T) {
	t.Parallel()
	h, client := serve(t, feed.Config{Log: memory.NewRevocationLog()})
	st := subscribe(t, client, &revocationv1.SubscribeRequest{}, gatewayToken)
	receiveHeartbeat(t, st)
	h.Close()
	if st.Receive() || connect.CodeOf(st.Err()) != connect.CodeUnavailable {
		t.Fatalf("after Close: %v, %v; want unavailable", st.Msg(), st.Err())
	}
	again := subscribe(t, client, &revocationv1.SubscribeRequest{}, gatewayToken)
	if again.Receive() || connect.CodeOf(again.Err()) != connect.CodeUnavailable {
		t.Fatalf("Subscribe after Close: %v, want unavailable", again.Err())
	}
}

func TestMaxSubscribers(t *testing.T) {
	t.Parallel()
	_, client := serve(t, feed.Config{Log: memory.NewRevocationLog(), MaxSubscribers: 1})
	receiveHeartbeat(t, subscribe(t, client, &revocationv1.SubscribeRequest{}, gatewayToken))
	second := subscribe(t, client, &revocationv1.SubscribeRequest{}, gatewayToken)
	if second.Receive() || connect.CodeOf(second.Err()) != connect.CodeResourceExhausted {
		t.Fatalf("second subscription: %v, want resource_exhausted", second.Err())
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	reader := sdkmetric.NewManualReader()
	meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")
	log := memory.NewRevocationLog()
	appendEvents(t, log, "jti-1", "jti-2")
	_, client := serve(t, feed.Config{Log: log, Meter: meter, Heartbeat: 5 * time.Millisecond})
	st := subscribe(t, client, &revocationv1.SubscribeRequest{}, gatewayToken)
	receiveHeartbeat(t, st)
	receiveEvents(t, st, 2)
	// Sent after both events were counted.
	receiveHeartbeat(t, st)

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, dp := range sum.DataPoints {
					got[m.Name] += dp.Value
				}
			}
		}
	}
	if got["gatehouse.issuer.revocation_feed.subscribers"] != 1 || got["gatehouse.issuer.revocation_feed.events_sent"] != 2 {
		t.Fatalf("metrics = %v; want 1 subscriber and 2 events sent", got)
	}
}

func TestNewHandlerRejectsBadConfig(t *testing.T) {
	t.Parallel()
	logger := slog.New(slog.DiscardHandler)
	log := memory.NewRevocationLog()
	for _, tc := range []struct {
		name string
		cfg  feed.Config
	}{
		{"no log", feed.Config{Authorize: authorize, Logger: logger}},
		{"no authorizer", feed.Config{Log: log, Logger: logger}},
		{"no logger", feed.Config{Log: log, Authorize: authorize}},
		{"negative heartbeat", feed.Config{Log: log, Authorize: authorize, Logger: logger, Heartbeat: -time.Second}},
		{"batch too large", feed.Config{Log: log, Authorize: authorize, Logger: logger, MaxBatch: 1001}},
	} {
		if _, err := feed.NewHandler(tc.cfg); err == nil {
			t.Errorf("%s: NewHandler accepted the config", tc.name)
		}
	}
}

// TestCrossReplicaDelivery runs two issuer replicas, each with its own
// store and handler, on one database: events appended through replica a
// reach the subscribers of both, b's by notification (the test is over
// long before a poll or heartbeat would wake them).
func TestCrossReplicaDelivery(t *testing.T) {
	t.Parallel()
	pool, err := libpostgres.Open(t.Context(), server.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := postgres.Migrate(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	replica := func() (*postgres.RevocationLog, revocationv1connect.RevocationFeedServiceClient) {
		l := postgres.NewRevocationLog(pool, slog.New(slog.DiscardHandler), time.Hour)
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
		select {
		case <-listening:
		case <-time.After(waitTimeout):
			t.Fatal("the replica's listener did not start")
		}
		_, client := serve(t, feed.Config{Log: l, Heartbeat: time.Hour}, connect.WithGRPC())
		return l, client
	}
	a, clientA := replica()
	_, clientB := replica()
	appendEvents(t, a, "jti-1")

	streams := []*connect.ServerStreamForClient[revocationv1.SubscribeResponse]{
		subscribe(t, clientA, &revocationv1.SubscribeRequest{}, gatewayToken),
		subscribe(t, clientB, &revocationv1.SubscribeRequest{}, gatewayToken),
	}
	for _, st := range streams {
		receiveHeartbeat(t, st)
		assertCursors(t, receiveEvents(t, st, 1), 1)
	}
	appendEvents(t, a, "jti-2", "jti-3")
	for _, st := range streams {
		assertCursors(t, receiveEvents(t, st, 2), 2, 3)
	}
}
