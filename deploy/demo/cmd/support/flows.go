package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"connectrpc.com/connect"

	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1/invoicev1connect"
	supportv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/support/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/support/v1/supportv1connect"
)

// After EndImpersonation the issuer revokes the token and the gateway
// hears of it through the revocation feed within a second: the client asks
// every revocationPoll, for at most revocationWait.
const (
	revocationWait = 3 * time.Second
	revocationPoll = 200 * time.Millisecond
)

// maxTicketPages bounds ListTickets paging (100 tickets a page).
const maxTicketPages = 10

var (
	// errApproved: the gateway let the impersonation token approve an
	// invoice. It must not: an impersonation never carries invoice:approve.
	errApproved = errors.New("the impersonation token approved an invoice; it must be refused")
	// errNotRevoked: the gateway still accepted the ended session's token
	// after revocationWait.
	errNotRevoked = errors.New("the gateway still accepts the ended session's token")
)

// openTicket is the customer opening a ticket for themselves.
func openTicket(ctx context.Context, stdout, stderr io.Writer, support supportv1connect.SupportServiceClient, token, summary string, access supportv1.TicketAccess) error {
	progress(stderr, "opening a ticket (OpenTicket) ...")
	resp, err := support.OpenTicket(ctx, withBearer(&supportv1.OpenTicketRequest{Summary: summary, Access: access}, token))
	if err != nil {
		return callError("OpenTicket", err)
	}
	t := resp.Msg.GetTicket()
	printFields(stdout, "", [][2]string{
		{"ticket", t.GetId()},
		{"customer", t.GetCustomer()},
		{"tenant", t.GetTenant()},
		{"status", ticketStatus(t.GetStatus())},
		{"access", ticketAccess(t.GetAccess())},
	})
	return nil
}

// exportInvoices is a user running the support export job, which reads
// their invoices with a token that says "support-export acting for them".
func exportInvoices(ctx context.Context, stdout, stderr io.Writer, support supportv1connect.SupportServiceClient, token string) error {
	progress(stderr, "running the support export job (ExportInvoices) ...")
	resp, err := support.ExportInvoices(ctx, withBearer(&supportv1.ExportInvoicesRequest{}, token))
	if err != nil {
		return callError("ExportInvoices", err)
	}
	printFields(stdout, "", [][2]string{{"actor", resp.Msg.GetActor()}, {"invoices", fmt.Sprint(len(resp.Msg.GetInvoices()))}})
	printInvoices(stdout, resp.Msg.GetInvoices())
	return nil
}

// helpCustomer is the support agent's visit: list the open tickets, start
// an impersonation session on ticketID, show it and its token's claims,
// read the customer's invoices (through the support service, then through
// the gateway with the impersonation token), try to approve one (which must
// be refused), end the session and wait until the gateway refuses its
// token. A session this function started is ended whatever fails.
func helpCustomer(ctx context.Context, stdout, stderr io.Writer, gw gateway, agentToken, ticketID string, ttl time.Duration) (err error) {
	progress(stderr, "listing the open tickets of your tenant (ListTickets) ...")
	tickets, err := openTickets(ctx, gw.support, agentToken)
	if err != nil {
		return err
	}
	printTickets(stdout, tickets)
	if !slices.ContainsFunc(tickets, func(t *supportv1.Ticket) bool { return t.GetId() == ticketID }) {
		progress(stderr, "%s is not among them; asking for it anyway", ticketID)
	}

	progress(stderr, "starting an impersonation session on %s for %s (StartImpersonation) ...", ticketID, ttl)
	started, err := gw.support.StartImpersonation(ctx, withBearer(&supportv1.StartImpersonationRequest{
		TicketId: ticketID, TtlSeconds: int32(ttl / time.Second), //nolint:gosec // G115: parseArgs bounds -ttl to 15m
	}, agentToken))
	if err != nil {
		return callError("StartImpersonation", err)
	}
	session, impToken := started.Msg.GetSession(), started.Msg.GetAccessToken()
	if session.GetId() == "" || impToken == "" {
		return errors.New("StartImpersonation answered without a session id or a token")
	}
	ended := false
	defer func() {
		if ended {
			return
		}
		// Something failed while the session was open: end it now rather
		// than leave its token valid until it expires.
		endCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
		defer cancel()
		if _, endErr := gw.support.EndImpersonation(endCtx, withBearer(&supportv1.EndImpersonationRequest{SessionId: session.GetId()}, agentToken)); endErr != nil {
			err = errors.Join(err, callError("EndImpersonation after the failure", endErr))
			return
		}
		progress(stderr, "ended session %s after the failure", session.GetId())
	}()
	printSession(stdout, session)
	claims, err := decodeClaims(impToken)
	if err != nil {
		return err
	}
	printClaims(stdout, claims)

	customer := session.GetCustomer()
	progress(stderr, "reading %s's invoices through the support service (GetCustomerOverview) ...", customer)
	overview, err := gw.support.GetCustomerOverview(ctx, withBearer(&supportv1.GetCustomerOverviewRequest{SessionId: session.GetId()}, agentToken))
	if err != nil {
		return callError("GetCustomerOverview", err)
	}
	invoices := overview.Msg.GetInvoices()
	_, _ = fmt.Fprintf(stdout, "\n%s's invoices (GetCustomerOverview):\n", customer)
	printInvoices(stdout, invoices)

	progress(stderr, "listing invoices through the gateway with the impersonation token (ListInvoices) ...")
	listed, err := gw.invoices.ListInvoices(ctx, withBearer(&invoicev1.ListInvoicesRequest{}, impToken))
	if err != nil {
		return callError("ListInvoices with the impersonation token", err)
	}
	_, _ = fmt.Fprintf(stdout, "\nListInvoices with the impersonation token: allowed, %d invoices\n", len(listed.Msg.GetInvoices()))

	if target := approvalTarget(invoices); target == "" {
		progress(stderr, "%s has no invoice to try approving; skipping the approval", customer)
	} else {
		progress(stderr, "approving %s through the gateway with the impersonation token (ApproveInvoice); it must be refused ...", target)
		_, err := gw.invoices.ApproveInvoice(ctx, withBearer(&invoicev1.ApproveInvoiceRequest{Id: target}, impToken))
		if err == nil {
			return fmt.Errorf("%w: ApproveInvoice %s went through", errApproved, target)
		}
		if code := connect.CodeOf(err); code != connect.CodePermissionDenied && code != connect.CodeUnauthenticated {
			return callError("ApproveInvoice with the impersonation token", err)
		}
		_, _ = fmt.Fprintf(stdout, "ApproveInvoice %s with the impersonation token: refused, %s\n", target, describe(err))
		printChallenge(stdout, err)
	}

	progress(stderr, "ending the session (EndImpersonation) ...")
	endResp, err := gw.support.EndImpersonation(ctx, withBearer(&supportv1.EndImpersonationRequest{SessionId: session.GetId()}, agentToken))
	if err != nil {
		return callError("EndImpersonation", err)
	}
	ended = true
	_, _ = fmt.Fprintf(stdout, "\nsession %s ended at %s\n", endResp.Msg.GetSession().GetId(), timestamp(endResp.Msg.GetSession().GetEndTime().AsTime()))

	progress(stderr, "listing invoices through the gateway with the ended session's token until it is refused (at most %s) ...", revocationWait)
	calls, after, refusal, err := awaitRefusal(ctx, gw.invoices, impToken)
	if err != nil {
		return err
	}
	_, _ = fmt.Fprintf(stdout, "ListInvoices with the ended session's token: refused on call %d (%s after the end), %s\n", calls, after, describe(refusal))
	return nil
}

