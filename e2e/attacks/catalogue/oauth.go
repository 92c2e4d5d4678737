package catalogue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"golang.org/x/oauth2"
)

// invalidGrant is the token endpoint's answer to a code or refresh token it
// does not honour.
var invalidGrant = Outcome{Status: http.StatusBadRequest, OAuthError: "invalid_grant"}

// codeExchange is invoice-web's token request for code.
func codeExchange(code, verifier string) url.Values {
	v := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {callbackURL}, "client_id": {"invoice-web"}}
	if verifier != "" {
		v.Set("code_verifier", verifier)
	}
	return v
}

// refresh is invoice-web's refresh token request.
func refresh(token string, scope string) url.Values {
	v := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {token}, "client_id": {"invoice-web"}}
	if scope != "" {
		v.Set("scope", scope)
	}
	return v
}

// firstTokens holds the tokens a scenario obtained honestly before its
// attack, for its Verify; keyed by scenario name, one run at a time.
type firstTokens struct {
	access, refresh string
}

func (t *Target) remember(name string, tok firstTokens) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.first == nil {
		t.first = map[string]firstTokens{}
	}
	t.first[name] = tok
}

func (t *Target) recall(name string) firstTokens {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.first[name]
}

// exchangeOK exchanges code honestly.
func (t *Target) exchangeOK(ctx context.Context, code, verifier string) (*oauth2.Token, error) {
	return webConfig().Exchange(context.WithValue(ctx, oauth2.HTTPClient, t.HTTP), code, oauth2.VerifierOption(verifier))
}

func codeFlowAttacks() []Scenario {
	const codeReuse, refreshReuse = "authorization code reuse", "refresh token reuse"
	return []Scenario{
		{Name: codeReuse, Category: OAuthFlow, Reference: "RFC 6749 section 4.1.2",
			Request: "bob's authorization code exchanged by invoice-web a second time, after a first exchange",
			Expect:  invalidGrant,
			Verify: &Verify{Name: "the first exchange's access token is revoked (introspection: inactive)",
				Check: func(ctx context.Context, t *Target, _ *Response) error {
					active, err := t.active(ctx, t.recall(codeReuse).access)
					if err == nil && active {
						err = errors.New("the first exchange's access token is still active")
					}
					return err
				}},
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				code, verifier, err := t.signInCode(ctx, bob)
				if err != nil {
					return nil, err
				}
				tok, err := t.exchangeOK(ctx, code, verifier)
				if err != nil {
					return nil, fmt.Errorf("first exchange: %w", err)
				}
				t.remember(codeReuse, firstTokens{access: tok.AccessToken})
				return t.tokenRequest(ctx, "", "", codeExchange(code, verifier))
			}},
		{Name: "PKCE verifier mismatch", Category: OAuthFlow, Reference: "RFC 7636 section 4.6; RFC 9700 section 2.1.1",
			Request: "bob's authorization code exchanged by invoice-web with another code_verifier",
			Expect:  invalidGrant,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				code, _, err := t.signInCode(ctx, bob)
				if err != nil {
					return nil, err
				}
				return t.tokenRequest(ctx, "", "", codeExchange(code, oauth2.GenerateVerifier()))
			}},
		{Name: "PKCE verifier missing", Category: OAuthFlow, Reference: "RFC 7636 section 4.6; RFC 9700 section 4.8",
			Request: "bob's authorization code (issued with an S256 challenge) exchanged by invoice-web without code_verifier",
			Expect:  invalidGrant,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				code, _, err := t.signInCode(ctx, bob)
				if err != nil {
					return nil, err
				}
				return t.tokenRequest(ctx, "", "", codeExchange(code, ""))
			}},
		{Name: "code of another client", Category: OAuthFlow, Reference: "RFC 6749 section 4.1.3; RFC 9700 section 4.5",
			Request: "bob's invoice-web authorization code exchanged by support-console (authenticated) with the right verifier",
			Expect:  invalidGrant,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				code, verifier, err := t.signInCode(ctx, bob)
				if err != nil {
					return nil, err
				}
				form := codeExchange(code, verifier)
				form.Del("client_id")
				return t.tokenRequest(ctx, "support-console", "support-console-secret", form)
			}},
		{Name: refreshReuse, Category: OAuthFlow, Reference: "RFC 9700 section 4.14.2; RFC 6749 section 10.4",
			Request: "bob's rotated-out refresh token sent again by invoice-web after one refresh",
			Expect:  invalidGrant,
			Verify: &Verify{Name: "the token family ends: the newest refresh token is refused too",
				Check: func(ctx context.Context, t *Target, _ *Response) error {
					resp, err := t.tokenRequest(ctx, "", "", refresh(t.recall(refreshReuse).refresh, ""))
					if err == nil && resp.Status != http.StatusBadRequest {
						err = fmt.Errorf("the newest refresh token after the reuse: %d, want 400 invalid_grant", resp.Status)
					}
					return err
				}},
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				first, err := t.signIn(ctx, bob)
				if err != nil {
					return nil, err
				}
				second, err := webConfig().TokenSource(context.WithValue(ctx, oauth2.HTTPClient, t.HTTP),
					&oauth2.Token{RefreshToken: first.RefreshToken}).Token()
				if err != nil {
					return nil, fmt.Errorf("honest refresh: %w", err)
				}
				t.remember(refreshReuse, firstTokens{refresh: second.RefreshToken})
				return t.tokenRequest(ctx, "", "", refresh(first.RefreshToken, ""))
			}},
		// RFC 6749 section 6 wants invalid_scope here; the issuer ignores a
		// refresh request's scope and issues the grant's scopes.
		{Name: "scope escalation at refresh", Category: OAuthFlow, Reference: "RFC 6749 section 6; RFC 9700 section 2.3",
			Request: "bob's refresh token sent by invoice-web asking for `invoice:write`, a scope the grant does not hold",
			Expect:  Outcome{Status: http.StatusOK}, Verify: grantScopesOnly,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				tok, err := t.signIn(ctx, bob)
				if err != nil {
					return nil, err
				}
				return t.tokenRequest(ctx, "", "", refresh(tok.RefreshToken, "openid offline_access invoice:read invoice:approve invoice:write"))
			}},
	}
}

// grantScopesOnly checks that a refresh answer holds the grant's scopes and
// not the invoice:write the attack asked for.
var grantScopesOnly = &Verify{
	Name: "the requested scope is ignored: the new tokens carry the grant's scopes, no `invoice:write`",
	Check: func(_ context.Context, _ *Target, resp *Response) error {
		var body struct {
			AccessToken string `json:"access_token"`
			Scope       string `json:"scope"`
		}
		if err := json.Unmarshal(resp.Body, &body); err != nil {
			return fmt.Errorf("refresh answer: %w", err)
		}
		at, err := parseJWT(body.AccessToken)
		if err != nil {
			return fmt.Errorf("refresh answer's access token: %w", err)
		}
		claimed, _ := at.claims["scope"].(string)
		want := []string{"invoice:approve", "invoice:read", "offline_access", "openid"}
		for what, scope := range map[string]string{"answer's scope": body.Scope, "access token's scope": claimed} {
			got := strings.Fields(scope)
			slices.Sort(got)
			if !slices.Equal(got, want) {
				return fmt.Errorf("%s %q, want the grant's %q", what, scope, want)
			}
		}
		return nil
	},
}
