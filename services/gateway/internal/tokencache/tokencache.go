// Package tokencache remembers verified access tokens, so a token repeated
// on every request of a session is verified (signature, claims) once, not
// each time. Only successful verifications are remembered, each until the
// token expires or the cache's TTL passes, whichever is first, and the
// cache holds a bounded number of tokens. It says nothing about revocation:
// callers check every request against the revocation set, cached or not.
package tokencache

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"

	"github.com/gatehouse/gatehouse/libs/accesstoken"
)

// Verifier verifies raw access tokens (an *accesstoken.Verifier).
type Verifier interface {
	Verify(ctx context.Context, raw string) (*accesstoken.Claims, error)
}

// Config configures a Cache.
type Config struct {
	// Verifier verifies what the cache does not hold. Required.
	Verifier Verifier
	// Size is the most tokens kept (least recently used out first); zero
	// disables the cache: every call verifies.
	Size int
	// TTL is the longest a verification is reused, however long the token
	// lives: it bounds how long a token whose signing key was withdrawn
	// from the JWKS keeps being accepted. Required when Size > 0.
	TTL time.Duration
	// Now returns the current time; default time.Now.
	Now func() time.Time
	// Meter records lookups; nil records nothing.
	Meter metric.Meter
}

// Cache is a Verifier that remembers successful verifications. Safe for
// concurrent use. The claims it returns are shared between requests: they
// must not be modified.
type Cache struct {
	cfg     Config
	lru     *lru.Cache[key, entry]
	lookups metric.Int64Counter
}

// key is the SHA-256 of the raw token: the token itself is never kept.
type key [sha256.Size]byte

type entry struct {
	claims *accesstoken.Claims
	until  time.Time
}

// New returns a Cache for cfg.
func New(cfg Config) (*Cache, error) {
	switch {
	case cfg.Verifier == nil:
		return nil, errors.New("tokencache: verifier is required")
	case cfg.Size < 0:
		return nil, fmt.Errorf("tokencache: size %d is negative", cfg.Size)
	case cfg.Size > 0 && cfg.TTL <= 0:
		return nil, errors.New("tokencache: a positive TTL is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Meter == nil {
		cfg.Meter = metricnoop.NewMeterProvider().Meter("")
	}
	c := &Cache{cfg: cfg}
	if cfg.Size > 0 {
		l, err := lru.New[key, entry](cfg.Size)
		if err != nil {
			return nil, fmt.Errorf("tokencache: %w", err)
		}
		c.lru = l
	}
	var err error
	if c.lookups, err = cfg.Meter.Int64Counter("gatehouse.gateway.token_cache.lookups",
		metric.WithDescription("Verified-token cache lookups, by result (hit or miss); hit rate = hit / (hit + miss).")); err != nil {
		return nil, fmt.Errorf("tokencache: counter: %w", err)
	}
	return c, nil
}

var (
	hit  = metric.WithAttributes(attribute.String("result", "hit"))
	miss = metric.WithAttributes(attribute.String("result", "miss"))
)

// Verify returns the claims of raw: from the cache when raw was verified
// before and the entry is still valid, else from the Verifier (and then
// remembered if it verified).
func (c *Cache) Verify(ctx context.Context, raw string) (*accesstoken.Claims, error) {
	if c.lru == nil {
		return c.cfg.Verifier.Verify(ctx, raw)
	}
	k := key(sha256.Sum256([]byte(raw)))
	now := c.cfg.Now()
	if e, ok := c.lru.Get(k); ok {
		if now.Before(e.until) {
			c.lookups.Add(ctx, 1, hit)
			return e.claims, nil
		}
		c.lru.Remove(k)
	}
	c.lookups.Add(ctx, 1, miss)
	claims, err := c.cfg.Verifier.Verify(ctx, raw)
	if err != nil {
		return nil, err
	}
	until := now.Add(c.cfg.TTL)
	if claims.Expiry.Before(until) {
		until = claims.Expiry
	}
	if now.Before(until) {
		c.lru.Add(k, entry{claims: claims, until: until})
	}
	return claims, nil
}

// Len returns the number of tokens held.
func (c *Cache) Len() int {
	if c.lru == nil {
		return 0
	}
	return c.lru.Len()
}
