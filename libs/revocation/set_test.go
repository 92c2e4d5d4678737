package revocation_test

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/libs/revocation"
	revocationv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1"
)

// t0 is the tests' present.
var t0 = time.Date(2026, 11, 25, 9, 30, 0, 0, time.UTC)

// clock is a settable clock for SetOptions.Now.
type clock struct{ now atomic.Pointer[time.Time] }

func newClock(at time.Time) *clock {
	c := &clock{}
	c.set(at)
	return c
}

func (c *clock) set(at time.Time)    { c.now.Store(&at) }
func (c *clock) Now() time.Time      { return *c.now.Load() }
func (c *clock) add(d time.Duration) { c.set(c.Now().Add(d)) }

func ts(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

// Events as the issuer records them (docs/revocation-feed.md), expiring
// five minutes after t0.
func tokenEvent(jti string) *revocationv1.Event {
	return &revocationv1.Event{Kind: revocationv1.Kind_KIND_TOKEN, Id: jti, Jtis: []string{jti},
		Subject: "alice", ClientId: "invoice-web", Tenant: "acme",
		RevokedAt: ts(t0), ExpiresAt: ts(t0.Add(5 * time.Minute)), Reason: "client_request"}
}

func familyEvent(jtis ...string) *revocationv1.Event {
	return &revocationv1.Event{Kind: revocationv1.Kind_KIND_REFRESH_FAMILY, Id: "grant-1", Jtis: jtis,
		Subject: "bob", ClientId: "invoice-web", Tenant: "acme",
		RevokedAt: ts(t0), ExpiresAt: ts(t0.Add(5 * time.Minute)), Reason: "refresh_token_reuse"}
}

func sessionEvent(subject string, before time.Time, jtis ...string) *revocationv1.Event {
	return &revocationv1.Event{Kind: revocationv1.Kind_KIND_SESSION, Id: "session-1", Jtis: jtis,
		Subject: subject, Tenant: "acme", IssuedBefore: ts(before),
		RevokedAt: ts(t0), ExpiresAt: ts(before.Add(5 * time.Minute)), Reason: "user_logout"}
}

func clientEvent(clientID string, before time.Time) *revocationv1.Event {
	return &revocationv1.Event{Kind: revocationv1.Kind_KIND_CLIENT, Id: clientID, ClientId: clientID,
		IssuedBefore: ts(before), RevokedAt: ts(t0), ExpiresAt: ts(before.Add(5 * time.Minute)), Reason: "client_disabled"}
}

func consentEvent(subject, clientID string, before time.Time) *revocationv1.Event {
	return &revocationv1.Event{Kind: revocationv1.Kind_KIND_CONSENT, Id: "consent-1", Subject: subject, ClientId: clientID,
		Tenant: "acme", IssuedBefore: ts(before), RevokedAt: ts(t0), ExpiresAt: ts(before.Add(5 * time.Minute)),
		Reason: "consent_withdrawn"}
}

func tok(jti, subject, clientID string, iat time.Time) revocation.Token {
	return revocation.Token{JTI: jti, Subject: subject, ClientID: clientID, IssuedAt: iat}
}

func TestSetMatchesTheEventRule(t *testing.T) {
	t.Parallel()
	before := t0.Add(-time.Minute).Truncate(time.Second)
	earlier, later := before.Add(-time.Second), before.Add(time.Second)
	unknownKind := familyEvent("jti-u")
	unknownKind.Kind = revocationv1.Kind(99)
	blanket := &revocationv1.Event{Kind: revocationv1.Kind(99), Id: "all", IssuedBefore: ts(before),
		RevokedAt: ts(t0), ExpiresAt: ts(t0.Add(5 * time.Minute))}
	for _, tc := range []struct {
		name   string
		events []*revocationv1.Event
		token  revocation.Token
		want   bool
	}{
		{"nothing applied", nil, tok("jti-1", "alice", "invoice-web", earlier), false},

		{"token: its jti", []*revocationv1.Event{tokenEvent("jti-1")}, tok("jti-1", "alice", "invoice-web", later), true},
		{"token: jti alone matches", []*revocationv1.Event{tokenEvent("jti-1")}, tok("jti-1", "mallory", "other", t0), true},
		{"token: another jti of the same user", []*revocationv1.Event{tokenEvent("jti-1")}, tok("jti-2", "alice", "invoice-web", earlier), false},

		{"family: first jti", []*revocationv1.Event{familyEvent("jti-a", "jti-b")}, tok("jti-a", "bob", "invoice-web", t0), true},
		{"family: second jti", []*revocationv1.Event{familyEvent("jti-a", "jti-b")}, tok("jti-b", "bob", "invoice-web", t0), true},
		{"family: no issued_before, so no blanket", []*revocationv1.Event{familyEvent("jti-a")}, tok("jti-c", "bob", "invoice-web", earlier), false},

		{"session: subject, issued before", []*revocationv1.Event{sessionEvent("alice", before)}, tok("jti-1", "alice", "invoice-web", earlier), true},
		{"session: any client of the subject", []*revocationv1.Event{sessionEvent("alice", before)}, tok("jti-1", "alice", "support-console", earlier), true},
		{"session: one nanosecond before", []*revocationv1.Event{sessionEvent("alice", before)}, tok("jti-1", "alice", "invoice-web", before.Add(-time.Nanosecond)), true},
		{"session: issued at the boundary", []*revocationv1.Event{sessionEvent("alice", before)}, tok("jti-1", "alice", "invoice-web", before), false},
		{"session: issued after", []*revocationv1.Event{sessionEvent("alice", before)}, tok("jti-1", "alice", "invoice-web", later), false},
		{"session: another subject", []*revocationv1.Event{sessionEvent("alice", before)}, tok("jti-1", "bob", "invoice-web", earlier), false},
		{"session: token without subject", []*revocationv1.Event{sessionEvent("alice", before)}, tok("jti-1", "", "invoice-web", earlier), false},
		{"session: listed jti issued after", []*revocationv1.Event{sessionEvent("alice", before, "jti-s")}, tok("jti-s", "alice", "invoice-web", later), true},
		{"session: token without iat fails closed", []*revocationv1.Event{sessionEvent("alice", before)}, tok("jti-1", "alice", "invoice-web", time.Time{}), true},

		{"client: any subject of the client", []*revocationv1.Event{clientEvent("billing-bot", before)}, tok("jti-1", "billing-bot", "billing-bot", earlier), true},
		{"client: a user's token of the client", []*revocationv1.Event{clientEvent("billing-bot", before)}, tok("jti-1", "alice", "billing-bot", earlier), true},
		{"client: token without subject", []*revocationv1.Event{clientEvent("billing-bot", before)}, tok("jti-1", "", "billing-bot", earlier), true},
		{"client: issued at the boundary", []*revocationv1.Event{clientEvent("billing-bot", before)}, tok("jti-1", "alice", "billing-bot", before), false},
		{"client: another client", []*revocationv1.Event{clientEvent("billing-bot", before)}, tok("jti-1", "alice", "reporting-job", earlier), false},

		{"consent: subject and client", []*revocationv1.Event{consentEvent("bob", "invoice-web", before)}, tok("jti-1", "bob", "invoice-web", earlier), true},
		{"consent: subject, another client", []*revocationv1.Event{consentEvent("bob", "invoice-web", before)}, tok("jti-1", "bob", "support-console", earlier), false},
		{"consent: client, another subject", []*revocationv1.Event{consentEvent("bob", "invoice-web", before)}, tok("jti-1", "alice", "invoice-web", earlier), false},
		{"consent: issued after", []*revocationv1.Event{consentEvent("bob", "invoice-web", before)}, tok("jti-1", "bob", "invoice-web", later), false},

		{"unknown kind: jti enforced", []*revocationv1.Event{unknownKind}, tok("jti-u", "bob", "invoice-web", later), true},
		{"unknown kind: blanket issued_before enforced", []*revocationv1.Event{blanket}, tok("jti-1", "carol", "billing-bot", earlier), true},
		{"unknown kind: blanket spares later tokens", []*revocationv1.Event{blanket}, tok("jti-1", "carol", "billing-bot", before), false},

		{"empty jti never matches", []*revocationv1.Event{familyEvent("")}, tok("", "bob", "invoice-web", later), false},
		{"scopes stay apart", []*revocationv1.Event{sessionEvent("alice", before), clientEvent("billing-bot", before), consentEvent("bob", "invoice-web", before)},
			tok("jti-1", "bob", "support-console", earlier), false},
		{"later session of a subject wins", []*revocationv1.Event{sessionEvent("alice", before), sessionEvent("alice", later)},
			tok("jti-1", "alice", "invoice-web", before), true},
		{"earlier session after a later one", []*revocationv1.Event{sessionEvent("alice", later), sessionEvent("alice", earlier)},
			tok("jti-1", "alice", "invoice-web", before), true},
		{"nil event", []*revocationv1.Event{nil}, tok("jti-1", "alice", "invoice-web", earlier), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := revocation.NewSet(revocation.SetOptions{Now: newClock(t0).Now})
			for _, ev := range tc.events {
				s.Apply(ev)
				s.Apply(ev) // idempotent
			}
			if got := s.Revoked(tc.token); got != tc.want {
				t.Fatalf("Revoked(%+v) = %v, want %v", tc.token, got, tc.want)
			}
		})
	}
}

