package app_test

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/libs/audit"
	auditpostgres "github.com/gatehouse/gatehouse/libs/audit/postgres"
	"github.com/gatehouse/gatehouse/libs/postgres/pgtest"
	"github.com/gatehouse/gatehouse/libs/telemetry"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
	"github.com/gatehouse/gatehouse/services/pdp/app"
)

var server *pgtest.Server

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &server)) }

// TestDecisionLogLosesNothingOnShutdown: with Postgres and a queue far
// smaller than the traffic (so deciding waits on the writer), every
// decision is in the chain after Close, with its id, and the chain
// verifies; the first activation of the policy is audited too.
func TestDecisionLogLosesNothingOnShutdown(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dsn := server.NewDatabase(t)
	cfg := testConfig()
	cfg.Store, cfg.DatabaseURL = app.StorePostgres, dsn
	cfg.DecisionLogQueue = 8
	a, err := app.New(ctx, cfg, telemetry.NewLogger(io.Discard, app.ServiceName, slog.LevelInfo))
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	srv := httptest.NewServer(a.Handler())
	client := authzv1connect.NewDecisionServiceClient(srv.Client(), srv.URL)

	want := map[string]string{} // decision id -> decision
	for range 3 {
		items := make([]*authzv1.CheckRequest, 100)
		for i := range items {
			items[i] = check(bob(), "invoice:read", invoice("acme"))
		}
		resp, err := client.BatchCheck(ctx, connect.NewRequest(&authzv1.BatchCheckRequest{Items: items}))
		if err != nil {
			t.Fatalf("BatchCheck: %v", err)
		}
		for _, r := range resp.Msg.GetResults() {
			want[r.GetDecisionId()] = strings.TrimPrefix(r.GetDecision().String(), "DECISION_")
		}
	}
	resp, err := client.Check(ctx, connect.NewRequest(check(bob(), "invoice:write", invoice("globex"))))
	if err != nil {
		t.Fatal(err)
	}
	want[resp.Msg.GetDecisionId()] = "DENY"
	srv.Close()
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	pool, err := pgxpool.New(context.WithoutCancel(ctx), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store := auditpostgres.New(pool)
	decisions, err := store.List(ctx, audit.Query{Type: audit.TypeDecision, Limit: audit.MaxListLimit})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range decisions {
		got[e.EventID] = e.Decision
		if e.PolicyVersion != manifestRevision(t) || e.Subject != "bob" || e.Action == "" {
			t.Errorf("event %s: %+v", e.EventID, e)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d decisions in the log, want %d", len(got), len(want))
	}
	for id, d := range want {
		if got[id] != d {
			t.Errorf("decision %s logged as %q, want %q", id, got[id], d)
		}
	}
	changes, err := store.List(ctx, audit.Query{Type: audit.TypePolicyChanged})
	if err != nil || len(changes) != 1 || changes[0].Action != "policy:init" || changes[0].PolicyVersion != manifestRevision(t) {
		t.Errorf("policy changes = %+v, %v; want the init", changes, err)
	}
	report, err := audit.Verify(ctx, store)
	if err != nil {
		t.Fatalf("Verify: %v (%+v)", err, report)
	}
}

// TestRestartKeepsTheSharedState: a second PDP on the same database (a
// replica, or this one restarted) serves the stored state and adds no
// second init.
func TestRestartKeepsTheSharedState(t *testing.T) {
	t.Parallel()
	dsn := server.NewDatabase(t)
	cfg := testConfig()
	cfg.Store, cfg.DatabaseURL = app.StorePostgres, dsn
	for range 2 {
		a, err := app.New(t.Context(), cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatalf("app.New: %v", err)
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
	}
	pool, err := pgxpool.New(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var generation int64
	if err := pool.QueryRow(t.Context(), `SELECT generation FROM policy_rollout`).Scan(&generation); err != nil || generation != 1 {
		t.Errorf("generation = %d, %v; want 1", generation, err)
	}
}
