package ratelimit_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/gateway/internal/ratelimit"
)

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

func TestBurstThenRefill(t *testing.T) {
	t.Parallel()
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	l := ratelimit.New(ratelimit.Config{Rate: 2, Burst: 3, Now: c.now})
	for i := range 3 {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	ok, wait := l.Allow("a")
	if ok || wait <= 0 || wait > 500*time.Millisecond {
		t.Fatalf("past the burst: ok=%v wait=%v, want refused with wait <= 500ms", ok, wait)
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("another key shares a's bucket")
	}
	c.add(500 * time.Millisecond)
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("no token after the refill interval")
	}
	if ok, _ := l.Allow("a"); ok {
		t.Fatal("a refused request must not have consumed a future token, but two passed")
	}
}

func TestBoundedKeys(t *testing.T) {
	t.Parallel()
	l := ratelimit.New(ratelimit.Config{Rate: 1, Burst: 1, MaxKeys: 10})
	for i := range 1000 {
		l.Allow(fmt.Sprintf("ip-%d", i))
	}
	if n := l.Len(); n != 10 {
		t.Fatalf("%d buckets kept, want 10", n)
	}
}

func TestDisabled(t *testing.T) {
	t.Parallel()
	l := ratelimit.New(ratelimit.Config{})
	for range 1000 {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatal("a zero rate must not limit")
		}
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]int{0: 1, time.Millisecond: 1, 1500 * time.Millisecond: 2, 3 * time.Second: 3} {
		if got := ratelimit.RetryAfterSeconds(d); got != want {
			t.Errorf("RetryAfterSeconds(%v) = %d, want %d", d, got, want)
		}
	}
}

func BenchmarkAllow(b *testing.B) {
	l := ratelimit.New(ratelimit.Config{Rate: 1e9, Burst: 1e9})
	b.ReportAllocs()
	for b.Loop() {
		l.Allow("client")
	}
}
