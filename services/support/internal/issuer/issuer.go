// Package issuer is the support service's client of the Gatehouse issuer:
// OAuth 2.0 Token Exchange (RFC 8693) for impersonation and delegation,
// client credentials for the export job's own token, and token revocation
// (RFC 7009). It implements support.Issuer: every token the issuer returns
// is verified (signature, iss, aud, exp) before the service sees its
// claims, and the issuer's errors become the support package's error
// values. Every call has a deadline.
package issuer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/gatehouse/gatehouse/libs/accesstoken"
	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	"github.com/gatehouse/gatehouse/services/support/internal/support"
)

// Paths of the issuer's endpoints (DESIGN.md), below Config.BaseURL.
const (
	TokenPath      = "/oauth2/token" //nolint:gosec // G101: an endpoint path, not a credential
	RevocationPath = "/oauth2/revoke"
)

// RFC 8693 identifiers.
const (
	GrantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange" //nolint:gosec // G101: a grant type URN, not a credential
	TokenTypeAccessToken   = "urn:ietf:params:oauth:token-type:access_token"   //nolint:gosec // G101: a token type URN, not a credential
)

// maxResponseBytes bounds an issuer response we read.
const maxResponseBytes = 64 << 10

// Credentials are a confidential client's id and secret.
type Credentials struct {
	ID string
	// Secret is sent with client_secret_basic. Never log it.
	Secret string
}

// Verifier verifies a raw access token (an *accesstoken.Verifier).
type Verifier interface {
	Verify(ctx context.Context, raw string) (*accesstoken.Claims, error)
}

// Config configures a Client.
type Config struct {
	// BaseURL is the issuer's base URL as the support service reaches it
	// (inside compose its internal address, not the public identifier).
	BaseURL string
	// HTTPClient sends the requests; Timeout bounds each call.
	HTTPClient *http.Client
	Timeout    time.Duration
	// Console is the support console's client: it exchanges an agent's
	// token for an impersonation token and revokes that token.
	Console Credentials
	// Export is the export job's client: it gets its own token by client
	// credentials and exchanges a user's token, with its own as actor
	// token, for a delegated one.
	Export Credentials
	// Verifier verifies the tokens the issuer returns.
	Verifier Verifier
}

// Client implements support.Issuer against the Gatehouse issuer.
type Client struct {
	cfg       Config
	tokenURL  string
	revokeURL string
	exportCC  clientcredentials.Config
}

var _ support.Issuer = (*Client)(nil)

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("issuer client: base URL %q: want an absolute http(s) URL", cfg.BaseURL)
	}
	switch {
	case cfg.HTTPClient == nil || cfg.Verifier == nil:
		return nil, errors.New("issuer client: an HTTP client and a verifier are required")
	case cfg.Timeout <= 0:
		return nil, errors.New("issuer client: the timeout must be positive")
	case cfg.Console.ID == "" || cfg.Console.Secret == "" || cfg.Export.ID == "" || cfg.Export.Secret == "":
		return nil, errors.New("issuer client: both clients need an id and a secret")
	}
	base := strings.TrimSuffix(cfg.BaseURL, "/")
	c := &Client{cfg: cfg, tokenURL: base + TokenPath, revokeURL: base + RevocationPath}
	c.exportCC = clientcredentials.Config{
		ClientID: cfg.Export.ID, ClientSecret: cfg.Export.Secret, TokenURL: c.tokenURL,
		Scopes: []string{"invoice:read"}, AuthStyle: oauth2.AuthStyleInHeader,
	}
	return c, nil
}

