// Package supportrpc is the support service's Connect adapter: the
// SupportService handler, which turns Connect requests into support.Service
// calls and domain errors into Gatehouse's edge errors, and the Authorizer
// that asks the PDP. Authentication happens before it, in the
// enforce.Authenticator interceptor, which puts the verified claims into
// the context.
package supportrpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	supportv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/support/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/support/v1/supportv1connect"
	"github.com/gatehouse/gatehouse/services/support/internal/support"
)

// Handler implements supportv1connect.SupportServiceHandler.
type Handler struct {
	svc    *support.Service
	logger *slog.Logger
}

var _ supportv1connect.SupportServiceHandler = (*Handler)(nil)

// NewHandler returns a Handler serving svc. Mount it behind the
// enforce.Authenticator interceptor: without verified claims in the
// context every call is refused.
func NewHandler(svc *support.Service, logger *slog.Logger) *Handler {
	return &Handler{svc: svc, logger: logger}
}

// OpenTicket implements supportv1connect.SupportServiceHandler. The ticket
// is the caller's, in the caller's tenant: the request names neither.
func (h *Handler) OpenTicket(ctx context.Context, req *connect.Request[supportv1.OpenTicketRequest]) (*connect.Response[supportv1.OpenTicketResponse], error) {
	ctx, caller, err := begin(ctx, req)
	if err != nil {
		return nil, err
	}
	access, ok := accessFromProto(req.Msg.GetAccess())
	if !ok {
		return nil, h.edgeError(ctx, "open ticket", errInvalid("access must be TICKET_ACCESS_READ or TICKET_ACCESS_WRITE"))
	}
	t, err := h.svc.OpenTicket(ctx, caller, req.Msg.GetSummary(), access)
	if err != nil {
		return nil, h.edgeError(ctx, "open ticket", err)
	}
	h.logger.InfoContext(ctx, "ticket opened", slog.String("ticket_id", t.ID), slog.String("tenant", t.Tenant),
		slog.String("customer", t.Customer), slog.String("access", string(t.Access)))
	return connect.NewResponse(&supportv1.OpenTicketResponse{Ticket: ticketToProto(t)}), nil
}

// ListTickets implements supportv1connect.SupportServiceHandler.
func (h *Handler) ListTickets(ctx context.Context, req *connect.Request[supportv1.ListTicketsRequest]) (*connect.Response[supportv1.ListTicketsResponse], error) {
	ctx, caller, err := begin(ctx, req)
	if err != nil {
		return nil, err
	}
	var status support.Status
	switch req.Msg.GetStatus() {
	case supportv1.TicketStatus_TICKET_STATUS_UNSPECIFIED:
	case supportv1.TicketStatus_TICKET_STATUS_OPEN:
		status = support.StatusOpen
	case supportv1.TicketStatus_TICKET_STATUS_CLOSED:
		status = support.StatusClosed
	default:
		return nil, h.edgeError(ctx, "list tickets", errInvalid("status must be a TicketStatus"))
	}
	page, err := h.svc.ListTickets(ctx, caller, int(req.Msg.GetPageSize()), req.Msg.GetPageToken(), status)
	if err != nil {
		return nil, h.edgeError(ctx, "list tickets", err)
	}
	resp := &supportv1.ListTicketsResponse{Tickets: make([]*supportv1.Ticket, 0, len(page.Tickets)), NextPageToken: page.NextPageToken}
	for _, t := range page.Tickets {
		resp.Tickets = append(resp.Tickets, ticketToProto(t))
	}
	return connect.NewResponse(resp), nil
}

// CloseTicket implements supportv1connect.SupportServiceHandler.
func (h *Handler) CloseTicket(ctx context.Context, req *connect.Request[supportv1.CloseTicketRequest]) (*connect.Response[supportv1.CloseTicketResponse], error) {
	ctx, caller, err := begin(ctx, req)
	if err != nil {
		return nil, err
	}
	t, err := h.svc.CloseTicket(ctx, caller, req.Msg.GetId())
	if err != nil {
		return nil, h.edgeError(ctx, "close ticket", err)
	}
	h.logger.InfoContext(ctx, "ticket closed", slog.String("ticket_id", t.ID), slog.String("tenant", t.Tenant), slog.String("closed_by", t.ClosedBy))
	return connect.NewResponse(&supportv1.CloseTicketResponse{Ticket: ticketToProto(t)}), nil
}

// StartImpersonation implements supportv1connect.SupportServiceHandler.
func (h *Handler) StartImpersonation(ctx context.Context, req *connect.Request[supportv1.StartImpersonationRequest]) (*connect.Response[supportv1.StartImpersonationResponse], error) {
	ctx, caller, err := begin(ctx, req)
	if err != nil {
		return nil, err
	}
	sess, token, err := h.svc.StartImpersonation(ctx, caller, req.Msg.GetTicketId(), int(req.Msg.GetTtlSeconds()), req.Msg.GetScopes())
	if err != nil {
		return nil, h.edgeError(ctx, "start impersonation", err)
	}
	return connect.NewResponse(&supportv1.StartImpersonationResponse{Session: sessionToProto(sess), AccessToken: token}), nil
}

