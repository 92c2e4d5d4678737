package invoice_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/invoice/internal/invoice"
	"github.com/gatehouse/gatehouse/services/invoice/internal/store/memory"
)

var errDenied = errors.New("denied by test authorizer")

// recordingAuthorizer records every Check and denies the actions in deny.
type recordingAuthorizer struct {
	deny      map[string]bool
	hide      map[string]bool
	filterErr error

	mu     sync.Mutex
	checks []invoice.Check
}

func (a *recordingAuthorizer) Authorize(_ context.Context, c invoice.Check) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.checks = append(a.checks, c)
	if a.deny[c.Action] {
		return errDenied
	}
	return nil
}

// Filter permits every check Authorize would permit, and also denies the
// invoice ids in hide.
func (a *recordingAuthorizer) Filter(ctx context.Context, checks []invoice.Check) ([]bool, error) {
	out := make([]bool, len(checks))
	for i, c := range checks {
		out[i] = a.Authorize(ctx, c) == nil && !a.hide[c.Resource.ID]
	}
	return out, a.filterErr
}

func (a *recordingAuthorizer) recorded() []invoice.Check {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]invoice.Check(nil), a.checks...)
}

var (
	acmeBot     = invoice.Caller{Subject: "billing-bot", Tenant: "acme"}
	globexCarol = invoice.Caller{Subject: "carol", Tenant: "globex"}
)

func newService(t *testing.T, deny ...string) (*invoice.Service, *memory.Store, *recordingAuthorizer) {
	t.Helper()
	store := memory.New()
	authz := &recordingAuthorizer{deny: map[string]bool{}}
	for _, a := range deny {
		authz.deny[a] = true
	}
	return invoice.NewService(store, authz), store, authz
}

func TestServiceCreate(t *testing.T) {
	t.Parallel()
	svc, store, authz := newService(t)
	before := time.Now().Add(-time.Second)
	inv, err := svc.Create(t.Context(), acmeBot, invoice.Draft{Customer: "  Initech ", AmountCents: 120_000, Currency: "EUR"})
	if err != nil {
		t.Fatal(err)
	}
	if inv.Tenant != "acme" || inv.CreatedBy != "billing-bot" || inv.Customer != "Initech" || inv.Status != invoice.StatusDraft {
		t.Fatalf("Create = %+v; want tenant and creator from the caller, trimmed customer, draft", inv)
	}
	if inv.CreateTime.Location() != time.UTC || inv.CreateTime.Nanosecond()%1000 != 0 || inv.CreateTime.Before(before) {
		t.Fatalf("CreateTime = %v; want now, UTC, microsecond precision", inv.CreateTime)
	}
	stored, err := store.Get(t.Context(), "acme", inv.ID)
	if err != nil || stored != inv {
		t.Fatalf("stored = %+v, %v; want %+v", stored, err, inv)
	}
	want := []invoice.Check{{Action: invoice.ActionWrite, Resource: invoice.Resource{
		Type: "invoice", Tenant: "acme", Attributes: map[string]any{"amount_cents": int64(120_000), "currency": "EUR"},
	}}}
	if got := authz.recorded(); !reflect.DeepEqual(got, want) {
		t.Fatalf("checks = %+v, want %+v", got, want)
	}
}

func TestServiceDenialsTouchNothing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		call func(*invoice.Service) error
	}{
		{name: "create", call: func(s *invoice.Service) error {
			_, err := s.Create(t.Context(), acmeBot, invoice.Draft{Customer: "Initech", AmountCents: 1, Currency: "EUR"})
			return err
		}},
		{name: "get", call: func(s *invoice.Service) error {
			_, err := s.Get(t.Context(), acmeBot, "inv_seeded")
			return err
		}},
		{name: "get unknown", call: func(s *invoice.Service) error {
			_, err := s.Get(t.Context(), acmeBot, "inv_unknown")
			return err
		}},
		{name: "list", call: func(s *invoice.Service) error {
			_, err := s.List(t.Context(), acmeBot, 0, "")
			return err
		}},
		{name: "approve", call: func(s *invoice.Service) error {
			_, err := s.Approve(t.Context(), acmeBot, "inv_seeded")
			return err
		}},
		{name: "approve unknown", call: func(s *invoice.Service) error {
			_, err := s.Approve(t.Context(), acmeBot, "inv_unknown")
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			svc, store, _ := newService(t, invoice.ActionRead, invoice.ActionWrite, invoice.ActionApprove)
			seeded := invoice.Invoice{ID: "inv_seeded", Tenant: "acme", Customer: "Hooli", AmountCents: 1, Currency: "EUR",
				Status: invoice.StatusDraft, CreatedBy: "x", CreateTime: time.Unix(0, 0).UTC()}
			if err := store.Create(t.Context(), seeded); err != nil {
				t.Fatal(err)
			}
			if err := tc.call(svc); !errors.Is(err, errDenied) {
				t.Fatalf("err = %v, want the authorizer's denial", err)
			}
			all, err := store.List(t.Context(), "acme", nil, 10)
			if err != nil || len(all) != 1 || all[0] != seeded {
				t.Fatalf("store holds %+v (%v), want only the seeded invoice, unchanged", all, err)
			}
		})
	}
}

