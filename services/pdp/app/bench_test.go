package app_test

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"

	"connectrpc.com/connect"

	"github.com/gatehouse/gatehouse/libs/telemetry"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
	"github.com/gatehouse/gatehouse/services/pdp/app"
	"github.com/gatehouse/gatehouse/services/pdp/internal/decisionrpc"
)

// The benchmarks run the PDP in process on the memory store, served over
// loopback HTTP/1.1 and called with the Connect protocol (binary proto),
// each once with the default decision cache and once without it, so the
// difference is what the cache buys. scripts/bench-pdp.sh runs the
// loopback load comparison with OPA; docs/benchmarks.md has both.

// cacheModes are the decision cache settings every benchmark runs with.
var cacheModes = []struct {
	name string
	size int
}{
	{"cache", app.DefaultCacheSize},
	{"nocache", 0},
}

// benchClient serves a memory-store PDP with cacheSize over loopback
// HTTP/1.1 for the benchmark and returns a client with the generated
// client's defaults (as the gateway's).
func benchClient(b *testing.B, cacheSize int) authzv1connect.DecisionServiceClient {
	b.Helper()
	cfg := testConfig()
	cfg.CacheSize = cacheSize
	a, err := app.New(b.Context(), cfg, telemetry.NewLogger(io.Discard, app.ServiceName, slog.LevelInfo))
	if err != nil {
		b.Fatalf("app.New: %v", err)
	}
	b.Cleanup(func() {
		if err := a.Close(); err != nil {
			b.Errorf("Close: %v", err)
		}
	})
	srv := httptest.NewServer(a.Handler())
	b.Cleanup(srv.Close)
	return authzv1connect.NewDecisionServiceClient(srv.Client(), srv.URL)
}

// BenchmarkCheck measures the hot path end to end: an allowed Check over
// HTTP/1.1 with the Connect protocol, through the otel interceptor,
// validation, the decision cache (a hit every time, in the cache variant)
// or Rego evaluation, and decision logging.
func BenchmarkCheck(b *testing.B) {
	for _, cm := range cacheModes {
		b.Run(cm.name, func(b *testing.B) {
			client := benchClient(b, cm.size)
			req := connect.NewRequest(check(bob(), "invoice:read", invoice("acme")))
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.Check(b.Context(), req)
				if err != nil || resp.Msg.GetDecision() != authzv1.Decision_DECISION_ALLOW {
					b.Fatalf("Check = %v, %v; want ALLOW", resp, err)
				}
			}
		})
	}
}

// benchItems returns the 100 questions BenchmarkBatchCheck100 and
// BenchmarkCheck100Singles ask: the demo principals reading, writing and
// approving invoices of their own and other tenants, and asking about a
// type no policy covers; allows, each kind of deny and not_applicable.
func benchItems() []*authzv1.CheckRequest {
	principals := []func() *authzv1.Principal{reportingJob, bob, carol}
	actions := []string{"invoice:read", "invoice:write", "invoice:approve"}
	tenants := []string{"acme", "globex"}
	items := make([]*authzv1.CheckRequest, 0, decisionrpc.MaxBatchItems)
	for i := 0; len(items) < decisionrpc.MaxBatchItems; i++ {
		p := principals[i%len(principals)]()
		action := actions[(i/len(principals))%len(actions)]
		r := invoice(tenants[(i/(len(principals)*len(actions)))%len(tenants)])
		r.Id = "inv-" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		if i%10 == 9 {
			action, r = "ledger:read", &authzv1.Resource{Type: "ledger"}
		}
		items = append(items, check(p, action, r))
	}
	return items
}

// expectedDecisions asks each item once with Check: the answers the
// benchmarks must keep getting.
func expectedDecisions(b *testing.B, client authzv1connect.DecisionServiceClient, items []*authzv1.CheckRequest) []authzv1.Decision {
	b.Helper()
	want := make([]authzv1.Decision, len(items))
	seen := map[authzv1.Decision]bool{}
	for i, item := range items {
		resp, err := client.Check(b.Context(), connect.NewRequest(item))
		if err != nil {
			b.Fatalf("Check: %v", err)
		}
		want[i] = resp.Msg.GetDecision()
		seen[want[i]] = true
	}
	if seen[authzv1.Decision_DECISION_INDETERMINATE] || len(seen) != 3 {
		b.Fatalf("the items decide %v; want allow, deny and not_applicable and nothing indeterminate", seen)
	}
	return want
}

// BenchmarkBatchCheck100 decides 100 items with one BatchCheck per
// iteration; compare ns/decision with BenchmarkCheck100Singles.
func BenchmarkBatchCheck100(b *testing.B) {
	for _, cm := range cacheModes {
		b.Run(cm.name, func(b *testing.B) {
			client := benchClient(b, cm.size)
			items := benchItems()
			want := expectedDecisions(b, client, items)
			req := connect.NewRequest(&authzv1.BatchCheckRequest{Items: items})
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.BatchCheck(b.Context(), req)
				if err != nil {
					b.Fatalf("BatchCheck: %v", err)
				}
				for i, r := range resp.Msg.GetResults() {
					if r.GetDecision() != want[i] {
						b.Fatalf("item %d: %v, want %v", i, r.GetDecision(), want[i])
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(items)), "ns/decision")
		})
	}
}

// BenchmarkCheck100Singles decides the same 100 items as
// BenchmarkBatchCheck100 with 100 sequential Checks per iteration.
func BenchmarkCheck100Singles(b *testing.B) {
	for _, cm := range cacheModes {
		b.Run(cm.name, func(b *testing.B) {
			client := benchClient(b, cm.size)
			items := benchItems()
			want := expectedDecisions(b, client, items)
			reqs := make([]*connect.Request[authzv1.CheckRequest], len(items))
			for i, item := range items {
				reqs[i] = connect.NewRequest(item)
			}
			b.ReportAllocs()
			for b.Loop() {
				for i, req := range reqs {
					resp, err := client.Check(b.Context(), req)
					if err != nil {
						b.Fatalf("Check: %v", err)
					}
					if resp.Msg.GetDecision() != want[i] {
						b.Fatalf("item %d: %v, want %v", i, resp.Msg.GetDecision(), want[i])
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(items)), "ns/decision")
		})
	}
}
