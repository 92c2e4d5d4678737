package catalogue

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// The scenarios of this file send tokens the issuer's own key signed (see
// Target.IssuerKey) whose claims alone are wrong. A verifier that checks
// signatures but forgets a claim accepts them, which a forged signature
// would hide: such a token is refused for its signature whatever else is
// checked.

// issuerSigned re-signs a genuine reporting-job access token with the
// issuer's key after edit changed its claims (now is the time of the
// edit). The control "issuer-signed copy" proves an unedited re-signed
// token is accepted, so each refusal comes from the edited claims.
func issuerSigned(edit func(claims map[string]any, now time.Time)) func(context.Context, *Target, *jwt) (string, error) {
	return func(ctx context.Context, t *Target, j *jwt) (string, error) {
		return t.resign(ctx, j, edit)
	}
}

// resign signs j's claims, edited by edit (nil: unedited), with the issuer's
// key under its kid, header otherwise kept.
func (t *Target) resign(ctx context.Context, j *jwt, edit func(claims map[string]any, now time.Time)) (string, error) {
	kid, key, err := t.IssuerKey(ctx)
	if err != nil {
		return "", fmt.Errorf("the issuer's signing key: %w", err)
	}
	claims := make(map[string]any, len(j.claims))
	for k, v := range j.claims {
		claims[k] = v
	}
	if edit != nil {
		edit(claims, time.Now())
	}
	return es256(signingInput(j.withHeader(map[string]any{"kid": kid}), claims), key)
}

// unix is t as a NumericDate.
func unix(t time.Time) int64 { return t.Unix() }

// claimsMisuse are the token misuse scenarios of issuer-signed tokens.
func claimsMisuse() []Scenario {
	s := func(name, ref, request string, edit func(map[string]any, time.Time)) Scenario {
		return Scenario{Name: name, Category: TokenMisuse, Reference: ref, Request: request,
			Expect: invalidToken, Send: forged(issuerSigned(edit))}
	}
	return []Scenario{
		s("expired", "RFC 9068 section 4; RFC 7519 section 4.1.4",
			"ListInvoices with a reporting-job token signed by the issuer's key, `exp` two minutes ago (past the 30 s leeway)",
			func(c map[string]any, now time.Time) {
				c["iat"], c["exp"] = unix(now.Add(-7*time.Minute)), unix(now.Add(-2*time.Minute))
			}),
		s("not yet valid", "RFC 9068 section 4; RFC 7519 section 4.1.5",
			"ListInvoices with a reporting-job token signed by the issuer's key, `nbf` ten minutes ahead",
			func(c map[string]any, now time.Time) { c["nbf"] = unix(now.Add(10 * time.Minute)) }),
		s("issued in the future", "RFC 9068 section 4; RFC 7519 section 4.1.6",
			"ListInvoices with a reporting-job token signed by the issuer's key, `iat` ten minutes ahead and `exp` five after it",
			func(c map[string]any, now time.Time) {
				c["iat"], c["exp"] = unix(now.Add(10*time.Minute)), unix(now.Add(15*time.Minute))
			}),
		s("lifetime beyond the profile", "RFC 9068 section 4; RFC 8725 section 3.10",
			"ListInvoices with a reporting-job token signed by the issuer's key, valid for 24 hours (Gatehouse issues at most one)",
			func(c map[string]any, now time.Time) { c["iat"], c["exp"] = unix(now), unix(now.Add(24*time.Hour)) }),
		s("wrong issuer", "RFC 9068 section 4; RFC 8725 section 3.8",
			"ListInvoices with a reporting-job token signed by the issuer's key, `iss: https://issuer.evil.example`",
			func(c map[string]any, _ time.Time) { c["iss"] = "https://issuer.evil.example" }),
		s("issuer with a trailing slash", "RFC 9068 section 4; RFC 8414 section 3.3",
			"ListInvoices with a reporting-job token signed by the issuer's key, `iss: http://issuer:8080/` (compared as a string, not normalised)",
			func(c map[string]any, _ time.Time) { c["iss"] = "http://issuer:8080/" }),
		s(WrongAudienceSigned, "RFC 8725 section 3.9; RFC 9068 section 4",
			"ListInvoices with a reporting-job token signed by the issuer's key, `aud: gatehouse-pdp` (another API) and scope `invoice:read`",
			func(c map[string]any, _ time.Time) { c["aud"] = []string{"gatehouse-pdp"} }),
		s("no token id", "RFC 9068 section 2.2",
			"ListInvoices with a reporting-job token signed by the issuer's key, `jti` removed (it could never be revoked)",
			func(c map[string]any, _ time.Time) { delete(c, "jti") }),
		s("sender-constrained token as a bearer token", "RFC 9449 section 7.1; RFC 8705 section 3",
			"ListInvoices with a reporting-job token signed by the issuer's key with a `cnf` (DPoP key thumbprint), sent without proof",
			func(c map[string]any, _ time.Time) {
				c["cnf"] = map[string]any{"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}
			}),
		{Name: "revoked token", Category: TokenMisuse, Reference: "RFC 7009 section 2; RFC 6750 section 3.1",
			Request: "ListInvoices with a reporting-job token the client revoked (RFC 7009), once the revocation reached the gateway (at most 5 s)",
			Expect: Outcome{Status: http.StatusUnauthorized, Code: "unauthenticated", Reason: "token_revoked",
				Challenge: `error="invalid_token"`},
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.reportingJob(ctx)
				if err != nil {
					return nil, err
				}
				// Used once before the revocation, so a cached verification
				// cannot stand in for the revocation check.
				if resp, err := t.do(ctx, call{procedure: listInvoices, bearer: tok}); err != nil || resp.Status != http.StatusOK {
					return resp, fmt.Errorf("the token before its revocation: %v", err)
				}
				revoked, err := t.issuerForm(ctx, "/oauth2/revoke", "reporting-job", "reporting-job-secret", url.Values{"token": {tok}})
				if err != nil || revoked.Status != http.StatusOK {
					return revoked, fmt.Errorf("revoke: %v", err)
				}
				// The gateway learns of it through the revocation feed, within
				// a second (docs/revocation-feed.md); the last answer is the
				// one checked.
				deadline := time.Now().Add(5 * time.Second)
				for {
					resp, err := t.do(ctx, call{procedure: listInvoices, bearer: tok})
					if err != nil || resp.Status != http.StatusOK || time.Now().After(deadline) {
						return resp, err
					}
					select {
					case <-ctx.Done():
						return nil, ctx.Err()
					case <-time.After(50 * time.Millisecond):
					}
				}
			}},
	}
}