// EndImpersonation implements supportv1connect.SupportServiceHandler.
func (h *Handler) EndImpersonation(ctx context.Context, req *connect.Request[supportv1.EndImpersonationRequest]) (*connect.Response[supportv1.EndImpersonationResponse], error) {
	ctx, caller, err := begin(ctx, req)
	if err != nil {
		return nil, err
	}
	sess, err := h.svc.EndImpersonation(ctx, caller, req.Msg.GetSessionId())
	if err != nil {
		return nil, h.edgeError(ctx, "end impersonation", err)
	}
	return connect.NewResponse(&supportv1.EndImpersonationResponse{Session: sessionToProto(sess)}), nil
}

// GetCustomerOverview implements supportv1connect.SupportServiceHandler.
func (h *Handler) GetCustomerOverview(ctx context.Context, req *connect.Request[supportv1.GetCustomerOverviewRequest]) (*connect.Response[supportv1.GetCustomerOverviewResponse], error) {
	ctx, caller, err := begin(ctx, req)
	if err != nil {
		return nil, err
	}
	sess, invs, err := h.svc.CustomerOverview(ctx, caller, req.Msg.GetSessionId())
	if err != nil {
		return nil, h.edgeError(ctx, "customer overview", err)
	}
	return connect.NewResponse(&supportv1.GetCustomerOverviewResponse{Session: sessionToProto(sess), Invoices: invs}), nil
}

// ExportInvoices implements supportv1connect.SupportServiceHandler.
func (h *Handler) ExportInvoices(ctx context.Context, req *connect.Request[supportv1.ExportInvoicesRequest]) (*connect.Response[supportv1.ExportInvoicesResponse], error) {
	ctx, caller, err := begin(ctx, req)
	if err != nil {
		return nil, err
	}
	export, err := h.svc.ExportInvoices(ctx, caller)
	if err != nil {
		return nil, h.edgeError(ctx, "export invoices", err)
	}
	h.logger.InfoContext(ctx, "invoices exported", slog.String("subject", caller.Subject), slog.String("tenant", caller.Tenant),
		slog.String("actor", export.Actor), slog.Int("invoices", len(export.Invoices)))
	return connect.NewResponse(&supportv1.ExportInvoicesResponse{Invoices: export.Invoices, Actor: export.Actor}), nil
}

// begin returns the caller of an authenticated request and a context that
// carries the request's description for the PDP and for outbound calls.
func begin(ctx context.Context, req connect.AnyRequest) (context.Context, support.Caller, error) {
	claims, ok := enforce.ClaimsFrom(ctx)
	if !ok {
		return ctx, support.Caller{}, enforce.Unauthenticated(ctx, reason.MissingToken)
	}
	// The Authenticator verified exactly this token.
	token, ok := enforce.BearerToken(req.Header())
	if !ok {
		return ctx, support.Caller{}, enforce.Unauthenticated(ctx, reason.MissingToken)
	}
	info := newRequestInfo(req.Header(), req.Peer().Addr)
	ctx = support.WithRequestID(context.WithValue(ctx, requestKey{}, info), info.id)
	return ctx, support.Caller{Subject: claims.Subject, Tenant: claims.Tenant, Token: token, Scopes: claims.Scopes}, nil
}

func errInvalid(msg string) error { return fmt.Errorf("%w: %s", support.ErrInvalid, msg) }