// Impersonate implements support.Issuer: a token exchange as the support
// console with requested_subject (the customer), stating the ticket and
// its access (Gatehouse extensions the issuer trusts from this client
// only).
func (c *Client) Impersonate(ctx context.Context, r support.ImpersonationRequest) (support.IssuedToken, error) {
	form := url.Values{
		"grant_type":           {GrantTypeTokenExchange},
		"subject_token":        {r.AgentToken},
		"subject_token_type":   {TokenTypeAccessToken},
		"requested_token_type": {TokenTypeAccessToken},
		"requested_subject":    {r.Customer},
		"support_ticket":       {r.TicketID},
		"ticket_access":        {string(r.Access)},
		"scope":                {strings.Join(r.Scopes, " ")},
		"requested_lifetime":   {strconv.Itoa(int(r.Lifetime / time.Second))},
	}
	return c.exchange(ctx, c.cfg.Console, form)
}

// Delegate implements support.Issuer: the export job's own token by
// client credentials (fetched for each export, so a revoked or rotated
// client never leaves a stale token behind), then a token exchange as the
// export job with the user's token as subject and its own as actor.
func (c *Client) Delegate(ctx context.Context, subjectToken string, scopes []string, lifetime time.Duration) (support.IssuedToken, error) {
	actor, err := c.actorToken(ctx)
	if err != nil {
		return support.IssuedToken{}, err
	}
	form := url.Values{
		"grant_type":           {GrantTypeTokenExchange},
		"subject_token":        {subjectToken},
		"subject_token_type":   {TokenTypeAccessToken},
		"actor_token":          {actor},
		"actor_token_type":     {TokenTypeAccessToken},
		"requested_token_type": {TokenTypeAccessToken},
		"scope":                {strings.Join(scopes, " ")},
		"requested_lifetime":   {strconv.Itoa(int(lifetime / time.Second))},
	}
	return c.exchange(ctx, c.cfg.Export, form)
}

// Revoke implements support.Issuer (RFC 7009) as the support console,
// the client the impersonation tokens were issued to.
func (c *Client) Revoke(ctx context.Context, token string) error {
	form := url.Values{"token": {token}, "token_type_hint": {"access_token"}}
	status, body, err := c.post(ctx, c.revokeURL, c.cfg.Console, form)
	if err != nil {
		return fmt.Errorf("%w: revoke: %v", support.ErrIssuerUnavailable, err)
	}
	if status != http.StatusOK {
		return fmt.Errorf("%w: revoke: %s", support.ErrIssuerUnavailable, describe(status, body))
	}
	return nil
}

// actorToken gets the export job's own access token.
func (c *Client) actorToken(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	tok, err := c.exportCC.Token(context.WithValue(ctx, oauth2.HTTPClient, c.cfg.HTTPClient))
	if err != nil {
		// Unreachable, or the issuer refused the export job's own
		// credentials: nothing the caller can fix.
		return "", fmt.Errorf("%w: client credentials for %s: %v", support.ErrIssuerUnavailable, c.cfg.Export.ID, err)
	}
	return tok.AccessToken, nil
}

// tokenResponse is RFC 8693 section 2.2.1's response.
type tokenResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type"`
	TokenType       string `json:"token_type"`
}

// exchange sends a token exchange request as client and verifies the
// token it returns.
func (c *Client) exchange(ctx context.Context, client Credentials, form url.Values) (support.IssuedToken, error) {
	status, body, err := c.post(ctx, c.tokenURL, client, form)
	if err != nil {
		return support.IssuedToken{}, fmt.Errorf("%w: token exchange: %v", support.ErrIssuerUnavailable, err)
	}
	if status != http.StatusOK {
		return support.IssuedToken{}, exchangeError(status, body)
	}
	var resp tokenResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		return support.IssuedToken{}, fmt.Errorf("%w: token exchange: malformed response: %v", support.ErrIssuerUnavailable, err)
	}
	if resp.IssuedTokenType != TokenTypeAccessToken || !strings.EqualFold(resp.TokenType, "Bearer") {
		return support.IssuedToken{}, fmt.Errorf("%w: token exchange: issued %q of type %q, want a Bearer access token",
			support.ErrIssuerUnavailable, resp.IssuedTokenType, resp.TokenType)
	}
	claims, err := c.cfg.Verifier.Verify(ctx, resp.AccessToken)
	if err != nil {
		return support.IssuedToken{}, fmt.Errorf("%w: token exchange: the issued token does not verify: %v", support.ErrIssuerUnavailable, err)
	}
	tok := support.IssuedToken{
		Token: resp.AccessToken, Subject: claims.Subject, Tenant: claims.Tenant, ClientID: claims.ClientID,
		JTI: claims.ID, Scopes: claims.Scopes, Expiry: claims.Expiry,
	}
	if claims.Actor != nil {
		tok.ActorSubject, tok.ActorClientID = claims.Actor.Subject, claims.Actor.ClientID
	}
	return tok, nil
}

