package catalogue

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// The outcomes the stack gives (docs/error-model.md).
var (
	invalidToken = Outcome{Status: http.StatusUnauthorized, Code: "unauthenticated", Reason: "invalid_token",
		Challenge: `error="invalid_token"`}
	missingToken = Outcome{Status: http.StatusUnauthorized, Code: "unauthenticated", Reason: "missing_token",
		Challenge: `error="invalid_token"`}
	routeNotConfigured = Outcome{Status: http.StatusForbidden, Code: "permission_denied", Reason: "route_not_configured"}
	notFound           = Outcome{Status: http.StatusNotFound, Code: "not_found", Reason: "resource_not_found"}
	badRequest         = Outcome{Status: http.StatusBadRequest, Code: "invalid_argument", Reason: "invalid_request"}
)

// insufficientScope is the answer to a token without scope.
func insufficientScope(scope string) Outcome {
	return Outcome{Status: http.StatusForbidden, Code: "permission_denied", Reason: "insufficient_scope",
		Challenge: `error="insufficient_scope", scope="` + scope + `"`}
}

// cleanedTo is the server's answer to a path that is not clean: a redirect,
// method and body kept, to the clean path, where the token is checked.
func cleanedTo(path string) Outcome {
	return Outcome{Status: http.StatusTemporaryRedirect, Location: path}
}

func forgery() []Scenario {
	s := func(name, ref, request string, forge func(context.Context, *Target, *jwt) (string, error)) Scenario {
		return Scenario{Name: name, Category: TokenForgery, Reference: ref, Request: request,
			Expect: invalidToken, Send: forged(forge)}
	}
	return []Scenario{
		s("alg none", "RFC 8725 section 3.1", "ListInvoices with a reporting-job token re-headed `alg: none` and no signature",
			func(_ context.Context, _ *Target, j *jwt) (string, error) {
				return signingInput(j.withHeader(map[string]any{"alg": "none"}), j.claims) + ".", nil
			}),
		s("alg none in capitals", "RFC 8725 section 3.1", "ListInvoices with a token re-headed `alg: NONE` and no signature",
			func(_ context.Context, _ *Target, j *jwt) (string, error) {
				return signingInput(j.withHeader(map[string]any{"alg": "NONE"}), j.claims) + ".", nil
			}),
		s("HMAC with the issuer's public key", "RFC 8725 section 2.1",
			"ListInvoices with a token re-signed HS256, the issuer's public key (PEM) as the HMAC secret",
			func(ctx context.Context, t *Target, j *jwt) (string, error) {
				kid, _ := j.header["kid"].(string)
				secret, err := t.issuerKeyPEM(ctx, kid)
				if err != nil {
					return "", err
				}
				return hs256(signingInput(j.withHeader(map[string]any{"alg": "HS256"}), j.claims), secret), nil
			}),
		s("kid path traversal", "RFC 8725 section 3.10",
			"ListInvoices with `kid: ../../../../../../dev/null`, HS256 with an empty secret",
			func(_ context.Context, _ *Target, j *jwt) (string, error) {
				h := j.withHeader(map[string]any{"alg": "HS256", "kid": "../../../../../../dev/null"})
				return hs256(signingInput(h, j.claims), nil), nil
			}),
		s("kid SQL injection", "RFC 8725 section 3.10",
			"ListInvoices with `kid: x' UNION SELECT 'k' --`, HS256 with the secret `k`",
			func(_ context.Context, _ *Target, j *jwt) (string, error) {
				h := j.withHeader(map[string]any{"alg": "HS256", "kid": "x' UNION SELECT 'k' --"})
				return hs256(signingInput(h, j.claims), []byte("k")), nil
			}),
		s("jku to an attacker's key set", "RFC 8725 section 3.10",
			"ListInvoices with a token signed by an attacker key, header `jku` naming the attacker's JWKS",
			attackerSigned(func(_ *ecdsa.PrivateKey, _ *jwt) map[string]any {
				return map[string]any{"kid": "attacker", "jku": "http://attacker.example/jwks.json"}
			})),
		s("x5u to an attacker's certificate", "RFC 8725 section 3.10",
			"ListInvoices with a token signed by an attacker key, header `x5u` naming the attacker's certificate",
			attackerSigned(func(_ *ecdsa.PrivateKey, _ *jwt) map[string]any {
				return map[string]any{"kid": "attacker", "x5u": "http://attacker.example/cert.pem"}
			})),
		s("embedded jwk", "RFC 8725 section 3.10",
			"ListInvoices with a token signed by an attacker key, its public key embedded as header `jwk`",
			attackerSigned(func(key *ecdsa.PrivateKey, _ *jwt) map[string]any {
				return map[string]any{"kid": "attacker", "jwk": publicJWK(key, "attacker")}
			})),
		s("foreign key under the issuer's kid", "RFC 8725 section 3.1",
			"ListInvoices with a token signed by an attacker key under the issuer's current `kid`",
			attackerSigned(func(_ *ecdsa.PrivateKey, _ *jwt) map[string]any { return nil })),
		s("foreign key with an unknown kid", "RFC 8725 section 3.1",
			"ListInvoices with a token signed by an attacker key under a `kid` the issuer never published",
			attackerSigned(func(_ *ecdsa.PrivateKey, _ *jwt) map[string]any {
				return map[string]any{"kid": "attacker-unknown"}
			})),
		s("stripped signature", "RFC 8725 section 3.1", "ListInvoices with a genuine token's signature removed (`header.payload.`)",
			func(_ context.Context, _ *Target, j *jwt) (string, error) {
				return strings.TrimSuffix(j.raw, j.sig), nil
			}),
		s("edited payload", "RFC 8725 section 3.1",
			"ListInvoices with a genuine token's claims edited (tenant globex, scope invoice:write), signature kept",
			func(_ context.Context, _ *Target, j *jwt) (string, error) {
				claims := map[string]any{}
				for k, v := range j.claims {
					claims[k] = v
				}
				claims["tenant"] = "globex"
				claims["scope"] = "invoice:read invoice:write invoice:approve"
				return strings.Split(j.raw, ".")[0] + "." + encode(claims) + "." + j.sig, nil
			}),
	}
}

