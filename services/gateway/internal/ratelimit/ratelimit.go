// Package ratelimit keeps one token bucket per key (a client id, a source
// address) with bounded memory: at most a fixed number of keys, the least
// recently seen evicted first, so a flood of new keys cannot exhaust memory
// (it can only evict idle buckets, which refill to full anyway).
package ratelimit

import (
	"container/list"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Config configures a Limiter.
type Config struct {
	// Rate is the sustained requests per second per key; zero disables.
	Rate float64
	// Burst is how many requests a key may make at once.
	Burst int
	// MaxKeys bounds the number of buckets kept. Default 100000.
	MaxKeys int
	// Now returns the current time; default time.Now.
	Now func() time.Time
}

// Limiter is a set of token buckets keyed by string. Safe for concurrent use.
type Limiter struct {
	cfg Config

	mu    sync.Mutex
	byKey map[string]*list.Element
	lru   *list.List // front: most recently used
}

type bucket struct {
	key     string
	limiter *rate.Limiter
}

// New returns a Limiter for cfg.
func New(cfg Config) *Limiter {
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 100_000
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 1
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Limiter{cfg: cfg, byKey: map[string]*list.Element{}, lru: list.New()}
}

// Allow takes one token from key's bucket. When the bucket is empty it
// returns false and how long until a token is available (for Retry-After).
func (l *Limiter) Allow(key string) (bool, time.Duration) {
	if l.cfg.Rate <= 0 {
		return true, 0
	}
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	var b *bucket
	if el, ok := l.byKey[key]; ok {
		l.lru.MoveToFront(el)
		b = el.Value.(*bucket)
	} else {
		if l.lru.Len() >= l.cfg.MaxKeys {
			oldest := l.lru.Back()
			l.lru.Remove(oldest)
			delete(l.byKey, oldest.Value.(*bucket).key)
		}
		b = &bucket{key: key, limiter: rate.NewLimiter(rate.Limit(l.cfg.Rate), l.cfg.Burst)}
		l.byKey[key] = l.lru.PushFront(b)
	}
	r := b.limiter.ReserveN(now, 1)
	delay := r.DelayFrom(now)
	if delay == 0 {
		return true, 0
	}
	r.CancelAt(now)
	return false, delay
}

// Len returns the number of buckets kept.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lru.Len()
}

// RetryAfterSeconds rounds d up to whole seconds, at least 1, as the
// Retry-After header wants.
func RetryAfterSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}
