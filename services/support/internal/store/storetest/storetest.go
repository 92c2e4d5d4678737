// Package storetest is the contract suite every support.Store passes, so
// the memory and Postgres stores stay interchangeable.
package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/support/internal/support"
)

// base is the create time of the first fixture ticket; later ones follow
// at one-second steps. Microsecond precision, as the contract requires.
var base = time.Date(2026, 3, 1, 9, 30, 0, 123456000, time.UTC)

// Run runs the contract suite; newStore returns a fresh, empty store for
// each subtest.
func Run(t *testing.T, newStore func(t *testing.T) support.Store) {
	t.Helper()

	t.Run("Ping", func(t *testing.T) {
		t.Parallel()
		if err := newStore(t).Ping(t.Context()); err != nil {
			t.Fatalf("Ping = %v", err)
		}
	})

	t.Run("CreateTicketThenGet", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		open := ticket("acme", 1)
		open.Summary = "Rechnung für Zürich – bitte prüfen" // non-ASCII survives
		open.Access = support.AccessWrite
		closed := ticket("acme", 2)
		closed.Status, closed.CloseTime, closed.ClosedBy = support.StatusClosed, base.Add(time.Hour), "sam"
		for _, want := range []support.Ticket{open, closed} {
			mustCreateTicket(t, s, want)
			got, err := s.GetTicket(t.Context(), "acme", want.ID)
			if err != nil {
				t.Fatalf("GetTicket = %v", err)
			}
			assertTicket(t, got, want)
		}
	})

	t.Run("TicketTimesAreStoredAtMicroseconds", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		tk := ticket("acme", 1)
		tk.CreateTime = time.Date(2026, 3, 2, 10, 0, 0, 123456789, time.FixedZone("CET", 3600))
		mustCreateTicket(t, s, tk)
		got, err := s.GetTicket(t.Context(), "acme", tk.ID)
		if err != nil {
			t.Fatal(err)
		}
		if want := time.Date(2026, 3, 2, 9, 0, 0, 123456000, time.UTC); !got.CreateTime.Equal(want) || got.CreateTime.Location() != time.UTC {
			t.Fatalf("CreateTime = %v, want %v in UTC", got.CreateTime, want)
		}
	})

	t.Run("DuplicateTicketIDRejected", func(t *testing.T) {
		t.Parallel()
		for _, tenant := range []string{"acme", "globex"} {
			t.Run(tenant, func(t *testing.T) {
				t.Parallel()
				s := newStore(t)
				first := ticket("acme", 1)
				mustCreateTicket(t, s, first)
				dup := ticket(tenant, 2)
				dup.ID = first.ID
				if err := s.CreateTicket(t.Context(), dup); !errors.Is(err, support.ErrDuplicateID) {
					t.Fatalf("CreateTicket duplicate = %v, want ErrDuplicateID", err)
				}
				got, err := s.GetTicket(t.Context(), "acme", first.ID)
				if err != nil {
					t.Fatal(err)
				}
				assertTicket(t, got, first) // the original is untouched
			})
		}
	})

	t.Run("TicketTenantIsolation", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		acme := ticket("acme", 1)
		mustCreateTicket(t, s, acme)
		globex := ticket("globex", 2)
		mustCreateTicket(t, s, globex)
		for _, tc := range []struct{ tenant, id string }{{"globex", acme.ID}, {"", acme.ID}, {"acme", "tkt_does_not_exist"}} {
			if _, err := s.GetTicket(t.Context(), tc.tenant, tc.id); !errors.Is(err, support.ErrTicketNotFound) {
				t.Fatalf("GetTicket %s as %q = %v, want ErrTicketNotFound", tc.id, tc.tenant, err)
			}
		}
		for tenant, want := range map[string][]string{"acme": {acme.ID}, "globex": {globex.ID}, "initech": nil} {
			got, err := s.ListTickets(t.Context(), support.TicketFilter{Tenant: tenant}, nil, 10)
			if err != nil {
				t.Fatal(err)
			}
			assertIDs(t, tenant, ticketIDs(got), want)
		}
	})

	t.Run("ListTicketsOrderFiltersAndPages", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		// Created out of order; two share a create time, so the id breaks
		// the tie. Byte order: "tkt_B3" < "tkt_a1".
		var all []support.Ticket
		for i, n := range []int{3, 1, 4, 2, 5} {
			tk := ticket("acme", n)
			if i == 3 {
				tk.CreateTime = all[0].CreateTime // same time as #3
				tk.ID = "tkt_B3"
			}
			if n%2 == 0 {
				tk.Customer = "alice"
			}
			if n == 5 {
				tk.Status, tk.CloseTime, tk.ClosedBy = support.StatusClosed, base.Add(time.Hour), "bob"
			}
			mustCreateTicket(t, s, tk)
			all = append(all, tk)
		}
		mustCreateTicket(t, s, ticket("globex", 9)) // never listed for acme
		wantOrder := []string{"tkt_a1", "tkt_B3", "tkt_a3", "tkt_a4", "tkt_a5"}
		got, err := s.ListTickets(t.Context(), support.TicketFilter{Tenant: "acme"}, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		assertIDs(t, "all", ticketIDs(got), wantOrder)
		cursorOf := func(tk support.Ticket) *support.Cursor { return &support.Cursor{CreateTime: tk.CreateTime, ID: tk.ID} }

		tests := []struct {
			name   string
			filter support.TicketFilter
			after  *support.Cursor
			limit  int
			want   []string
		}{
			{name: "first page", limit: 2, want: wantOrder[:2]},
			{name: "limit one", limit: 1, want: wantOrder[:1]},
			{name: "after first", after: cursorOf(got[0]), limit: 2, want: wantOrder[1:3]},
			{name: "tie broken by id", after: cursorOf(got[1]), limit: 1, want: wantOrder[2:3]},
			{name: "last partial page", after: cursorOf(got[2]), limit: 5, want: wantOrder[3:]},
			{name: "after last", after: cursorOf(got[4]), limit: 5, want: nil},
			{name: "cursor between rows", after: &support.Cursor{CreateTime: got[2].CreateTime.Add(time.Millisecond), ID: "tkt_"}, limit: 5, want: wantOrder[3:]},
			{name: "customer", filter: support.TicketFilter{Customer: "alice"}, limit: 5, want: []string{"tkt_B3", "tkt_a4"}},
			{name: "customer after cursor", filter: support.TicketFilter{Customer: "alice"}, after: cursorOf(got[1]), limit: 5, want: []string{"tkt_a4"}},
			{name: "open", filter: support.TicketFilter{Status: support.StatusOpen}, limit: 5, want: wantOrder[:4]},
			{name: "closed", filter: support.TicketFilter{Status: support.StatusClosed}, limit: 5, want: []string{"tkt_a5"}},
			{name: "customer and status", filter: support.TicketFilter{Customer: "bob", Status: support.StatusOpen}, limit: 5, want: []string{"tkt_a1", "tkt_a3"}},
			{name: "unknown customer", filter: support.TicketFilter{Customer: "mallory"}, limit: 5, want: nil},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				f := tc.filter
				f.Tenant = "acme"
				page, err := s.ListTickets(t.Context(), f, tc.after, tc.limit)
				if err != nil {
					t.Fatal(err)
				}
				assertIDs(t, tc.name, ticketIDs(page), tc.want)
			})
		}
	})

	t.Run("ListTicketsNonPositiveLimit", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		mustCreateTicket(t, s, ticket("acme", 1))
		for _, limit := range []int{0, -1} {
			if got, err := s.ListTickets(t.Context(), support.TicketFilter{Tenant: "acme"}, nil, limit); err == nil {
				t.Fatalf("ListTickets limit %d = %d tickets, nil error; want an error", limit, len(got))
			}
		}
	})

	t.Run("CloseTicketEndsItsActiveSessions", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		tk := ticket("acme", 1)
		mustCreateTicket(t, s, tk)
		other := ticket("acme", 2)
		mustCreateTicket(t, s, other)
		active1 := session(tk, 1)
		active2 := session(tk, 2)
		active2.Agent = "sam2"
		expired := session(tk, 3)
		expired.ExpireTime = base.Add(2 * time.Minute)
		ended := session(tk, 4)
		otherTicket := session(other, 5)
		for _, sess := range []support.Session{active1, active2, expired, ended, otherTicket} {
			mustCreateSession(t, s, sess)
		}
		endedAt := base.Add(3 * time.Minute)
		if _, err := s.EndSession(t.Context(), "acme", ended.ID, endedAt); err != nil {
			t.Fatal(err)
		}
		// Nanoseconds and another zone: stored at microseconds, in UTC.
		at := time.Date(2026, 3, 1, 10, 35, 0, 987654321, time.FixedZone("CET", 3600))
		atStored := time.Date(2026, 3, 1, 9, 35, 0, 987654000, time.UTC)
		closed, endedNow, err := s.CloseTicket(t.Context(), "acme", tk.ID, "bob", at)
		if err != nil {
			t.Fatalf("CloseTicket = %v", err)
		}
		want := tk
		want.Status, want.CloseTime, want.ClosedBy = support.StatusClosed, atStored, "bob"
		assertTicket(t, closed, want)
		stored, err := s.GetTicket(t.Context(), "acme", tk.ID)
		if err != nil {
			t.Fatal(err)
		}
		assertTicket(t, stored, want)

		active1.EndTime, active2.EndTime = atStored, atStored
		if len(endedNow) != 2 {
			t.Fatalf("CloseTicket ended %d sessions (%v), want the 2 active ones", len(endedNow), endedNow)
		}
		for _, sess := range endedNow {
			switch sess.ID {
			case active1.ID:
				assertSession(t, sess, active1)
			case active2.ID:
				assertSession(t, sess, active2)
			default:
				t.Fatalf("CloseTicket ended %s, which was not active on the ticket", sess.ID)
			}
		}
		ended.EndTime = endedAt
		for _, want := range []support.Session{active1, active2, expired, ended, otherTicket} {
			got, err := s.GetSession(t.Context(), "acme", want.ID)
			if err != nil {
				t.Fatal(err)
			}
			assertSession(t, got, want)
		}
	})

	t.Run("CloseTicketOnce", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		tk := ticket("acme", 1)
		mustCreateTicket(t, s, tk)
		first, _, err := s.CloseTicket(t.Context(), "acme", tk.ID, "bob", base.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.CloseTicket(t.Context(), "acme", tk.ID, "sam", base.Add(2*time.Hour)); !errors.Is(err, support.ErrTicketClosed) {
			t.Fatalf("second CloseTicket = %v, want ErrTicketClosed", err)
		}
		stored, err := s.GetTicket(t.Context(), "acme", tk.ID)
		if err != nil {
			t.Fatal(err)
		}
		assertTicket(t, stored, first) // the first close stands
	})

	t.Run("CloseTicketIsTenantScoped", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		tk := ticket("acme", 1)
		mustCreateTicket(t, s, tk)
		for _, tc := range []struct{ tenant, id string }{{"globex", tk.ID}, {"", tk.ID}, {"acme", "tkt_does_not_exist"}} {
			if _, _, err := s.CloseTicket(t.Context(), tc.tenant, tc.id, "carol", base); !errors.Is(err, support.ErrTicketNotFound) {
				t.Fatalf("CloseTicket %s as %q = %v, want ErrTicketNotFound", tc.id, tc.tenant, err)
			}
		}
		stored, err := s.GetTicket(t.Context(), "acme", tk.ID)
		if err != nil {
			t.Fatal(err)
		}
		assertTicket(t, stored, tk) // still open
	})

	t.Run("ConcurrentCloses", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		tk := ticket("acme", 1)
		mustCreateTicket(t, s, tk)
		const closers = 8
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			winners []string
		)
		for i := range closers {
			wg.Go(func() {
				subject := fmt.Sprintf("closer-%d", i)
				_, _, err := s.CloseTicket(t.Context(), "acme", tk.ID, subject, base.Add(time.Hour))
				switch {
				case err == nil:
					mu.Lock()
					winners = append(winners, subject)
					mu.Unlock()
				case !errors.Is(err, support.ErrTicketClosed):
					t.Errorf("%s: CloseTicket = %v, want nil or ErrTicketClosed", subject, err)
				}
			})
		}
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("%d closes succeeded (%v), want exactly one", len(winners), winners)
		}
		stored, err := s.GetTicket(t.Context(), "acme", tk.ID)
		if err != nil || stored.ClosedBy != winners[0] {
			t.Fatalf("stored closer %q (%v), want %q", stored.ClosedBy, err, winners[0])
		}
	})

	t.Run("CreateSessionThenGet", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		tk := ticket("acme", 1)
		mustCreateTicket(t, s, tk)
		want := session(tk, 1)
		want.Scopes = []string{"invoice:read", "invoice:write"}
		want.StartTime = time.Date(2026, 3, 1, 10, 31, 0, 555555555, time.FixedZone("CET", 3600))
		mustCreateSession(t, s, want)
		want.StartTime = time.Date(2026, 3, 1, 9, 31, 0, 555555000, time.UTC)
		got, err := s.GetSession(t.Context(), "acme", want.ID)
		if err != nil {
			t.Fatalf("GetSession = %v", err)
		}
		assertSession(t, got, want)
		got.Scopes[0] = "changed" // the caller's copy, not the store's
		if again, err := s.GetSession(t.Context(), "acme", want.ID); err != nil || again.Scopes[0] != "invoice:read" {
			t.Fatalf("GetSession after changing a returned copy: scopes %v (%v)", again.Scopes, err)
		}
	})

	t.Run("CreateSessionNeedsAnOpenTicketOfTheTenant", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		open := ticket("acme", 1)
		mustCreateTicket(t, s, open)
		closed := ticket("acme", 2)
		closed.Status, closed.CloseTime, closed.ClosedBy = support.StatusClosed, base.Add(time.Hour), "bob"
		mustCreateTicket(t, s, closed)
		otherTenant := session(open, 3)
		otherTenant.Tenant = "globex"
		missing := session(open, 4)
		missing.TicketID = "tkt_does_not_exist"
		tests := []struct {
			name string
			sess support.Session
			want error
		}{
			{name: "closed ticket", sess: session(closed, 1), want: support.ErrTicketClosed},
			{name: "ticket of another tenant", sess: otherTenant, want: support.ErrTicketNotFound},
			{name: "missing ticket", sess: missing, want: support.ErrTicketNotFound},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				if err := s.CreateSession(t.Context(), tc.sess); !errors.Is(err, tc.want) {
					t.Fatalf("CreateSession = %v, want %v", err, tc.want)
				}
				if _, err := s.GetSession(t.Context(), tc.sess.Tenant, tc.sess.ID); !errors.Is(err, support.ErrSessionNotFound) {
					t.Fatalf("GetSession after a refused CreateSession = %v, want ErrSessionNotFound", err)
				}
			})
		}
		first := session(open, 5)
		mustCreateSession(t, s, first)
		dup := session(open, 6)
		dup.ID = first.ID
		if err := s.CreateSession(t.Context(), dup); !errors.Is(err, support.ErrDuplicateID) {
			t.Fatalf("CreateSession duplicate = %v, want ErrDuplicateID", err)
		}
	})

	t.Run("SessionTenantIsolation", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		tk := ticket("acme", 1)
		mustCreateTicket(t, s, tk)
		sess := session(tk, 1)
		mustCreateSession(t, s, sess)
		for _, tc := range []struct{ tenant, id string }{{"globex", sess.ID}, {"", sess.ID}, {"acme", "imp_does_not_exist"}} {
			if _, err := s.GetSession(t.Context(), tc.tenant, tc.id); !errors.Is(err, support.ErrSessionNotFound) {
				t.Fatalf("GetSession %s as %q = %v, want ErrSessionNotFound", tc.id, tc.tenant, err)
			}
			if _, err := s.EndSession(t.Context(), tc.tenant, tc.id, base.Add(time.Minute)); !errors.Is(err, support.ErrSessionNotFound) {
				t.Fatalf("EndSession %s as %q = %v, want ErrSessionNotFound", tc.id, tc.tenant, err)
			}
		}
		got, err := s.GetSession(t.Context(), "acme", sess.ID)
		if err != nil {
			t.Fatal(err)
		}
		assertSession(t, got, sess) // not ended
	})

	t.Run("EndSessionOnce", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		tk := ticket("acme", 1)
		mustCreateTicket(t, s, tk)
		sess := session(tk, 1)
		mustCreateSession(t, s, sess)
		at := base.Add(5 * time.Minute)
		got, err := s.EndSession(t.Context(), "acme", sess.ID, at)
		if err != nil {
			t.Fatalf("EndSession = %v", err)
		}
		want := sess
		want.EndTime = at
		assertSession(t, got, want)
		if _, err := s.EndSession(t.Context(), "acme", sess.ID, at.Add(time.Minute)); !errors.Is(err, support.ErrSessionOver) {
			t.Fatalf("second EndSession = %v, want ErrSessionOver", err)
		}
		stored, err := s.GetSession(t.Context(), "acme", sess.ID)
		if err != nil {
			t.Fatal(err)
		}
		assertSession(t, stored, want) // the first end stands
	})

	t.Run("EndSessionAfterExpiry", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		tk := ticket("acme", 1)
		mustCreateTicket(t, s, tk)
		sess := session(tk, 1)
		mustCreateSession(t, s, sess)
		for _, at := range []time.Time{sess.ExpireTime, sess.ExpireTime.Add(time.Second)} {
			if _, err := s.EndSession(t.Context(), "acme", sess.ID, at); !errors.Is(err, support.ErrSessionOver) {
				t.Fatalf("EndSession at %v (expiry %v) = %v, want ErrSessionOver", at, sess.ExpireTime, err)
			}
		}
		stored, err := s.GetSession(t.Context(), "acme", sess.ID)
		if err != nil {
			t.Fatal(err)
		}
		assertSession(t, stored, sess) // expired, never marked ended
	})

	t.Run("CreateSessionRacingCloseTicket", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		// Each round races one session's start against its ticket's close:
		// either the start fails because the ticket is closed, or the
		// close ends the session. Never a stored, active session on a
		// closed ticket.
		const rounds = 20
		for n := range rounds {
			tk := ticket("acme", n+1)
			mustCreateTicket(t, s, tk)
			sess := session(tk, n+1)
			var (
				wg        sync.WaitGroup
				createErr error
				ended     []support.Session
				closeErr  error
			)
			wg.Go(func() { createErr = s.CreateSession(t.Context(), sess) })
			wg.Go(func() { _, ended, closeErr = s.CloseTicket(t.Context(), "acme", tk.ID, "bob", base.Add(time.Minute)) })
			wg.Wait()
			if closeErr != nil {
				t.Fatalf("round %d: CloseTicket = %v", n, closeErr)
			}
			switch {
			case errors.Is(createErr, support.ErrTicketClosed):
				if len(ended) != 0 {
					t.Fatalf("round %d: close ended %v, but the session was never stored", n, ended)
				}
			case createErr == nil:
				if len(ended) != 1 || ended[0].ID != sess.ID {
					t.Fatalf("round %d: the session was stored, but close ended %v", n, ended)
				}
				got, err := s.GetSession(t.Context(), "acme", sess.ID)
				if err != nil || got.EndTime.IsZero() {
					t.Fatalf("round %d: stored session %+v (%v), want it ended", n, got, err)
				}
			default:
				t.Fatalf("round %d: CreateSession = %v, want nil or ErrTicketClosed", n, createErr)
			}
		}
	})
}

