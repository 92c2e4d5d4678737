// Package invoices is the support service's client of the invoice service
// (gatehouse.invoice.v1.InvoiceService over Connect). It implements
// support.Invoices: it calls the invoice service directly, not through the
// gateway, with an impersonation or delegated token as the bearer token
// and the identity headers the gateway would have set for that token (the
// invoice service requires them and checks them against the token it
// verifies itself).
package invoices

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1/invoicev1connect"
	"github.com/gatehouse/gatehouse/services/support/internal/support"
)

// pageSize is the page size asked for: the invoice service's largest.
const pageSize = 100

// Client implements support.Invoices.
type Client struct {
	rpc     invoicev1connect.InvoiceServiceClient
	timeout time.Duration
}

var _ support.Invoices = (*Client)(nil)

// New returns a Client over rpc; timeout bounds each call (one page).
func New(rpc invoicev1connect.InvoiceServiceClient, timeout time.Duration) *Client {
	return &Client{rpc: rpc, timeout: timeout}
}

// List implements support.Invoices.
func (c *Client) List(ctx context.Context, cred support.Credential, limit int) ([]*invoicev1.Invoice, error) {
	var (
		out   []*invoicev1.Invoice
		token string
	)
	for len(out) < limit {
		page, err := c.page(ctx, cred, int32(min(pageSize, limit-len(out))), token) //nolint:gosec // G115: at most pageSize
		if err != nil {
			return nil, err
		}
		out = append(out, page.GetInvoices()...)
		token = page.GetNextPageToken()
		if token == "" {
			break
		}
	}
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (c *Client) page(ctx context.Context, cred support.Credential, size int32, token string) (*invoicev1.ListInvoicesResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req := connect.NewRequest(&invoicev1.ListInvoicesRequest{PageSize: size, PageToken: token})
	h := req.Header()
	h.Set("Authorization", "Bearer "+cred.Token)
	h.Set(enforce.HeaderSubject, cred.Subject)
	h.Set(enforce.HeaderTenant, cred.Tenant)
	h.Set(enforce.HeaderClientID, cred.ClientID)
	if id := support.RequestID(ctx); id != "" {
		h.Set(enforce.HeaderRequestID, id)
	}
	resp, err := c.rpc.ListInvoices(ctx, req)
	if err != nil {
		return nil, classify(err)
	}
	return resp.Msg, nil
}

// classify maps the invoice service's answer onto the support package's
// errors: a refusal of the token (permission_denied, or unauthenticated:
// revoked, expired) is the caller's answer, with the invoice service's
// reason code; anything else means the invoice service is unavailable.
func classify(err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) && (ce.Code() == connect.CodePermissionDenied || ce.Code() == connect.CodeUnauthenticated) {
		code := enforce.ReasonOf(err)
		if code == "" {
			code = reason.InvalidToken
			if ce.Code() == connect.CodePermissionDenied {
				code = reason.RoleNotPermitted
			}
		}
		return fmt.Errorf("list invoices: %v: %w", err, &support.RefusedError{By: "invoice service", Reason: code})
	}
	return fmt.Errorf("%w: list invoices: %v", support.ErrInvoicesUnavailable, err)
}