func misuse() []Scenario {
	return append([]Scenario{
		{Name: "wrong audience", Category: TokenMisuse, Reference: "RFC 8725 section 3.9; RFC 9068 section 4",
			Request: "ListInvoices with policy-admin's client_credentials token (aud gatehouse-pdp, scope policy:admin)",
			Expect:  invalidToken,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.token(ctx, "policy-admin", "policy-admin-secret", "policy:admin")
				if err != nil {
					return nil, err
				}
				return t.do(ctx, call{procedure: listInvoices, bearer: tok})
			}},
		{Name: "ID token as access token", Category: TokenMisuse, Reference: "RFC 9068 section 4; RFC 8725 section 3.11",
			Request: "ListInvoices with bob's ID token (invoice-web sign-in) as the bearer token",
			Expect:  invalidToken,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.userTokens(ctx, bob)
				if err != nil {
					return nil, err
				}
				id, _ := tok.Extra("id_token").(string)
				if id == "" {
					return nil, errors.New("no ID token")
				}
				return t.do(ctx, call{procedure: listInvoices, bearer: id})
			}},
		{Name: "refresh token as access token", Category: TokenMisuse, Reference: "RFC 6749 section 1.5",
			Request: "ListInvoices with bob's refresh token (invoice-web sign-in) as the bearer token",
			Expect:  invalidToken,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.userTokens(ctx, bob)
				if err != nil {
					return nil, err
				}
				if tok.RefreshToken == "" {
					return nil, errors.New("no refresh token")
				}
				return t.do(ctx, call{procedure: listInvoices, bearer: tok.RefreshToken})
			}},
		{Name: "another tenant's token reads", Category: TokenMisuse, Reference: "API1:2023",
			Request: "GetInvoice inv_demo_acme_1 (tenant acme) with carol's access token (tenant globex)",
			Expect:  notFound,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.userTokens(ctx, carol)
				if err != nil {
					return nil, err
				}
				return t.do(ctx, call{procedure: getInvoice, bearer: tok.AccessToken, body: getBody(acmeInvoice)})
			}},
		{Name: "another tenant's token approves", Category: TokenMisuse, Reference: "API1:2023",
			Request: "ApproveInvoice inv_demo_acme_1 (tenant acme) with carol's MFA access token (tenant globex, billing_approver)",
			Expect:  notFound, State: AcmeInvoices,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.userTokens(ctx, carol)
				if err != nil {
					return nil, err
				}
				return t.do(ctx, call{procedure: approveInvoice, bearer: tok.AccessToken, body: getBody(acmeInvoice)})
			}},
		{Name: "empty bearer token", Category: TokenMisuse, Reference: "RFC 6750 section 2.1",
			Request: "ListInvoices with `Authorization: Bearer ` and nothing after it",
			Expect:  missingToken,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				return t.do(ctx, call{procedure: listInvoices, header: http.Header{"Authorization": {"Bearer "}}})
			}},
		{Name: "token in the query string", Category: TokenMisuse, Reference: "RFC 6750 section 2.3; RFC 9700 section 4.3.2",
			Request: "ListInvoices with reporting-job's token as `?access_token=` and no Authorization header",
			Expect:  missingToken,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.reportingJob(ctx)
				if err != nil {
					return nil, err
				}
				resp, err := t.do(ctx, call{procedure: listInvoices + "?access_token=" + url.QueryEscape(tok)})
				if resp != nil {
					resp.Sent = tok
				}
				return resp, err
			}},
		{Name: "token not a JWT", Category: TokenMisuse, Reference: "RFC 6750 section 3.1",
			Request: "ListInvoices with `Authorization: Bearer not-a-jwt`",
			Expect:  invalidToken,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				return t.do(ctx, call{procedure: listInvoices, bearer: "not-a-jwt"})
			}},
		{Name: "Basic instead of Bearer", Category: TokenMisuse, Reference: "RFC 6750 section 2.1",
			Request: "ListInvoices with `Authorization: Basic` and reporting-job's client credentials",
			Expect:  missingToken,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				h := http.Header{"Authorization": {"Basic cmVwb3J0aW5nLWpvYjpyZXBvcnRpbmctam9iLXNlY3JldA=="}}
				return t.do(ctx, call{procedure: listInvoices, header: h})
			}},
		{Name: "two Authorization headers", Category: TokenMisuse, Reference: "RFC 6750 section 2",
			Request: "ListInvoices with two `Authorization: Bearer` headers, a genuine token and a garbage one",
			Expect:  missingToken,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.reportingJob(ctx)
				if err != nil {
					return nil, err
				}
				h := http.Header{"Authorization": {"Bearer " + tok, "Bearer x"}}
				return t.do(ctx, call{procedure: listInvoices, header: h})
			}},
		{Name: "oversized Authorization header", Category: TokenMisuse, Reference: "API4:2023",
			Request: "ListInvoices with a 9 KiB bearer token (over the gateway's 8 KiB limit)",
			Expect:  invalidToken,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				return t.do(ctx, call{procedure: listInvoices, bearer: "eyJ" + strings.Repeat("A", 9<<10)})
			}},
	}, claimsMisuse()...)
}

