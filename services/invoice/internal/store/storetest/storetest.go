// Package storetest is the contract suite every invoice.Store passes, so the
// memory and Postgres stores stay interchangeable.
package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/invoice/internal/invoice"
)

// base is the create time of the first fixture invoice; later ones follow
// at one-second steps. Microsecond precision, as the contract requires.
var base = time.Date(2026, 3, 1, 9, 30, 0, 123456000, time.UTC)

// Run runs the contract suite; newStore returns a fresh, empty store for
// each subtest.
func Run(t *testing.T, newStore func(t *testing.T) invoice.Store) {
	t.Helper()

	t.Run("Ping", func(t *testing.T) {
		t.Parallel()
		if err := newStore(t).Ping(t.Context()); err != nil {
			t.Fatalf("Ping = %v", err)
		}
	})

	t.Run("CreateThenGet", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		want := fixture("acme", 1)
		want.Customer = "Umbrella Corp – Zürich" // non-ASCII survives
		want.Status = invoice.StatusApproved
		want.ApprovedBy = "alice"
		want.ApproveTime = base.Add(time.Hour)
		mustCreate(t, s, want)
		got, err := s.Get(t.Context(), "acme", want.ID)
		if err != nil {
			t.Fatalf("Get = %v", err)
		}
		assertEqual(t, got, want)
	})

	t.Run("GetNotFound", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		mustCreate(t, s, fixture("acme", 1))
		_, err := s.Get(t.Context(), "acme", "inv_does_not_exist")
		if !errors.Is(err, invoice.ErrNotFound) {
			t.Fatalf("Get unknown id = %v, want ErrNotFound", err)
		}
	})

	t.Run("DuplicateIDRejected", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name   string
			tenant string
		}{
			{name: "same tenant", tenant: "acme"},
			{name: "other tenant", tenant: "globex"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				s := newStore(t)
				first := fixture("acme", 1)
				mustCreate(t, s, first)
				dup := fixture(tc.tenant, 2)
				dup.ID = first.ID
				if err := s.Create(t.Context(), dup); !errors.Is(err, invoice.ErrDuplicateID) {
					t.Fatalf("Create duplicate = %v, want ErrDuplicateID", err)
				}
				got, err := s.Get(t.Context(), "acme", first.ID)
				if err != nil {
					t.Fatal(err)
				}
				assertEqual(t, got, first) // the original is untouched
			})
		}
	})

	t.Run("TenantIsolation", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		acme := fixture("acme", 1)
		mustCreate(t, s, acme)
		globex := fixture("globex", 2)
		mustCreate(t, s, globex)

		if _, err := s.Get(t.Context(), "globex", acme.ID); !errors.Is(err, invoice.ErrNotFound) {
			t.Fatalf("globex Get acme's invoice = %v, want ErrNotFound", err)
		}
		if _, err := s.Get(t.Context(), "", acme.ID); !errors.Is(err, invoice.ErrNotFound) {
			t.Fatalf("empty tenant Get = %v, want ErrNotFound", err)
		}
		for tenant, want := range map[string][]invoice.Invoice{
			"acme":    {acme},
			"globex":  {globex},
			"initech": nil,
		} {
			got, err := s.List(t.Context(), tenant, nil, 10)
			if err != nil {
				t.Fatal(err)
			}
			assertIDs(t, tenant, got, ids(want))
		}
	})

	t.Run("ListOrderAndPages", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		// Created out of order; two share a create time, so the id breaks
		// the tie. Byte order: "inv_B" < "inv_a".
		var all []invoice.Invoice
		for i, n := range []int{3, 1, 4, 2, 5} {
			inv := fixture("acme", n)
			if i == 3 {
				inv.CreateTime = all[0].CreateTime // same time as #3
				inv.ID = "inv_B3"
			}
			mustCreate(t, s, inv)
			all = append(all, inv)
		}
		mustCreate(t, s, fixture("globex", 9)) // never listed for acme
		wantOrder := []string{"inv_a1", "inv_B3", "inv_a3", "inv_a4", "inv_a5"}

		got, err := s.List(t.Context(), "acme", nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		assertIDs(t, "all", got, wantOrder)

		tests := []struct {
			name  string
			after *invoice.Cursor
			limit int
			want  []string
		}{
			{name: "first page", limit: 2, want: wantOrder[:2]},
			{name: "limit one", limit: 1, want: wantOrder[:1]},
			{name: "after first", after: cursorOf(got[0]), limit: 2, want: wantOrder[1:3]},
			{name: "tie broken by id", after: cursorOf(got[1]), limit: 1, want: wantOrder[2:3]},
			{name: "last partial page", after: cursorOf(got[2]), limit: 5, want: wantOrder[3:]},
			{name: "after last", after: cursorOf(got[4]), limit: 5, want: nil},
			{name: "cursor between rows", after: &invoice.Cursor{CreateTime: got[2].CreateTime.Add(time.Millisecond), ID: "inv_"}, limit: 5, want: wantOrder[3:]},
			{name: "cursor id not stored", after: &invoice.Cursor{CreateTime: got[1].CreateTime, ID: "inv_Zz"}, limit: 5, want: wantOrder[2:]},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				page, err := s.List(t.Context(), "acme", tc.after, tc.limit)
				if err != nil {
					t.Fatal(err)
				}
				assertIDs(t, tc.name, page, tc.want)
			})
		}
	})

	t.Run("Approve", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		draft := fixture("acme", 1)
		mustCreate(t, s, draft)
		// Nanoseconds and another zone: stored at microseconds, in UTC.
		at := time.Date(2026, 3, 2, 10, 0, 0, 123456789, time.FixedZone("CET", 3600))
		got, err := s.Approve(t.Context(), "acme", draft.ID, "alice", at)
		if err != nil {
			t.Fatalf("Approve = %v", err)
		}
		want := draft
		want.Status = invoice.StatusApproved
		want.ApprovedBy = "alice"
		want.ApproveTime = time.Date(2026, 3, 2, 9, 0, 0, 123456000, time.UTC)
		assertEqual(t, got, want)
		stored, err := s.Get(t.Context(), "acme", draft.ID)
		if err != nil {
			t.Fatal(err)
		}
		assertEqual(t, stored, want)
	})

	t.Run("ApproveOnce", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		draft := fixture("acme", 1)
		mustCreate(t, s, draft)
		first, err := s.Approve(t.Context(), "acme", draft.ID, "alice", base.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Approve(t.Context(), "acme", draft.ID, "mallory", base.Add(2*time.Hour)); !errors.Is(err, invoice.ErrAlreadyApproved) {
			t.Fatalf("second Approve = %v, want ErrAlreadyApproved", err)
		}
		stored, err := s.Get(t.Context(), "acme", draft.ID)
		if err != nil {
			t.Fatal(err)
		}
		assertEqual(t, stored, first) // the first approval stands
	})

	t.Run("ApproveIsTenantScoped", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		acme := fixture("acme", 1)
		mustCreate(t, s, acme)
		for _, tc := range []struct{ tenant, id string }{{"globex", acme.ID}, {"", acme.ID}, {"acme", "inv_does_not_exist"}} {
			if _, err := s.Approve(t.Context(), tc.tenant, tc.id, "carol", base); !errors.Is(err, invoice.ErrNotFound) {
				t.Fatalf("Approve %s as %q = %v, want ErrNotFound", tc.id, tc.tenant, err)
			}
		}
		stored, err := s.Get(t.Context(), "acme", acme.ID)
		if err != nil {
			t.Fatal(err)
		}
		assertEqual(t, stored, acme) // still a draft
	})

	t.Run("ConcurrentApprovals", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		draft := fixture("acme", 1)
		mustCreate(t, s, draft)
		const approvers = 8
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			winners []string
		)
		for i := range approvers {
			wg.Go(func() {
				subject := fmt.Sprintf("approver-%d", i)
				_, err := s.Approve(t.Context(), "acme", draft.ID, subject, base.Add(time.Hour))
				switch {
				case err == nil:
					mu.Lock()
					winners = append(winners, subject)
					mu.Unlock()
				case !errors.Is(err, invoice.ErrAlreadyApproved):
					t.Errorf("%s: Approve = %v, want nil or ErrAlreadyApproved", subject, err)
				}
			})
		}
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("%d approvals succeeded (%v), want exactly one", len(winners), winners)
		}
		stored, err := s.Get(t.Context(), "acme", draft.ID)
		if err != nil || stored.ApprovedBy != winners[0] {
			t.Fatalf("stored approver %q (%v), want %q", stored.ApprovedBy, err, winners[0])
		}
	})

	t.Run("ListNonPositiveLimit", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		mustCreate(t, s, fixture("acme", 1))
		for _, limit := range []int{0, -1} {
			if got, err := s.List(t.Context(), "acme", nil, limit); err == nil {
				t.Fatalf("List limit %d = %d invoices, nil error; want an error", limit, len(got))
			}
		}
	})
}

