// Package revocationtest provides a fake of the issuer's revocation feed
// for tests of its subscribers (package revocation's Follower, a
// gateway): it publishes events, sends heartbeats, drops streams and
// resets its log on command, and records every subscription. It follows
// the wire contract of docs/revocation-feed.md: a heartbeat naming the log
// first, then the events after the cursor in order, then live events and
// heartbeats; out_of_range for a cursor or log id outside its log.
package revocationtest

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	revocationv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1/revocationv1connect"
)

// DefaultLogID names a Feed's log when FeedOptions.LogID is empty.
const DefaultLogID = "log-1"

// FeedOptions configures a Feed. The zero value serves anyone, names its
// log DefaultLogID, and sends heartbeats only when told to.
type FeedOptions struct {
	// ClientID and ClientSecret, when set, are the only credentials
	// Subscribe accepts (HTTP Basic, form-encoded as RFC 6749 section 2.3.1
	// says, as the issuer reads them); others get unauthenticated.
	ClientID, ClientSecret string
	// Heartbeat is the interval of heartbeats on each stream; zero sends
	// only the first one and those Heartbeat asks for.
	Heartbeat time.Duration
	// LogID names the log (DefaultLogID when empty).
	LogID string
}

// Request is one call of Subscribe, as the Feed saw it.
type Request struct {
	AfterCursor int64
	LogID       string
	// Code is how the Feed refused the call, or 0 if it accepted it.
	Code connect.Code
	// At is when the call arrived.
	At time.Time
}

// Feed implements revocationv1connect.RevocationFeedServiceHandler with an
// in-memory log. Its methods are safe for concurrent use.
type Feed struct {
	opts FeedOptions

	mu     sync.Mutex
	logID  string
	events []*revocationv1.Event // events[i].Cursor == i+1
	// drops and beats count Drop and Heartbeat calls; a stream compares
	// them with the values it last saw.
	drops, beats int
	quiet        bool
	refuse       connect.Code
	closed       bool
	requests     []Request
	// changed is closed and replaced on every change.
	changed chan struct{}
}

var _ revocationv1connect.RevocationFeedServiceHandler = (*Feed)(nil)

// NewFeed returns a Feed with an empty log.
func NewFeed(opts FeedOptions) *Feed {
	if opts.LogID == "" {
		opts.LogID = DefaultLogID
	}
	return &Feed{opts: opts, logID: opts.LogID, changed: make(chan struct{})}
}

// Publish appends a copy of ev to the log with the next cursor, delivers
// it to every open stream, and returns that cursor.
func (f *Feed) Publish(ev *revocationv1.Event) int64 {
	ev = proto.CloneOf(ev)
	f.mu.Lock()
	defer f.mu.Unlock()
	ev.Cursor = int64(len(f.events) + 1)
	f.events = append(f.events, ev)
	f.changeLocked()
	return ev.Cursor
}

// Heartbeat makes every open stream send a heartbeat now.
func (f *Feed) Heartbeat() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.beats++
	f.changeLocked()
}

// SetHeartbeats stops (false) or resumes (true) the periodic heartbeats,
// like an issuer that hangs without closing its connections.
func (f *Feed) SetHeartbeats(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.quiet = !on
}

// Drop ends every open stream with unavailable, as an issuer replica does
// when it shuts down.
func (f *Feed) Drop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.drops++
	f.changeLocked()
}

// Reset replaces the log with an empty one named logID (a new database):
// open streams end with out_of_range, and so do subscriptions that name
// the old log or a cursor beyond the new head.
func (f *Feed) Reset(logID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logID, f.events = logID, nil
	f.changeLocked()
}

// Refuse makes every Subscribe fail at once with code until Refuse(0).
func (f *Feed) Refuse(code connect.Code) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refuse = code
}

// Close ends every open stream with unavailable and refuses new ones, so
// that a server can shut down. It is idempotent.
func (f *Feed) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	f.drops++
	f.changeLocked()
}

// Requests returns every Subscribe call so far, oldest first.
func (f *Feed) Requests() []Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Request(nil), f.requests...)
}

// AwaitRequests waits until Subscribe has been called at least n times
// and returns the calls, or returns ctx's error.
func (f *Feed) AwaitRequests(ctx context.Context, n int) ([]Request, error) {
	for {
		f.mu.Lock()
		changed, got := f.changed, append([]Request(nil), f.requests...)
		f.mu.Unlock()
		if len(got) >= n {
			return got, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return got, fmt.Errorf("revocationtest: %d of %d subscriptions: %w", len(got), n, ctx.Err())
		}
	}
}

func (f *Feed) changeLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// position is one stream's view of the Feed.
type position struct {
	cursor       int64
	logID        string
	drops, beats int
}