// ticket returns a valid open ticket "tkt_a<n>" of bob in tenant, created
// n seconds after base.
func ticket(tenant string, n int) support.Ticket {
	return support.Ticket{
		ID:         fmt.Sprintf("tkt_a%d", n),
		Tenant:     tenant,
		Customer:   "bob",
		Summary:    fmt.Sprintf("Problem %d", n),
		Status:     support.StatusOpen,
		Access:     support.AccessRead,
		CreateTime: base.Add(time.Duration(n) * time.Second),
	}
}

// session returns an active session "imp_s<n>" of sam on tk, started a
// minute after base for 15 minutes.
func session(tk support.Ticket, n int) support.Session {
	return support.Session{
		ID:         fmt.Sprintf("imp_s%d", n),
		TicketID:   tk.ID,
		Tenant:     tk.Tenant,
		Customer:   tk.Customer,
		Agent:      "sam",
		JTI:        fmt.Sprintf("jti-%d", n),
		Scopes:     []string{"invoice:read"},
		StartTime:  base.Add(time.Minute),
		ExpireTime: base.Add(16 * time.Minute),
	}
}

func mustCreateTicket(t *testing.T, s support.Store, tk support.Ticket) {
	t.Helper()
	if err := s.CreateTicket(t.Context(), tk); err != nil {
		t.Fatalf("CreateTicket %s = %v", tk.ID, err)
	}
}