// openTickets lists the open tickets the agent may see, every page.
func openTickets(ctx context.Context, support supportv1connect.SupportServiceClient, token string) ([]*supportv1.Ticket, error) {
	var tickets []*supportv1.Ticket
	pageToken := ""
	for range maxTicketPages {
		resp, err := support.ListTickets(ctx, withBearer(&supportv1.ListTicketsRequest{
			PageSize: 100, PageToken: pageToken, Status: supportv1.TicketStatus_TICKET_STATUS_OPEN,
		}, token))
		if err != nil {
			return nil, callError("ListTickets", err)
		}
		tickets = append(tickets, resp.Msg.GetTickets()...)
		pageToken = resp.Msg.GetNextPageToken()
		if pageToken == "" {
			break
		}
	}
	return tickets, nil
}

// approvalTarget picks the invoice to try approving: the first draft, else
// the first; "" when there is none.
func approvalTarget(invoices []*invoicev1.Invoice) string {
	for _, inv := range invoices {
		if inv.GetStatus() == invoicev1.InvoiceStatus_INVOICE_STATUS_DRAFT {
			return inv.GetId()
		}
	}
	if len(invoices) > 0 {
		return invoices[0].GetId()
	}
	return ""
}

// awaitRefusal calls ListInvoices with token until the gateway refuses it
// as unauthenticated, for at most revocationWait, and returns how many
// calls and how long that took, and the refusal.
func awaitRefusal(ctx context.Context, invoices invoicev1connect.InvoiceServiceClient, token string) (int, time.Duration, *connect.Error, error) {
	start := time.Now()
	waitCtx, cancel := context.WithTimeout(ctx, revocationWait)
	defer cancel()
	tick := time.NewTicker(revocationPoll)
	defer tick.Stop()
	for calls := 1; ; calls++ {
		_, err := invoices.ListInvoices(waitCtx, withBearer(&invoicev1.ListInvoicesRequest{}, token))
		var refusal *connect.Error
		switch {
		case err == nil:
		case errors.As(err, &refusal) && refusal.Code() == connect.CodeUnauthenticated:
			return calls, time.Since(start).Round(time.Millisecond), refusal, nil
		case waitCtx.Err() != nil && ctx.Err() == nil:
			return 0, 0, nil, fmt.Errorf("%w after %s", errNotRevoked, revocationWait)
		default:
			return 0, 0, nil, callError("ListInvoices with the ended session's token", err)
		}
		select {
		case <-tick.C:
		case <-waitCtx.Done():
			if ctx.Err() != nil {
				return 0, 0, nil, fmt.Errorf("waiting for the gateway to refuse the ended session's token: %w", ctx.Err())
			}
			return 0, 0, nil, fmt.Errorf("%w after %s", errNotRevoked, revocationWait)
		}
	}
}

// withBearer is a request for msg with token as its bearer token.
func withBearer[T any](msg *T, token string) *connect.Request[T] {
	req := connect.NewRequest(msg)
	req.Header().Set("Authorization", "Bearer "+token)
	return req
}
