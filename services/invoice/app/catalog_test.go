package app_test

import (
	"encoding/json"
	"os"
	"testing"

	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
)

// catalogPath is the permission catalog, the one definition of the actions
// the PDP's policies know (see docs/permissions.md).
const catalogPath = "../../../policies/gatehouse/data.json"

// catalogActions returns the actions the catalog defines.
func catalogActions(t *testing.T) map[string]json.RawMessage {
	t.Helper()
	data, err := os.ReadFile(catalogPath)
	if err != nil {
		t.Fatal(err)
	}
	// Only what this test needs; the pdp module validates the rest.
	var catalog struct {
		Actions map[string]json.RawMessage `json:"actions"`
	}
	if err := json.Unmarshal(data, &catalog); err != nil {
		t.Fatalf("%s: %v", catalogPath, err)
	}
	if len(catalog.Actions) == 0 {
		t.Fatalf("%s defines no actions", catalogPath)
	}
	return catalog.Actions
}

// TestRPCsUseCatalogActions calls every InvoiceService RPC and fails when
// one asks the PDP nothing, or asks about an action the catalog does not
// define (such an RPC could never be allowed, or would be decided by a
// policy nobody documented). A new RPC fails the test until it is added to
// calls.
func TestRPCsUseCatalogActions(t *testing.T) {
	t.Parallel()
	defined := catalogActions(t)
	// One successful call per RPC, as billing-bot (invoice:read and
	// invoice:write in acme) or alice (invoice:approve); the test PDP allows
	// all three.
	calls := map[string]func(t *testing.T, h *harness) error{
		"CreateInvoice": func(t *testing.T, h *harness) error {
			_, err := h.client.CreateInvoice(t.Context(), as(h.headers(billingBot),
				&invoicev1.CreateInvoiceRequest{Customer: "Initech", AmountCents: 1_000, Currency: "EUR"}))
			return err
		},
		"GetInvoice": func(t *testing.T, h *harness) error {
			_, err := h.client.GetInvoice(t.Context(), as(h.headers(billingBot), &invoicev1.GetInvoiceRequest{Id: acmeDemoIDs[0]}))
			return err
		},
		"ListInvoices": func(t *testing.T, h *harness) error {
			_, err := h.client.ListInvoices(t.Context(), as(h.headers(billingBot), &invoicev1.ListInvoicesRequest{}))
			return err
		},
		"ApproveInvoice": func(t *testing.T, h *harness) error {
			_, err := h.client.ApproveInvoice(t.Context(), as(h.headers(alice), &invoicev1.ApproveInvoiceRequest{Id: acmeDemoIDs[0]}))
			return err
		},
	}
	svc := invoicev1.File_gatehouse_invoice_v1_invoice_proto.Services().ByName("InvoiceService")
	if svc == nil {
		t.Fatal("no InvoiceService in the invoice proto")
	}
	methods := svc.Methods()
	exposed := map[string]bool{}
	for i := range methods.Len() {
		name := string(methods.Get(i).Name())
		exposed[name] = true
		call, ok := calls[name]
		if !ok {
			t.Errorf("RPC %s is not called by this test: add it to calls", name)
			continue
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			if err := call(t, h); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			checks := h.pdp.received()
			if len(checks) == 0 {
				t.Fatalf("%s asked the PDP nothing", name)
			}
			for _, c := range checks {
				if _, ok := defined[c.GetAction()]; !ok {
					t.Errorf("%s asks the PDP about %q, which %s does not define: add it to the catalog's \"actions\" (and a scope that grants it)",
						name, c.GetAction(), catalogPath)
				}
			}
		})
	}
	for name := range calls {
		if !exposed[name] {
			t.Errorf("calls has %s, which InvoiceService does not expose", name)
		}
	}
}
