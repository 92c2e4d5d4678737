package catalogue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
)

// The token exchange grant (RFC 8693) and its token type.
const (
	tokenExchangeGrant = "urn:ietf:params:oauth:grant-type:token-exchange" //nolint:gosec // G101: a grant type URN, not a credential
	accessTokenType    = "urn:ietf:params:oauth:token-type:access_token"   //nolint:gosec // G101: a token type URN, not a credential
)

// exchange posts a token exchange to the issuer as clientID (HTTP Basic
// when secret is set, client_id in the body otherwise).
func (t *Target) exchange(ctx context.Context, clientID, secret string, form url.Values) (*Response, error) {
	form.Set("grant_type", tokenExchangeGrant)
	if form.Get("subject_token") != "" {
		form.Set("subject_token_type", accessTokenType)
	}
	if form.Get("actor_token") != "" {
		form.Set("actor_token_type", accessTokenType)
	}
	if secret == "" {
		form.Set("client_id", clientID)
		return t.tokenRequest(ctx, "", "", form)
	}
	return t.tokenRequest(ctx, clientID, secret, form)
}

// supportExport is a client_credentials token of support-export, the acme
// export job that acts for customers by delegation.
func (t *Target) supportExport(ctx context.Context) (string, error) {
	return t.token(ctx, "support-export", "support-export-secret", "invoice:read")
}

// delegated is support-export's honest delegation of bob's access token
// (scope invoice:read): a token with sub bob and act support-export.
func (t *Target) delegated(ctx context.Context) (string, error) {
	bobTok, err := t.userTokens(ctx, bob)
	if err != nil {
		return "", err
	}
	actor, err := t.supportExport(ctx)
	if err != nil {
		return "", err
	}
	resp, err := t.exchange(ctx, "support-export", "support-export-secret", url.Values{
		"subject_token": {bobTok.AccessToken}, "actor_token": {actor}, "scope": {"invoice:read"}})
	if err != nil {
		return "", err
	}
	var body struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(resp.Body, &body); err != nil || resp.Status != http.StatusOK || body.AccessToken == "" {
		return "", fmt.Errorf("honest delegation of bob's token: %d (%v)", resp.Status, err)
	}
	return body.AccessToken, nil
}

// edited is raw with its payload's claims changed by set, header and
// signature kept.
func edited(raw string, set map[string]any) (string, error) {
	j, err := parseJWT(raw)
	if err != nil {
		return "", err
	}
	for k, v := range set {
		j.claims[k] = v
	}
	return signingInput(j.header, j.claims) + "." + j.sig, nil
}

// impersonate is support-console's impersonation request for bob with
// sam's access token, as the support service asks it, with set applied (an
// empty value deletes a parameter).
func (t *Target) impersonate(ctx context.Context, set url.Values) (*Response, error) {
	samTok, err := t.userTokens(ctx, sam)
	if err != nil {
		return nil, err
	}
	form := url.Values{"subject_token": {samTok.AccessToken}, "requested_subject": {"bob"}, "support_ticket": {"tkt_stated"},
		"scope": {"invoice:read"}}
	for k, v := range set {
		if len(v) == 0 || v[0] == "" {
			form.Del(k)
		} else {
			form[k] = v
		}
	}
	return t.exchange(ctx, "support-console", "support-console-secret", form)
}

