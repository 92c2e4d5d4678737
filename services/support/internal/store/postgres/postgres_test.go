package postgres_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	libpostgres "github.com/gatehouse/gatehouse/libs/postgres"
	"github.com/gatehouse/gatehouse/libs/postgres/pgtest"
	supportv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/support/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/support/v1/supportv1connect"
	"github.com/gatehouse/gatehouse/services/support/app"
	"github.com/gatehouse/gatehouse/services/support/internal/store/postgres"
	"github.com/gatehouse/gatehouse/services/support/internal/store/storetest"
	"github.com/gatehouse/gatehouse/services/support/internal/support"
	"github.com/gatehouse/gatehouse/services/support/internal/supporttest"
)

// server is the one Postgres container of this package's tests; TestMain
// sets it once before any test runs and only reads it afterwards.
var server *pgtest.Server

// TestMain starts the container; without Docker or the image
// (GATEHOUSE_POSTGRES_IMAGE) the package fails, never skips.
func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m, &server))
}

func newStore(t *testing.T) support.Store {
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

// TestSchemaRejectsInvalidRows: the tables' constraints hold even against
// a caller that skipped the domain's validation.
func TestSchemaRejectsInvalidRows(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	valid := support.Ticket{ID: "tkt_ok", Tenant: "acme", Customer: "bob", Summary: "Help", Status: support.StatusOpen,
		Access: support.AccessRead, CreateTime: at}
	if err := s.CreateTicket(t.Context(), valid); err != nil {
		t.Fatalf("valid ticket: %v", err)
	}
	tickets := []struct {
		name   string
		mutate func(*support.Ticket)
	}{
		{name: "empty tenant", mutate: func(tk *support.Ticket) { tk.Tenant = "" }},
		{name: "empty customer", mutate: func(tk *support.Ticket) { tk.Customer = "" }},
		{name: "empty summary", mutate: func(tk *support.Ticket) { tk.Summary = "" }},
		{name: "summary too long", mutate: func(tk *support.Ticket) { tk.Summary = strings.Repeat("x", 501) }},
		{name: "unknown status", mutate: func(tk *support.Ticket) { tk.Status = "pending" }},
		{name: "unknown access", mutate: func(tk *support.Ticket) { tk.Access = "admin" }},
		{name: "closed without closer", mutate: func(tk *support.Ticket) { tk.Status, tk.CloseTime = support.StatusClosed, at }},
		{name: "closed without time", mutate: func(tk *support.Ticket) { tk.Status, tk.ClosedBy = support.StatusClosed, "bob" }},
		{name: "open with closer", mutate: func(tk *support.Ticket) { tk.ClosedBy, tk.CloseTime = "bob", at }},
	}
	for n, tc := range tickets {
		t.Run("ticket "+tc.name, func(t *testing.T) {
			t.Parallel()
			tk := valid
			tk.ID = fmt.Sprintf("tkt_bad_%d", n)
			tc.mutate(&tk)
			if err := s.CreateTicket(t.Context(), tk); err == nil || errors.Is(err, support.ErrDuplicateID) {
				t.Fatalf("CreateTicket = %v, want a constraint violation", err)
			}
		})
	}
	validSession := support.Session{ID: "imp_ok", TicketID: valid.ID, Tenant: "acme", Customer: "bob", Agent: "sam", JTI: "j",
		Scopes: []string{"invoice:read"}, StartTime: at, ExpireTime: at.Add(time.Minute)}
	sessions := []struct {
		name   string
		mutate func(*support.Session)
	}{
		{name: "empty jti", mutate: func(s *support.Session) { s.JTI = "" }},
		{name: "empty agent", mutate: func(s *support.Session) { s.Agent = "" }},
		{name: "expires before it starts", mutate: func(s *support.Session) { s.ExpireTime = at }},
		{name: "ends before it starts", mutate: func(s *support.Session) { s.EndTime = at.Add(-time.Second) }},
	}
	for n, tc := range sessions {
		t.Run("session "+tc.name, func(t *testing.T) {
			t.Parallel()
			sess := validSession
			sess.ID = fmt.Sprintf("imp_bad_%d", n)
			tc.mutate(&sess)
			if err := s.CreateSession(t.Context(), sess); err == nil || errors.Is(err, support.ErrDuplicateID) {
				t.Fatalf("CreateSession = %v, want a constraint violation", err)
			}
		})
	}
}

// TestAppOnPostgres starts the whole service on Postgres twice, as a
// restart would: migrations and the demo seed are idempotent, /readyz sees
// the store, and a session started before the restart can be ended but no
// longer used (its token was in the first process's memory only).
func TestAppOnPostgres(t *testing.T) {
	t.Parallel()
	dsn := server.NewDatabase(t)
	iss := supporttest.NewIssuer(t)
	pdp := supporttest.NewPDP(t)
	inv := supporttest.NewInvoices(t, iss)
	cfg := app.Config{
		Store: app.StorePostgres, DatabaseURL: dsn, Issuer: iss.Keys.URL, IssuerURL: iss.URL, JWKSURL: iss.Keys.JWKSURL(),
		PDPURL: pdp.URL, PDPTimeout: 5 * time.Second, InvoiceURL: inv.URL, RequireGatewayHeaders: true, Demo: true,
	}
	start := func() (supportv1connect.SupportServiceClient, func()) {
		a, err := app.New(t.Context(), cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatalf("start: %v", err)
		}
		srv := httptest.NewServer(a.Handler())
		rec := httptest.NewRecorder()
		a.Handler().ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/readyz", nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("/readyz %d %s", rec.Code, rec.Body)
		}
		return supportv1connect.NewSupportServiceClient(srv.Client(), srv.URL), func() {
			srv.Close()
			if err := a.Close(); err != nil {
				t.Error(err)
			}
		}
	}
	samHeaders := func() http.Header {
		return http.Header{
			"Authorization":        {"Bearer " + iss.Mint(t, supporttest.Sam, nil)},
			enforce.HeaderSubject:  {"sam"},
			enforce.HeaderTenant:   {"acme"},
			enforce.HeaderClientID: {"support-console"},
		}
	}
	call := func(msg *supportv1.GetCustomerOverviewRequest) *connect.Request[supportv1.GetCustomerOverviewRequest] {
		req := connect.NewRequest(msg)
		for k, v := range samHeaders() {
			req.Header()[k] = v
		}
		return req
	}

	client, stop := start()
	req := connect.NewRequest(&supportv1.StartImpersonationRequest{TicketId: "tkt_demo_acme_1"})
	for k, v := range samHeaders() {
		req.Header()[k] = v
	}
	started, err := client.StartImpersonation(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	id := started.Msg.GetSession().GetId()
	if _, err := client.GetCustomerOverview(t.Context(), call(&supportv1.GetCustomerOverviewRequest{SessionId: id})); err != nil {
		t.Fatalf("overview before the restart: %v", err)
	}
	stop()

	client, stop = start() // the restart
	defer stop()
	_, err = client.GetCustomerOverview(t.Context(), call(&supportv1.GetCustomerOverviewRequest{SessionId: id}))
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeFailedPrecondition || enforce.ReasonOf(err) != reason.NotImpersonating {
		t.Fatalf("overview after the restart = %v, want failed_precondition not_impersonating", err)
	}
	endReq := connect.NewRequest(&supportv1.EndImpersonationRequest{SessionId: id})
	for k, v := range samHeaders() {
		endReq.Header()[k] = v
	}
	ended, err := client.EndImpersonation(t.Context(), endReq)
	if err != nil || ended.Msg.GetSession().GetEndTime() == nil {
		t.Fatalf("end after the restart = %v, %v; want the session marked ended", ended, err)
	}
	if got := iss.Revocations(); len(got) != 0 {
		t.Fatalf("%d revocations: the restarted service holds no token to revoke", len(got))
	}

	pool, err := libpostgres.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	tickets, err := postgres.New(pool).ListTickets(t.Context(), support.TicketFilter{Tenant: "acme"}, nil, 100)
	if err != nil || len(tickets) != 1 || tickets[0].ID != "tkt_demo_acme_1" {
		t.Fatalf("acme after two seeded starts: %d tickets (%v)", len(tickets), err)
	}
	var jti, row string
	if err := pool.QueryRow(t.Context(), `SELECT jti, row_to_json(s)::text FROM impersonation_sessions s WHERE id = $1`, id).Scan(&jti, &row); err != nil {
		t.Fatal(err)
	}
	claims, err := iss.Verify(t.Context(), started.Msg.GetAccessToken())
	if err != nil || jti != claims.ID {
		t.Fatalf("stored jti %q, want the token's %q (%v)", jti, claims.ID, err)
	}
	if strings.Contains(row, "eyJ") {
		t.Fatalf("the session row holds a token: %s", row)
	}
}