func TestServiceGetIsTenantScoped(t *testing.T) {
	t.Parallel()
	svc, _, authz := newService(t)
	inv, err := svc.Create(t.Context(), acmeBot, invoice.Draft{Customer: "Initech", AmountCents: 5, Currency: "EUR"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := svc.Get(t.Context(), acmeBot, inv.ID)
	if err != nil || got != inv {
		t.Fatalf("owner Get = %+v, %v", got, err)
	}
	if _, err := svc.Get(t.Context(), globexCarol, inv.ID); !errors.Is(err, invoice.ErrNotFound) {
		t.Fatalf("other tenant Get = %v, want ErrNotFound", err)
	}
	checks := authz.recorded()
	wantRead := invoice.Check{Action: invoice.ActionRead, Resource: invoice.Resource{
		Type: "invoice", ID: inv.ID, Tenant: "acme",
		Attributes: map[string]any{"amount_cents": int64(5), "created_by": "billing-bot", "status": "draft"},
	}}
	// The miss is answered after a collection-level check in the caller's
	// own tenant; acme's invoice never reaches globex's decision.
	wantMiss := invoice.Check{Action: invoice.ActionRead, Resource: invoice.Resource{Type: "invoice", Tenant: "globex"}}
	if len(checks) != 3 || !reflect.DeepEqual(checks[1], wantRead) || !reflect.DeepEqual(checks[2], wantMiss) {
		t.Fatalf("checks = %+v; want create, %+v, %+v", checks, wantRead, wantMiss)
	}
}

func TestServiceListPages(t *testing.T) {
	t.Parallel()
	svc, store, _ := newService(t)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const total = 105
	for i := range total {
		inv := invoice.Invoice{ID: fmt.Sprintf("inv_%03d", i), Tenant: "acme", Customer: "C", AmountCents: 1, Currency: "EUR",
			Status: invoice.StatusDraft, CreatedBy: "x", CreateTime: base.Add(time.Duration(i/2) * time.Second)} // pairs share a time
		if err := store.Create(t.Context(), inv); err != nil {
			t.Fatal(err)
		}
	}
	sizes := []struct {
		name      string
		requested int
		want      int
	}{
		{name: "zero means default", requested: 0, want: invoice.DefaultPageSize},
		{name: "above max is clamped", requested: 1000, want: invoice.MaxPageSize},
		{name: "explicit", requested: 7, want: 7},
	}
	for _, tc := range sizes {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			page, err := svc.List(t.Context(), acmeBot, tc.requested, "")
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Invoices) != tc.want || page.NextPageToken == "" {
				t.Fatalf("page of %d with token %q, want %d and a next token", len(page.Invoices), page.NextPageToken, tc.want)
			}
		})
	}
	t.Run("walk", func(t *testing.T) {
		t.Parallel()
		var ids []string
		token := ""
		for pages := 0; ; pages++ {
			if pages > total {
				t.Fatal("pagination does not end")
			}
			page, err := svc.List(t.Context(), acmeBot, 10, token)
			if err != nil {
				t.Fatal(err)
			}
			for _, inv := range page.Invoices {
				ids = append(ids, inv.ID)
			}
			if token = page.NextPageToken; token == "" {
				break
			}
		}
		if len(ids) != total {
			t.Fatalf("walked %d invoices, want %d", len(ids), total)
		}
		for i, id := range ids {
			if want := fmt.Sprintf("inv_%03d", i); id != want {
				t.Fatalf("position %d: %s, want %s", i, id, want)
			}
		}
	})
	t.Run("exact last page has no token", func(t *testing.T) {
		t.Parallel()
		page, err := svc.List(t.Context(), acmeBot, 5, invoice.EncodePageToken(invoice.Cursor{CreateTime: base.Add(49 * time.Second), ID: "inv_099"}))
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Invoices) != 5 || page.NextPageToken != "" || page.Invoices[0].ID != "inv_100" {
			t.Fatalf("got %d invoices from %v with token %q; want the last 5 and no token", len(page.Invoices), page.Invoices, page.NextPageToken)
		}
	})
	t.Run("other tenant sees none", func(t *testing.T) {
		t.Parallel()
		page, err := svc.List(t.Context(), globexCarol, 0, "")
		if err != nil || len(page.Invoices) != 0 {
			t.Fatalf("globex List = %d invoices, %v", len(page.Invoices), err)
		}
	})
	t.Run("invalid input asks nobody", func(t *testing.T) {
		t.Parallel()
		svc, _, authz := newService(t)
		for _, tc := range []struct {
			size  int
			token string
		}{{size: -1}, {token: "not-a-token"}} {
			if _, err := svc.List(t.Context(), acmeBot, tc.size, tc.token); !errors.Is(err, invoice.ErrInvalid) {
				t.Fatalf("List(%d, %q) = %v, want ErrInvalid", tc.size, tc.token, err)
			}
		}
		if n := len(authz.recorded()); n != 0 {
			t.Fatalf("authorizer asked %d times for invalid input", n)
		}
	})
}