func oauthFlow() []Scenario {
	// refused is the authorization endpoint's answer to an untrusted
	// redirect_uri: an error page, never a redirect (RFC 6749 section 4.1.2.1).
	refused := Outcome{Status: http.StatusBadRequest}
	redirect := func(name, ref, uri string) Scenario {
		return Scenario{Name: name, Category: OAuthFlow, Reference: ref,
			Request: "invoice-web's authorization request (PKCE S256, state) with `redirect_uri=" + uri + "`",
			Expect:  refused,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				return t.authorize(ctx, url.Values{"redirect_uri": {uri}})
			}}
	}
	redirects := []Scenario{
		redirect("redirect_uri to another host", "RFC 9700 section 4.1.1; RFC 6749 section 4.1.2.1", "https://evil.example/callback"),
		redirect("redirect_uri with an extra path", "RFC 9700 section 4.1.1", "http://127.0.0.1:49152/callback/evil"),
		redirect("redirect_uri with a suffix", "RFC 9700 section 4.1.1", "http://127.0.0.1:49152/callback.evil"),
		redirect("redirect_uri with a userinfo part", "RFC 9700 section 4.1.1", "http://127.0.0.1:49152@evil.example/callback"),
		redirect("redirect_uri with a query", "RFC 9700 section 4.1.1", "http://127.0.0.1:49152/callback?next=https://evil.example"),
	}
	tokenEndpoint := []Scenario{
		{Name: "client impersonation at the token endpoint", Category: OAuthFlow, Reference: "RFC 6749 section 2.3.1; RFC 9700 section 2.5",
			Request: "client_credentials token request as billing-bot with reporting-job's secret",
			Expect:  Outcome{Status: http.StatusUnauthorized, OAuthError: "invalid_client"},
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				return t.tokenRequest(ctx, "billing-bot", "reporting-job-secret",
					url.Values{"grant_type": {"client_credentials"}, "scope": {"invoice:read invoice:write"}})
			}},
		{Name: "scope escalation at the token endpoint", Category: OAuthFlow, Reference: "RFC 6749 section 3.3; RFC 9700 section 2.3",
			Request: "client_credentials token request as reporting-job for `invoice:read invoice:write invoice:approve`",
			Expect:  Outcome{Status: http.StatusBadRequest, OAuthError: "invalid_scope"},
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				return t.tokenRequest(ctx, "reporting-job", "reporting-job-secret",
					url.Values{"grant_type": {"client_credentials"}, "scope": {"invoice:read invoice:write invoice:approve"}})
			}},
		{Name: "grant type not registered", Category: OAuthFlow, Reference: "RFC 6749 section 5.2; RFC 9700 section 2.4",
			Request: "password grant (bob's password) as billing-bot, a client registered for client_credentials only",
			Expect:  Outcome{Status: http.StatusBadRequest, OAuthError: "unsupported_grant_type"},
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				return t.tokenRequest(ctx, "billing-bot", "billing-bot-secret",
					url.Values{"grant_type": {"password"}, "username": {bob.name}, "password": {bob.password}, "scope": {"invoice:read"}})
			}},
		{Name: "public client uses client_credentials", Category: OAuthFlow, Reference: "RFC 6749 section 4.4; RFC 9700 section 2.5",
			Request: "client_credentials token request as invoice-web (public, no secret), client_id in the body",
			Expect:  Outcome{Status: http.StatusBadRequest, OAuthError: "unauthorized_client"},
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				return t.tokenRequest(ctx, "", "",
					url.Values{"grant_type": {"client_credentials"}, "client_id": {"invoice-web"}, "scope": {"invoice:read"}})
			}},
	}
	return slices.Concat(redirects, codeFlowAttacks(), tokenEndpoint)
}

