package revocation

import (
	"container/heap"
	"math"
	"sync"
	"sync/atomic"
	"time"

	revocationv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1"
)

// DefaultLeeway is SetOptions.Leeway when zero: at least the clock leeway
// of libs/accesstoken's verifier (30 s), with room to spare.
const DefaultLeeway = time.Minute

// NeverHeard is what Staleness returns before the feed was ever heard
// from: longer than any staleness limit.
const NeverHeard = time.Duration(math.MaxInt64)

// Token is the part of a verified access token that revocations match on:
// its jti, sub, client_id and iat claims.
type Token struct {
	JTI      string
	Subject  string
	ClientID string
	IssuedAt time.Time
}

// SetOptions configures a Set. The zero value is ready to use.
type SetOptions struct {
	// Leeway is how long past an event's expires_at the Set still keeps it
	// (DefaultLeeway when zero). It must be at least the clock leeway the
	// resource server allows on a token's exp, so that no token the
	// verifier still accepts outlives its revocation.
	Leeway time.Duration
	// Now is the clock Apply forgets expired events by (time.Now when nil).
	Now func() time.Time
}

// Set holds the revocations of the issuer's feed that still matter and
// answers whether an access token is revoked. Events are forgotten once
// every token they revoke has expired (expires_at plus the leeway), so its
// size is bounded by the live revocations. Its methods are safe for
// concurrent use; Revoked takes only a read lock and does not allocate.
type Set struct {
	leeway time.Duration
	now    func() time.Time

	mu sync.RWMutex
	// jtis maps each revoked jti to the instant the Set may forget it.
	jtis map[string]time.Time
	// rules holds the issued_before revocations, merged per (subject,
	// client) scope: see Apply.
	rules map[scope]rule
	// due orders what the Set holds by the instant it may forget it.
	due expiries

	// heard is when the feed was last heard from; nil before that.
	heard atomic.Pointer[time.Time]
}

// scope is what an issued_before revocation is bounded by; an empty field
// matches every token.
type scope struct {
	subject, clientID string
}

// rule revokes the tokens of a scope issued before before; the Set keeps
// it until until.
type rule struct {
	before, until time.Time
}

// NewSet returns an empty Set.
func NewSet(opts SetOptions) *Set {
	if opts.Leeway <= 0 {
		opts.Leeway = DefaultLeeway
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Set{
		leeway: opts.Leeway,
		now:    opts.Now,
		jtis:   make(map[string]time.Time),
		rules:  make(map[scope]rule),
	}
}

// forever stands for the expiry of an event that has none: such an event
// is kept for the life of the Set (failing closed), which only a broken
// issuer could cause, since the issuer refuses to record one.
var forever = time.Date(9999, time.December, 31, 0, 0, 0, 0, time.UTC)

// Apply records ev, following the match rule documented on
// revocationv1.Event: a token is revoked when its jti is in ev.jtis, or
// when ev.issued_before is set, the token's iat is before it, and its
// subject and client equal ev.subject and ev.client_id where those are set.
// Kind, tenant and reason take no part, so an unknown kind is still
// enforced. Apply is idempotent, ignores an event that has already expired
// (past expires_at plus the leeway), and forgets the expired events it
// holds. A nil event is ignored.
func (s *Set) Apply(ev *revocationv1.Event) {
	if ev == nil {
		return
	}
	now := s.now()
	until := forever
	if exp := ev.GetExpiresAt(); exp != nil {
		until = exp.AsTime().Add(s.leeway)
	}
	if until.Before(now) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	item := expiry{at: until}
	for _, jti := range ev.GetJtis() {
		if old, ok := s.jtis[jti]; jti == "" || ok && !old.Before(until) {
			continue
		}
		s.jtis[jti] = until
		item.jtis = append(item.jtis, jti)
	}
	if ib := ev.GetIssuedBefore(); ib != nil {
		// One rule per scope, with the latest issued_before and the latest
		// expiry of the events in that scope. It answers exactly as the
		// events would for every token that has not expired: a token that
		// only the later issued_before covers is revoked by that event, so
		// it expires by that event's expires_at; keeping the merged rule
		// longer only refuses tokens the verifier refuses anyway. Merging
		// keeps a check at one lookup per scope however often a user signs
		// out.
		key := scope{subject: ev.GetSubject(), clientID: ev.GetClientId()}
		old, ok := s.rules[key]
		r := rule{before: ib.AsTime(), until: until}
		if ok {
			r.before = latest(r.before, old.before)
			r.until = latest(r.until, old.until)
		}
		if !ok || r != old {
			s.rules[key] = r
		}
		if !ok || r.until.After(old.until) {
			item.scope, item.rule = key, true
		}
	}
	if len(item.jtis) > 0 || item.rule {
		heap.Push(&s.due, item)
	}
	s.sweepLocked(now)
}

// Revoked reports whether a revocation the Set holds covers t. A token
// without an iat (zero IssuedAt) counts as issued before every
// issued_before, so it fails closed.
func (s *Set) Revoked(t Token) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	// Apply never records an empty jti, so a token without one only
	// matches rules.
	if _, ok := s.jtis[t.JTI]; ok {
		return true
	}
	if len(s.rules) == 0 {
		return false
	}
	// The only scopes that can match t: its subject and client, each
	// either named or left open.
	for _, key := range [...]scope{
		{subject: t.Subject, clientID: t.ClientID},
		{subject: t.Subject},
		{clientID: t.ClientID},
		{},
	} {
		if r, ok := s.rules[key]; ok && t.IssuedAt.Before(r.before) {
			return true
		}
	}
	return false
}

