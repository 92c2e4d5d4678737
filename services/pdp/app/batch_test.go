package app_test

import (
	"testing"

	"connectrpc.com/connect"

	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
	"github.com/gatehouse/gatehouse/services/pdp/internal/decisionrpc"
)

// TestBatchCheckHasCheckSemantics decides a mixed batch with the real
// policies: every result sits at its item's index, equals what Check says
// for that item, duplicates get their own decision ids, and a bad item is an
// INDETERMINATE result, not an error for the batch.
func TestBatchCheckHasCheckSemantics(t *testing.T) {
	t.Parallel()
	srv, _ := startPDP(t)
	client := authzv1connect.NewDecisionServiceClient(srv.Client(), srv.URL)
	items := []*authzv1.CheckRequest{
		check(reportingJob(), "invoice:read", invoice("acme")),         // allow
		check(reportingJob(), "invoice:read", invoice("globex")),       // tenant_mismatch
		check(reportingJob(), "invoice:read", invoice("acme")),         // duplicate of 0
		check(bob(), "invoice:write", invoice("acme")),                 // role_not_permitted
		{Action: "invoice:read"},                                       // missing_attribute
		check(bob(), "ledger:read", &authzv1.Resource{Type: "ledger"}), // not applicable
	}
	resp, err := client.BatchCheck(t.Context(), connect.NewRequest(&authzv1.BatchCheckRequest{Items: items}))
	if err != nil {
		t.Fatal(err)
	}
	results := resp.Msg.GetResults()
	if len(results) != len(items) {
		t.Fatalf("%d results for %d items", len(results), len(items))
	}
	ids := map[string]bool{}
	for i, item := range items {
		single, err := client.Check(t.Context(), connect.NewRequest(item))
		if err != nil {
			t.Fatal(err)
		}
		got, want := results[i], single.Msg
		if got.GetDecision() != want.GetDecision() || got.GetReasonCode() != want.GetReasonCode() || got.GetPolicyVersion() != want.GetPolicyVersion() {
			t.Errorf("item %d: batch says %v/%s, Check says %v/%s", i, got.GetDecision(), got.GetReasonCode(), want.GetDecision(), want.GetReasonCode())
		}
		if ids[got.GetDecisionId()] || !decisionID.MatchString(got.GetDecisionId()) {
			t.Errorf("item %d: decision id %q missing or reused", i, got.GetDecisionId())
		}
		ids[got.GetDecisionId()] = true
	}
	wantReasons := []string{reason.Allowed, reason.TenantMismatch, reason.Allowed, reason.RoleNotPermitted, reason.MissingAttribute, reason.NoApplicablePolicy}
	for i, w := range wantReasons {
		if results[i].GetReasonCode() != w {
			t.Errorf("item %d: reason %q, want %q", i, results[i].GetReasonCode(), w)
		}
	}
}

func TestBatchCheckRefusesOversizeBatchWhole(t *testing.T) {
	t.Parallel()
	srv, _ := startPDP(t)
	client := authzv1connect.NewDecisionServiceClient(srv.Client(), srv.URL)
	items := make([]*authzv1.CheckRequest, decisionrpc.MaxBatchItems+1)
	for i := range items {
		items[i] = check(reportingJob(), "invoice:read", invoice("acme"))
	}
	_, err := client.BatchCheck(t.Context(), connect.NewRequest(&authzv1.BatchCheckRequest{Items: items}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || enforce.ReasonOf(err) != reason.BatchTooLarge {
		t.Fatalf("got %v, want invalid_argument batch_too_large", err)
	}
	resp, err := client.BatchCheck(t.Context(), connect.NewRequest(&authzv1.BatchCheckRequest{Items: items[:decisionrpc.MaxBatchItems]}))
	if err != nil || len(resp.Msg.GetResults()) != decisionrpc.MaxBatchItems {
		t.Fatalf("a batch of exactly %d: %v", decisionrpc.MaxBatchItems, err)
	}
	empty, err := client.BatchCheck(t.Context(), connect.NewRequest(&authzv1.BatchCheckRequest{}))
	if err != nil || len(empty.Msg.GetResults()) != 0 {
		t.Fatalf("empty batch: %v %v", empty, err)
	}
}