func bypass() []Scenario {
	return []Scenario{
		{Name: "BOLA: another tenant's invoice by id", Category: AuthzBypass, Reference: "API1:2023",
			Request: "GetInvoice inv_demo_globex_1 (tenant globex) with reporting-job's token (tenant acme)",
			Expect:  notFound,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.reportingJob(ctx)
				if err != nil {
					return nil, err
				}
				return t.do(ctx, call{procedure: getInvoice, bearer: tok, body: getBody(globexInvoice)})
			}},
		{Name: "BFLA: read-only client creates", Category: AuthzBypass, Reference: "API5:2023",
			Request: "CreateInvoice with reporting-job's token (scope invoice:read only)",
			Expect:  insufficientScope("invoice:write"), State: AcmeInvoices,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.reportingJob(ctx)
				if err != nil {
					return nil, err
				}
				return t.do(ctx, call{procedure: createInvoice, bearer: tok, body: strings.NewReader(createInvoiceBody)})
			}},
		{Name: "BFLA: read-only client approves", Category: AuthzBypass, Reference: "API5:2023",
			Request: "ApproveInvoice inv_demo_acme_1 with reporting-job's token (scope invoice:read only)",
			Expect:  insufficientScope("invoice:approve"), State: AcmeInvoices,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.reportingJob(ctx)
				if err != nil {
					return nil, err
				}
				return t.do(ctx, call{procedure: approveInvoice, bearer: tok, body: getBody(acmeInvoice)})
			}},
		{Name: "BFLA: viewer approves", Category: AuthzBypass, Reference: "API5:2023",
			Request: "ApproveInvoice inv_demo_acme_1 with bob's token (billing_viewer, scope invoice:approve granted)",
			Expect:  Outcome{Status: http.StatusForbidden, Code: "permission_denied", Reason: "role_not_permitted"},
			State:   AcmeInvoices,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.userTokens(ctx, bob)
				if err != nil {
					return nil, err
				}
				return t.do(ctx, call{procedure: approveInvoice, bearer: tok.AccessToken, body: getBody(acmeInvoice)})
			}},
		{Name: "mass assignment", Category: AuthzBypass, Reference: "API3:2023",
			Request: "CreateInvoice with billing-bot's token and extra body fields `tenant: globex`, `createdBy: carol`, `status: APPROVED`, `approvedBy: carol`",
			Expect:  Outcome{Status: http.StatusOK}, Verify: massAssignment,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.billingBot(ctx)
				if err != nil {
					return nil, err
				}
				body := strings.TrimSuffix(createInvoiceBody, "}") +
					`,"tenant":"globex","createdBy":"carol","status":"INVOICE_STATUS_APPROVED","approvedBy":"carol"}`
				return t.do(ctx, call{procedure: createInvoice, bearer: tok, body: strings.NewReader(body)})
			}},
		{Name: "spoofed identity headers", Category: AuthzBypass, Reference: "API2:2023",
			Request: "GetInvoice inv_demo_globex_1 with reporting-job's token and `X-Gatehouse-Tenant: globex`, `-Subject: carol`, `-Client-Id: carol`",
			Expect:  notFound,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.reportingJob(ctx)
				if err != nil {
					return nil, err
				}
				h := http.Header{"X-Gatehouse-Tenant": {"globex"}, "X-Gatehouse-Subject": {"carol"}, "X-Gatehouse-Client-Id": {"carol"}}
				return t.do(ctx, call{procedure: getInvoice, bearer: tok, header: h, body: getBody(globexInvoice)})
			}},
		{Name: "hop-by-hop identity header", Category: AuthzBypass, Reference: "API2:2023",
			Request: "GetInvoice inv_demo_globex_1 with reporting-job's token, `X-Gatehouse-Tenant: globex` and `Connection: X-Gatehouse-Tenant`",
			Expect:  notFound,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.reportingJob(ctx)
				if err != nil {
					return nil, err
				}
				h := http.Header{"X-Gatehouse-Tenant": {"globex"}, "Connection": {"X-Gatehouse-Tenant, X-Gatehouse-Subject"}}
				return t.do(ctx, call{procedure: getInvoice, bearer: tok, header: h, body: getBody(globexInvoice)})
			}},
		{Name: "unknown route", Category: AuthzBypass, Reference: "API9:2023",
			Request: "DeleteInvoice (no such procedure) with billing-bot's token",
			Expect:  routeNotConfigured, State: AcmeInvoices,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.billingBot(ctx)
				if err != nil {
					return nil, err
				}
				return t.do(ctx, call{procedure: invoiceService + "DeleteInvoice", bearer: tok, body: getBody(acmeInvoice)})
			}},
		{Name: "unknown route without a token", Category: AuthzBypass, Reference: "API9:2023",
			Request: "DeleteInvoice (no such procedure) without a token: no route enumeration",
			Expect:  missingToken,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				return t.do(ctx, call{procedure: invoiceService + "DeleteInvoice", body: getBody(acmeInvoice)})
			}},
		{Name: "PDP admin API through the gateway", Category: AuthzBypass, Reference: "API9:2023",
			Request: "PolicyAdminService/ListRevisions through the gateway with billing-bot's token",
			Expect:  routeNotConfigured,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.billingBot(ctx)
				if err != nil {
					return nil, err
				}
				return t.do(ctx, call{procedure: "/gatehouse.authz.v1.PolicyAdminService/ListRevisions", bearer: tok})
			}},
		{Name: "path confusion: dot segments", Category: AuthzBypass, Reference: "API5:2023",
			Request: "`ListInvoices/../CreateInvoice` with reporting-job's token (read-only)",
			Expect:  cleanedTo(createInvoice), State: AcmeInvoices,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.reportingJob(ctx)
				if err != nil {
					return nil, err
				}
				return t.do(ctx, call{procedure: listInvoices + "/../CreateInvoice", bearer: tok, body: strings.NewReader(createInvoiceBody)})
			}},
		{Name: "path confusion: case", Category: AuthzBypass, Reference: "API5:2023",
			Request: "`InvoiceService/createinvoice` (lower case) with reporting-job's token (read-only)",
			Expect:  routeNotConfigured, State: AcmeInvoices,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.reportingJob(ctx)
				if err != nil {
					return nil, err
				}
				return t.do(ctx, call{procedure: invoiceService + "createinvoice", bearer: tok, body: strings.NewReader(createInvoiceBody)})
			}},
		{Name: "path confusion: double slash", Category: AuthzBypass, Reference: "API5:2023",
			Request: "`/` + the CreateInvoice path (a leading `//`) with reporting-job's token (read-only)",
			Expect:  cleanedTo(createInvoice), State: AcmeInvoices,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.reportingJob(ctx)
				if err != nil {
					return nil, err
				}
				return t.do(ctx, call{procedure: "/" + createInvoice, bearer: tok, body: strings.NewReader(createInvoiceBody)})
			}},
		{Name: "method confusion", Category: AuthzBypass, Reference: "API5:2023",
			Request: "GET on CreateInvoice (Connect's GET form) with billing-bot's token",
			Expect:  Outcome{Status: http.StatusNotImplemented, Code: "unimplemented", Reason: "invalid_request"},
			State:   AcmeInvoices,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.billingBot(ctx)
				if err != nil {
					return nil, err
				}
				q := "?encoding=json&message=" + url.QueryEscape(createInvoiceBody)
				return t.do(ctx, call{method: http.MethodGet, procedure: createInvoice + q, bearer: tok})
			}},
	}
}