func TestServiceRequiresCaller(t *testing.T) {
	t.Parallel()
	svc, _, authz := newService(t)
	for _, caller := range []invoice.Caller{{}, {Subject: "x"}, {Tenant: "acme"}} {
		if _, err := svc.List(t.Context(), caller, 0, ""); !errors.Is(err, invoice.ErrNoCaller) {
			t.Fatalf("List as %+v = %v, want ErrNoCaller", caller, err)
		}
		if _, err := svc.Get(t.Context(), caller, "inv_x"); !errors.Is(err, invoice.ErrNoCaller) {
			t.Fatalf("Get as %+v = %v, want ErrNoCaller", caller, err)
		}
		if _, err := svc.Create(t.Context(), caller, invoice.Draft{Customer: "C", AmountCents: 1, Currency: "EUR"}); !errors.Is(err, invoice.ErrNoCaller) {
			t.Fatalf("Create as %+v = %v, want ErrNoCaller", caller, err)
		}
		if _, err := svc.Approve(t.Context(), caller, "inv_x"); !errors.Is(err, invoice.ErrNoCaller) {
			t.Fatalf("Approve as %+v = %v, want ErrNoCaller", caller, err)
		}
	}
	if n := len(authz.recorded()); n != 0 {
		t.Fatalf("authorizer asked %d times without a caller", n)
	}
}

