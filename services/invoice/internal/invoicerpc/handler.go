// Package invoicerpc is the invoice service's Connect adapter: the
// InvoiceService handler, which turns Connect requests into invoice.Service
// calls and domain errors into Gatehouse's edge errors, and the Authorizer
// that asks the PDP. Authentication happens before it, in the
// enforce.Authenticator interceptor, which puts the verified claims into the
// context.
package invoicerpc

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1/invoicev1connect"
	"github.com/gatehouse/gatehouse/services/invoice/internal/invoice"
)

// Handler implements invoicev1connect.InvoiceServiceHandler.
type Handler struct {
	svc    *invoice.Service
	logger *slog.Logger
}

var _ invoicev1connect.InvoiceServiceHandler = (*Handler)(nil)

// NewHandler returns a Handler serving svc. Mount it behind the
// enforce.Authenticator interceptor: without verified claims in the
// context every call is refused.
func NewHandler(svc *invoice.Service, logger *slog.Logger) *Handler {
	return &Handler{svc: svc, logger: logger}
}

// CreateInvoice implements invoicev1connect.InvoiceServiceHandler. The
// invoice lands in the caller's tenant: the request has no tenant field.
func (h *Handler) CreateInvoice(ctx context.Context, req *connect.Request[invoicev1.CreateInvoiceRequest]) (*connect.Response[invoicev1.CreateInvoiceResponse], error) {
	ctx, caller, err := begin(ctx, req)
	if err != nil {
		return nil, err
	}
	inv, err := h.svc.Create(ctx, caller, invoice.Draft{
		Customer:    req.Msg.GetCustomer(),
		AmountCents: req.Msg.GetAmountCents(),
		Currency:    req.Msg.GetCurrency(),
	})
	if err != nil {
		return nil, h.edgeError(ctx, "create invoice", err)
	}
	h.logger.InfoContext(ctx, "invoice created", slog.String("invoice_id", inv.ID), slog.String("tenant", inv.Tenant),
		slog.String("created_by", inv.CreatedBy))
	return connect.NewResponse(&invoicev1.CreateInvoiceResponse{Invoice: toProto(inv)}), nil
}

// GetInvoice implements invoicev1connect.InvoiceServiceHandler.
func (h *Handler) GetInvoice(ctx context.Context, req *connect.Request[invoicev1.GetInvoiceRequest]) (*connect.Response[invoicev1.GetInvoiceResponse], error) {
	ctx, caller, err := begin(ctx, req)
	if err != nil {
		return nil, err
	}
	inv, err := h.svc.Get(ctx, caller, req.Msg.GetId())
	if err != nil {
		return nil, h.edgeError(ctx, "get invoice", err)
	}
	return connect.NewResponse(&invoicev1.GetInvoiceResponse{Invoice: toProto(inv)}), nil
}

// ListInvoices implements invoicev1connect.InvoiceServiceHandler.
func (h *Handler) ListInvoices(ctx context.Context, req *connect.Request[invoicev1.ListInvoicesRequest]) (*connect.Response[invoicev1.ListInvoicesResponse], error) {
	ctx, caller, err := begin(ctx, req)
	if err != nil {
		return nil, err
	}
	page, err := h.svc.List(ctx, caller, int(req.Msg.GetPageSize()), req.Msg.GetPageToken())
	if err != nil {
		return nil, h.edgeError(ctx, "list invoices", err)
	}
	resp := &invoicev1.ListInvoicesResponse{
		Invoices:      make([]*invoicev1.Invoice, 0, len(page.Invoices)),
		NextPageToken: page.NextPageToken,
	}
	for _, inv := range page.Invoices {
		resp.Invoices = append(resp.Invoices, toProto(inv))
	}
	return connect.NewResponse(resp), nil
}

// ApproveInvoice implements invoicev1connect.InvoiceServiceHandler. A
// step_up obligation from the PDP comes back from the service as RFC 9470's
// 401 insufficient_user_authentication challenge (enforce.Denied).
func (h *Handler) ApproveInvoice(ctx context.Context, req *connect.Request[invoicev1.ApproveInvoiceRequest]) (*connect.Response[invoicev1.ApproveInvoiceResponse], error) {
	ctx, caller, err := begin(ctx, req)
	if err != nil {
		return nil, err
	}
	inv, err := h.svc.Approve(ctx, caller, req.Msg.GetId())
	if err != nil {
		return nil, h.edgeError(ctx, "approve invoice", err)
	}
	h.logger.InfoContext(ctx, "invoice approved", slog.String("invoice_id", inv.ID), slog.String("tenant", inv.Tenant),
		slog.String("approved_by", inv.ApprovedBy))
	return connect.NewResponse(&invoicev1.ApproveInvoiceResponse{Invoice: toProto(inv)}), nil
}