func TestSetForgetsExpiredEvents(t *testing.T) {
	t.Parallel()
	const leeway = time.Minute
	alice := tok("jti-1", "alice", "invoice-web", t0.Add(-time.Minute))
	bobSession := sessionEvent("bob", t0)
	bob := tok("jti-2", "bob", "invoice-web", t0.Add(-time.Minute))

	t.Run("kept until expires_at plus leeway, then swept", func(t *testing.T) {
		t.Parallel()
		s := revocation.NewSet(revocation.SetOptions{Leeway: leeway, Now: newClock(t0).Now})
		s.Apply(tokenEvent("jti-1")) // expires t0+5m
		s.Apply(bobSession)          // expires t0+5m
		last := t0.Add(5*time.Minute + leeway)
		s.Sweep(last)
		if !s.Revoked(alice) || !s.Revoked(bob) || s.Len() != 2 {
			t.Fatalf("forgotten before expires_at + leeway: revoked %v %v, len %d", s.Revoked(alice), s.Revoked(bob), s.Len())
		}
		s.Sweep(last.Add(time.Nanosecond))
		if s.Revoked(alice) || s.Revoked(bob) || s.Len() != 0 {
			t.Fatalf("kept after expires_at + leeway: revoked %v %v, len %d", s.Revoked(alice), s.Revoked(bob), s.Len())
		}
	})
	t.Run("apply sweeps", func(t *testing.T) {
		t.Parallel()
		c := newClock(t0)
		s := revocation.NewSet(revocation.SetOptions{Leeway: leeway, Now: c.Now})
		s.Apply(tokenEvent("jti-1"))
		c.add(10 * time.Minute)
		late := tokenEvent("jti-3")
		late.ExpiresAt = ts(t0.Add(time.Hour))
		s.Apply(late)
		if s.Revoked(alice) || s.Len() != 1 {
			t.Fatalf("Apply kept an expired event: len %d", s.Len())
		}
	})
	t.Run("expired on arrival", func(t *testing.T) {
		t.Parallel()
		s := revocation.NewSet(revocation.SetOptions{Leeway: leeway, Now: newClock(t0.Add(time.Hour)).Now})
		s.Apply(tokenEvent("jti-1"))
		s.Apply(bobSession)
		if s.Len() != 0 {
			t.Fatalf("len %d after applying expired events, want 0", s.Len())
		}
	})
	t.Run("a later event extends a jti", func(t *testing.T) {
		t.Parallel()
		s := revocation.NewSet(revocation.SetOptions{Leeway: leeway, Now: newClock(t0).Now})
		s.Apply(tokenEvent("jti-1"))
		longer := familyEvent("jti-1")
		longer.ExpiresAt = ts(t0.Add(time.Hour))
		s.Apply(longer)
		s.Apply(tokenEvent("jti-1")) // a replay of the shorter one shortens nothing
		s.Sweep(t0.Add(30 * time.Minute))
		if !s.Revoked(alice) {
			t.Fatal("jti forgotten at the first event's expiry")
		}
		s.Sweep(t0.Add(time.Hour + leeway + time.Nanosecond))
		if s.Revoked(alice) || s.Len() != 0 {
			t.Fatalf("jti kept after the last expiry: len %d", s.Len())
		}
	})
	t.Run("a later event extends a rule", func(t *testing.T) {
		t.Parallel()
		s := revocation.NewSet(revocation.SetOptions{Leeway: leeway, Now: newClock(t0).Now})
		s.Apply(sessionEvent("bob", t0))                   // expires t0+5m
		s.Apply(sessionEvent("bob", t0.Add(-time.Minute))) // expires t0+4m
		s.Apply(sessionEvent("bob", t0.Add(time.Hour)))    // expires t0+65m
		s.Sweep(t0.Add(30 * time.Minute))
		if !s.Revoked(bob) || s.Len() != 1 {
			t.Fatalf("rule: revoked %v, len %d; want one merged rule kept", s.Revoked(bob), s.Len())
		}
		s.Sweep(t0.Add(65*time.Minute + leeway + time.Nanosecond))
		if s.Revoked(bob) || s.Len() != 0 {
			t.Fatalf("rule kept after the last expiry: len %d", s.Len())
		}
	})
	t.Run("no expires_at is kept", func(t *testing.T) {
		t.Parallel()
		s := revocation.NewSet(revocation.SetOptions{Now: newClock(t0).Now})
		ev := tokenEvent("jti-1")
		ev.ExpiresAt = nil
		s.Apply(ev)
		s.Sweep(t0.AddDate(100, 0, 0))
		if !s.Revoked(alice) {
			t.Fatal("an event without expires_at was forgotten")
		}
	})
}

