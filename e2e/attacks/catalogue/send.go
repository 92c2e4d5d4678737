package catalogue

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// maxResponse bounds what is read of an answer.
const maxResponse = 1 << 20

// Response is the stack's answer to an attack.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	// Sent is the bearer token the attack sent, if any: the answer must not
	// echo it.
	Sent string
}

// ConnectError is the Connect JSON error body.
type ConnectError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Details []struct {
		Type  string `json:"type"`
		Debug struct {
			Reason   string            `json:"reason"`
			Metadata map[string]string `json:"metadata"`
		} `json:"debug"`
	} `json:"details"`
}

// Reason is the reason of the ErrorInfo detail, empty without one.
func (e ConnectError) Reason() string {
	for _, d := range e.Details {
		if d.Type == "google.rpc.ErrorInfo" {
			return d.Debug.Reason
		}
	}
	return ""
}

// call is one HTTP request to the gateway.
type call struct {
	method    string
	procedure string
	// bearer goes in "Authorization: Bearer <bearer>" when set.
	bearer string
	// header is set on the request after bearer (so it may replace it).
	header http.Header
	body   io.Reader
	// length, when not zero, is the declared Content-Length; -1 streams
	// the body without one.
	length int64
}

// do sends c to the gateway.
func (t *Target) do(ctx context.Context, c call) (*Response, error) {
	method := c.method
	if method == "" {
		method = http.MethodPost
	}
	body := c.body
	if body == nil && method == http.MethodPost {
		body = strings.NewReader("{}")
	}
	req, err := http.NewRequestWithContext(ctx, method, t.GatewayURL+c.procedure, body)
	if err != nil {
		return nil, err
	}
	if c.length != 0 {
		req.ContentLength = c.length
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+c.bearer)
	}
	for k, vs := range c.header {
		req.Header.Del(k)
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	// The answer to the attack is what is checked, never where a redirect
	// leads.
	client := *t.HTTP
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, c.procedure, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, c.procedure, err)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: raw, Sent: c.bearer}, nil
}

// token gets a client_credentials access token from the issuer.
func (t *Target) token(ctx context.Context, clientID, secret string, scopes ...string) (string, error) {
	cfg := clientcredentials.Config{
		ClientID:     clientID,
		ClientSecret: secret,
		TokenURL:     t.IssuerURL + "/oauth2/token",
		Scopes:       scopes,
		AuthStyle:    oauth2.AuthStyleInHeader,
	}
	tok, err := cfg.Token(context.WithValue(ctx, oauth2.HTTPClient, t.HTTP))
	if err != nil {
		return "", fmt.Errorf("token for %s: %w", clientID, err)
	}
	return tok.AccessToken, nil
}

// The demo clients the scenarios use (DESIGN.md's demo seed).
func (t *Target) reportingJob(ctx context.Context) (string, error) {
	return t.token(ctx, "reporting-job", "reporting-job-secret", "invoice:read")
}

func (t *Target) billingBot(ctx context.Context) (string, error) {
	return t.token(ctx, "billing-bot", "billing-bot-secret", "invoice:read", "invoice:write")
}

// Procedures of the invoice service through the gateway.
const (
	invoiceService    = "/gatehouse.invoice.v1.InvoiceService/"
	listInvoices      = invoiceService + "ListInvoices"
	getInvoice        = invoiceService + "GetInvoice"
	createInvoice     = invoiceService + "CreateInvoice"
	approveInvoice    = invoiceService + "ApproveInvoice"
	acmeInvoice       = "inv_demo_acme_1"
	globexInvoice     = "inv_demo_globex_1"
	createInvoiceBody = `{"customer":"Mallory Ltd","amountCents":"100","currency":"EUR"}`
)

