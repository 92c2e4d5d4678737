package tokencache_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/gatehouse/gatehouse/libs/accesstoken"
	"github.com/gatehouse/gatehouse/services/gateway/internal/tokencache"
)

var t0 = time.Unix(1_800_000_000, 0)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fakeVerifier accepts tokens named in valid, expiring at the given time,
// and counts calls.
type fakeVerifier struct {
	mu    sync.Mutex
	valid map[string]time.Time
	calls int
}

var errBad = errors.New("bad token")

func (f *fakeVerifier) Verify(_ context.Context, raw string) (*accesstoken.Claims, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	exp, ok := f.valid[raw]
	if !ok {
		return nil, errBad
	}
	return &accesstoken.Claims{Subject: "sub-" + raw, ID: raw, Expiry: exp}, nil
}

func (f *fakeVerifier) count() int { f.mu.Lock(); defer f.mu.Unlock(); return f.calls }

func TestCache(t *testing.T) {
	t.Parallel()
	type step struct {
		advance   time.Duration
		token     string
		wantErr   bool
		wantCalls int // verifier calls so far
	}
	tests := []struct {
		name  string
		ttl   time.Duration
		size  int
		steps []step
	}{
		{"repeat within TTL is a hit", time.Minute, 10, []step{
			{0, "a", false, 1}, {30 * time.Second, "a", false, 1}, {29 * time.Second, "a", false, 1},
		}},
		{"past the TTL verifies again", time.Minute, 10, []step{
			{0, "a", false, 1}, {time.Minute, "a", false, 2}, {time.Second, "a", false, 2},
		}},
		{"token expiry ends the entry before the TTL", time.Hour, 10, []step{
			// "short" expires at t0+90s.
			{0, "short", false, 1}, {89 * time.Second, "short", false, 1}, {time.Second, "short", false, 2},
		}},
		{"failures are not cached", time.Minute, 10, []step{
			{0, "forged", true, 1}, {0, "forged", true, 2},
		}},
		{"size zero disables", 0, 0, []step{
			{0, "a", false, 1}, {0, "a", false, 2},
		}},
		{"bounded: the least recently used is evicted", time.Minute, 1, []step{
			{0, "a", false, 1}, {0, "b", false, 2}, {0, "b", false, 2}, {0, "a", false, 3},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := &clock{t: t0}
			v := &fakeVerifier{valid: map[string]time.Time{"a": t0.Add(time.Hour), "b": t0.Add(time.Hour), "short": t0.Add(90 * time.Second)}}
			cache, err := tokencache.New(tokencache.Config{Verifier: v, Size: tc.size, TTL: tc.ttl, Now: c.now})
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range tc.steps {
				c.add(s.advance)
				claims, err := cache.Verify(t.Context(), s.token)
				if (err != nil) != s.wantErr {
					t.Fatalf("step %d: err %v, want error %v", i, err, s.wantErr)
				}
				if err == nil && claims.ID != s.token {
					t.Fatalf("step %d: claims of %q, want %q", i, claims.ID, s.token)
				}
				if !errors.Is(err, errBad) && err != nil {
					t.Fatalf("step %d: the verifier's error must pass through, got %v", i, err)
				}
				if got := v.count(); got != s.wantCalls {
					t.Fatalf("step %d (%s): %d verifications, want %d", i, s.token, got, s.wantCalls)
				}
			}
			if tc.size > 0 && cache.Len() > tc.size {
				t.Fatalf("%d entries, bound %d", cache.Len(), tc.size)
			}
		})
	}
}

func TestBoundedUnderManyTokens(t *testing.T) {
	t.Parallel()
	v := &fakeVerifier{valid: map[string]time.Time{}}
	for i := range 1000 {
		v.valid[fmt.Sprint(i)] = time.Now().Add(time.Hour)
	}
	cache, err := tokencache.New(tokencache.Config{Verifier: v, Size: 16, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		if _, err := cache.Verify(t.Context(), fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := cache.Len(); n != 16 {
		t.Fatalf("%d entries, want 16", n)
	}
}

func TestNewRejects(t *testing.T) {
	t.Parallel()
	v := &fakeVerifier{}
	for name, cfg := range map[string]tokencache.Config{
		"no verifier":   {Size: 1, TTL: time.Second},
		"negative size": {Verifier: v, Size: -1, TTL: time.Second},
		"no TTL":        {Verifier: v, Size: 1},
	} {
		if _, err := tokencache.New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestHitRateMetric(t *testing.T) {
	t.Parallel()
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	v := &fakeVerifier{valid: map[string]time.Time{"a": time.Now().Add(time.Hour)}}
	cache, err := tokencache.New(tokencache.Config{Verifier: v, Size: 4, TTL: time.Minute, Meter: provider.Meter("test")})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		_, _ = cache.Verify(t.Context(), "a")
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "gatehouse.gateway.token_cache.lookups" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				r, _ := dp.Attributes.Value("result")
				got[r.AsString()] += dp.Value
			}
		}
	}
	if got["hit"] != 2 || got["miss"] != 1 {
		t.Fatalf("lookups %v, want 2 hits and 1 miss", got)
	}
}
