package feedclient_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	revocationv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1/revocationv1connect"
	"github.com/gatehouse/gatehouse/services/issuer/internal/revocation"
	"github.com/gatehouse/gatehouse/services/issuer/internal/revocation/feed"
	"github.com/gatehouse/gatehouse/services/issuer/internal/revocation/feedclient"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/memory"
)

// waitTimeout bounds every wait, so a broken subscriber fails the test
// instead of hanging it.
const waitTimeout = 10 * time.Second

const gatewayToken = "Bearer gateway"

func authorize(_ context.Context, h http.Header) (string, error) {
	if h.Get("Authorization") != gatewayToken {
		return "", feed.ErrUnauthenticated
	}
	return "gateway", nil
}

// issuer serves a feed of log on addr ("127.0.0.1:0" for any port) until
// stopped; the log outlives it, as a database outlives an issuer.
type issuer struct {
	srv *httptest.Server
	h   *feed.Handler
}

func startIssuer(t *testing.T, log feed.Log, addr string) *issuer {
	t.Helper()
	h, err := feed.NewHandler(feed.Config{Log: log, Authorize: authorize, Logger: slog.New(slog.DiscardHandler), MaxBatch: 1})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(revocationv1connect.NewRevocationFeedServiceHandler(h))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(mux)
	_ = srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	iss := &issuer{srv: srv, h: h}
	t.Cleanup(iss.kill)
	return iss
}

// kill drops every connection at once, mid-stream, and stops the server.
func (i *issuer) kill() {
	i.srv.CloseClientConnections()
	i.h.Close()
	i.srv.Close()
}

// bearer adds the gateway's credentials to every request.
type bearer struct{ base http.RoundTripper }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", gatewayToken)
	return b.base.RoundTrip(r)
}

func client(addr string) revocationv1connect.RevocationFeedServiceClient {
	return revocationv1connect.NewRevocationFeedServiceClient(
		&http.Client{Transport: bearer{base: http.DefaultTransport.(*http.Transport).Clone()}}, "http://"+addr)
}

// recorder is a Handler that keeps the cursors it accepted and tells the
// test about each.
type recorder struct {
	mu       sync.Mutex
	accepted []int64
	notify   chan int64
	// refuse, when set, refuses an event once.
	refuse func(ev *revocationv1.Event) bool
}

func newRecorder() *recorder { return &recorder{notify: make(chan int64, 1000)} }

func (r *recorder) handle(_ context.Context, ev *revocationv1.Event) error {
	if r.refuse != nil && r.refuse(ev) {
		return errors.New("cache full")
	}
	r.mu.Lock()
	r.accepted = append(r.accepted, ev.GetCursor())
	r.mu.Unlock()
	r.notify <- ev.GetCursor()
	return nil
}

// waitFor waits until the recorder has accepted cursor.
func (r *recorder) waitFor(t *testing.T, cursor int64) {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case c := <-r.notify:
			if c >= cursor {
				return
			}
		case <-timeout:
			t.Fatalf("cursor %d not delivered; accepted %v", cursor, r.cursors())
		}
	}
}

func (r *recorder) cursors() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.accepted)
}

func run(t *testing.T, cfg feedclient.Config) *feedclient.Subscriber {
	t.Helper()
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.MinBackoff, cfg.MaxBackoff = 5*time.Millisecond, 20*time.Millisecond
	s, err := feedclient.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return s
}

