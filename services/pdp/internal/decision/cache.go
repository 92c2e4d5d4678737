package decision

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math"
	"slices"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Cache remembers decisions by the normalized request and the policy
// version that decided, so a repeated question is answered without
// evaluating the policy again. What a policy sees of a request is exactly
// what the key covers: the request id is withheld from policies, and the
// request time is truncated to the second by Normalize.
//
// A decision its Evaluator calls independent of the request time
// (Decision.TimeIndependent) is keyed without the time: it answers the
// same question at any later time. Any other decision is keyed with the
// time, so it answers repeats within the same second only; in its place
// the time-free key holds a note sending lookups to the key with the
// second. Without the distinction, every cached decision would expire
// together at each turn of the second, and every question asked in the
// next second would be evaluated again at once.
//
// Only Allow, Deny and NotApplicable are cached: an Indeterminate decision
// may be transient (a timeout). Purge empties it; the PDP purges on every
// policy change, and the version in the key makes a stale hit impossible
// even between the change and the purge. It is safe for concurrent use.
type Cache struct {
	lru   *lru.Cache[cacheKey, cacheEntry]
	seeds [2]maphash.Seed
}

// cacheEntry is a cached decision or, under a question's time-free key,
// (perSecond) the note that its decision depends on the request time.
type cacheEntry struct {
	d         Decision
	perSecond bool
}

// questionKeys are the keys of one question: without the request time, and
// with it (computed when needed; timed reports whether it was).
type questionKeys struct {
	timeless, withTime cacheKey
	timed              bool
}

// cacheKey is a 128-bit keyed hash of the request and version. The seeds
// are random per process, so nobody outside can construct colliding
// requests.
type cacheKey [2]uint64

// NewCache returns a cache holding at most size decisions (least recently
// used first out).
func NewCache(size int) (*Cache, error) {
	if size <= 0 {
		return nil, fmt.Errorf("decision: cache size must be positive, got %d", size)
	}
	l, err := lru.New[cacheKey, cacheEntry](size)
	if err != nil {
		return nil, fmt.Errorf("decision: cache: %w", err)
	}
	return &Cache{lru: l, seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}}, nil
}

// Purge forgets every cached decision.
func (c *Cache) Purge() { c.lru.Purge() }

// Len returns the number of cached decisions.
func (c *Cache) Len() int { return c.lru.Len() }

// get returns the cached decision of req by version, if any, and the
// question's keys for add.
func (c *Cache) get(version string, req *Request) (Decision, questionKeys, bool) {
	k := questionKeys{timeless: c.key(version, req, false)}
	e, ok := c.lru.Get(k.timeless)
	if !ok {
		return Decision{}, k, false
	}
	if !e.perSecond {
		return e.d, k, true
	}
	k.withTime, k.timed = c.key(version, req, true), true
	e, ok = c.lru.Get(k.withTime)
	return e.d, k, ok && !e.perSecond
}

// add caches d, the decision of the question get gave keys k for.
func (c *Cache) add(version string, req *Request, k questionKeys, d Decision) {
	if d.State != Allow && d.State != Deny && d.State != NotApplicable {
		return
	}
	d.ID = ""
	if d.TimeIndependent {
		c.lru.Add(k.timeless, cacheEntry{d: d})
		return
	}
	if !k.timed {
		k.withTime = c.key(version, req, true)
	}
	c.lru.Add(k.timeless, cacheEntry{perSecond: true})
	c.lru.Add(k.withTime, cacheEntry{d: d})
}

// key hashes version and everything of req an Evaluator sees, the request
// time only when withTime. Every field is written with its length (or a
// count) first, so different requests cannot encode to the same bytes.
func (c *Cache) key(version string, req *Request, withTime bool) cacheKey {
	var h [2]maphash.Hash
	h[0].SetSeed(c.seeds[0])
	h[1].SetSeed(c.seeds[1])
	var buf [8]byte
	str := func(s string) {
		binary.LittleEndian.PutUint64(buf[:], uint64(len(s)))
		for i := range h {
			_, _ = h[i].Write(buf[:])
			_, _ = h[i].WriteString(s)
		}
	}
	num := func(n uint64) {
		binary.LittleEndian.PutUint64(buf[:], n)
		for i := range h {
			_, _ = h[i].Write(buf[:])
		}
	}
	strs := func(ss []string) {
		num(uint64(len(ss)))
		for _, s := range ss {
			str(s)
		}
	}
	tm := func(t time.Time) {
		if t.IsZero() {
			num(0)
			return
		}
		num(1)
		num(uint64(t.UnixNano()))
	}

	p := &req.Principal
	str(version)
	str(p.Subject)
	str(p.Tenant)
	strs(p.Roles)
	strs(p.Scopes)
	str(p.ClientID)
	str(p.ACR)
	tm(p.AuthTime)
	num(uint64(len(p.ActorChain)))
	for _, a := range p.ActorChain {
		str(a.Subject)
		str(a.ClientID)
	}
	str(req.Action)
	str(req.Resource.Type)
	str(req.Resource.ID)
	str(req.Resource.Tenant)
	num(uint64(len(req.Resource.Attributes)))
	if len(req.Resource.Attributes) > 0 {
		keys := make([]string, 0, len(req.Resource.Attributes))
		for k := range req.Resource.Attributes {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			str(k)
			switch v := req.Resource.Attributes[k].(type) {
			case string:
				num(1)
				str(v)
			case int64:
				num(2)
				num(uint64(v)) //nolint:gosec // G115: a bit-for-bit reinterpretation for hashing, not arithmetic

			case bool:
				num(3)
				if v {
					num(1)
				} else {
					num(0)
				}
			case float64:
				num(4)
				num(math.Float64bits(v))
			}
		}
	}
	str(req.Context.SourceIP)
	if withTime {
		num(1)
		tm(req.Context.Time)
	} else {
		num(0)
	}
	return cacheKey{h[0].Sum64(), h[1].Sum64()}
}
