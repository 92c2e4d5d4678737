// Package demoseed holds the support service's part of the demo seed
// (DESIGN.md, "Demo seed"), which tutorials, e2e suites and outside checks
// rely on: keep it stable. It is used only with -demo.
package demoseed

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gatehouse/gatehouse/services/support/internal/support"
)

// The demo clients' secrets, as the issuer's demo seed registers them. The
// service falls back to them only with -demo; nothing else ships a default
// secret.
const (
	ConsoleClientSecret = "support-console-secret"
	ExportClientSecret  = "support-export-secret"
)

// TicketID is the demo ticket: bob (acme, billing_viewer) asks for help
// with read access, so sam (acme, support_agent) can impersonate him.
const TicketID = "tkt_demo_acme_1"

// Tickets returns the demo tickets. Their ids and create times are fixed,
// so seeding is idempotent and listings come out in a known order.
func Tickets() []support.Ticket {
	return []support.Ticket{{
		ID:         TicketID,
		Tenant:     "acme",
		Customer:   "bob",
		Summary:    "I cannot find the Umbrella Corp invoice in my list: can you check my account?",
		Status:     support.StatusOpen,
		Access:     support.AccessRead,
		CreateTime: time.Date(2026, 1, 10, 9, 0, 0, 0, time.UTC),
	}}
}

// Seed stores the demo tickets; those already present are left as they
// are (a demo ticket closed in a persistent store stays closed), so
// running it at every start is safe.
func Seed(ctx context.Context, store support.Store) error {
	for _, t := range Tickets() {
		_, err := store.GetTicket(ctx, t.Tenant, t.ID)
		if err == nil {
			continue
		}
		if !errors.Is(err, support.ErrTicketNotFound) {
			return fmt.Errorf("seed demo ticket %s: %w", t.ID, err)
		}
		if err := store.CreateTicket(ctx, t); err != nil && !errors.Is(err, support.ErrDuplicateID) {
			return fmt.Errorf("seed demo ticket %s: %w", t.ID, err)
		}
	}
	return nil
}