// massAssignment checks that the invoice created with extra fields is, as
// stored, the caller's: tenant acme, created by billing-bot, a draft.
var massAssignment = &Verify{
	Name: "the extra fields are ignored: the invoice, as stored, is acme's, created by billing-bot, a draft, not approved",
	Check: func(ctx context.Context, t *Target, resp *Response) error {
		var created struct {
			Invoice invoiceSummary `json:"invoice"`
		}
		if err := json.Unmarshal(resp.Body, &created); err != nil || created.Invoice.ID == "" {
			return fmt.Errorf("create answer %.300s: %v", resp.Body, err)
		}
		tok, err := t.billingBot(ctx)
		if err != nil {
			return err
		}
		got, err := t.do(ctx, call{procedure: getInvoice, bearer: tok, body: getBody(created.Invoice.ID)})
		if err != nil {
			return err
		}
		var stored struct {
			Invoice invoiceSummary `json:"invoice"`
		}
		if err := json.Unmarshal(got.Body, &stored); err != nil || got.Status != http.StatusOK {
			return fmt.Errorf("read back %s: %d %.300s: %v", created.Invoice.ID, got.Status, got.Body, err)
		}
		for _, inv := range []invoiceSummary{created.Invoice, stored.Invoice} {
			if inv.Tenant != "acme" || inv.CreatedBy != "billing-bot" || inv.Status != "INVOICE_STATUS_DRAFT" || inv.ApprovedBy != "" {
				return fmt.Errorf("invoice %s: tenant %q created by %q status %q approved by %q", inv.ID, inv.Tenant, inv.CreatedBy, inv.Status, inv.ApprovedBy)
			}
		}
		return nil
	},
}

