package feed_test

// Integration of the subscriber side (libs/revocation: feedclient and the
// Follower that keeps a revocation Set current) with the issuer's real
// feed handler and stores: what the gateway runs against what the issuer
// runs.

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	libpostgres "github.com/gatehouse/gatehouse/libs/postgres"
	librevocation "github.com/gatehouse/gatehouse/libs/revocation"
	"github.com/gatehouse/gatehouse/libs/revocation/feedclient"
	revocationv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1/revocationv1connect"
	"github.com/gatehouse/gatehouse/services/issuer/internal/revocation"
	"github.com/gatehouse/gatehouse/services/issuer/internal/revocation/feed"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/memory"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/postgres"
)

// The gateway's demo client (the issuer's demo seed).
const (
	subscriberID     = "gateway"
	subscriberSecret = "gateway-secret"
)

// basicAuthorize admits the gateway by HTTP Basic, form-decoded as the
// issuer's client authentication reads it.
func basicAuthorize(_ context.Context, h http.Header) (string, error) {
	id, secret, ok := (&http.Request{Header: h}).BasicAuth()
	if !ok {
		return "", feed.ErrUnauthenticated
	}
	id, errID := url.QueryUnescape(id)
	secret, errSecret := url.QueryUnescape(secret)
	if errID != nil || errSecret != nil || id != subscriberID || secret != subscriberSecret {
		return "", feed.ErrUnauthenticated
	}
	return id, nil
}

// appendingLog is a revocation log the test can append to.
type appendingLog interface {
	feed.Log
	Append(context.Context, revocation.Event) (revocation.Event, error)
}

// replica serves a feed of log on addr ("127.0.0.1:0" for any port) until
// killed; the log outlives it, as a database outlives an issuer.
type replica struct {
	srv *httptest.Server
	h   *feed.Handler
}

func startReplica(t *testing.T, log feed.Log, addr string) *replica {
	t.Helper()
	h, err := feed.NewHandler(feed.Config{Log: log, Authorize: basicAuthorize, Logger: slog.New(slog.DiscardHandler), MaxBatch: 1})
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
	r := &replica{srv: srv, h: h}
	t.Cleanup(r.kill)
	return r
}

func (r *replica) addr() string { return r.srv.Listener.Addr().String() }

// kill drops every connection at once, mid-stream, and stops the server.
func (r *replica) kill() {
	r.srv.CloseClientConnections()
	r.h.Close()
	r.srv.Close()
}

func feedClient(addr string) revocationv1connect.RevocationFeedServiceClient {
	return revocationv1connect.NewRevocationFeedServiceClient(
		&http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}, "http://"+addr)
}

// postgresLog returns a Postgres revocation log in a new database, with
// its listener running until the test ends.
func postgresLog(t *testing.T) *postgres.RevocationLog {
	t.Helper()
	pool, err := libpostgres.Open(t.Context(), server.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := postgres.Migrate(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	l := postgres.NewRevocationLog(pool, slog.New(slog.DiscardHandler), time.Second)
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
		t.Fatal("the log's listener did not start")
	}
	return l
}

// cursorRecorder is a feedclient.Handler that keeps the cursors it
// accepted and tells the test about each.
type cursorRecorder struct {
	mu       sync.Mutex
	accepted []int64
	notify   chan int64
	refuse   func(ev *revocationv1.Event) bool
}

func newCursorRecorder() *cursorRecorder { return &cursorRecorder{notify: make(chan int64, 1000)} }

func (r *cursorRecorder) handle(_ context.Context, ev *revocationv1.Event) error {
	if r.refuse != nil && r.refuse(ev) {
		return errors.New("cache full")
	}
	r.mu.Lock()
	r.accepted = append(r.accepted, ev.GetCursor())
	r.mu.Unlock()
	r.notify <- ev.GetCursor()
	return nil
}

func (r *cursorRecorder) waitFor(t *testing.T, cursor int64) {
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

func (r *cursorRecorder) cursors() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.accepted)
}