// TestServiceListFiltersEachInvoice: invoices the PDP does not permit are
// left out of the page, pagination still moves on, and a failed batch
// decision returns nothing.
func TestServiceListFiltersEachInvoice(t *testing.T) {
	t.Parallel()
	svc, _, authz := newService(t)
	var ids []string
	for range 3 {
		inv, err := svc.Create(t.Context(), acmeBot, invoice.Draft{Customer: "Initech", AmountCents: 100, Currency: "EUR"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, inv.ID)
	}
	authz.hide = map[string]bool{ids[1]: true}
	page, err := svc.List(t.Context(), acmeBot, 2, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Invoices) != 1 || page.Invoices[0].ID != ids[0] || page.NextPageToken == "" {
		t.Fatalf("first page %v (next %q): want only %s and a next page", page.Invoices, page.NextPageToken, ids[0])
	}
	next, err := svc.List(t.Context(), acmeBot, 2, page.NextPageToken)
	if err != nil || len(next.Invoices) != 1 || next.Invoices[0].ID != ids[2] {
		t.Fatalf("second page %v %v: want %s", next.Invoices, err, ids[2])
	}
	var perInvoice int
	for _, c := range authz.recorded() {
		if c.Resource.ID != "" {
			perInvoice++
			if c.Resource.Tenant != "acme" || c.Resource.Attributes["amount_cents"] != int64(100) {
				t.Fatalf("per-invoice check lacks tenant or attributes: %+v", c)
			}
		}
	}
	if perInvoice != 3 {
		t.Fatalf("%d per-invoice checks, want 3 (one per listed invoice)", perInvoice)
	}
	authz.filterErr = errDenied
	if p, err := svc.List(t.Context(), acmeBot, 0, ""); !errors.Is(err, errDenied) || len(p.Invoices) != 0 {
		t.Fatalf("failed batch: %v %v, want the error and no invoices", p.Invoices, err)
	}
}

var acmeAlice = invoice.Caller{Subject: "alice", Tenant: "acme"}

// TestServiceApprove: the PDP is asked invoice:approve with the invoice's
// amount and currency, and the invoice is approved once, by the caller.
func TestServiceApprove(t *testing.T) {
	t.Parallel()
	svc, store, authz := newService(t)
	draft, err := svc.Create(t.Context(), acmeBot, invoice.Draft{Customer: "Umbrella Corp", AmountCents: 2_500_000, Currency: "EUR"})
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Second)
	got, err := svc.Approve(t.Context(), acmeAlice, draft.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != invoice.StatusApproved || got.ApprovedBy != "alice" || got.ApproveTime.Before(before) ||
		got.ApproveTime.Location() != time.UTC || got.ApproveTime.Nanosecond()%1000 != 0 {
		t.Fatalf("Approve = %+v; want approved by alice, now, UTC, microsecond precision", got)
	}
	if stored, err := store.Get(t.Context(), "acme", draft.ID); err != nil || stored != got {
		t.Fatalf("stored = %+v, %v; want %+v", stored, err, got)
	}
	wantApprove := invoice.Check{Action: invoice.ActionApprove, Resource: invoice.Resource{
		Type: "invoice", ID: draft.ID, Tenant: "acme",
		Attributes: map[string]any{"amount_cents": int64(2_500_000), "currency": "EUR", "created_by": "billing-bot", "status": "draft"},
	}}
	if checks := authz.recorded(); len(checks) != 2 || !reflect.DeepEqual(checks[1], wantApprove) {
		t.Fatalf("checks = %+v; want create, then %+v", checks, wantApprove)
	}

	t.Run("once", func(t *testing.T) {
		_, err := svc.Approve(t.Context(), acmeAlice, draft.ID)
		if !errors.Is(err, invoice.ErrAlreadyApproved) {
			t.Fatalf("second Approve = %v, want ErrAlreadyApproved", err)
		}
		// Asked before the state is told: status "approved" this time.
		last := authz.recorded()[len(authz.recorded())-1]
		if last.Action != invoice.ActionApprove || last.Resource.Attributes["status"] != "approved" {
			t.Fatalf("last check %+v, want invoice:approve of the approved invoice", last)
		}
		if stored, _ := store.Get(t.Context(), "acme", draft.ID); stored != got {
			t.Fatalf("stored = %+v; the first approval must stand", stored)
		}
	})
	t.Run("state told only to who may approve", func(t *testing.T) {
		svc := invoice.NewService(store, &recordingAuthorizer{deny: map[string]bool{invoice.ActionApprove: true}})
		if _, err := svc.Approve(t.Context(), acmeAlice, draft.ID); !errors.Is(err, errDenied) {
			t.Fatalf("denied Approve of an approved invoice = %v, want the denial", err)
		}
	})
	t.Run("other tenant", func(t *testing.T) {
		n := len(authz.recorded())
		if _, err := svc.Approve(t.Context(), globexCarol, draft.ID); !errors.Is(err, invoice.ErrNotFound) {
			t.Fatalf("globex Approve = %v, want ErrNotFound", err)
		}
		wantMiss := invoice.Check{Action: invoice.ActionRead, Resource: invoice.Resource{Type: "invoice", Tenant: "globex"}}
		if checks := authz.recorded()[n:]; len(checks) != 1 || !reflect.DeepEqual(checks[0], wantMiss) {
			t.Fatalf("checks = %+v; want only %+v", checks, wantMiss)
		}
	})
	t.Run("malformed id asks nobody", func(t *testing.T) {
		n := len(authz.recorded())
		if _, err := svc.Approve(t.Context(), acmeAlice, "../inv"); !errors.Is(err, invoice.ErrInvalid) {
			t.Fatalf("Approve malformed id = %v, want ErrInvalid", err)
		}
		if len(authz.recorded()) != n {
			t.Fatal("the authorizer was asked about a malformed id")
		}
	})
}