// post sends form to endpoint as client (client_secret_basic, both parts
// form-urlencoded as RFC 6749 section 2.3.1 requires) within the timeout,
// and returns the status and the (bounded) body.
func (c *Client) post(ctx context.Context, endpoint string, client Credentials, form url.Values) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.SetBasicAuth(url.QueryEscape(client.ID), url.QueryEscape(client.Secret))
	if id := support.RequestID(ctx); id != "" {
		req.Header.Set(enforce.HeaderRequestID, id)
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return 0, nil, fmt.Errorf("read response: %w", err)
	}
	return resp.StatusCode, body, nil
}

// errorResponse is RFC 6749 section 5.2's error response, plus the
// issuer's "reason_code" when a policy refused.
type errorResponse struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
	ReasonCode  string `json:"reason_code"`
}

// exchangeError maps a refused token exchange onto the support package's
// errors:
//   - a policy refusal (a reason_code) is the caller's answer: RefusedError;
//   - invalid_scope: the caller's token lacks a requested scope;
//   - invalid_grant: the issuer did not accept the caller's token;
//   - a server error or temporarily_unavailable: the issuer is unavailable;
//   - anything else (invalid_client, unauthorized_client, invalid_request,
//     ...) is the support service's own misconfiguration, which the caller
//     cannot fix: also unavailable, and logged with the issuer's words.
func exchangeError(status int, body []byte) error {
	var e errorResponse
	_ = json.Unmarshal(body, &e) // a body that is not JSON leaves e empty
	detail := describe(status, body)
	switch {
	case status >= http.StatusInternalServerError:
		return fmt.Errorf("%w: token exchange: %s", support.ErrIssuerUnavailable, detail)
	case validReasonCode(e.ReasonCode):
		return fmt.Errorf("token exchange: %s: %w", detail, &support.RefusedError{By: "issuer", Reason: e.ReasonCode})
	case e.Error == "invalid_scope":
		return fmt.Errorf("token exchange: %s: %w", detail, &support.RefusedError{By: "issuer", Reason: reason.InsufficientScope})
	case e.Error == "invalid_grant":
		return fmt.Errorf("%w: token exchange: %s", support.ErrCallerTokenRejected, detail)
	}
	return fmt.Errorf("%w: token exchange refused: %s", support.ErrIssuerUnavailable, detail)
}

// describe is an issuer answer for the log: status, error code and
// description (never a token: error responses carry none), truncated.
func describe(status int, body []byte) string {
	var e errorResponse
	if json.Unmarshal(body, &e) != nil || e.Error == "" {
		return "HTTP " + strconv.Itoa(status)
	}
	s := fmt.Sprintf("HTTP %d %s", status, e.Error)
	if e.Description != "" {
		s += ": " + e.Description
	}
	if e.ReasonCode != "" {
		s += " (reason_code " + e.ReasonCode + ")"
	}
	const limit = 300
	if len(s) > limit {
		s = s[:limit] + "…"
	}
	return s
}

// validReasonCode accepts what may be passed on as a reason code: 1 to 64
// bytes of [a-z0-9_] (the issuer withholds anything else, and so do we).
func validReasonCode(code string) bool {
	if code == "" || len(code) > 64 {
		return false
	}
	for _, c := range []byte(code) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}