func appendTokens(t *testing.T, log *memory.RevocationLog, from, to int) {
	t.Helper()
	at := time.Date(2026, 11, 25, 9, 30, 0, 0, time.UTC)
	for i := from; i <= to; i++ {
		jti := "jti-" + strconv.Itoa(i)
		if _, err := log.Append(t.Context(), revocation.Event{Kind: revocation.KindToken, ID: jti, JTIs: []string{jti},
			RevokedAt: at, ExpiresAt: at.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
}

func upTo(n int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(i + 1)
	}
	return out
}

// TestSubscriberSurvivesIssuerRestart kills the issuer while an event is
// being handled and others are in flight, appends while it is down, and
// restarts it on the same address: every event arrives exactly once, in
// order.
func TestSubscriberSurvivesIssuerRestart(t *testing.T) {
	t.Parallel()
	log := memory.NewRevocationLog()
	appendTokens(t, log, 1, 8)
	iss := startIssuer(t, log, "127.0.0.1:0")
	addr := iss.srv.Listener.Addr().String()

	rec := newRecorder()
	inFlight, killed := make(chan struct{}), make(chan struct{})
	handle := func(ctx context.Context, ev *revocationv1.Event) error {
		if ev.GetCursor() == 4 {
			select {
			case <-inFlight:
			default:
				close(inFlight)
				<-killed
			}
		}
		return rec.handle(ctx, ev)
	}
	sub := run(t, feedclient.Config{Client: client(addr), Handle: handle})

	<-inFlight
	iss.kill()
	close(killed)
	appendTokens(t, log, 9, 12)
	startIssuer(t, log, addr)
	rec.waitFor(t, 12)
	appendTokens(t, log, 13, 13)
	rec.waitFor(t, 13)

	if got := rec.cursors(); !slices.Equal(got, upTo(13)) {
		t.Fatalf("accepted %v, want 1 to 13 once each, in order", got)
	}
	waitPosition(t, sub, 13, func(p feedclient.Position) bool { return p.LogID != "" })
	if sub.LastHeard().IsZero() {
		t.Fatal("LastHeard is zero after messages")
	}
}

func TestSubscriberRedeliversRefusedEvent(t *testing.T) {
	t.Parallel()
	log := memory.NewRevocationLog()
	appendTokens(t, log, 1, 3)
	iss := startIssuer(t, log, "127.0.0.1:0")
	rec := newRecorder()
	var refused atomic.Bool
	rec.refuse = func(ev *revocationv1.Event) bool { return ev.GetCursor() == 2 && refused.CompareAndSwap(false, true) }
	run(t, feedclient.Config{Client: client(iss.srv.Listener.Addr().String()), Handle: rec.handle})
	rec.waitFor(t, 3)
	if !refused.Load() {
		t.Fatal("the handler never refused event 2")
	}
	if got := rec.cursors(); !slices.Equal(got, upTo(3)) {
		t.Fatalf("accepted %v, want 1 to 3: the refused event again, nothing twice", got)
	}
}

func TestSubscriberFollowsAResetLog(t *testing.T) {
	t.Parallel()
	log := memory.NewRevocationLog()
	appendTokens(t, log, 1, 2)
	iss := startIssuer(t, log, "127.0.0.1:0")
	rec := newRecorder()
	// A position in a log that no longer exists, beyond the new log's head.
	sub := run(t, feedclient.Config{
		Client: client(iss.srv.Listener.Addr().String()), Handle: rec.handle,
		Start: feedclient.Position{LogID: "old-log", Cursor: 5},
	})
	rec.waitFor(t, 2)
	if got := rec.cursors(); !slices.Equal(got, upTo(2)) {
		t.Fatalf("accepted %v, want the new log from its start", got)
	}
	waitPosition(t, sub, 2, func(p feedclient.Position) bool { return p.LogID != "old-log" })
}

// waitPosition waits (bounded) until sub's position is cursor and ok says
// its log is right. The position moves on the subscriber's goroutine just
// after the handler returns, so a test that saw the handler run must still
// wait for it.
func waitPosition(t *testing.T, sub *feedclient.Subscriber, cursor int64, ok func(feedclient.Position) bool) {
	t.Helper()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		pos := sub.Position()
		if pos.Cursor == cursor && ok(pos) {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("Position = %+v, want cursor %d", pos, cursor)
		}
	}
}

// silentFeed accepts subscriptions and never sends anything, like an
// issuer behind a connection that died without a reset.
type silentFeed struct {
	revocationv1connect.UnimplementedRevocationFeedServiceHandler
	calls chan struct{}
}

func (f *silentFeed) Subscribe(ctx context.Context, _ *connect.Request[revocationv1.SubscribeRequest], _ *connect.ServerStream[revocationv1.SubscribeResponse]) error {
	f.calls <- struct{}{}
	<-ctx.Done()
	return ctx.Err()
}

func TestSubscriberReplacesASilentStream(t *testing.T) {
	t.Parallel()
	f := &silentFeed{calls: make(chan struct{}, 10)}
	mux := http.NewServeMux()
	mux.Handle(revocationv1connect.NewRevocationFeedServiceHandler(f))
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	run(t, feedclient.Config{
		Client:      client(srv.Listener.Addr().String()),
		Handle:      newRecorder().handle,
		IdleTimeout: 20 * time.Millisecond,
	})
	for i := range 2 {
		select {
		case <-f.calls:
		case <-time.After(waitTimeout):
			t.Fatalf("subscription %d never came: a silent stream was not replaced", i+1)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	logger := slog.New(slog.DiscardHandler)
	c := client("127.0.0.1:1")
	handle := newRecorder().handle
	for _, tc := range []struct {
		name string
		cfg  feedclient.Config
	}{
		{"no client", feedclient.Config{Handle: handle, Logger: logger}},
		{"no handler", feedclient.Config{Client: c, Logger: logger}},
		{"no logger", feedclient.Config{Client: c, Handle: handle}},
		{"negative cursor", feedclient.Config{Client: c, Handle: handle, Logger: logger, Start: feedclient.Position{Cursor: -1}}},
		{"negative idle timeout", feedclient.Config{Client: c, Handle: handle, Logger: logger, IdleTimeout: -time.Second}},
	} {
		if _, err := feedclient.New(tc.cfg); err == nil {
			t.Errorf("%s: New accepted the config", tc.name)
		}
	}
}
