package demoseed_test

import (
	"fmt"
	"testing"

	"github.com/gatehouse/gatehouse/services/invoice/internal/demoseed"
	"github.com/gatehouse/gatehouse/services/invoice/internal/invoice"
	"github.com/gatehouse/gatehouse/services/invoice/internal/store/memory"
)

func TestSeedIsIdempotent(t *testing.T) {
	t.Parallel()
	store := memory.New()
	for i := range 2 {
		if err := demoseed.Seed(t.Context(), store); err != nil {
			t.Fatalf("seed run %d: %v", i+1, err)
		}
	}
	tests := []struct {
		tenant string
		want   []string // customer/amount/currency in list order
	}{
		{tenant: "acme", want: []string{"Initech 120000 EUR", "Umbrella Corp 2500000 EUR", "Hooli 48050 EUR"}},
		{tenant: "globex", want: []string{"Soylent 990000 USD"}},
	}
	for _, tc := range tests {
		t.Run(tc.tenant, func(t *testing.T) {
			t.Parallel()
			invs, err := store.List(t.Context(), tc.tenant, nil, 100)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, inv := range invs {
				got = append(got, fmt.Sprintf("%s %d %s", inv.Customer, inv.AmountCents, inv.Currency))
				if _, err := (invoice.Draft{Customer: inv.Customer, AmountCents: inv.AmountCents, Currency: inv.Currency}).Normalize(); err != nil {
					t.Errorf("demo invoice %s is not valid input: %v", inv.ID, err)
				}
				if err := invoice.ValidateID(inv.ID); err != nil {
					t.Errorf("demo invoice id %s: %v", inv.ID, err)
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("%s has %v, want %v", tc.tenant, got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("%s has %v, want %v", tc.tenant, got, tc.want)
				}
			}
		})
	}
	if inv, err := store.Get(t.Context(), "acme", "inv_demo_acme_1"); err != nil || inv.CreatedBy != "billing-bot" {
		t.Fatalf("inv_demo_acme_1 = %+v, %v; want created by billing-bot", inv, err)
	}
}