// TestSetAgreesWithTheLiteralRule applies random events and checks, at
// every step, that the Set answers as the rule documented on Event read
// literally over every event applied so far, for every token the
// verifier still accepts (not past exp plus its leeway). Expired events
// are forgotten and rules of one scope merged, so this is what proves
// neither changes an answer that matters.
func TestSetAgreesWithTheLiteralRule(t *testing.T) {
	t.Parallel()
	const (
		lifetime = 5 * time.Minute // every token's
		leeway   = 30 * time.Second
	)
	rng := rand.New(rand.NewPCG(1, 2))
	subjects := []string{"", "alice", "bob", "carol"}
	clients := []string{"", "invoice-web", "billing-bot"}
	pick := func(xs []string) string { return xs[rng.IntN(len(xs))] }
	// extra makes an expires_at later than the contract needs, sometimes,
	// as an issuer that bounds it by a longer lifetime would.
	extra := func() time.Duration { return time.Duration(rng.IntN(3)) * time.Duration(rng.IntN(600)) * time.Second }

	type token struct {
		revocation.Token
		exp time.Time
	}
	var tokens []token
	for i := range 400 {
		iat := t0.Add(time.Duration(rng.IntN(3600)) * time.Second)
		tokens = append(tokens, token{tok("jti-"+strconv.Itoa(i), pick(subjects[1:]), pick(clients[1:]), iat), iat.Add(lifetime)})
	}
	literal := func(ev *revocationv1.Event, tk revocation.Token) bool {
		if slices.Contains(ev.GetJtis(), tk.JTI) {
			return true
		}
		return ev.GetIssuedBefore() != nil && tk.IssuedAt.Before(ev.GetIssuedBefore().AsTime()) &&
			(ev.GetSubject() == "" || ev.GetSubject() == tk.Subject) &&
			(ev.GetClientId() == "" || ev.GetClientId() == tk.ClientID)
	}

	c := newClock(t0)
	s := revocation.NewSet(revocation.SetOptions{Leeway: leeway, Now: c.Now})
	var applied []*revocationv1.Event
	for step := range 300 {
		c.add(time.Duration(rng.IntN(20)) * time.Second)
		now := c.Now()
		ev := &revocationv1.Event{Kind: revocationv1.Kind(rng.IntN(6)), RevokedAt: ts(now)}
		if rng.IntN(2) == 0 {
			// Live tokens by jti; expires_at is the last one's exp.
			var exp time.Time
			for range 1 + rng.IntN(3) {
				tk := tokens[rng.IntN(len(tokens))]
				ev.Jtis = append(ev.Jtis, tk.JTI)
				exp = latest(exp, tk.exp)
			}
			ev.ExpiresAt = ts(exp.Add(extra()))
		} else {
			// Every token of a scope issued before a recent instant; the
			// issuer bounds it by a subject or client (a blanket rule is
			// checked elsewhere).
			for ev.GetSubject() == "" && ev.GetClientId() == "" {
				ev.Subject, ev.ClientId = pick(subjects), pick(clients)
			}
			before := now.Add(-time.Duration(rng.IntN(600)) * time.Second)
			ev.IssuedBefore, ev.ExpiresAt = ts(before), ts(before.Add(lifetime+extra()))
		}
		s.Apply(ev)
		applied = append(applied, ev)
		s.Sweep(now)
		for _, tk := range tokens {
			if tk.IssuedAt.After(now) || now.After(tk.exp.Add(leeway)) {
				continue // not issued yet, or refused by the verifier
			}
			want := slices.ContainsFunc(applied, func(ev *revocationv1.Event) bool { return literal(ev, tk.Token) })
			if got := s.Revoked(tk.Token); got != want {
				t.Fatalf("step %d, %v: Revoked(%+v) = %v, want %v", step, now, tk.Token, got, want)
			}
		}
	}
	// Memory follows the live revocations: after every token expired, the
	// Set is empty.
	s.Sweep(c.Now().Add(2 * time.Hour))
	if s.Len() != 0 {
		t.Fatalf("len %d after everything expired", s.Len())
	}
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func TestSetStaleness(t *testing.T) {
	t.Parallel()
	s := revocation.NewSet(revocation.SetOptions{})
	if got := s.Staleness(t0); got != revocation.NeverHeard {
		t.Fatalf("Staleness before any message = %v, want NeverHeard", got)
	}
	s.Heard(t0)
	if got := s.Staleness(t0.Add(3 * time.Second)); got != 3*time.Second {
		t.Fatalf("Staleness = %v, want 3s", got)
	}
	s.Heard(t0.Add(-time.Minute)) // late news changes nothing
	if got := s.Staleness(t0.Add(3 * time.Second)); got != 3*time.Second {
		t.Fatalf("Staleness after an older Heard = %v, want 3s", got)
	}
	if got := s.Staleness(t0.Add(-time.Second)); got != 0 {
		t.Fatalf("Staleness before the last Heard = %v, want 0", got)
	}
	s.Heard(t0.Add(10 * time.Second))
	if got := s.Staleness(t0.Add(11 * time.Second)); got != time.Second {
		t.Fatalf("Staleness = %v, want 1s", got)
	}
}

// TestSetConcurrentUse applies events while readers check: an event is
// applied whole, in order, so a reader that sees jti-k revoked must see
// every earlier one revoked too. Run with -race.
func TestSetConcurrentUse(t *testing.T) {
	t.Parallel()
	const n = 2000
	s := revocation.NewSet(revocation.SetOptions{Now: newClock(t0).Now})
	var wg sync.WaitGroup
	done := make(chan struct{})
	errs := make(chan string, 8)
	for r := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 0))
			for {
				select {
				case <-done:
					return
				default:
				}
				k := 1 + rng.IntN(n-1)
				if s.Revoked(tok("jti-"+strconv.Itoa(k), "alice", "invoice-web", t0)) &&
					!s.Revoked(tok("jti-"+strconv.Itoa(k-1), "alice", "invoice-web", t0)) {
					errs <- "jti-" + strconv.Itoa(k) + " revoked before jti-" + strconv.Itoa(k-1)
					return
				}
				s.Staleness(time.Now())
				s.Len()
			}
		})
	}
	for k := range n {
		ev := tokenEvent("jti-" + strconv.Itoa(k))
		ev.ExpiresAt = ts(t0.Add(time.Hour))
		s.Apply(ev)
		s.Heard(time.Now())
		s.Sweep(t0)
	}
	close(done)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if s.Len() != n {
		t.Fatalf("len %d, want %d", s.Len(), n)
	}
}

