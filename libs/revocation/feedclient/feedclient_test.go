package feedclient_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/libs/revocation/feedclient"
	"github.com/gatehouse/gatehouse/libs/revocation/revocationtest"
	revocationv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1/revocationv1connect"
)

// waitTimeout bounds every wait, so a broken subscriber fails the test
// instead of hanging it.
const waitTimeout = 10 * time.Second

// The subscriber's credentials; the secret needs form-encoding.
const (
	clientID     = "gateway"
	clientSecret = "s3cret:with /+%&"
)

func newFeed(opts revocationtest.FeedOptions) *revocationtest.Feed {
	opts.ClientID, opts.ClientSecret = clientID, clientSecret
	return revocationtest.NewFeed(opts)
}

func client(srv *httptest.Server) revocationv1connect.RevocationFeedServiceClient {
	return revocationv1connect.NewRevocationFeedServiceClient(srv.Client(), srv.URL)
}

// recorder is a Handler that keeps the cursors it accepted and tells the
// test about each.
type recorder struct {
	mu       sync.Mutex
	accepted []int64
	notify   chan int64
	// refuse, when set, says whether to refuse an event.
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

// run starts a Subscriber for cfg (credentials, logger and short backoffs
// filled in) until the test ends.
func run(t *testing.T, cfg feedclient.Config) *feedclient.Subscriber {
	t.Helper()
	if cfg.ClientID == "" {
		cfg.ClientID, cfg.ClientSecret = clientID, clientSecret
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = 5*time.Millisecond, 20*time.Millisecond
	}
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

func publish(f *revocationtest.Feed, from, to int) {
	at := time.Date(2026, 11, 25, 9, 30, 0, 0, time.UTC)
	for i := from; i <= to; i++ {
		jti := "jti-" + strconv.Itoa(i)
		f.Publish(&revocationv1.Event{Kind: revocationv1.Kind_KIND_TOKEN, Id: jti, Jtis: []string{jti},
			RevokedAt: timestamppb.New(at), ExpiresAt: timestamppb.New(at.Add(time.Hour))})
	}
}

func upTo(from, to int64) []int64 {
	var out []int64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func awaitRequests(t *testing.T, f *revocationtest.Feed, n int) []revocationtest.Request {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	reqs, err := f.AwaitRequests(ctx, n)
	if err != nil {
		t.Fatalf("%v; requests %+v", err, reqs)
	}
	return reqs
}

// waitPosition waits (bounded) until sub's position is want. The position
// moves on the subscriber's goroutine just after the handler returns, so a
// test that saw the handler run must still wait for it.
func waitPosition(t *testing.T, sub *feedclient.Subscriber, want feedclient.Position) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(waitTimeout)
	for {
		pos := sub.Position()
		if pos == want {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("Position = %+v, want %+v", pos, want)
		}
	}
}

// TestSubscriberResumesFromItsCursor drops the stream twice, once as the
// issuer does on shutdown and once by cutting the connection, and
// publishes while the subscriber is away: it resubscribes from its
// position, naming the log, and gets every event exactly once, in order.
func TestSubscriberResumesFromItsCursor(t *testing.T) {
	t.Parallel()
	f := newFeed(revocationtest.FeedOptions{})
	srv := revocationtest.NewServer(t, f)
	publish(f, 1, 3)
	rec := newRecorder()
	var disconnects atomic.Int32
	sub := run(t, feedclient.Config{Client: client(srv), Handle: rec.handle,
		Disconnected: func(context.Context, error) { disconnects.Add(1) }})
	rec.waitFor(t, 3)
	waitPosition(t, sub, feedclient.Position{LogID: revocationtest.DefaultLogID, Cursor: 3})

	f.Refuse(connect.CodeUnavailable) // keep it away while events arrive
	f.Drop()
	awaitRequests(t, f, 2)
	publish(f, 4, 5)
	f.Refuse(0)
	rec.waitFor(t, 5)
	waitPosition(t, sub, feedclient.Position{LogID: revocationtest.DefaultLogID, Cursor: 5})

	n := len(f.Requests())
	srv.CloseClientConnections()
	reqs := awaitRequests(t, f, n+1)
	publish(f, 6, 6)
	rec.waitFor(t, 6)

	if got := rec.cursors(); !slices.Equal(got, upTo(1, 6)) {
		t.Fatalf("accepted %v, want 1 to 6 once each, in order", got)
	}
	want := []revocationtest.Request{{AfterCursor: 0}, {AfterCursor: 3, LogID: revocationtest.DefaultLogID, Code: connect.CodeUnavailable}}
	for i, w := range want {
		if r := reqs[i]; r.AfterCursor != w.AfterCursor || r.LogID != w.LogID || r.Code != w.Code {
			t.Errorf("request %d = %+v, want %+v", i, r, w)
		}
	}
	for _, r := range reqs[2:] {
		if r.Code == 0 && (r.AfterCursor != 3 && r.AfterCursor != 5 || r.LogID != revocationtest.DefaultLogID) {
			t.Errorf("resumed with %+v, want after cursor 3 or 5 of %s", r, revocationtest.DefaultLogID)
		}
	}
	if last := reqs[len(reqs)-1]; last.AfterCursor != 5 || last.Code != 0 {
		t.Errorf("after the cut connection: %+v, want after cursor 5", last)
	}
	if disconnects.Load() < 3 {
		t.Errorf("Disconnected called %d times, want at least 3", disconnects.Load())
	}
}

// scripted is a feed that answers each subscription with the next
// script, to produce what the fake's log cannot (a heartbeat beyond the
// last event, another log's heartbeat). Past the scripts it waits.
type scripted struct {
	revocationv1connect.UnimplementedRevocationFeedServiceHandler
	scripts  chan []*revocationv1.SubscribeResponse
	requests chan *revocationv1.SubscribeRequest
}

func (s *scripted) Subscribe(ctx context.Context, req *connect.Request[revocationv1.SubscribeRequest], st *connect.ServerStream[revocationv1.SubscribeResponse]) error {
	s.requests <- req.Msg
	select {
	case msgs := <-s.scripts:
		for _, m := range msgs {
			if err := st.Send(m); err != nil {
				return err
			}
		}
		return connect.NewError(connect.CodeUnavailable, errors.New("script done"))
	case <-ctx.Done():
		return ctx.Err()
	}
}

func hb(logID string, cursor int64) *revocationv1.SubscribeResponse {
	return &revocationv1.SubscribeResponse{Message: &revocationv1.SubscribeResponse_Heartbeat{
		Heartbeat: &revocationv1.Heartbeat{LogId: logID, Cursor: cursor, Time: timestamppb.Now()}}}
}

func event(cursor int64) *revocationv1.SubscribeResponse {
	return &revocationv1.SubscribeResponse{Message: &revocationv1.SubscribeResponse_Event{
		Event: &revocationv1.Event{Cursor: cursor, Kind: revocationv1.Kind_KIND_TOKEN}}}
}

func TestSubscriberFollowsHeartbeats(t *testing.T) {
	t.Parallel()
	s := &scripted{scripts: make(chan []*revocationv1.SubscribeResponse, 4), requests: make(chan *revocationv1.SubscribeRequest, 10)}
	mux := http.NewServeMux()
	mux.Handle(revocationv1connect.NewRevocationFeedServiceHandler(s))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	// 1: events 1 and 2, then a heartbeat at 7 (3 to 7 expired and were
	// pruned), then an event already seen.
	s.scripts <- []*revocationv1.SubscribeResponse{hb("L", 0), event(1), event(2), hb("L", 7), event(2)}
	// 2: resumed from 7; the heartbeat names another log.
	s.scripts <- []*revocationv1.SubscribeResponse{hb("M", 0), event(8)}
	// 3: from the start of the new log.
	s.scripts <- []*revocationv1.SubscribeResponse{hb("M", 0), event(1)}

	rec := newRecorder()
	var heard atomic.Int32
	sub := run(t, feedclient.Config{Client: client(srv), Handle: rec.handle,
		Heard: func(time.Time) { heard.Add(1) }})
	var got []*revocationv1.SubscribeRequest
	for range 4 {
		select {
		case r := <-s.requests:
			got = append(got, r)
		case <-time.After(waitTimeout):
			t.Fatalf("subscriptions %v, want 4", got)
		}
	}
	want := []*revocationv1.SubscribeRequest{{}, {AfterCursor: 7, LogId: "L"}, {}, {AfterCursor: 1, LogId: "M"}}
	for i := range want {
		if got[i].GetAfterCursor() != want[i].GetAfterCursor() || got[i].GetLogId() != want[i].GetLogId() {
			t.Errorf("subscription %d = %v, want %v", i+1, got[i], want[i])
		}
	}
	// Event 8 of the old log's numbering was never handled: the heartbeat
	// before it ended the stream.
	if got := rec.cursors(); !slices.Equal(got, []int64{1, 2, 1}) {
		t.Errorf("accepted %v, want 1 and 2 of L, then 1 of M", got)
	}
	// Heard after each handled message: 5 of the first stream, the second
	// stream's heartbeat was refused, 2 of the third.
	if n := heard.Load(); n != 7 {
		t.Errorf("Heard called %d times, want 7", n)
	}
	if sub.LastHeard().IsZero() {
		t.Error("LastHeard is zero after messages")
	}
	waitPosition(t, sub, feedclient.Position{LogID: "M", Cursor: 1})
}

// TestSubscriberKeepsALiveStream: heartbeats keep a stream that carries no
// events open past the idle timeout; when they stop, the stream is
// replaced.
func TestSubscriberKeepsALiveStream(t *testing.T) {
	t.Parallel()
	f := newFeed(revocationtest.FeedOptions{Heartbeat: 5 * time.Millisecond})
	srv := revocationtest.NewServer(t, f)
	var heard atomic.Int32
	run(t, feedclient.Config{Client: client(srv), Handle: newRecorder().handle,
		IdleTimeout: 200 * time.Millisecond, Heard: func(time.Time) { heard.Add(1) }})
	awaitRequests(t, f, 1)
	// Longer than two idle timeouts, counted in heartbeats.
	deadline := time.After(waitTimeout)
	for heard.Load() < 100 {
		select {
		case <-deadline:
			t.Fatalf("%d heartbeats heard", heard.Load())
		case <-time.After(time.Millisecond):
		}
	}
	if n := len(f.Requests()); n != 1 {
		t.Fatalf("%d subscriptions while heartbeats flowed, want 1", n)
	}
	f.SetHeartbeats(false)
	awaitRequests(t, f, 2)
}

func TestSubscriberFollowsAResetLog(t *testing.T) {
	t.Parallel()
	f := newFeed(revocationtest.FeedOptions{})
	srv := revocationtest.NewServer(t, f)
	publish(f, 1, 2)
	rec := newRecorder()
	sub := run(t, feedclient.Config{Client: client(srv), Handle: rec.handle})
	rec.waitFor(t, 2)

	t.Run("while subscribed", func(t *testing.T) {
		f.Reset("log-2")
		publish(f, 1, 1)
		rec.waitFor(t, 1)
		waitPosition(t, sub, feedclient.Position{LogID: "log-2", Cursor: 1})
	})
	t.Run("while away", func(t *testing.T) {
		f.Refuse(connect.CodeUnavailable)
		f.Drop()
		n := len(awaitRequests(t, f, len(f.Requests())+1))
		f.Reset("log-3")
		publish(f, 1, 2)
		f.Refuse(0)
		rec.waitFor(t, 2)
		waitPosition(t, sub, feedclient.Position{LogID: "log-3", Cursor: 2})
		reqs := f.Requests()[n:]
		i := slices.IndexFunc(reqs, func(r revocationtest.Request) bool { return r.Code == connect.CodeOutOfRange })
		if i < 0 || reqs[i].LogID != "log-2" || reqs[i].AfterCursor != 1 {
			t.Fatalf("requests %+v: want the old position refused with out_of_range", reqs)
		}
		if r := reqs[len(reqs)-1]; r.AfterCursor != 0 || r.LogID != "" || r.Code != 0 {
			t.Fatalf("last request %+v, want the new log from its start", r)
		}
	})
	if got := rec.cursors(); !slices.Equal(got, []int64{1, 2, 1, 1, 2}) {
		t.Fatalf("accepted %v, want each log's events once", got)
	}
}

func TestSubscriberRedeliversRefusedEvent(t *testing.T) {
	t.Parallel()
	f := newFeed(revocationtest.FeedOptions{})
	srv := revocationtest.NewServer(t, f)
	publish(f, 1, 3)
	rec := newRecorder()
	var refused atomic.Bool
	rec.refuse = func(ev *revocationv1.Event) bool { return ev.GetCursor() == 2 && refused.CompareAndSwap(false, true) }
	run(t, feedclient.Config{Client: client(srv), Handle: rec.handle})
	rec.waitFor(t, 3)
	if !refused.Load() {
		t.Fatal("the handler never refused event 2")
	}
	if got := rec.cursors(); !slices.Equal(got, upTo(1, 3)) {
		t.Fatalf("accepted %v, want 1 to 3: the refused event again, nothing twice", got)
	}
	if r := f.Requests()[1]; r.AfterCursor != 1 {
		t.Fatalf("resubscribed with %+v, want after cursor 1", r)
	}
}

// TestSubscriberBacksOff: refused subscriptions are retried with growing,
// capped delays; a stream that delivered something resets the delay.
func TestSubscriberBacksOff(t *testing.T) {
	t.Parallel()
	const minBackoff, maxBackoff = 10 * time.Millisecond, 160 * time.Millisecond
	f := newFeed(revocationtest.FeedOptions{})
	srv := revocationtest.NewServer(t, f)
	f.Refuse(connect.CodeUnavailable)
	run(t, feedclient.Config{Client: client(srv), Handle: newRecorder().handle,
		MinBackoff: minBackoff, MaxBackoff: maxBackoff})
	reqs := awaitRequests(t, f, 8)
	var gaps []time.Duration
	for i := 1; i < len(reqs); i++ {
		gaps = append(gaps, reqs[i].At.Sub(reqs[i-1].At))
	}
	// Randomized by ±50 %: the first retry waits at least minBackoff/2;
	// nominal delays 10, 20, 40, 80, 160, 160, 160 ms.
	if gaps[0] < minBackoff/2 {
		t.Errorf("first retry after %v, want at least %v", gaps[0], minBackoff/2)
	}
	for i, g := range gaps[4:] {
		if g < maxBackoff/2 {
			t.Errorf("retry %d after %v: the delay did not grow to %v", i+5, g, maxBackoff/2)
		}
		if g > 10*maxBackoff {
			t.Errorf("retry %d after %v: not capped at %v", i+5, g, maxBackoff)
		}
	}

	// A stream that delivered something: the next retry is quick again.
	f.Refuse(0)
	n := len(awaitRequests(t, f, len(reqs)+1))
	f.Drop()
	reqs = awaitRequests(t, f, n+1)
	if g := reqs[n].At.Sub(reqs[n-1].At); g > maxBackoff/2 {
		t.Errorf("after a good stream the retry came after %v, want the reset delay (about %v)", g, minBackoff)
	}
}

func TestSubscriberSendsCredentials(t *testing.T) {
	t.Parallel()
	f := newFeed(revocationtest.FeedOptions{})
	srv := revocationtest.NewServer(t, f)
	publish(f, 1, 1)

	wrong := newRecorder()
	run(t, feedclient.Config{Client: client(srv), Handle: wrong.handle, ClientID: clientID, ClientSecret: "guess"})
	for _, r := range awaitRequests(t, f, 2) {
		if r.Code != connect.CodeUnauthenticated {
			t.Fatalf("request with a wrong secret: %+v, want unauthenticated", r)
		}
	}
	right := newRecorder()
	run(t, feedclient.Config{Client: client(srv), Handle: right.handle})
	right.waitFor(t, 1)
	if got := wrong.cursors(); len(got) != 0 {
		t.Fatalf("a subscriber with a wrong secret got %v", got)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	logger := slog.New(slog.DiscardHandler)
	c := revocationv1connect.NewRevocationFeedServiceClient(http.DefaultClient, "http://127.0.0.1:1")
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
		{"negative backoff", feedclient.Config{Client: c, Handle: handle, Logger: logger, MinBackoff: -time.Second}},
		{"client id without secret", feedclient.Config{Client: c, Handle: handle, Logger: logger, ClientID: "gateway"}},
		{"secret without client id", feedclient.Config{Client: c, Handle: handle, Logger: logger, ClientSecret: "x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := feedclient.New(tc.cfg); err == nil {
				t.Fatal("New accepted the config")
			}
		})
	}
}
