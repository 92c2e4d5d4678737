package catalogue

import (
	"context"
	"net/http"
	"strings"
)

// Controls are genuine requests of the clients, users and procedures the
// scenarios use: they must succeed, so that a scenario's refusal comes from the
// attack and not from a broken token, client or procedure name. They are not
// attacks and not on the page.
func Controls() []Scenario {
	ok := Outcome{Status: http.StatusOK}
	return []Scenario{
		{Name: "invoice-web's authorization request leads to the login page", Request: "the authorization request of the redirect_uri scenarios, unedited",
			Expect: Outcome{Status: http.StatusSeeOther, Location: "/login"},
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				return t.authorize(ctx, nil)
			}},
		{Name: "reporting-job lists acme's invoices", Request: "ListInvoices with reporting-job's token", Expect: ok,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.reportingJob(ctx)
				if err != nil {
					return nil, err
				}
				return t.do(ctx, call{procedure: listInvoices, bearer: tok})
			}},
		{Name: "reporting-job reads an acme invoice", Request: "GetInvoice inv_demo_acme_1 with reporting-job's token", Expect: ok,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.reportingJob(ctx)
				if err != nil {
					return nil, err
				}
				return t.do(ctx, call{procedure: getInvoice, bearer: tok, body: getBody(acmeInvoice)})
			}},
		{Name: "bob lists acme's invoices", Request: "ListInvoices with bob's access token", Expect: ok,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.userTokens(ctx, bob)
				if err != nil {
					return nil, err
				}
				return t.do(ctx, call{procedure: listInvoices, bearer: tok.AccessToken})
			}},
		{Name: "carol reads globex's invoice", Request: "GetInvoice inv_demo_globex_1 with carol's access token", Expect: ok,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.userTokens(ctx, carol)
				if err != nil {
					return nil, err
				}
				return t.do(ctx, call{procedure: getInvoice, bearer: tok.AccessToken, body: getBody(globexInvoice)})
			}},
		{Name: "billing-bot creates with a clean body", Request: "CreateInvoice with billing-bot's token", Expect: ok,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.billingBot(ctx)
				if err != nil {
					return nil, err
				}
				return t.do(ctx, call{procedure: createInvoice, bearer: tok, body: strings.NewReader(createInvoiceBody)})
			}},
	}
}
