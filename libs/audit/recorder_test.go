package audit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/gatehouse/gatehouse/libs/audit"
	"github.com/gatehouse/gatehouse/libs/audit/memory"
)

// errTransient stands for a store outage.
var errTransient = errors.New("connection refused")

// metrics collects what a Recorder reports.
type metrics struct {
	reader *sdkmetric.ManualReader
	opts   audit.RecorderOptions
}

func newMetrics() *metrics {
	reader := sdkmetric.NewManualReader()
	meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")
	return &metrics{reader: reader, opts: audit.RecorderOptions{Meter: meter}}
}

func (m *metrics) find(t *testing.T, name string) metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := m.reader.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, md := range sm.Metrics {
			if md.Name == name {
				return md.Data
			}
		}
	}
	return nil
}

// count returns a counter's total, or a histogram's number of samples.
func (m *metrics) count(t *testing.T, name string) int64 {
	t.Helper()
	var n int64
	switch data := m.find(t, name).(type) {
	case nil:
	case metricdata.Sum[int64]:
		for _, dp := range data.DataPoints {
			n += dp.Value
		}
	case metricdata.Histogram[float64]:
		for _, dp := range data.DataPoints {
			n += int64(dp.Count)
		}
	default:
		t.Fatalf("%s is a %T", name, data)
	}
	return n
}

func (m *metrics) gauge(t *testing.T, name string) int64 {
	t.Helper()
	data, ok := m.find(t, name).(metricdata.Gauge[int64])
	if !ok || len(data.DataPoints) != 1 {
		t.Fatalf("%s: no int64 gauge with one point: %+v", name, data)
	}
	return data.DataPoints[0].Value
}

// gatedStore holds every Append until release is closed, and reports each
// call on entered.
type gatedStore struct {
	audit.Store
	entered chan struct{}
	release chan struct{}
}

func newGatedStore(inner audit.Store) *gatedStore {
	return &gatedStore{Store: inner, entered: make(chan struct{}, 100), release: make(chan struct{})}
}

