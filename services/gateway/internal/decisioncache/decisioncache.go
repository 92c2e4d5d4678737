// Package decisioncache remembers the PDP's recent answers at the gateway,
// so a burst of identical requests (the same principal, action, resource
// and source) costs one PDP call. Entries are short-lived, and only plain
// answers are kept: an ALLOW or a DENY without obligations (never a step-up
// challenge, never an INDETERMINATE, which may be transient).
//
// It also keeps the last ALLOW a little longer, when configured, for the
// gateway's optional stale-allow: serving a read-only, low-risk route from
// a recent ALLOW while the PDP is unreachable.
//
// It knows nothing of revocation or token validity: the gateway checks both
// before it looks here.
package decisioncache

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
	"google.golang.org/protobuf/proto"

	"github.com/gatehouse/gatehouse/libs/enforce"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
)

// Limits on the configuration: a cached answer outlives a permission or
// policy change by at most its age, so both are kept short.
const (
	MaxTTL      = time.Minute
	MaxStaleFor = 5 * time.Minute
)

// Config configures a Cache.
type Config struct {
	// Size is the most answers kept (least recently used out first).
	Size int
	// TTL is how long an answer is reused instead of asking the PDP; zero
	// reuses none. At most MaxTTL.
	TTL time.Duration
	// StaleFor is how old an ALLOW may be and still be returned by
	// StaleAllow; zero disables stale-allow. At most MaxStaleFor.
	StaleFor time.Duration
	// Now returns the current time; default time.Now.
	Now func() time.Time
	// Meter records lookups; nil records nothing.
	Meter metric.Meter
}

// Cache holds recent PDP answers. Safe for concurrent use. A nil *Cache is
// valid and holds nothing.
type Cache struct {
	cfg     Config
	lru     *lru.Cache[Key, entry]
	lookups metric.Int64Counter
}

// Key identifies a question to the PDP: everything of a CheckRequest that a
// policy may see, except the request id and the request time.
type Key [sha256.Size]byte

type entry struct {
	decision enforce.Decision
	at       time.Time
}

// New returns a Cache for cfg, or nil (a cache that holds nothing) when
// both TTL and StaleFor are zero.
func New(cfg Config) (*Cache, error) {
	switch {
	case cfg.TTL < 0 || cfg.TTL > MaxTTL:
		return nil, fmt.Errorf("decisioncache: TTL %v is outside [0, %v]", cfg.TTL, MaxTTL)
	case cfg.StaleFor < 0 || cfg.StaleFor > MaxStaleFor:
		return nil, fmt.Errorf("decisioncache: stale-allow window %v is outside [0, %v]", cfg.StaleFor, MaxStaleFor)
	case cfg.TTL == 0 && cfg.StaleFor == 0:
		return nil, nil
	case cfg.Size <= 0:
		return nil, errors.New("decisioncache: a positive size is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Meter == nil {
		cfg.Meter = metricnoop.NewMeterProvider().Meter("")
	}
	l, err := lru.New[Key, entry](cfg.Size)
	if err != nil {
		return nil, fmt.Errorf("decisioncache: %w", err)
	}
	c := &Cache{cfg: cfg, lru: l}
	if c.lookups, err = cfg.Meter.Int64Counter("gatehouse.gateway.decision_cache.lookups",
		metric.WithDescription("Decision cache lookups, by result (hit or miss); hit rate = hit / (hit + miss).")); err != nil {
		return nil, fmt.Errorf("decisioncache: counter: %w", err)
	}
	return c, nil
}

var (
	hit  = metric.WithAttributes(attribute.String("result", "hit"))
	miss = metric.WithAttributes(attribute.String("result", "miss"))
)

// KeyOf returns the key of req: a SHA-256 over the deterministic encoding
// of its principal (subject, tenant, client, scopes, roles, acr, auth_time,
// actor chain), action, resource and source address. Any field a later
// version of the API adds to these is covered without a change here.
func KeyOf(req *authzv1.CheckRequest) Key {
	q := &authzv1.CheckRequest{
		Principal: req.GetPrincipal(),
		Action:    req.GetAction(),
		Resource:  req.GetResource(),
		Context:   &authzv1.RequestContext{SourceIp: req.GetContext().GetSourceIp()},
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(q)
	if err != nil {
		// A request that cannot be encoded cannot be sent to the PDP
		// either; give it a key no other request has.
		return Key(sha256.Sum256([]byte(fmt.Sprintf("unencodable %p", req))))
	}
	return Key(sha256.Sum256(b))
}

// cacheable reports whether d may be reused: a plain ALLOW, DENY or
// NOT_APPLICABLE. Anything with obligations (a step-up challenge) is the
// PDP's to repeat, and INDETERMINATE may be transient.
func cacheable(d enforce.Decision) bool {
	if len(d.Obligations) > 0 {
		return false
	}
	switch d.State {
	case authzv1.Decision_DECISION_ALLOW, authzv1.Decision_DECISION_DENY, authzv1.Decision_DECISION_NOT_APPLICABLE:
		return true
	}
	return false
}

// Get returns the answer for k if one younger than the TTL is held.
func (c *Cache) Get(ctx context.Context, k Key) (enforce.Decision, bool) {
	if c == nil || c.cfg.TTL == 0 {
		return enforce.Decision{}, false
	}
	e, ok := c.lru.Get(k)
	if ok && c.cfg.Now().Sub(e.at) < c.cfg.TTL {
		c.lookups.Add(ctx, 1, hit)
		return e.decision, true
	}
	c.lookups.Add(ctx, 1, miss)
	return enforce.Decision{}, false
}

// Put remembers the PDP's answer d for k, if it is cacheable. An answer
// that is not replaces nothing but forgets the previous one, so stale-allow
// never reaches past a newer refusal.
func (c *Cache) Put(k Key, d enforce.Decision) {
	if c == nil {
		return
	}
	if !cacheable(d) {
		c.lru.Remove(k)
		return
	}
	c.lru.Add(k, entry{decision: d, at: c.cfg.Now()})
}

// StaleAllow returns the ALLOW held for k if it is at most StaleFor old,
// and its age. It is the gateway's answer for a read-only, low-risk route
// while the PDP is unavailable; never use it for anything else.
func (c *Cache) StaleAllow(k Key) (enforce.Decision, time.Duration, bool) {
	if c == nil || c.cfg.StaleFor == 0 {
		return enforce.Decision{}, 0, false
	}
	e, ok := c.lru.Get(k)
	if !ok || !e.decision.Allowed() {
		return enforce.Decision{}, 0, false
	}
	age := c.cfg.Now().Sub(e.at)
	if age < 0 || age > c.cfg.StaleFor {
		return enforce.Decision{}, 0, false
	}
	return e.decision, age, true
}

// Len returns the number of answers held.
func (c *Cache) Len() int {
	if c == nil {
		return 0
	}
	return c.lru.Len()
}
