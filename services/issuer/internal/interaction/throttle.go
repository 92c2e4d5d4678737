package interaction

import (
	"container/list"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// Defaults for Config's login throttle: a source may fail 10 times in a
// row, then once every 6 seconds (10 a minute).
const (
	DefaultLoginFailureBurst    = 10
	DefaultLoginFailureInterval = 6 * time.Second
	DefaultLoginThrottleSources = 100_000
)

// ipv6SourceBits is how much of an IPv6 address names a source: a home or
// office network usually holds a whole /64, so counting single addresses
// would give each of them 2^64 buckets.
const ipv6SourceBits = 64

// Steps of a login, as the login.throttled audit event names them.
const (
	stepPassword = "password"
	stepCode     = "code"
)

// loginThrottle keeps a token bucket of failed login attempts per source
// address (see sourceOf), in front of authn's per-account lockout: the
// lockout cannot see one password sprayed across many accounts, and
// without a throttle anyone can keep a user locked out at will.
//
// An attempt takes a token before the authenticator runs and gives it back
// when the step succeeds, so only failures cost a token, and concurrent
// attempts cannot get past an empty bucket while earlier ones are still
// hashing. Memory is bounded: at most max sources, the least recently seen
// forgotten first (a forgotten source is a full bucket, so forgetting one
// can only be gained by an attacker who already holds that many sources).
//
// Hand-written rather than golang.org/x/time/rate, which is not a
// dependency of the issuer: each bucket is one timestamp (the generic cell
// rate algorithm), which also makes giving a token back a subtraction.
type loginThrottle struct {
	interval time.Duration // one token back per interval
	window   time.Duration // burst × interval: how far ahead full may run
	max      int

	mu      sync.Mutex
	sources map[netip.Prefix]*list.Element // of *loginBucket
	lru     *list.List                     // front: most recently used
}

// loginBucket is one source's bucket.
type loginBucket struct {
	source netip.Prefix
	// full is when the bucket is full again: each attempt moves it one
	// interval later, and an attempt is refused when that would put it
	// more than the window ahead of now. At or before now, the bucket is
	// full and the entry carries nothing a new one would not.
	full time.Time
	// refused is set by a refusal and cleared by an admitted attempt, so
	// that each run of refusals is audited once.
	refused bool
}

// newLoginThrottle validates Config's throttle fields (zero means the
// default) and returns the throttle.
func newLoginThrottle(burst int, interval time.Duration, maxSources int) (*loginThrottle, error) {
	burst = orDefault(burst, DefaultLoginFailureBurst)
	interval = orDefault(interval, DefaultLoginFailureInterval)
	maxSources = orDefault(maxSources, DefaultLoginThrottleSources)
	if burst < 0 || interval < 0 || maxSources < 0 {
		return nil, errors.New("interaction: LoginFailureBurst, LoginFailureInterval and LoginThrottleSources must not be negative")
	}
	if interval > time.Duration(math.MaxInt64/int64(burst)) {
		return nil, fmt.Errorf("interaction: LoginFailureBurst × LoginFailureInterval overflows (%d × %v)", burst, interval)
	}
	return &loginThrottle{
		interval: interval,
		window:   time.Duration(burst) * interval,
		max:      maxSources,
		sources:  make(map[netip.Prefix]*list.Element),
		lru:      list.New(),
	}, nil
}

// take reserves an attempt for src at now. It returns 0 when the attempt
// may go ahead (give the token back with refund if it succeeds); otherwise
// how long until src may try again, and whether this refusal is the first
// since src was last admitted.
func (t *loginThrottle) take(src netip.Prefix, now time.Time) (wait time.Duration, first bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.bucket(src)
	full := b.full
	if full.Before(now) {
		full = now
	}
	next := full.Add(t.interval)
	if wait := next.Sub(now) - t.window; wait > 0 {
		first, b.refused = !b.refused, true
		return wait, first
	}
	b.full, b.refused = next, false
	return 0, false
}

// refund gives back the token of an attempt that succeeded.
func (t *loginThrottle) refund(src netip.Prefix, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	el, ok := t.sources[src]
	if !ok {
		return // forgotten meanwhile: a forgotten source is a full bucket
	}
	b := el.Value.(*loginBucket)
	b.full = b.full.Add(-t.interval)
	if !b.full.After(now) {
		t.lru.Remove(el)
		delete(t.sources, src)
	}
}

// bucket returns src's bucket, most recently used now, creating it (and
// forgetting the least recently used source if there are max) if needed.
func (t *loginThrottle) bucket(src netip.Prefix) *loginBucket {
	if el, ok := t.sources[src]; ok {
		t.lru.MoveToFront(el)
		return el.Value.(*loginBucket)
	}
	if t.lru.Len() >= t.max {
		oldest := t.lru.Back()
		t.lru.Remove(oldest)
		delete(t.sources, oldest.Value.(*loginBucket).source)
	}
	b := &loginBucket{source: src}
	t.sources[src] = t.lru.PushFront(b)
	return b
}

// tracked is the number of sources the throttle holds a bucket for.
func (t *loginThrottle) tracked() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lru.Len()
}

// sourceOf is the source a request's attempts count against: the TCP peer
// (http.Request.RemoteAddr, never a header the client writes), as an IPv4
// address (/32) or an IPv6 /64. IPv4-mapped IPv6 addresses count as IPv4.
// A peer address that does not parse (a Unix socket) is the zero Prefix,
// one source shared by all such requests.
func sourceOf(remoteAddr string) netip.Prefix {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{}
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is4() {
		return netip.PrefixFrom(addr, addr.BitLen())
	}
	p, _ := addr.Prefix(ipv6SourceBits) // cannot fail: 64 bits of an IPv6 address
	return p
}

// sourceLabel names src in the audit log: an IPv4 address, an IPv6 /64, or
// "unknown".
func sourceLabel(src netip.Prefix) string {
	switch {
	case !src.IsValid():
		return "unknown"
	case src.Addr().Is4():
		return src.Addr().String()
	}
	return src.String()
}

// admit reserves one attempt at a login step for src. When src has none
// left it sets Retry-After, audits the first refusal of a run (a flood of
// refusals writes one event, not one per request), and returns false with
// the message to show; the caller answers 429 without calling the
// authenticator. After an admitted attempt that succeeds, the caller gives
// the token back with m.throttle.refund.
func (m *Manager) admit(w http.ResponseWriter, r *http.Request, src netip.Prefix, p *Pending, step string) (string, bool) {
	wait, first := m.throttle.take(src, m.now())
	if wait == 0 {
		return "", true
	}
	secs := int64((wait + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	if first {
		m.auditLogin(r.Context(), AuditLoginThrottled, p, map[string]string{"source": sourceLabel(src), "step": step})
	}
	return throttledMessage(wait), false
}

// throttledMessage tells a refused source when to try again, in whole
// minutes rounded up.
func throttledMessage(wait time.Duration) string {
	mins := int64((wait + time.Minute - 1) / time.Minute)
	if mins <= 1 {
		return "Too many attempts from your network. Try again in 1 minute."
	}
	return fmt.Sprintf("Too many attempts from your network. Try again in %d minutes.", mins)
}
