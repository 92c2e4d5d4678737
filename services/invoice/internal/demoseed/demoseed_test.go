package demoseed_test

import (
	"encoding/json"
	"fmt"
	"os"
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

// stepUpData is the invoice policy's approval threshold.
const stepUpData = "../../../../policies/gatehouse/invoice/data.json"

// TestStepUpDemoInvoices keeps the demo seed in step with the policy: the
// step-up demo (docs/step-up.md) approves inv_demo_acme_2, which must be
// above the approval threshold, and inv_demo_acme_1 and inv_demo_acme_3,
// which must not be.
func TestStepUpDemoInvoices(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(stepUpData)
	if err != nil {
		t.Fatal(err)
	}
	var data struct {
		ApprovalStepUp struct {
			AmountCentsAbove *int64 `json:"amount_cents_above"`
		} `json:"approval_step_up"`
	}
	if err := json.Unmarshal(raw, &data); err != nil || data.ApprovalStepUp.AmountCentsAbove == nil {
		t.Fatalf("%s: no approval_step_up.amount_cents_above (%v)", stepUpData, err)
	}
	threshold := *data.ApprovalStepUp.AmountCentsAbove
	if threshold != 1_000_000 {
		t.Fatalf("threshold %d cents; the docs and the demo say 10,000.00 (1000000)", threshold)
	}
	above := map[string]bool{"inv_demo_acme_1": false, "inv_demo_acme_2": true, "inv_demo_acme_3": false}
	for _, inv := range demoseed.Invoices() {
		want, ok := above[inv.ID]
		if !ok {
			continue
		}
		delete(above, inv.ID)
		if got := inv.AmountCents > threshold; got != want || inv.Status != invoice.StatusDraft {
			t.Errorf("%s: %d cents (%s), above the threshold %v; want above %v and a draft", inv.ID, inv.AmountCents, inv.Status, got, want)
		}
	}
	if len(above) != 0 {
		t.Fatalf("demo invoices missing: %v", above)
	}
}