func runSubscriber(t *testing.T, cfg feedclient.Config) *feedclient.Subscriber {
	t.Helper()
	cfg.ClientID, cfg.ClientSecret = subscriberID, subscriberSecret
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

func appendTokens(t *testing.T, log appendingLog, from, to int) {
	t.Helper()
	at := time.Now()
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

// until waits (bounded) until cond holds.
func until(t *testing.T, what string, cond func() bool) {
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

// TestSubscriberSurvivesIssuerRestart kills the issuer while an event is
// being handled and others are in flight, appends while it is down, and
// restarts it on the same address: every event arrives exactly once, in
// order, with the in-memory log and with Postgres.
func TestSubscriberSurvivesIssuerRestart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		log  func(t *testing.T) appendingLog
	}{
		{"memory", func(*testing.T) appendingLog { return memory.NewRevocationLog() }},
		{"postgres", func(t *testing.T) appendingLog { return postgresLog(t) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			log := tc.log(t)
			appendTokens(t, log, 1, 8)
			iss := startReplica(t, log, "127.0.0.1:0")
			addr := iss.addr()

			rec := newCursorRecorder()
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
			sub := runSubscriber(t, feedclient.Config{Client: feedClient(addr), Handle: handle})

			<-inFlight
			iss.kill()
			close(killed)
			appendTokens(t, log, 9, 12)
			startReplica(t, log, addr)
			rec.waitFor(t, 12)
			appendTokens(t, log, 13, 13)
			rec.waitFor(t, 13)

			if got := rec.cursors(); !slices.Equal(got, upTo(13)) {
				t.Fatalf("accepted %v, want 1 to 13 once each, in order", got)
			}
			until(t, "the position is 13 of a named log", func() bool {
				p := sub.Position()
				return p.Cursor == 13 && p.LogID != ""
			})
		})
	}
}

func TestSubscriberRedeliversRefusedEvent(t *testing.T) {
	t.Parallel()
	log := memory.NewRevocationLog()
	appendTokens(t, log, 1, 3)
	iss := startReplica(t, log, "127.0.0.1:0")
	rec := newCursorRecorder()
	var refused atomic.Bool
	rec.refuse = func(ev *revocationv1.Event) bool { return ev.GetCursor() == 2 && refused.CompareAndSwap(false, true) }
	runSubscriber(t, feedclient.Config{Client: feedClient(iss.addr()), Handle: rec.handle})
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
	iss := startReplica(t, log, "127.0.0.1:0")
	rec := newCursorRecorder()
	// A position in a log that no longer exists, beyond the new log's head.
	sub := runSubscriber(t, feedclient.Config{
		Client: feedClient(iss.addr()), Handle: rec.handle,
		Start: feedclient.Position{LogID: "old-log", Cursor: 5},
	})
	rec.waitFor(t, 2)
	if got := rec.cursors(); !slices.Equal(got, upTo(2)) {
		t.Fatalf("accepted %v, want the new log from its start", got)
	}
	until(t, "the position is in the new log", func() bool {
		p := sub.Position()
		return p.Cursor == 2 && p.LogID != "old-log" && p.LogID != ""
	})
}

// TestFollowerHonoursTheIssuersRevocations runs the gateway's Follower
// against the issuer's feed: each kind of revocation the issuer records
// revokes the tokens it should within a second, and no other; revocations
// recorded while the issuer is down arrive when it is back; and when the
// issuer's store is replaced by an empty one, the Follower follows the new
// log and still refuses what it already knew.
func TestFollowerHonoursTheIssuersRevocations(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		log  func(t *testing.T) appendingLog
	}{
		{"memory", func(*testing.T) appendingLog { return memory.NewRevocationLog() }},
		{"postgres", func(t *testing.T) appendingLog { return postgresLog(t) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			log := tc.log(t)
			iss := startReplica(t, log, "127.0.0.1:0")
			addr := iss.addr()
			set := librevocation.NewSet(librevocation.SetOptions{})
			f, err := librevocation.NewFollower(librevocation.FollowerConfig{
				Client: feedClient(addr), ClientID: subscriberID, ClientSecret: subscriberSecret,
				Set: set, Logger: slog.New(slog.DiscardHandler),
				MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				f.Run(ctx)
			}()
			t.Cleanup(func() {
				cancel()
				<-done
			})
			ready, cancelReady := context.WithTimeout(t.Context(), waitTimeout)
			defer cancelReady()
			if err := f.WaitReady(ready); err != nil {
				t.Fatal(err)
			}

			now := time.Now()
			// Tokens issued a while ago and just now (JWT iat has seconds).
			old, fresh := now.Add(-2*time.Minute).Truncate(time.Second), now.Add(time.Second).Truncate(time.Second)
			before := now.Add(-time.Minute)
			tok := func(jti, sub, client string, iat time.Time) librevocation.Token {
				return librevocation.Token{JTI: jti, Subject: sub, ClientID: client, IssuedAt: iat}
			}
			exp := now.Add(5 * time.Minute)
			for _, rc := range []struct {
				ev      revocation.Event
				revoked []librevocation.Token
				spared  []librevocation.Token
			}{
				{
					ev: revocation.Event{Kind: revocation.KindToken, ID: "jti-t", JTIs: []string{"jti-t"},
						Subject: "alice", ClientID: "invoice-web", Tenant: "acme", RevokedAt: now, ExpiresAt: exp, Reason: "client_request"},
					revoked: []librevocation.Token{tok("jti-t", "alice", "invoice-web", fresh)},
					spared:  []librevocation.Token{tok("jti-t2", "alice", "invoice-web", old)},
				},
				{
					ev: revocation.Event{Kind: revocation.KindRefreshFamily, ID: "grant-1", JTIs: []string{"jti-f1", "jti-f2"},
						Subject: "bob", ClientID: "invoice-web", Tenant: "acme", RevokedAt: now, ExpiresAt: exp, Reason: "refresh_token_reuse"},
					revoked: []librevocation.Token{tok("jti-f1", "bob", "invoice-web", fresh), tok("jti-f2", "bob", "invoice-web", fresh)},
					spared:  []librevocation.Token{tok("jti-f3", "bob", "invoice-web", old)},
				},
				{
					ev: revocation.Event{Kind: revocation.KindSession, ID: "session-1", JTIs: []string{"jti-s"},
						Subject: "carol", Tenant: "globex", IssuedBefore: before, RevokedAt: now, ExpiresAt: exp, Reason: "user_logout"},
					revoked: []librevocation.Token{tok("jti-s", "carol", "invoice-web", fresh), tok("jti-s2", "carol", "support-console", old)},
					spared:  []librevocation.Token{tok("jti-s3", "carol", "invoice-web", fresh), tok("jti-s4", "alice", "invoice-web", old)},
				},
				{
					ev: revocation.Event{Kind: revocation.KindClient, ID: "billing-bot", ClientID: "billing-bot",
						Tenant: "acme", IssuedBefore: before, RevokedAt: now, ExpiresAt: exp, Reason: "client_disabled"},
					revoked: []librevocation.Token{tok("jti-c", "billing-bot", "billing-bot", old)},
					spared:  []librevocation.Token{tok("jti-c2", "billing-bot", "billing-bot", fresh), tok("jti-c3", "reporting-job", "reporting-job", old)},
				},
				{
					ev: revocation.Event{Kind: revocation.KindConsent, ID: "consent-1", Subject: "sam", ClientID: "support-console",
						Tenant: "acme", IssuedBefore: before, RevokedAt: now, ExpiresAt: exp, Reason: "consent_withdrawn"},
					revoked: []librevocation.Token{tok("jti-k", "sam", "support-console", old)},
					spared:  []librevocation.Token{tok("jti-k2", "sam", "invoice-web", old), tok("jti-k3", "sam", "support-console", fresh)},
				},
			} {
				start := time.Now()
				if _, err := log.Append(t.Context(), rc.ev); err != nil {
					t.Fatal(err)
				}
				until(t, string(rc.ev.Kind)+" revoked", func() bool { return set.Revoked(rc.revoked[0]) })
				if took := time.Since(start); took > time.Second {
					t.Errorf("%s: revoked after %v, want within a second", rc.ev.Kind, took)
				}
				for _, tk := range rc.revoked {
					if !set.Revoked(tk) {
						t.Errorf("%s: %+v not revoked", rc.ev.Kind, tk)
					}
				}
				for _, tk := range rc.spared {
					if set.Revoked(tk) {
						t.Errorf("%s: %+v revoked", rc.ev.Kind, tk)
					}
				}
			}

			// The issuer goes down; a revocation is recorded meanwhile (by
			// another replica, on the same store).
			iss.kill()
			appendTokens(t, log, 1, 1)
			startReplica(t, log, addr)
			until(t, "the revocation recorded while away arrives", func() bool {
				return set.Revoked(tok("jti-1", "dave", "invoice-web", old))
			})
			if f.Position().Cursor != 6 {
				t.Errorf("position %+v, want cursor 6", f.Position())
			}
			if f.Staleness(time.Now()) > waitTimeout || !f.Ready() {
				t.Errorf("staleness %v, ready %v after reconnecting", f.Staleness(time.Now()), f.Ready())
			}
		})
	}

	t.Run("store replaced", func(t *testing.T) {
		t.Parallel()
		log := memory.NewRevocationLog()
		appendTokens(t, log, 1, 3)
		iss := startReplica(t, log, "127.0.0.1:0")
		addr := iss.addr()
		set := librevocation.NewSet(librevocation.SetOptions{})
		f, err := librevocation.NewFollower(librevocation.FollowerConfig{
			Client: feedClient(addr), ClientID: subscriberID, ClientSecret: subscriberSecret,
			Set: set, Logger: slog.New(slog.DiscardHandler),
			MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			f.Run(ctx)
		}()
		t.Cleanup(func() {
			cancel()
			<-done
		})
		until(t, "the first log is read", func() bool { return f.Position().Cursor == 3 })
		oldLog := f.Position().LogID

		// A restarted demo issuer: a new, empty in-memory store.
		iss.kill()
		fresh := memory.NewRevocationLog()
		appendTokens(t, fresh, 10, 10)
		startReplica(t, fresh, addr)
		until(t, "the new log is followed", func() bool {
			p := f.Position()
			return p.LogID != oldLog && p.Cursor == 1
		})
		for _, jti := range []string{"jti-1", "jti-2", "jti-3", "jti-10"} {
			if !set.Revoked(librevocation.Token{JTI: jti}) {
				t.Errorf("%s not revoked after the store was replaced", jti)
			}
		}
	})
}