func delegation() []Scenario {
	return []Scenario{
		{Name: "impersonation without a ticket", Category: Delegation, Reference: "RFC 8693 section 1.1; API5:2023",
			Request: "token exchange by support-console, sam's access token as subject_token, requested_subject bob, no support_ticket",
			Expect:  Outcome{Status: http.StatusBadRequest, OAuthError: "invalid_grant", Reason: "ticket_required"},
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				return t.impersonate(ctx, url.Values{"support_ticket": {""}})
			}},
		{Name: "scope escalation by impersonation", Category: Delegation, Reference: "RFC 8693 section 2.1; RFC 8693 section 5",
			Request: "sam's impersonation of bob through support-console asking for `invoice:read invoice:approve`, beyond sam's token",
			Expect:  Outcome{Status: http.StatusBadRequest, OAuthError: "invalid_scope"},
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				return t.impersonate(ctx, url.Values{"scope": {"invoice:read invoice:approve"}})
			}},
		{Name: "exchange by a public client", Category: Delegation, Reference: "RFC 8693 section 2.1; RFC 6749 section 2.1",
			Request: "token exchange at the issuer by invoice-web (public, no secret), reporting-job's token as subject_token, requested_subject bob",
			Expect:  Outcome{Status: http.StatusUnauthorized, OAuthError: "invalid_client"},
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				subject, err := t.reportingJob(ctx)
				if err != nil {
					return nil, err
				}
				return t.exchange(ctx, "invoice-web", "", url.Values{"subject_token": {subject}, "requested_subject": {"bob"},
					"scope": {"invoice:read"}})
			}},
		{Name: "exchange by a client without the grant", Category: Delegation, Reference: "RFC 8693 section 2.2.2; RFC 6749 section 5.2",
			Request: "token exchange at the issuer by reporting-job (authenticated, token exchange not among its grants), its own token as subject_token, requested_subject bob",
			Expect:  Outcome{Status: http.StatusBadRequest, OAuthError: "unauthorized_client"},
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				subject, err := t.reportingJob(ctx)
				if err != nil {
					return nil, err
				}
				return t.exchange(ctx, "reporting-job", "reporting-job-secret", url.Values{"subject_token": {subject},
					"requested_subject": {"bob"}, "scope": {"invoice:read"}})
			}},
		{Name: "delegation of another tenant's token", Category: Delegation, Reference: "RFC 8693 section 1.1; API1:2023",
			Request: "token exchange by support-export (tenant acme), its own token as actor_token, carol's access token (tenant globex) as subject_token",
			Expect:  Outcome{Status: http.StatusBadRequest, OAuthError: "invalid_grant", Reason: "tenant_mismatch"},
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				carolTok, err := t.userTokens(ctx, carol)
				if err != nil {
					return nil, err
				}
				actor, err := t.supportExport(ctx)
				if err != nil {
					return nil, err
				}
				return t.exchange(ctx, "support-export", "support-export-secret", url.Values{
					"subject_token": {carolTok.AccessToken}, "actor_token": {actor}, "scope": {"invoice:read"}})
			}},
		{Name: "actor token of another client", Category: Delegation, Reference: "RFC 8693 section 2.1; RFC 8693 section 4.1",
			Request: "token exchange by support-console presenting support-export's token as actor_token, bob's access token as subject_token",
			Expect:  invalidGrant,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				bobTok, err := t.userTokens(ctx, bob)
				if err != nil {
					return nil, err
				}
				actor, err := t.supportExport(ctx)
				if err != nil {
					return nil, err
				}
				return t.exchange(ctx, "support-console", "support-console-secret", url.Values{
					"subject_token": {bobTok.AccessToken}, "actor_token": {actor}, "scope": {"invoice:read"}})
			}},
		{Name: "scope escalation by delegation", Category: Delegation, Reference: "RFC 8693 section 2.1; RFC 8693 section 5",
			Request: "support-export's delegation of bob's access token asking for `invoice:read invoice:write`, a scope bob's token does not hold",
			Expect:  Outcome{Status: http.StatusBadRequest, OAuthError: "invalid_scope"},
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				bobTok, err := t.userTokens(ctx, bob)
				if err != nil {
					return nil, err
				}
				actor, err := t.supportExport(ctx)
				if err != nil {
					return nil, err
				}
				return t.exchange(ctx, "support-export", "support-export-secret", url.Values{
					"subject_token": {bobTok.AccessToken}, "actor_token": {actor}, "scope": {"invoice:read invoice:write"}})
			}},
		{Name: "forged act claim", Category: Delegation, Reference: "RFC 8693 section 4.1; RFC 8725 section 3.2",
			Request: "ListInvoices with support-export's delegated token for bob, its payload's `act` edited to `{sub: mallory}` (header and signature kept)",
			Expect:  invalidToken,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.delegated(ctx)
				if err != nil {
					return nil, err
				}
				forged, err := edited(tok, map[string]any{"act": map[string]any{"sub": "mallory"}})
				if err != nil {
					return nil, err
				}
				return t.do(ctx, call{procedure: listInvoices, bearer: forged})
			}},
		{Name: refreshUpgrade, Category: Delegation, Reference: "RFC 9470 section 4; RFC 6749 section 6",
			Request: "bob's refresh token (password sign-in) sent by invoice-web with `acr_values=mfa` and `max_age=0`",
			Expect:  Outcome{Status: http.StatusOK}, Verify: sameAuthentication,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.signIn(ctx, bob)
				if err != nil {
					return nil, err
				}
				t.remember(refreshUpgrade, firstTokens{access: tok.AccessToken})
				form := refresh(tok.RefreshToken, "")
				form.Set("acr_values", "mfa")
				form.Set("max_age", "0")
				return t.tokenRequest(ctx, "", "", form)
			}},
		{Name: "step-up bypass by edited acr", Category: Delegation, Reference: "RFC 9470 section 3; RFC 8725 section 3.2",
			Request: "ApproveInvoice inv_demo_acme_1 with bob's access token, its payload's `acr` edited from `pwd` to `mfa` and `amr` to `[pwd otp mfa]` (header and signature kept)",
			Expect:  invalidToken, State: AcmeInvoices,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.userTokens(ctx, bob)
				if err != nil {
					return nil, err
				}
				if j, err := parseJWT(tok.AccessToken); err != nil || j.claims["acr"] != "pwd" {
					return nil, fmt.Errorf("bob's access token: acr %v (%v), want pwd", j.claimOr("acr"), err)
				}
				forged, err := edited(tok.AccessToken, map[string]any{"acr": "mfa", "amr": []string{"pwd", "otp", "mfa"}})
				if err != nil {
					return nil, err
				}
				return t.do(ctx, call{procedure: approveInvoice, bearer: forged, body: getBody(acmeInvoice)})
			}},
		staleAuthTime(),
	}
}