// Len returns how many entries the Set holds: revoked jtis plus
// issued_before rules (one per subject/client scope).
func (s *Set) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.jtis) + len(s.rules)
}

// Sweep forgets every event that expired (expires_at plus the leeway)
// before now. Apply sweeps too; call Sweep when events are rare, as on every
// heartbeat.
func (s *Set) Sweep(now time.Time) {
	s.mu.RLock()
	idle := len(s.due) == 0 || !s.due[0].at.Before(now)
	s.mu.RUnlock()
	if idle {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(now)
}

func (s *Set) sweepLocked(now time.Time) {
	for len(s.due) > 0 && s.due[0].at.Before(now) {
		item := heap.Pop(&s.due).(expiry)
		// An entry whose expiry a later event extended has a later item in
		// the heap; this one is stale for it.
		for _, jti := range item.jtis {
			if until, ok := s.jtis[jti]; ok && !until.After(item.at) {
				delete(s.jtis, jti)
			}
		}
		if r, ok := s.rules[item.scope]; item.rule && ok && !r.until.After(item.at) {
			delete(s.rules, item.scope)
		}
	}
}

// Heard records that the feed was heard from at now (an event or a
// heartbeat): the Set holds every revocation the issuer had sent by then.
// An earlier now than the last one recorded is ignored.
func (s *Set) Heard(now time.Time) {
	for {
		last := s.heard.Load()
		if last != nil && !now.After(*last) {
			return
		}
		if s.heard.CompareAndSwap(last, &now) {
			return
		}
	}
}

// Staleness returns how long before now the feed was last heard from
// (zero if now is earlier), or NeverHeard if it never was. A resource
// server refuses tokens on sensitive routes while it exceeds its limit,
// since revocations may have been missed.
func (s *Set) Staleness(now time.Time) time.Duration {
	last := s.heard.Load()
	if last == nil {
		return NeverHeard
	}
	return max(now.Sub(*last), 0)
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// expiry is what the Set may forget at an instant: the jtis and the rule
// one Apply added or extended.
type expiry struct {
	at    time.Time
	jtis  []string
	scope scope
	rule  bool
}

// expiries is a min-heap of expiry by at (container/heap).
type expiries []expiry

func (h expiries) Len() int           { return len(h) }
func (h expiries) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h expiries) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }

// Push implements heap.Interface.
func (h *expiries) Push(x any) { *h = append(*h, x.(expiry)) }

// Pop implements heap.Interface.
func (h *expiries) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = expiry{}
	*h = old[:len(old)-1]
	return x
}