// begin returns the caller of an authenticated request and a context that
// carries the request's description for the PDP.
func begin(ctx context.Context, req connect.AnyRequest) (context.Context, invoice.Caller, error) {
	claims, ok := enforce.ClaimsFrom(ctx)
	if !ok {
		return ctx, invoice.Caller{}, enforce.Unauthenticated(ctx, reason.MissingToken)
	}
	ctx = withRequest(ctx, newRequestInfo(req.Header(), req.Peer().Addr))
	return ctx, invoice.Caller{Subject: claims.Subject, Tenant: claims.Tenant}, nil
}

// edgeError maps an error of the service onto Gatehouse's error model. The
// client sees a code, a reason and a safe message; the detail stays in the
// log.
func (h *Handler) edgeError(ctx context.Context, op string, err error) error {
	var ce *connect.Error
	switch {
	case errors.As(err, &ce): // already an edge error (authorization)
		return ce
	case errors.Is(err, invoice.ErrInvalid):
		return enforce.Error(ctx, connect.CodeInvalidArgument, reason.InvalidRequest, err.Error())
	case errors.Is(err, invoice.ErrNotFound):
		return enforce.Error(ctx, connect.CodeNotFound, reason.ResourceNotFound, "no such invoice")
	case errors.Is(err, invoice.ErrAlreadyApproved):
		return enforce.Error(ctx, connect.CodeFailedPrecondition, reason.AlreadyApproved, "the invoice is approved already")
	case errors.Is(err, invoice.ErrNoCaller):
		h.logger.ErrorContext(ctx, op+": request without a verified caller", slog.Any("error", err))
		return enforce.Unauthenticated(ctx, reason.MissingToken)
	case errors.Is(err, context.Canceled):
		return enforce.Error(ctx, connect.CodeCanceled, reason.UpstreamUnavailable, "the request was canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return enforce.Error(ctx, connect.CodeDeadlineExceeded, reason.UpstreamUnavailable, "the request timed out")
	}
	h.logger.ErrorContext(ctx, op+" failed", slog.Any("error", err))
	return enforce.Error(ctx, connect.CodeUnavailable, reason.UpstreamUnavailable, "the invoice store is unavailable; try again later")
}

func toProto(inv invoice.Invoice) *invoicev1.Invoice {
	status := invoicev1.InvoiceStatus_INVOICE_STATUS_UNSPECIFIED
	switch inv.Status {
	case invoice.StatusDraft:
		status = invoicev1.InvoiceStatus_INVOICE_STATUS_DRAFT
	case invoice.StatusApproved:
		status = invoicev1.InvoiceStatus_INVOICE_STATUS_APPROVED
	}
	out := &invoicev1.Invoice{
		Id:          inv.ID,
		Tenant:      inv.Tenant,
		Customer:    inv.Customer,
		AmountCents: inv.AmountCents,
		Currency:    inv.Currency,
		Status:      status,
		CreatedBy:   inv.CreatedBy,
		CreateTime:  timestamppb.New(inv.CreateTime),
		ApprovedBy:  inv.ApprovedBy,
	}
	if !inv.ApproveTime.IsZero() {
		out.ApproveTime = timestamppb.New(inv.ApproveTime)
	}
	return out
}

// requestInfo describes the request being authorized (the PDP's
// RequestContext).
type requestInfo struct {
	id       string
	time     time.Time
	sourceIP string
}

type requestKey struct{}

func withRequest(ctx context.Context, info requestInfo) context.Context {
	return context.WithValue(ctx, requestKey{}, info)
}

func requestFrom(ctx context.Context) (requestInfo, bool) {
	info, ok := ctx.Value(requestKey{}).(requestInfo)
	return info, ok
}

// newRequestInfo describes a request with header h from peer address addr,
// now.
func newRequestInfo(h http.Header, addr string) requestInfo {
	// A caller-supplied (normally gateway-set) id is kept when it is sane.
	id := h.Get(enforce.HeaderRequestID)
	if !enforce.ValidRequestID(id) {
		id = enforce.NewRequestID()
	}
	return requestInfo{id: id, time: time.Now(), sourceIP: enforce.RemoteIP(addr)}
}
