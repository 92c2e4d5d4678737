// Package demoseed holds the demo invoices that tutorials, e2e suites and
// outside checks rely on (DESIGN.md, "Demo seed"). Keep them stable.
package demoseed

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gatehouse/gatehouse/services/invoice/internal/invoice"
)

// Invoices returns the demo invoices, all drafts. Their ids and create times
// are fixed, so seeding is idempotent and listings come out in a known
// order. For the step-up demo (docs/step-up.md), inv_demo_acme_2 (25,000.00
// EUR) is above the approval threshold of 10,000.00, so approving it needs
// a recent MFA sign-in; inv_demo_acme_1 (1,200.00 EUR) and inv_demo_acme_3
// (480.50 EUR) are below it. An approval lasts: seeding never resets a
// status, so a demo or test that approves one needs a fresh store (or
// creates its own invoices).
func Invoices() []invoice.Invoice {
	at := func(day int) time.Time { return time.Date(2026, 1, day, 9, 0, 0, 0, time.UTC) }
	return []invoice.Invoice{
		{ID: "inv_demo_acme_1", Tenant: "acme", Customer: "Initech", AmountCents: 120_000, Currency: "EUR",
			Status: invoice.StatusDraft, CreatedBy: "billing-bot", CreateTime: at(5)},
		// Above the approval step-up threshold (10,000.00).
		{ID: "inv_demo_acme_2", Tenant: "acme", Customer: "Umbrella Corp", AmountCents: 2_500_000, Currency: "EUR",
			Status: invoice.StatusDraft, CreatedBy: "billing-bot", CreateTime: at(6)},
		{ID: "inv_demo_acme_3", Tenant: "acme", Customer: "Hooli", AmountCents: 48_050, Currency: "EUR",
			Status: invoice.StatusDraft, CreatedBy: "billing-bot", CreateTime: at(7)},
		{ID: "inv_demo_globex_1", Tenant: "globex", Customer: "Soylent", AmountCents: 990_000, Currency: "USD",
			Status: invoice.StatusDraft, CreatedBy: "carol", CreateTime: at(5)},
	}
}

// Seed stores the demo invoices; those already present are left as they
// are, so running it at every start is safe.
func Seed(ctx context.Context, store invoice.Store) error {
	for _, inv := range Invoices() {
		// Look first, so a restart does not make Postgres log a duplicate-key
		// error per invoice; a replica seeding at the same moment is still
		// fine (ErrDuplicateID).
		_, err := store.Get(ctx, inv.Tenant, inv.ID)
		if err == nil {
			continue
		}
		if !errors.Is(err, invoice.ErrNotFound) {
			return fmt.Errorf("seed demo invoice %s: %w", inv.ID, err)
		}
		if err := store.Create(ctx, inv); err != nil && !errors.Is(err, invoice.ErrDuplicateID) {
			return fmt.Errorf("seed demo invoice %s: %w", inv.ID, err)
		}
	}
	return nil
}
