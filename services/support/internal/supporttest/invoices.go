package supporttest

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/libs/accesstoken"
	"github.com/gatehouse/gatehouse/libs/enforce"
	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1/invoicev1connect"
)

// InvoiceCall is one ListInvoices the fake invoice service served.
type InvoiceCall struct {
	// Token is the bearer token, Claims what it verified to.
	Token     string
	Claims    *accesstoken.Claims
	RequestID string
	PageSize  int32
	PageToken string
}

// Invoices is a fake invoice service. Like the real one it verifies the
// bearer token and requires the gateway's identity headers to match it
// (enforce.Authenticator, headers required); ListInvoices then lists the
// token's tenant's invoices, which Seed sets. Other RPCs are unimplemented.
type Invoices struct {
	invoicev1connect.UnimplementedInvoiceServiceHandler
	URL string

	mu       sync.Mutex
	invoices map[string][]*invoicev1.Invoice // by tenant
	calls    []InvoiceCall
	refusal  *connect.Error
}

// NewInvoices serves a fake invoice service trusting iss's tokens, with
// three invoices in acme and one in globex, until the test ends.
func NewInvoices(t testing.TB, iss *Issuer) *Invoices {
	t.Helper()
	inv := &Invoices{invoices: map[string][]*invoicev1.Invoice{}}
	inv.Seed("acme", 3)
	inv.Seed("globex", 1)
	logger := slog.New(slog.DiscardHandler)
	path, h := invoicev1connect.NewInvoiceServiceHandler(inv,
		connect.WithInterceptors(enforce.NewAuthenticator(iss, logger, true)))
	mux := http.NewServeMux()
	mux.Handle(path, h)
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	inv.URL = srv.URL
	return inv
}

// Seed replaces tenant's invoices with n generated ones, "inv_<tenant>_<i>".
func (inv *Invoices) Seed(tenant string, n int) {
	list := make([]*invoicev1.Invoice, n)
	for i := range n {
		list[i] = &invoicev1.Invoice{
			Id: fmt.Sprintf("inv_%s_%d", tenant, i+1), Tenant: tenant, Customer: "Customer " + strconv.Itoa(i+1),
			AmountCents: int64(i+1) * 100, Currency: "EUR", Status: invoicev1.InvoiceStatus_INVOICE_STATUS_DRAFT,
			CreatedBy: "billing-bot", CreateTime: timestamppb.New(time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC)),
		}
	}
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.invoices[tenant] = list
}

// Refuse makes ListInvoices answer err (nil: serve again).
func (inv *Invoices) Refuse(err *connect.Error) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.refusal = err
}

// Calls returns the calls served so far.
func (inv *Invoices) Calls() []InvoiceCall {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	return slices.Clone(inv.calls)
}

// ListInvoices implements invoicev1connect.InvoiceServiceHandler: the
// token's tenant's invoices, page_size (default 50, at most 100) at a
// time, page tokens being offsets.
func (inv *Invoices) ListInvoices(ctx context.Context, req *connect.Request[invoicev1.ListInvoicesRequest]) (*connect.Response[invoicev1.ListInvoicesResponse], error) {
	claims, _ := enforce.ClaimsFrom(ctx)
	token, _ := enforce.BearerToken(req.Header())
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.calls = append(inv.calls, InvoiceCall{
		Token: token, Claims: claims, RequestID: req.Header().Get(enforce.HeaderRequestID),
		PageSize: req.Msg.GetPageSize(), PageToken: req.Msg.GetPageToken(),
	})
	if inv.refusal != nil {
		return nil, inv.refusal
	}
	size := int(req.Msg.GetPageSize())
	switch {
	case size == 0:
		size = 50
	case size > 100:
		size = 100
	}
	start := 0
	if t := req.Msg.GetPageToken(); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("bad page token"))
		}
		start = n
	}
	all := inv.invoices[claims.Tenant]
	start = min(start, len(all))
	end := min(start+size, len(all))
	resp := &invoicev1.ListInvoicesResponse{Invoices: all[start:end]}
	if end < len(all) {
		resp.NextPageToken = strconv.Itoa(end)
	}
	return connect.NewResponse(resp), nil
}
