package catalogue

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
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
		{Name: "support-export's delegated token for bob lists acme's invoices",
			Request: "ListInvoices with support-export's honest delegation of bob's access token (scope invoice:read)", Expect: ok,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.delegated(ctx)
				if err != nil {
					return nil, err
				}
				return t.do(ctx, call{procedure: listInvoices, bearer: tok})
			}},
		{Name: "sam's impersonation of bob with a stated ticket is issued",
			Request: "the impersonation request of the impersonation scenarios, unedited (the token is revoked at once)", Expect: ok,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				resp, err := t.impersonate(ctx, nil)
				if err != nil || resp.Status != http.StatusOK {
					return resp, err
				}
				// A live impersonation token is not left behind.
				var issued struct {
					AccessToken string `json:"access_token"`
				}
				if err := json.Unmarshal(resp.Body, &issued); err != nil || issued.AccessToken == "" {
					return resp, fmt.Errorf("impersonation answer without an access token: %v", err)
				}
				revoked, err := t.issuerForm(ctx, "/oauth2/revoke", "support-console", "support-console-secret",
					url.Values{"token": {issued.AccessToken}, "token_type_hint": {"access_token"}})
				if err != nil {
					return resp, err
				}
				if revoked.Status != http.StatusOK {
					return resp, fmt.Errorf("revoking the impersonation token: %d", revoked.Status)
				}
				return resp, nil
			}},
		{Name: "billing-bot creates with a clean body", Request: "CreateInvoice with billing-bot's token", Expect: ok,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.billingBot(ctx)
				if err != nil {
					return nil, err
				}
				return t.do(ctx, call{procedure: createInvoice, bearer: tok, body: strings.NewReader(createInvoiceBody)})
			}},
		{Name: "an issuer-signed copy of reporting-job's token lists acme's invoices",
			Request: "ListInvoices with a reporting-job token re-signed by the issuer's key, claims unedited", Expect: ok,
			Send: forged(issuerSigned(nil))},
		{Name: "alice, signed in with MFA a minute ago, approves an invoice above the threshold",
			Request: "ApproveInvoice, on an invoice of 20,000.00 EUR billing-bot has just created, with the stale auth_time scenario's token, `auth_time` one minute ago",
			Expect:  ok,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				bot, err := t.billingBot(ctx)
				if err != nil {
					return nil, err
				}
				created, err := t.do(ctx, call{procedure: createInvoice, bearer: bot,
					body: strings.NewReader(`{"customer":"Step-up Control Ltd","amountCents":"2000000","currency":"EUR"}`)})
				if err != nil || created.Status != http.StatusOK {
					return created, err
				}
				var inv struct {
					Invoice struct {
						ID string `json:"id"`
					} `json:"invoice"`
				}
				if err := json.Unmarshal(created.Body, &inv); err != nil || inv.Invoice.ID == "" {
					return created, fmt.Errorf("created invoice without an id: %v", err)
				}
				tok, err := t.userTokens(ctx, bob)
				if err != nil {
					return nil, err
				}
				j, err := parseJWT(tok.AccessToken)
				if err != nil {
					return nil, err
				}
				signed, err := t.resign(ctx, j, func(c map[string]any, now time.Time) { asAlice(c, now.Add(-time.Minute)) })
				if err != nil {
					return nil, err
				}
				return t.do(ctx, call{procedure: approveInvoice, bearer: signed, body: getBody(inv.Invoice.ID)})
			}},
	}
}