func availability() []Scenario {
	return []Scenario{
		{Name: "oversized body", Category: Availability, Reference: "API4:2023",
			Request: "CreateInvoice with billing-bot's token and a declared 2 MiB body (over the gateway's 1 MiB)",
			Expect:  badRequest, State: AcmeInvoices,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.billingBot(ctx)
				if err != nil {
					return nil, err
				}
				body := `{"customer":"` + strings.Repeat("M", 2<<20) + `","amountCents":"100","currency":"EUR"}`
				return t.do(ctx, call{procedure: createInvoice, bearer: tok, body: strings.NewReader(body), length: int64(len(body))})
			}},
		{Name: "oversized streamed body", Category: Availability, Reference: "API4:2023",
			Request: "CreateInvoice with billing-bot's token and a 2 MiB body streamed without a Content-Length",
			Expect:  badRequest, State: AcmeInvoices,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.billingBot(ctx)
				if err != nil {
					return nil, err
				}
				body := `{"customer":"` + strings.Repeat("M", 2<<20) + `","amountCents":"100","currency":"EUR"}`
				return t.do(ctx, call{procedure: createInvoice, bearer: tok, body: io.NopCloser(strings.NewReader(body)), length: -1})
			}},
		{Name: "oversized header block", Category: Availability, Reference: "API4:2023",
			Request: "ListInvoices with reporting-job's token and a 40 KiB header (over the gateway's 32 KiB)",
			Expect:  badRequest,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.reportingJob(ctx)
				if err != nil {
					return nil, err
				}
				h := http.Header{"X-Padding": {strings.Repeat("p", 40<<10)}}
				return t.do(ctx, call{procedure: listInvoices, bearer: tok, header: h})
			}},
		{Name: "header block over the server's limit", Category: Availability, Reference: "API4:2023",
			Request: "ListInvoices with a 256 KiB header (over every server's 64 KiB)",
			Expect:  Outcome{Status: http.StatusRequestHeaderFieldsTooLarge},
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				h := http.Header{"X-Padding": {strings.Repeat("p", 256<<10)}}
				return t.do(ctx, call{procedure: listInvoices, header: h})
			}},
	}
}
