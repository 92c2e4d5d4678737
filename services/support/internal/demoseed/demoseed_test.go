package demoseed_test

import (
	"testing"

	"github.com/gatehouse/gatehouse/services/support/internal/demoseed"
	"github.com/gatehouse/gatehouse/services/support/internal/store/memory"
	"github.com/gatehouse/gatehouse/services/support/internal/support"
)

func TestSeedIsIdempotent(t *testing.T) {
	t.Parallel()
	store := memory.New()
	for i := range 2 {
		if err := demoseed.Seed(t.Context(), store); err != nil {
			t.Fatalf("seed run %d: %v", i+1, err)
		}
	}
	got, err := store.ListTickets(t.Context(), support.TicketFilter{Tenant: "acme"}, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("acme has %d tickets after two seeds, want 1", len(got))
	}
	tk := got[0]
	if tk.ID != "tkt_demo_acme_1" || tk.Customer != "bob" || tk.Status != support.StatusOpen || tk.Access != support.AccessRead {
		t.Fatalf("demo ticket = %+v, want bob's open read-access ticket tkt_demo_acme_1", tk)
	}
	if err := support.ValidateTicketID(tk.ID); err != nil {
		t.Errorf("demo ticket id: %v", err)
	}
	if s, err := support.NormalizeSummary(tk.Summary); err != nil || s != tk.Summary {
		t.Errorf("demo summary is not valid input: %q, %v", s, err)
	}
}

func TestSeedKeepsAClosedTicketClosed(t *testing.T) {
	t.Parallel()
	store := memory.New()
	if err := demoseed.Seed(t.Context(), store); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.CloseTicket(t.Context(), "acme", demoseed.TicketID, "bob", demoseed.Tickets()[0].CreateTime.Add(1)); err != nil {
		t.Fatal(err)
	}
	if err := demoseed.Seed(t.Context(), store); err != nil {
		t.Fatal(err)
	}
	tk, err := store.GetTicket(t.Context(), "acme", demoseed.TicketID)
	if err != nil || tk.Status != support.StatusClosed {
		t.Fatalf("after reseeding: %+v, %v; want the ticket still closed", tk, err)
	}
}
