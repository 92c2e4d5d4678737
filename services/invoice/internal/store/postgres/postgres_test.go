package postgres_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/libs/accesstoken/accesstokentest"
	libpostgres "github.com/gatehouse/gatehouse/libs/postgres"
	"github.com/gatehouse/gatehouse/libs/postgres/pgtest"
	"github.com/gatehouse/gatehouse/services/invoice/app"
	"github.com/gatehouse/gatehouse/services/invoice/internal/invoice"
	"github.com/gatehouse/gatehouse/services/invoice/internal/store/postgres"
	"github.com/gatehouse/gatehouse/services/invoice/internal/store/storetest"
)

// server is the one Postgres container of this package's tests; TestMain
// sets it once before any test runs and only reads it afterwards.
var server *pgtest.Server

// TestMain starts the container; without Docker or the image
// (GATEHOUSE_POSTGRES_IMAGE) the package fails, never skips.
func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m, &server))
}

func newStore(t *testing.T) invoice.Store {
	t.Helper()
	pool, err := libpostgres.Open(t.Context(), server.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := postgres.Migrate(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	return postgres.New(pool)
}

func TestContract(t *testing.T) {
	t.Parallel()
	storetest.Run(t, newStore)
}

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	pool, err := libpostgres.Open(t.Context(), server.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	for i := range 2 {
		if err := postgres.Migrate(t.Context(), pool); err != nil {
			t.Fatalf("migrate run %d: %v", i+1, err)
		}
	}
}

// TestSchemaRejectsInvalidRows: the table's constraints hold even against a
// caller that skipped the domain's validation.
func TestSchemaRejectsInvalidRows(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	valid := invoice.Invoice{ID: "inv_ok", Tenant: "acme", Customer: "Initech", AmountCents: 1, Currency: "EUR",
		Status: invoice.StatusDraft, CreatedBy: "billing-bot", CreateTime: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	if err := s.Create(t.Context(), valid); err != nil {
		t.Fatalf("valid row: %v", err)
	}
	tests := []struct {
		name   string
		mutate func(*invoice.Invoice)
	}{
		{name: "zero amount", mutate: func(i *invoice.Invoice) { i.AmountCents = 0 }},
		{name: "negative amount", mutate: func(i *invoice.Invoice) { i.AmountCents = -1 }},
		{name: "lower-case currency", mutate: func(i *invoice.Invoice) { i.Currency = "eur" }},
		{name: "long currency", mutate: func(i *invoice.Invoice) { i.Currency = "EURO" }},
		{name: "unknown status", mutate: func(i *invoice.Invoice) { i.Status = "paid" }},
		{name: "empty tenant", mutate: func(i *invoice.Invoice) { i.Tenant = "" }},
		{name: "empty creator", mutate: func(i *invoice.Invoice) { i.CreatedBy = "" }},
		{name: "approved without approver", mutate: func(i *invoice.Invoice) { i.Status = invoice.StatusApproved }},
		{name: "approved without approve time", mutate: func(i *invoice.Invoice) { i.Status, i.ApprovedBy = invoice.StatusApproved, "alice" }},
		{name: "draft with approver", mutate: func(i *invoice.Invoice) { i.ApprovedBy, i.ApproveTime = "alice", i.CreateTime }},
		{name: "draft with approve time", mutate: func(i *invoice.Invoice) { i.ApproveTime = i.CreateTime }},
	}
	for n, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			inv := valid
			inv.ID = fmt.Sprintf("inv_bad_%d", n)
			tc.mutate(&inv)
			err := s.Create(t.Context(), inv)
			if err == nil || errors.Is(err, invoice.ErrDuplicateID) {
				t.Fatalf("Create = %v, want a constraint violation", err)
			}
		})
	}
}

// TestAppStartsOnPostgres starts the whole service on Postgres twice (as a
// restart would): migrations and the demo seed must both be idempotent, and
// /readyz must see the store.
func TestAppStartsOnPostgres(t *testing.T) {
	t.Parallel()
	dsn := server.NewDatabase(t)
	iss := accesstokentest.NewIssuer(t)
	cfg := app.Config{Store: app.StorePostgres, DatabaseURL: dsn, Issuer: iss.URL, JWKSURL: iss.JWKSURL(),
		PDPURL: "http://127.0.0.1:1", RequireGatewayHeaders: true, Demo: true}
	for i := range 2 {
		a, err := app.New(t.Context(), cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatalf("start %d: %v", i+1, err)
		}
		rec := httptest.NewRecorder()
		a.Handler().ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/readyz", nil))
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		if rec.Code != http.StatusOK {
			t.Fatalf("start %d: /readyz %d %s", i+1, rec.Code, rec.Body)
		}
	}
	pool, err := libpostgres.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	invs, err := postgres.New(pool).List(t.Context(), "acme", nil, 100)
	if err != nil || len(invs) != 3 || invs[0].ID != "inv_demo_acme_1" {
		t.Fatalf("acme after two seeded starts: %d invoices (%v)", len(invs), err)
	}
}
