package rollout_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/gatehouse/gatehouse/services/pdp/internal/decision"
	"github.com/gatehouse/gatehouse/services/pdp/internal/policystore"
)

// fakeEval answers every request with one decision under its version. With
// gate set it first signals started (if set) and waits for gate or ctx.
type fakeEval struct {
	version string
	state   decision.State
	reason  string
	err     error
	started chan<- struct{}
	gate    <-chan struct{}
}

func (f *fakeEval) Evaluate(ctx context.Context, _ decision.Request) (decision.Decision, error) {
	if f.gate != nil {
		if f.started != nil {
			f.started <- struct{}{}
		}
		select {
		case <-f.gate:
		case <-ctx.Done():
			return decision.Decision{}, ctx.Err()
		}
	}
	if f.err != nil {
		return decision.Decision{}, f.err
	}
	return decision.Decision{State: f.state, ReasonCode: f.reason, PolicyVersion: f.version}, nil
}

func (f *fakeEval) PolicyVersion() string { return f.version }

// errBroken is what the test loader fails with for a "broken" bundle.
var errBroken = errors.New("bundle does not compile")

// loader is a Loader that counts loads per revision and fails for bundles
// whose content is "broken".
type loader struct {
	mu    sync.Mutex
	loads map[string]int
}

func newLoader() *loader { return &loader{loads: map[string]int{}} }

func (l *loader) Load(_ context.Context, b policystore.Bundle) (decision.Evaluator, error) {
	l.mu.Lock()
	l.loads[b.Revision]++
	l.mu.Unlock()
	if string(b.Tarball) == "broken" {
		return nil, errBroken
	}
	return &fakeEval{version: b.Revision, state: decision.Allow, reason: "allowed"}, nil
}

func (l *loader) count(rev string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.loads[rev]
}

// bundle returns a storable bundle of rev with content.
func bundle(rev, content string) policystore.Bundle {
	sum := sha256.Sum256([]byte(content))
	return policystore.Bundle{Revision: rev, Digest: hex.EncodeToString(sum[:]), Tarball: []byte(content), SigningKeyID: "test", UploadedBy: "tester"}
}

func putBundles(t *testing.T, store policystore.Store, revs ...string) {
	t.Helper()
	for _, rev := range revs {
		if _, err := store.PutBundle(context.Background(), bundle(rev, "policy "+rev)); err != nil {
			t.Fatal(err)
		}
	}
}

// update moves the rollout to next (from whatever generation it is at).
func update(t *testing.T, store policystore.Store, next policystore.Rollout) policystore.Rollout {
	t.Helper()
	ctx := context.Background()
	cur, err := store.Rollout(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.UpdateRollout(ctx, cur.Generation, next, policystore.Change{Action: policystore.ActionShadow, Actor: "tester"})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// metrics reads what the code under test recorded.
type metrics struct {
	provider *sdkmetric.MeterProvider
	reader   *sdkmetric.ManualReader
}

func newMetrics() *metrics {
	reader := sdkmetric.NewManualReader()
	return &metrics{provider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)), reader: reader}
}

// sum returns the value of the int64 counter name over the data points
// that carry every attribute in attrs ("key=value").
func (m *metrics) sum(t *testing.T, name string, attrs ...string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := m.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			if mt.Name != name {
				continue
			}
			data, ok := mt.Data.(metricdata.Sum[int64])
			if !ok {
				t.Fatalf("%s is a %T", name, mt.Data)
			}
		points:
			for _, dp := range data.DataPoints {
				for _, a := range attrs {
					k, v, _ := strings.Cut(a, "=")
					if got, ok := dp.Attributes.Value(attribute.Key(k)); !ok || got.AsString() != v {
						continue points
					}
				}
				total += dp.Value
			}
		}
	}
	return total
}

// logSignal is a slog handler that sends every record's message on ch
// (without blocking when nobody listens).
type logSignal struct{ ch chan string }

func (h logSignal) Enabled(context.Context, slog.Level) bool { return true }
func (h logSignal) Handle(_ context.Context, r slog.Record) error {
	select {
	case h.ch <- r.Message:
	default:
	}
	return nil
}
func (h logSignal) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h logSignal) WithGroup(string) slog.Handler      { return h }