// fixture returns a valid invoice "inv_a<n>" of tenant, created n seconds
// after base.
func fixture(tenant string, n int) invoice.Invoice {
	return invoice.Invoice{
		ID:          fmt.Sprintf("inv_a%d", n),
		Tenant:      tenant,
		Customer:    fmt.Sprintf("Customer %d", n),
		AmountCents: int64(n) * 10_000,
		Currency:    "EUR",
		Status:      invoice.StatusDraft,
		CreatedBy:   "billing-bot",
		CreateTime:  base.Add(time.Duration(n) * time.Second),
	}
}

func cursorOf(inv invoice.Invoice) *invoice.Cursor {
	return &invoice.Cursor{CreateTime: inv.CreateTime, ID: inv.ID}
}

func mustCreate(t *testing.T, s invoice.Store, inv invoice.Invoice) {
	t.Helper()
	if err := s.Create(t.Context(), inv); err != nil {
		t.Fatalf("Create %s = %v", inv.ID, err)
	}
}

func ids(invs []invoice.Invoice) []string {
	var out []string
	for _, inv := range invs {
		out = append(out, inv.ID)
	}
	return out
}

func assertIDs(t *testing.T, label string, got []invoice.Invoice, want []string) {
	t.Helper()
	g := ids(got)
	if fmt.Sprint(g) != fmt.Sprint(want) {
		t.Fatalf("%s: listed %v, want %v", label, g, want)
	}
}

func assertEqual(t *testing.T, got, want invoice.Invoice) {
	t.Helper()
	if !got.CreateTime.Equal(want.CreateTime) || got.CreateTime.Location() != time.UTC {
		t.Fatalf("CreateTime = %v, want %v in UTC", got.CreateTime, want.CreateTime)
	}
	if !got.ApproveTime.Equal(want.ApproveTime) || !got.ApproveTime.IsZero() && got.ApproveTime.Location() != time.UTC {
		t.Fatalf("ApproveTime = %v, want %v in UTC", got.ApproveTime, want.ApproveTime)
	}
	got.CreateTime, want.CreateTime = time.Time{}, time.Time{}
	got.ApproveTime, want.ApproveTime = time.Time{}, time.Time{}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}