func mustCreateSession(t *testing.T, s support.Store, sess support.Session) {
	t.Helper()
	if err := s.CreateSession(t.Context(), sess); err != nil {
		t.Fatalf("CreateSession %s = %v", sess.ID, err)
	}
}

func ticketIDs(tickets []support.Ticket) []string {
	var out []string
	for _, tk := range tickets {
		out = append(out, tk.ID)
	}
	return out
}

func assertIDs(t *testing.T, label string, got, want []string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s: listed %v, want %v", label, got, want)
	}
}

// assertTime checks that got equals want and is in UTC (zero stays zero).
func assertTime(t *testing.T, field string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) || !got.IsZero() && got.Location() != time.UTC {
		t.Fatalf("%s = %v, want %v in UTC", field, got, want)
	}
}

func assertTicket(t *testing.T, got, want support.Ticket) {
	t.Helper()
	assertTime(t, "CreateTime", got.CreateTime, want.CreateTime)
	assertTime(t, "CloseTime", got.CloseTime, want.CloseTime)
	got.CreateTime, want.CreateTime = time.Time{}, time.Time{}
	got.CloseTime, want.CloseTime = time.Time{}, time.Time{}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func assertSession(t *testing.T, got, want support.Session) {
	t.Helper()
	assertTime(t, "StartTime", got.StartTime, want.StartTime)
	assertTime(t, "ExpireTime", got.ExpireTime, want.ExpireTime)
	assertTime(t, "EndTime", got.EndTime, want.EndTime)
	got.StartTime, want.StartTime = time.Time{}, time.Time{}
	got.ExpireTime, want.ExpireTime = time.Time{}, time.Time{}
	got.EndTime, want.EndTime = time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}