// Subscribe implements revocationv1connect.RevocationFeedServiceHandler.
func (f *Feed) Subscribe(ctx context.Context, req *connect.Request[revocationv1.SubscribeRequest], stream *connect.ServerStream[revocationv1.SubscribeResponse]) error {
	pos, err := f.open(req)
	if err != nil {
		return err
	}
	if err := send(stream, heartbeat(pos)); err != nil {
		return err
	}
	var tick <-chan time.Time
	if f.opts.Heartbeat > 0 {
		t := time.NewTicker(f.opts.Heartbeat)
		defer t.Stop()
		tick = t.C
	}
	for {
		f.mu.Lock()
		changed, quiet := f.changed, f.quiet
		switch {
		case f.drops != pos.drops:
			f.mu.Unlock()
			return connect.NewError(connect.CodeUnavailable, errors.New("stream dropped: subscribe again"))
		case f.logID != pos.logID || pos.cursor > int64(len(f.events)):
			f.mu.Unlock()
			return connect.NewError(connect.CodeOutOfRange, errors.New("the revocation log was replaced: subscribe again from after_cursor 0"))
		}
		pending := f.events[pos.cursor:]
		beat := f.beats != pos.beats
		pos.beats = f.beats
		f.mu.Unlock()

		for _, ev := range pending {
			if err := send(stream, &revocationv1.SubscribeResponse{
				Message: &revocationv1.SubscribeResponse_Event{Event: ev},
			}); err != nil {
				return err
			}
			pos.cursor = ev.GetCursor()
		}
		if beat {
			if err := send(stream, heartbeat(pos)); err != nil {
				return err
			}
		}
		select {
		case <-changed:
		case <-tick:
			if !quiet {
				if err := send(stream, heartbeat(pos)); err != nil {
					return err
				}
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// open records req and checks it as the issuer would.
func (f *Feed) open(req *connect.Request[revocationv1.SubscribeRequest]) (position, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	after, logID := req.Msg.GetAfterCursor(), req.Msg.GetLogId()
	var err error
	switch {
	case f.closed:
		err = connect.NewError(connect.CodeUnavailable, errors.New("the feed is shutting down"))
	case !f.authenticated(req.Header()):
		err = connect.NewError(connect.CodeUnauthenticated, errors.New("authenticate as a client that may read the revocation feed"))
	case f.refuse != 0:
		err = connect.NewError(f.refuse, errors.New("refused by the test"))
	case after < 0:
		err = connect.NewError(connect.CodeInvalidArgument, errors.New("after_cursor must not be negative"))
	case logID != "" && logID != f.logID, after > int64(len(f.events)):
		err = connect.NewError(connect.CodeOutOfRange, errors.New("cursor outside the log: subscribe again from after_cursor 0"))
	}
	r := Request{AfterCursor: after, LogID: logID, At: time.Now()}
	if err != nil {
		r.Code = connect.CodeOf(err)
	}
	f.requests = append(f.requests, r)
	f.changeLocked()
	return position{cursor: after, logID: f.logID, drops: f.drops, beats: f.beats}, err
}

func (f *Feed) authenticated(h http.Header) bool {
	if f.opts.ClientID == "" {
		return true
	}
	id, secret, ok := (&http.Request{Header: h}).BasicAuth()
	if !ok {
		return false
	}
	id, errID := url.QueryUnescape(id)
	secret, errSecret := url.QueryUnescape(secret)
	return errID == nil && errSecret == nil && id == f.opts.ClientID &&
		subtle.ConstantTimeCompare([]byte(secret), []byte(f.opts.ClientSecret)) == 1
}

func heartbeat(pos position) *revocationv1.SubscribeResponse {
	return &revocationv1.SubscribeResponse{Message: &revocationv1.SubscribeResponse_Heartbeat{
		Heartbeat: &revocationv1.Heartbeat{Cursor: pos.cursor, LogId: pos.logID, Time: timestamppb.Now()},
	}}
}

func send(stream *connect.ServerStream[revocationv1.SubscribeResponse], m *revocationv1.SubscribeResponse) error {
	if err := stream.Send(m); err != nil {
		return fmt.Errorf("revocationtest: send: %w", err)
	}
	return nil
}

// NewServer serves f over HTTP on loopback until the test ends and
// returns the server; a client is
// revocationv1connect.NewRevocationFeedServiceClient(srv.Client(), srv.URL).
// srv.CloseClientConnections cuts every stream as a network failure would.
func NewServer(t testing.TB, f *Feed) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(revocationv1connect.NewRevocationFeedServiceHandler(f))
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		f.Close() // before srv.Close, which waits for the streams
		srv.Close()
	})
	return srv
}