// WrongAudienceSigned is the scenario a verifier without its audience check
// lets through (e2e/attacks TestBrokenVerifierFailsTheSuite).
const WrongAudienceSigned = "another API's audience, signed by the issuer"

// staleAuthTime is the step-up scenario of an issuer-signed token whose
// authentication is strong enough but too old.
func staleAuthTime() Scenario {
	return Scenario{Name: "step-up with a stale auth_time", Category: Delegation, Reference: "RFC 9470 section 3; OpenID Connect Core section 3.1.2.1 (max_age)",
		Request: "ApproveInvoice inv_demo_acme_2 (above the step-up threshold) with a token signed by the issuer's key for alice (billing_approver), `acr: mfa`, `amr: [pwd otp]`, `auth_time` ten minutes ago (the policy wants at most five)",
		Expect: Outcome{Status: http.StatusUnauthorized, Code: "unauthenticated", Reason: "step_up_required",
			Challenge: `error="insufficient_user_authentication", acr_values="mfa", max_age=300`},
		State: AcmeInvoices,
		Send: func(ctx context.Context, t *Target) (*Response, error) {
			tok, err := t.userTokens(ctx, bob)
			if err != nil {
				return nil, err
			}
			j, err := parseJWT(tok.AccessToken)
			if err != nil {
				return nil, err
			}
			signed, err := t.resign(ctx, j, func(c map[string]any, now time.Time) {
				asAlice(c, now.Add(-10*time.Minute))
			})
			if err != nil {
				return nil, err
			}
			return t.do(ctx, call{procedure: approveInvoice, bearer: signed, body: getBody(stepUpInvoice)})
		}}
}

// asAlice edits bob's access token claims into alice's after an MFA sign-in
// at authTime, allowed to approve.
func asAlice(c map[string]any, authTime time.Time) {
	c["sub"], c["roles"], c["scope"] = "alice", []string{"billing_approver"}, "openid invoice:read invoice:approve"
	c["acr"], c["amr"], c["auth_time"] = "mfa", []string{"pwd", "otp"}, unix(authTime)
}

// stepUpInvoice is acme's invoice above the approval step-up threshold.
const stepUpInvoice = "inv_demo_acme_2"