// edgeError maps an error of the service onto Gatehouse's error model. The
// client sees a code, a reason and a safe message; the detail stays in the
// log.
func (h *Handler) edgeError(ctx context.Context, op string, err error) error {
	var (
		ce      *connect.Error
		refused *support.RefusedError
	)
	switch {
	case errors.As(err, &ce): // already an edge error (authorization)
		return ce
	case errors.As(err, &refused):
		h.logger.InfoContext(ctx, op+": refused", slog.String("by", refused.By), slog.String("reason_code", refused.Reason), slog.Any("error", err))
		return enforce.Error(ctx, connect.CodePermissionDenied, refused.Reason, "not permitted by the "+refused.By)
	case errors.Is(err, support.ErrInvalid):
		return enforce.Error(ctx, connect.CodeInvalidArgument, reason.InvalidRequest, err.Error())
	case errors.Is(err, support.ErrTicketNotFound):
		return enforce.Error(ctx, connect.CodeNotFound, reason.ResourceNotFound, "no such ticket")
	case errors.Is(err, support.ErrSessionNotFound):
		return enforce.Error(ctx, connect.CodeNotFound, reason.ResourceNotFound, "no such impersonation session")
	case errors.Is(err, support.ErrTicketClosed):
		return enforce.Error(ctx, connect.CodeFailedPrecondition, reason.NoOpenTicket, "the ticket is closed")
	case errors.Is(err, support.ErrTokenNotHeld):
		return enforce.Error(ctx, connect.CodeFailedPrecondition, reason.NotImpersonating, support.ErrTokenNotHeld.Error())
	case errors.Is(err, support.ErrSessionOver):
		return enforce.Error(ctx, connect.CodeFailedPrecondition, reason.NotImpersonating, "the impersonation session has ended or expired")
	case errors.Is(err, support.ErrCallerTokenRejected):
		h.logger.InfoContext(ctx, op+": the issuer rejected the caller's token", slog.Any("error", err))
		return enforce.Unauthenticated(ctx, reason.InvalidToken)
	case errors.Is(err, support.ErrIssuerUnavailable):
		h.logger.ErrorContext(ctx, op+": issuer unavailable", slog.Any("error", err))
		return enforce.Error(ctx, connect.CodeUnavailable, reason.IssuerUnavailable, "the issuer is unavailable; try again later")
	case errors.Is(err, support.ErrInvoicesUnavailable):
		h.logger.ErrorContext(ctx, op+": invoice service unavailable", slog.Any("error", err))
		return enforce.Error(ctx, connect.CodeUnavailable, reason.UpstreamUnavailable, "the invoice service is unavailable; try again later")
	case errors.Is(err, support.ErrNoCaller):
		h.logger.ErrorContext(ctx, op+": request without a verified caller", slog.Any("error", err))
		return enforce.Unauthenticated(ctx, reason.MissingToken)
	case errors.Is(err, context.Canceled):
		return enforce.Error(ctx, connect.CodeCanceled, reason.UpstreamUnavailable, "the request was canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return enforce.Error(ctx, connect.CodeDeadlineExceeded, reason.UpstreamUnavailable, "the request timed out")
	}
	h.logger.ErrorContext(ctx, op+" failed", slog.Any("error", err))
	return enforce.Error(ctx, connect.CodeUnavailable, reason.UpstreamUnavailable, "the support store is unavailable; try again later")
}

func ticketToProto(t support.Ticket) *supportv1.Ticket {
	out := &supportv1.Ticket{
		Id:         t.ID,
		Tenant:     t.Tenant,
		Customer:   t.Customer,
		Summary:    t.Summary,
		Status:     supportv1.TicketStatus_TICKET_STATUS_UNSPECIFIED,
		Access:     supportv1.TicketAccess_TICKET_ACCESS_UNSPECIFIED,
		CreateTime: timestamppb.New(t.CreateTime),
		ClosedBy:   t.ClosedBy,
	}
	switch t.Status {
	case support.StatusOpen:
		out.Status = supportv1.TicketStatus_TICKET_STATUS_OPEN
	case support.StatusClosed:
		out.Status = supportv1.TicketStatus_TICKET_STATUS_CLOSED
	}
	switch t.Access {
	case support.AccessRead:
		out.Access = supportv1.TicketAccess_TICKET_ACCESS_READ
	case support.AccessWrite:
		out.Access = supportv1.TicketAccess_TICKET_ACCESS_WRITE
	}
	if !t.CloseTime.IsZero() {
		out.CloseTime = timestamppb.New(t.CloseTime)
	}
	return out
}

// accessFromProto maps the requested access; unspecified is "" (read).
func accessFromProto(a supportv1.TicketAccess) (support.Access, bool) {
	switch a {
	case supportv1.TicketAccess_TICKET_ACCESS_UNSPECIFIED:
		return "", true
	case supportv1.TicketAccess_TICKET_ACCESS_READ:
		return support.AccessRead, true
	case supportv1.TicketAccess_TICKET_ACCESS_WRITE:
		return support.AccessWrite, true
	}
	return "", false
}

func sessionToProto(s support.Session) *supportv1.ImpersonationSession {
	out := &supportv1.ImpersonationSession{
		Id:         s.ID,
		TicketId:   s.TicketID,
		Tenant:     s.Tenant,
		Customer:   s.Customer,
		Agent:      s.Agent,
		Scopes:     s.Scopes,
		StartTime:  timestamppb.New(s.StartTime),
		ExpireTime: timestamppb.New(s.ExpireTime),
	}
	if !s.EndTime.IsZero() {
		out.EndTime = timestamppb.New(s.EndTime)
	}
	return out
}

// requestInfo describes the request being served (the PDP's
// RequestContext).
type requestInfo struct {
	id       string
	time     time.Time
	sourceIP string
}

type requestKey struct{}

// requestOf returns the request's description, or a fresh one.
func requestOf(ctx context.Context) requestInfo {
	if info, ok := ctx.Value(requestKey{}).(requestInfo); ok {
		return info
	}
	return newRequestInfo(nil, "")
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
