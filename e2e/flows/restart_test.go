package flows

import (
	"bytes"
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
)

// postgresRetryLog is what libs/postgres logs each time a service's first
// connection finds Postgres not (yet) reachable and it tries again.
var postgresRetryLog = []byte(`"msg":"postgres not ready, retrying"`)

// TestRestartsKeepInvoicesAndWaitForPostgres stops Postgres and the invoice
// service, then starts the invoice service first: it must wait for Postgres
// (retrying, not exiting), and serve the invoice created before the restart.
// The issuer, whose database went away under it, must issue tokens again.
func TestRestartsKeepInvoicesAndWaitForPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	tok := token(t, "billing-bot", "billing-bot-secret", "invoice:read", "invoice:write")
	created, err := invoices(tok).CreateInvoice(ctx, connect.NewRequest(&invoicev1.CreateInvoiceRequest{Customer: "Restart Corp", AmountCents: 1999, Currency: "EUR"}))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	want := created.Msg.GetInvoice()
	logs, err := gh.ServiceLogs(ctx, "invoice")
	if err != nil {
		t.Fatal(err)
	}
	retriesBefore := bytes.Count(logs, postgresRetryLog)

	for _, name := range []string{"invoice", "postgres"} {
		if err := gh.Stop(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	restored := false
	t.Cleanup(func() {
		if !restored { // leave a running stack to the tests that follow
			for _, name := range []string{"postgres", "invoice"} {
				if err := gh.StartService(context.Background(), name); err != nil {
					t.Errorf("restore %s: %v", name, err)
				}
			}
		}
	})

	if err := gh.StartContainer(ctx, "invoice"); err != nil {
		t.Fatal(err)
	}
	// Postgres stays down until the invoice service has found it missing.
	for {
		logs, err := gh.ServiceLogs(ctx, "invoice")
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Count(logs, postgresRetryLog) > retriesBefore {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the invoice service never retried its Postgres connection:\n%s", logs)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := gh.StartService(ctx, "postgres"); err != nil {
		t.Fatal(err)
	}
	if err := gh.WaitReady(ctx, "invoice"); err != nil {
		t.Fatalf("the invoice service did not recover once Postgres was up: %v", err)
	}
	restored = true

	got, err := invoices(tok).GetInvoice(ctx, connect.NewRequest(&invoicev1.GetInvoiceRequest{Id: want.GetId()}))
	if err != nil {
		t.Fatalf("get %s after the restarts: %v", want.GetId(), err)
	}
	if g := got.Msg.GetInvoice(); g.GetCustomer() != want.GetCustomer() || g.GetAmountCents() != want.GetAmountCents() ||
		!g.GetCreateTime().AsTime().Equal(want.GetCreateTime().AsTime()) {
		t.Fatalf("after the restarts: got %v, want %v", g, want)
	}
	// A new token proves the issuer reconnected to the restarted Postgres.
	_ = token(t, "reporting-job", "reporting-job-secret", "invoice:read")
}