// populated returns a Set holding 10,000 revoked jtis and 1,000 rules of
// each scope shape, as a busy issuer's last few minutes would.
func populated() *revocation.Set {
	s := revocation.NewSet(revocation.SetOptions{Now: newClock(t0).Now})
	for i := range 10_000 {
		s.Apply(tokenEvent("jti-" + strconv.Itoa(i)))
	}
	for i := range 1000 {
		user, client := "user-"+strconv.Itoa(i), "client-"+strconv.Itoa(i)
		s.Apply(sessionEvent(user, t0))
		s.Apply(clientEvent(client, t0))
		s.Apply(consentEvent(user, client, t0))
	}
	return s
}

// TestRevokedDoesNotAllocate is not parallel: AllocsPerRun must not be.
func TestRevokedDoesNotAllocate(t *testing.T) {
	s := populated()
	hit, miss := tok("jti-42", "alice", "invoice-web", t0), tok("jti-x", "user-7", "invoice-web", t0)
	if !s.Revoked(hit) || s.Revoked(miss) {
		t.Fatal("populated set answers wrongly")
	}
	if allocs := testing.AllocsPerRun(100, func() { s.Revoked(hit); s.Revoked(miss) }); allocs != 0 {
		t.Fatalf("Revoked allocates %v times per call", allocs)
	}
}

func BenchmarkRevoked(b *testing.B) {
	s := populated()
	for _, bc := range []struct {
		name  string
		token revocation.Token
	}{
		{"jti hit", tok("jti-4242", "alice", "invoice-web", t0)},
		{"rule hit", tok("jti-x", "user-7", "invoice-web", t0.Add(-time.Second))},
		{"miss", tok("jti-x", "user-7", "client-8", t0)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.Revoked(bc.token)
			}
		})
	}
	b.Run("parallel miss", func(b *testing.B) {
		b.ReportAllocs()
		t := tok("jti-x", "user-7", "client-8", t0)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				s.Revoked(t)
			}
		})
	})
}