// invoiceSummary is what AcmeInvoices compares of an invoice.
type invoiceSummary struct {
	ID          string `json:"id"`
	Tenant      string `json:"tenant"`
	Customer    string `json:"customer"`
	AmountCents string `json:"amountCents"`
	Status      string `json:"status"`
	CreatedBy   string `json:"createdBy"`
	ApprovedBy  string `json:"approvedBy"`
}

// AcmeInvoices is every invoice of tenant acme, as reporting-job lists them.
var AcmeInvoices = &State{Name: "acme's invoices", Read: func(ctx context.Context, t *Target) (string, error) {
	tok, err := t.reportingJob(ctx)
	if err != nil {
		return "", err
	}
	var all []invoiceSummary
	page := ""
	for range 100 {
		body, err := json.Marshal(map[string]any{"pageSize": 100, "pageToken": page})
		if err != nil {
			return "", err
		}
		resp, err := t.do(ctx, call{procedure: listInvoices, bearer: tok, body: strings.NewReader(string(body))})
		if err != nil {
			return "", err
		}
		if resp.Status != http.StatusOK {
			return "", fmt.Errorf("list invoices: %d %s", resp.Status, resp.Body)
		}
		var list struct {
			Invoices      []invoiceSummary `json:"invoices"`
			NextPageToken string           `json:"nextPageToken"`
		}
		if err := json.Unmarshal(resp.Body, &list); err != nil {
			return "", fmt.Errorf("list invoices: %w", err)
		}
		all = append(all, list.Invoices...)
		if page = list.NextPageToken; page == "" {
			slices.SortFunc(all, func(a, b invoiceSummary) int { return strings.Compare(a.ID, b.ID) })
			out, err := json.Marshal(all)
			return string(out), err
		}
	}
	return "", fmt.Errorf("list invoices: more than 100 pages")
}}

// getBody is a GetInvoice request body.
func getBody(id string) io.Reader {
	return strings.NewReader(`{"id":` + strconvQuote(id) + `}`)
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// tokenRequest posts a token request to the issuer's token endpoint, with
// HTTP Basic client authentication when clientID is set.
func (t *Target) tokenRequest(ctx context.Context, clientID, secret string, form url.Values) (*Response, error) {
	return t.issuerForm(ctx, "/oauth2/token", clientID, secret, form)
}

// issuerForm posts form to an OAuth endpoint of the issuer, with HTTP Basic
// client authentication when clientID is set.
func (t *Target) issuerForm(ctx context.Context, path, clientID, secret string, form url.Values) (*Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.IssuerURL+path, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if clientID != "" {
		req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	}
	resp, err := t.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}, nil
}

// authorize sends invoice-web's authorization request (code flow, PKCE
// S256, a state) with the parameters in set replaced, and returns the
// issuer's first answer, redirects not followed.
func (t *Target) authorize(ctx context.Context, set url.Values) (*Response, error) {
	q := url.Values{
		"response_type":         {"code"},
		"client_id":             {"invoice-web"},
		"redirect_uri":          {callbackURL},
		"scope":                 {"openid invoice:read"},
		"state":                 {"attack-state"},
		"code_challenge":        {oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())},
		"code_challenge_method": {"S256"},
	}
	for k, v := range set {
		q[k] = v
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, issuerID+"/oauth2/authorize?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	client := *t.HTTP
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("authorize: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("authorize: %w", err)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}, nil
}

// active asks the issuer whether token is active (RFC 7662), as billing-bot,
// a resource client of the gatehouse-api audience.
func (t *Target) active(ctx context.Context, token string) (bool, error) {
	resp, err := t.issuerForm(ctx, "/oauth2/introspect", "billing-bot", "billing-bot-secret", url.Values{"token": {token}})
	if err != nil {
		return false, err
	}
	var body struct {
		Active bool `json:"active"`
	}
	if err := json.Unmarshal(resp.Body, &body); err != nil || resp.Status != http.StatusOK {
		return false, fmt.Errorf("introspect: %d: %v", resp.Status, err)
	}
	return body.Active, nil
}