// refreshUpgrade is the scenario sameAuthentication checks.
const refreshUpgrade = "step-up by refresh"

// sameAuthentication checks that a refresh answer's access token carries
// the sign-in's authentication (acr, amr, auth_time), not the mfa asked for.
var sameAuthentication = &Verify{
	Name: "the new access token keeps the sign-in's `acr`, `amr` and `auth_time` (no `mfa`)",
	Check: func(_ context.Context, t *Target, resp *Response) error {
		var body struct {
			AccessToken string `json:"access_token"`
		}
		if err := json.Unmarshal(resp.Body, &body); err != nil {
			return fmt.Errorf("refresh answer: %w", err)
		}
		got, err := parseJWT(body.AccessToken)
		if err != nil {
			return fmt.Errorf("refresh answer's access token: %w", err)
		}
		first, err := parseJWT(t.recall(refreshUpgrade).access)
		if err != nil {
			return fmt.Errorf("the sign-in's access token: %w", err)
		}
		if first.claims["acr"] == nil || first.claims["auth_time"] == nil {
			return errors.New("the sign-in's access token carries no acr or auth_time")
		}
		for _, c := range []string{"acr", "amr", "auth_time"} {
			a, _ := json.Marshal(first.claims[c])
			b, _ := json.Marshal(got.claims[c])
			if string(a) != string(b) {
				return fmt.Errorf("%s %s after the refresh, %s at the sign-in", c, b, a)
			}
		}
		if got.claims["acr"] == "mfa" {
			return errors.New("the refreshed token claims acr mfa")
		}
		return nil
	},
}

// claimOr is the claim c of j, nil for a nil j.
func (j *jwt) claimOr(c string) any {
	if j == nil {
		return nil
	}
	return j.claims[c]
}