func (s *gatedStore) Append(ctx context.Context, events ...audit.Event) ([]audit.Event, error) {
	s.entered <- struct{}{}
	select {
	case <-s.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.Store.Append(ctx, events...)
}

// flakyStore fails the Append calls (numbered from 1) that fail selects;
// with commitFirst, it writes the events before failing, like a commit
// whose answer got lost.
type flakyStore struct {
	audit.Store
	fail        func(call int) bool
	commitFirst bool
	mu          sync.Mutex
	calls       int
}

func (s *flakyStore) Append(ctx context.Context, events ...audit.Event) ([]audit.Event, error) {
	s.mu.Lock()
	s.calls++
	fail := s.fail(s.calls)
	s.mu.Unlock()
	if !fail {
		return s.Store.Append(ctx, events...)
	}
	if s.commitFirst {
		if _, err := s.Store.Append(ctx, events...); err != nil {
			return nil, err
		}
	}
	return nil, errTransient
}

// downStore fails every Append, reporting each call on entered.
type downStore struct {
	audit.Store
	entered chan struct{}
}

func (s downStore) Append(context.Context, ...audit.Event) ([]audit.Event, error) {
	s.entered <- struct{}{}
	return nil, errTransient
}

func newRecorder(t *testing.T, s audit.Store, opts audit.RecorderOptions) *audit.Recorder {
	t.Helper()
	r, err := audit.NewRecorder(s, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r
}

func record(t *testing.T, r audit.Emitter, subjects ...string) {
	t.Helper()
	for _, s := range subjects {
		if err := r.Record(t.Context(), audit.Event{Type: audit.TypeTokenIssued, Subject: s}); err != nil {
			t.Fatalf("Record(%s): %v", s, err)
		}
	}
}

func subjects(t *testing.T, s audit.Store) []string {
	t.Helper()
	events, err := s.List(t.Context(), audit.Query{Limit: audit.MaxListLimit})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range events {
		out = append(out, e.Subject)
	}
	return out
}

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

func TestRecorderWritesInOrder(t *testing.T) {
	t.Parallel()
	m := newMetrics()
	s := memory.New()
	opts := m.opts
	opts.BatchSize = 3
	r := newRecorder(t, s, opts)
	before := time.Now().Truncate(time.Microsecond)
	want := names("user-", 10)
	record(t, r, want...)
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := subjects(t, s); !slices.Equal(got, want) {
		t.Fatalf("store holds %v, want %v", got, want)
	}
	events, err := s.List(t.Context(), audit.Query{})
	if err != nil {
		t.Fatal(err)
	}
	ids := make(map[string]bool)
	for _, e := range events {
		if e.EventID == "" || ids[e.EventID] || e.Time.Before(before) {
			t.Fatalf("event %+v: EventID or Time not filled", e)
		}
		ids[e.EventID] = true
	}
	if n := m.count(t, "gatehouse.audit.events.written"); n != 10 {
		t.Errorf("events.written = %d, want 10", n)
	}
	if _, err := audit.Verify(t.Context(), s); err != nil {
		t.Errorf("Verify = %v", err)
	}
}

func TestRecordRejectsInvalidAtOnce(t *testing.T) {
	t.Parallel()
	s := memory.New()
	r := newRecorder(t, s, audit.RecorderOptions{})
	if err := r.Record(t.Context(), audit.Event{Subject: "alice"}); !errors.Is(err, audit.ErrInvalidEvent) {
		t.Fatalf("Record = %v, want ErrInvalidEvent", err)
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := subjects(t, s); len(got) != 0 {
		t.Fatalf("store holds %v", got)
	}
}

func TestRecordCopiesTheEvent(t *testing.T) {
	t.Parallel()
	s := memory.New()
	r := newRecorder(t, s, audit.RecorderOptions{})
	e := fullEvent()
	if err := r.Record(t.Context(), e); err != nil {
		t.Fatal(err)
	}
	e.Attributes["jti"], e.ActorChain[0] = "changed", "changed"
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	got, err := s.List(t.Context(), audit.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Attributes["jti"] != "j-1" || got[0].ActorChain[0] != "sam" {
		t.Fatalf("store holds %+v: the caller's later changes leaked in", got)
	}
}

func TestRecordBackPressure(t *testing.T) {
	t.Parallel()
	m := newMetrics()
	s := newGatedStore(memory.New())
	opts := m.opts
	opts.QueueSize, opts.BatchSize = 2, 1
	r := newRecorder(t, s, opts)

	record(t, r, "a")
	<-s.entered            // the worker holds "a" in a stalled Append
	record(t, r, "b", "c") // fills the queue
	if depth := m.gauge(t, "gatehouse.audit.queue.depth"); depth != 2 {
		t.Errorf("queue.depth = %d, want 2", depth)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := r.Record(ctx, audit.Event{Type: audit.TypeTokenIssued, Subject: "dropped"})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Record on a full queue = %v, want context.Canceled", err)
	}
	if err := r.Flush(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Flush on a full queue = %v, want context.Canceled", err)
	}
	if n := m.count(t, "gatehouse.audit.record.blocked.duration"); n != 2 {
		t.Errorf("record.blocked.duration has %d samples, want 2", n)
	}

	waiting := make(chan error, 1)
	go func() { waiting <- r.Record(t.Context(), audit.Event{Type: audit.TypeTokenIssued, Subject: "d"}) }()
	close(s.release)
	if err := <-waiting; err != nil {
		t.Fatalf("blocked Record = %v", err)
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, want := subjects(t, s), []string{"a", "b", "c", "d"}; !slices.Equal(got, want) {
		t.Fatalf("store holds %v, want %v", got, want)
	}
}

func TestRecorderRetriesTransientErrors(t *testing.T) {
	t.Parallel()
	m := newMetrics()
	var logs bytes.Buffer
	s := &flakyStore{Store: memory.New(), fail: func(call int) bool { return call <= 3 }}
	opts := m.opts
	opts.MinRetryDelay, opts.MaxRetryDelay = time.Millisecond, 2*time.Millisecond
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	r := newRecorder(t, s, opts)
	want := names("user-", 5)
	record(t, r, want...)
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := subjects(t, s); !slices.Equal(got, want) {
		t.Fatalf("store holds %v, want %v", got, want)
	}
	if n := m.count(t, "gatehouse.audit.append.errors"); n != 3 {
		t.Errorf("append.errors = %d, want 3", n)
	}
	if n := m.count(t, "gatehouse.audit.events.written"); n != 5 {
		t.Errorf("events.written = %d, want 5", n)
	}
	if n := strings.Count(logs.String(), "retrying"); n != 3 {
		t.Errorf("%d retry warnings logged, want 3:\n%s", n, logs.String())
	}
}

// TestRecorderLostCommitAnswer: an append that committed but reported an
// error is retried, finds its events there, and counts them as written.
func TestRecorderLostCommitAnswer(t *testing.T) {
	t.Parallel()
	m := newMetrics()
	// The second append, of "b" and "c", commits but reports an error.
	s := newGatedStore(&flakyStore{Store: memory.New(), fail: func(call int) bool { return call == 2 }, commitFirst: true})
	opts := m.opts
	opts.MinRetryDelay = time.Millisecond
	r := newRecorder(t, s, opts)
	record(t, r, "a")
	<-s.entered
	record(t, r, "b", "c") // queued behind "a", so they make one batch
	close(s.release)
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, want := subjects(t, s), []string{"a", "b", "c"}; !slices.Equal(got, want) {
		t.Fatalf("store holds %v, want %v", got, want)
	}
	if w, rej := m.count(t, "gatehouse.audit.events.written"), m.count(t, "gatehouse.audit.events.rejected"); w != 3 || rej != 0 {
		t.Errorf("events.written = %d, rejected = %d; want 3, 0", w, rej)
	}
	// The lost answer, the retried batch's duplicate, then each event's.
	if n := m.count(t, "gatehouse.audit.append.errors"); n != 4 {
		t.Errorf("append.errors = %d, want 4", n)
	}
}

func TestRecorderRejectsOnlyTheBadEvent(t *testing.T) {
	t.Parallel()
	m := newMetrics()
	var logs bytes.Buffer
	inner := memory.New()
	if _, err := inner.Append(t.Context(), audit.Event{Type: audit.TypeTokenIssued, Subject: "first", EventID: "taken"}); err != nil {
		t.Fatal(err)
	}
	s := newGatedStore(inner)
	opts := m.opts
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	r := newRecorder(t, s, opts)

	record(t, r, "a")
	<-s.entered
	record(t, r, "b")
	if err := r.Record(t.Context(), audit.Event{Type: audit.TypeTokenIssued, Subject: "dup", EventID: "taken"}); err != nil {
		t.Fatal(err)
	}
	record(t, r, "c") // b, dup and c make one batch
	close(s.release)
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, want := subjects(t, s), []string{"first", "a", "b", "c"}; !slices.Equal(got, want) {
		t.Fatalf("store holds %v, want %v", got, want)
	}
	if n := m.count(t, "gatehouse.audit.events.rejected"); n != 1 {
		t.Errorf("events.rejected = %d, want 1", n)
	}
	if !strings.Contains(logs.String(), "rejected") || !strings.Contains(logs.String(), "event_id=taken") {
		t.Errorf("rejection not logged:\n%s", logs.String())
	}
}

func TestRecorderCloseDrains(t *testing.T) {
	t.Parallel()
	s := newGatedStore(memory.New())
	r, err := audit.NewRecorder(s, audit.RecorderOptions{QueueSize: 64, BatchSize: 7})
	if err != nil {
		t.Fatal(err)
	}
	want := names("user-", 20)
	record(t, r, want...)
	closed := make(chan error, 1)
	go func() { closed <- r.Close(t.Context()) }()
	close(s.release)
	if err := <-closed; err != nil {
		t.Fatalf("Close = %v", err)
	}
	if got := subjects(t, s); !slices.Equal(got, want) {
		t.Fatalf("store holds %v, want %v", got, want)
	}
	if err := r.Record(t.Context(), audit.Event{Type: audit.TypeDecision}); !errors.Is(err, audit.ErrClosed) {
		t.Errorf("Record after Close = %v, want ErrClosed", err)
	}
	if err := r.Flush(t.Context()); !errors.Is(err, audit.ErrClosed) {
		t.Errorf("Flush after Close = %v, want ErrClosed", err)
	}
	if err := r.Close(t.Context()); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestRecorderCloseWakesBlockedRecord(t *testing.T) {
	t.Parallel()
	s := newGatedStore(memory.New())
	r, err := audit.NewRecorder(s, audit.RecorderOptions{QueueSize: 1, BatchSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	record(t, r, "a")
	<-s.entered
	record(t, r, "b")
	blocked := make(chan error, 1)
	go func() { blocked <- r.Record(t.Context(), audit.Event{Type: audit.TypeDecision, Subject: "c"}) }()
	closed := make(chan error, 1)
	go func() { closed <- r.Close(t.Context()) }()
	if err := <-blocked; !errors.Is(err, audit.ErrClosed) {
		t.Fatalf("Record blocked during Close = %v, want ErrClosed", err)
	}
	close(s.release)
	if err := <-closed; err != nil {
		t.Fatalf("Close = %v", err)
	}
	if got, want := subjects(t, s), []string{"a", "b"}; !slices.Equal(got, want) {
		t.Fatalf("store holds %v, want %v", got, want)
	}
}

func TestRecorderCloseGivesUp(t *testing.T) {
	t.Parallel()
	m := newMetrics()
	var logs bytes.Buffer
	opts := m.opts
	opts.MinRetryDelay = time.Hour // the worker waits to retry until Close gives up
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s := downStore{Store: memory.New(), entered: make(chan struct{}, 10)}
	r, err := audit.NewRecorder(s, opts)
	if err != nil {
		t.Fatal(err)
	}
	record(t, r, "a", "b", "c")
	<-s.entered // the first attempt failed; the worker waits to retry
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err = r.Close(ctx)
	t.Logf("Close: %v", err)
	if !errors.Is(err, audit.ErrEventsLost) || !errors.Is(err, context.Canceled) || !errors.Is(err, errTransient) {
		t.Fatalf("Close = %v, want ErrEventsLost, the context's and the store's errors", err)
	}
	if !strings.Contains(err.Error(), "3 audit events not written") {
		t.Errorf("Close = %v, want the count of lost events", err)
	}
	if n := m.count(t, "gatehouse.audit.events.lost"); n != 3 {
		t.Errorf("events.lost = %d, want 3", n)
	}
	if n := strings.Count(logs.String(), "audit event not written"); n != 3 {
		t.Errorf("%d lost events logged, want 3:\n%s", n, logs.String())
	}
}

// TestRecorderLosesNothingOnClose races Record against Close: every event
// whose Record succeeded is in the store afterwards.
func TestRecorderLosesNothingOnClose(t *testing.T) {
	t.Parallel()
	s := memory.New()
	r, err := audit.NewRecorder(s, audit.RecorderOptions{QueueSize: 16, BatchSize: 5})
	if err != nil {
		t.Fatal(err)
	}
	const writers = 8
	accepted := make([][]string, writers)
	var wg, started sync.WaitGroup
	started.Add(writers)
	for w := range writers {
		wg.Go(func() {
			defer func() {
				if len(accepted[w]) == 0 {
					started.Done()
				}
			}()
			for i := 0; ; i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				err := r.Record(context.Background(), audit.Event{Type: audit.TypeDecision, EventID: id})
				if errors.Is(err, audit.ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Record: %v", err)
					return
				}
				accepted[w] = append(accepted[w], id)
				if i == 0 {
					started.Done()
				}
			}
		})
	}
	started.Wait() // every writer is recording
	record(t, r, "before-close")
	if err := r.Close(t.Context()); err != nil {
		t.Fatalf("Close = %v", err)
	}
	wg.Wait()
	want := map[string]bool{}
	for _, ids := range accepted {
		for _, id := range ids {
			want[id] = true
		}
	}
	var stored []audit.Event
	for {
		page, err := s.List(t.Context(), audit.Query{AfterSeq: int64(len(stored)), Limit: audit.MaxListLimit})
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, page...)
		if len(page) < audit.MaxListLimit {
			break
		}
	}
	got := map[string]bool{}
	for _, e := range stored {
		if e.Subject != "before-close" {
			got[e.EventID] = true
		}
	}
	if len(got) != len(want) {
		t.Fatalf("store holds %d events, %d were accepted", len(got), len(want))
	}
	for id := range want {
		if !got[id] {
			t.Fatalf("accepted event %s is not in the store", id)
		}
	}
}

func TestNewRecorderRejectsBadOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		store audit.Store
		opts  audit.RecorderOptions
	}{
		{name: "nil store", opts: audit.RecorderOptions{}},
		{name: "negative queue", store: memory.New(), opts: audit.RecorderOptions{QueueSize: -1}},
		{name: "batch too large", store: memory.New(), opts: audit.RecorderOptions{BatchSize: audit.MaxAppendBatch + 1}},
		{name: "negative retry delay", store: memory.New(), opts: audit.RecorderOptions{MinRetryDelay: -time.Second}},
	}
	for _, tc := range tests {
		if r, err := audit.NewRecorder(tc.store, tc.opts); err == nil {
			_ = r.Close(t.Context())
			t.Errorf("%s: NewRecorder succeeded", tc.name)
		}
	}
}

func TestSyncEmitter(t *testing.T) {
	t.Parallel()
	s := memory.New()
	var e audit.Emitter = audit.NewSyncEmitter(s)
	record(t, e, "alice")
	if got := subjects(t, s); !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("store holds %v right after Record", got)
	}
	if err := e.Record(t.Context(), audit.Event{}); !errors.Is(err, audit.ErrInvalidEvent) {
		t.Fatalf("Record of an invalid event = %v", err)
	}
}
