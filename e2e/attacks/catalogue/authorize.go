package catalogue

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"strings"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
	"golang.org/x/oauth2"
)

// Paths of the issuer's authorization flow (services/issuer: authorize,
// interaction).
const (
	callbackPath = "/callback"
	consentPath  = "/consent"
	resumePath   = "/oauth2/authorize/resume"
)

// errorRedirect is the authorization endpoint's refusal of a request whose
// client and redirect_uri it trusts: a redirect to the client with error,
// the state and no code (RFC 6749 section 4.1.2.1).
func errorRedirect(oauthError string) Outcome {
	return Outcome{Status: http.StatusSeeOther, Location: callbackPath, OAuthError: oauthError}
}

// authorization is the OAuth flow attacks at the authorization endpoint and
// on the consent step.
func authorization() []Scenario {
	request := func(name, ref, what string, set url.Values, expect Outcome) Scenario {
		return Scenario{Name: name, Category: OAuthFlow, Reference: ref,
			Request: "invoice-web's authorization request (PKCE S256, state) " + what,
			Expect:  expect,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				return t.authorize(ctx, set)
			}}
	}
	verifier := oauth2.GenerateVerifier()
	requests := []Scenario{
		// A nil value drops the parameter (url.Values.Encode writes nothing
		// for it).
		request("state missing", "RFC 9700 section 4.7.1; RFC 6749 section 10.12", "without `state`",
			url.Values{"state": nil}, errorRedirect("invalid_state")),
		request("state too short to be unguessable", "RFC 6749 section 10.10; RFC 9700 section 4.7.1", "with `state=abc` (under fosite's 8 characters)",
			url.Values{"state": {"abc"}}, errorRedirect("invalid_state")),
		request("PKCE downgrade to plain", "RFC 9700 section 2.1.1, 4.8; RFC 7636 section 4.3",
			"with `code_challenge_method=plain` and the verifier as the challenge",
			url.Values{"code_challenge_method": {"plain"}, "code_challenge": {verifier}}, errorRedirect("invalid_request")),
		request("PKCE challenge without a method", "RFC 7636 section 4.3; RFC 9700 section 4.8",
			"with an S256 `code_challenge` and no `code_challenge_method` (which RFC 7636 reads as plain)",
			url.Values{"code_challenge_method": nil}, errorRedirect("invalid_request")),
		request("PKCE challenge missing", "RFC 9700 section 2.1.1; RFC 7636 section 4.4.1",
			"of the public client without `code_challenge` and `code_challenge_method`",
			url.Values{"code_challenge": nil, "code_challenge_method": nil}, errorRedirect("invalid_request")),
	}
	return slices.Concat(requests, []Scenario{
		{Name: "PKCE challenge replayed as the verifier", Category: OAuthFlow, Reference: "RFC 7636 section 4.6; RFC 9700 section 4.8",
			Request: "bob's authorization code (issued for an S256 challenge) exchanged by invoice-web with the challenge itself as `code_verifier`",
			Expect:  invalidGrant,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				code, verifier, err := t.signInCode(ctx, bob)
				if err != nil {
					return nil, err
				}
				return t.tokenRequest(ctx, "", "", codeExchange(code, oauth2.S256ChallengeFromVerifier(verifier)))
			}},
	}, consentBypass())
}

// The consent bypass scenarios that keep bob's browser for their Verify.
const (
	consentNoCSRF       = "consent without the CSRF token"
	consentCrossSite    = "consent posted cross-site"
	consentOtherBrowser = "consent from another browser"
	consentExtraScopes  = "consent to scopes the page did not show"
)

func consentBypass() []Scenario {
	// unanswered checks that bob's interaction survived the attack
	// unanswered: his own browser, resuming it, is sent back to consent.
	unanswered := func(name string) *Verify {
		return &Verify{Name: "bob's request is still unanswered: resumed by his browser, it goes back to the consent page, no code",
			Check: func(ctx context.Context, t *Target, _ *Response) error {
				run, err := observation[*consentRun](t, name)
				if err != nil {
					return err
				}
				resp, err := run.get(ctx, resumePath+"?interaction="+url.QueryEscape(run.interaction()))
				if err != nil {
					return err
				}
				loc, err := url.Parse(resp.Header.Get("Location"))
				if err != nil || resp.Status != http.StatusSeeOther || loc.Path != consentPath || loc.Query().Has("code") {
					return fmt.Errorf("resuming bob's request: %d to %q, want 303 to %s", resp.Status, resp.Header.Get("Location"), consentPath)
				}
				return nil
			}}
	}
	// atConsent signs bob in with prompt=consent up to the consent page
	// (scope openid invoice:read) and keeps the browser for Verify.
	atConsent := func(ctx context.Context, t *Target, name string) (*consentRun, error) {
		run, err := t.consentPage(ctx, bob, "openid invoice:read", true)
		if err == nil {
			t.observe(name, run)
		}
		return run, err
	}
	// noInteraction is the consent page's answer to an interaction that is
	// unknown, used or bound to another browser: an error page.
	noInteraction := Outcome{Status: http.StatusBadRequest}
	return []Scenario{
		{Name: consentNoCSRF, Category: OAuthFlow, Reference: "RFC 6749 section 10.12",
			Request: "bob's consent form posted from his browser with `decision=allow` and no `csrf_token`",
			Expect:  Outcome{Status: http.StatusForbidden}, Verify: unanswered(consentNoCSRF),
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				run, err := atConsent(ctx, t, consentNoCSRF)
				if err != nil {
					return nil, err
				}
				return run.post(ctx, func(v url.Values) { v.Del("csrf_token") }, nil)
			}},
		{Name: consentCrossSite, Category: OAuthFlow, Reference: "RFC 6749 section 10.12",
			Request: "bob's consent form, its CSRF token included, posted from another site (`Origin: https://evil.example`, `Sec-Fetch-Site: cross-site`)",
			Expect:  Outcome{Status: http.StatusForbidden}, Verify: unanswered(consentCrossSite),
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				run, err := atConsent(ctx, t, consentCrossSite)
				if err != nil {
					return nil, err
				}
				return run.post(ctx, nil, http.Header{"Origin": {"https://evil.example"}, "Sec-Fetch-Site": {"cross-site"}})
			}},
		{Name: consentOtherBrowser, Category: OAuthFlow, Reference: "RFC 6749 section 10.12; RFC 9700 section 4.7",
			Request: "bob's consent interaction id posted with `decision=allow` from an attacker's browser, with the attacker's own valid CSRF token",
			Expect:  noInteraction, Verify: unanswered(consentOtherBrowser),
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				run, err := atConsent(ctx, t, consentOtherBrowser)
				if err != nil {
					return nil, err
				}
				attacker, err := t.attackerBrowser(ctx)
				if err != nil {
					return nil, err
				}
				return attacker.post(ctx, func(v url.Values) { v.Set("interaction", run.interaction()) }, nil)
			}},
		{Name: "consent approval replayed", Category: OAuthFlow, Reference: "RFC 6749 section 10.2",
			Request: "bob's consent approval (`decision=allow`, same browser, CSRF token and interaction) posted again after it issued a code",
			Expect:  noInteraction,
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				run, err := t.consentPage(ctx, bob, "openid invoice:read", true)
				if err != nil {
					return nil, err
				}
				form, err := run.form()
				if err != nil {
					return nil, err
				}
				if _, err := run.finish(ctx, form); err != nil {
					return nil, fmt.Errorf("honest approval: %w", err)
				}
				return run.send(ctx, form, nil)
			}},
		{Name: "consent page skipped", Category: OAuthFlow, Reference: "RFC 6749 section 10.2",
			Request: "bob's browser resumes his request for `openid invoice:write` (never consented) straight from the consent page's link, without answering it",
			Expect:  Outcome{Status: http.StatusSeeOther, Location: consentPath},
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				run, err := t.consentPage(ctx, bob, "openid invoice:write", false)
				if err != nil {
					return nil, err
				}
				return run.get(ctx, resumePath+"?interaction="+url.QueryEscape(run.interaction()))
			}},
		{Name: consentExtraScopes, Category: OAuthFlow, Reference: "RFC 6749 section 3.3; RFC 9700 section 2.3",
			Request: "bob's consent form for `openid invoice:read` posted with `decision=allow` and an added `scope=openid invoice:read invoice:write invoice:approve`",
			Expect:  Outcome{Status: http.StatusSeeOther, Location: resumePath},
			Verify: &Verify{Name: "the added scope is ignored: the code's tokens carry `openid invoice:read` only",
				Check: func(ctx context.Context, t *Target, resp *Response) error {
					run, err := observation[*consentRun](t, consentExtraScopes)
					if err != nil {
						return err
					}
					return run.grantedOnly(ctx, t, resp, "invoice:read", "openid")
				}},
			Send: func(ctx context.Context, t *Target) (*Response, error) {
				run, err := atConsent(ctx, t, consentExtraScopes)
				if err != nil {
					return nil, err
				}
				return run.post(ctx, func(v url.Values) { v.Set("scope", "openid invoice:read invoice:write invoice:approve") }, nil)
			}},
	}
}

// consentRun is a browser at the issuer's consent page (or, for an
// attacker, at its login page, which holds the same CSRF token).
type consentRun struct {
	browser  *http.Client
	page     page
	formID   string
	verifier string
	state    string
}

// newBrowser is a client with its own cookies that does not follow
// redirects.
func (t *Target) newBrowser() (*http.Client, error) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return nil, err
	}
	client := *t.HTTP
	client.Jar = jar
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &client, nil
}

// consentPage signs u in through invoice-web (code flow, PKCE S256) for
// scope, with prompt=consent when prompt is set, and stops at the consent
// page.
func (t *Target) consentPage(ctx context.Context, u user, scope string, prompt bool) (*consentRun, error) {
	browser, err := t.newBrowser()
	if err != nil {
		return nil, err
	}
	cfg := webConfig()
	cfg.Scopes = strings.Fields(scope)
	run := &consentRun{browser: browser, formID: "consent-form", verifier: oauth2.GenerateVerifier(), state: rand.Text()}
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(run.verifier), oauth2.SetAuthURLParam("nonce", rand.Text())}
	if prompt {
		opts = append(opts, oauth2.SetAuthURLParam("prompt", "consent"))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.AuthCodeURL(run.state, opts...), nil)
	if err != nil {
		return nil, err
	}
	p, err := follow(browser, req)
	if err != nil {
		return nil, err
	}
	if run.page, err = submit(ctx, browser, p, "login-form", url.Values{"username": {u.name}, "password": {u.password}}); err != nil {
		return nil, err
	}
	if run.page.url == nil || run.page.url.Path != consentPath || run.interaction() == "" {
		return nil, errors.New("the sign-in did not end at the consent page")
	}
	return run, nil
}

// attackerBrowser is a browser of its own at the issuer's login page: a
// browser cookie and the CSRF token that goes with it, no session.
func (t *Target) attackerBrowser(ctx context.Context) (*consentRun, error) {
	browser, err := t.newBrowser()
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, issuerID+"/login", nil)
	if err != nil {
		return nil, err
	}
	p, err := follow(browser, req)
	if err != nil {
		return nil, err
	}
	// The login form's hidden fields carry the browser's CSRF token.
	return &consentRun{browser: browser, page: p, formID: "login-form"}, nil
}

// interaction is the consent page's interaction id.
func (r *consentRun) interaction() string {
	return r.page.url.Query().Get("interaction")
}

// form is the hidden fields of the run's form with decision=allow (an
// attacker's browser has the login form's fields, its CSRF token among
// them).
func (r *consentRun) form() (url.Values, error) {
	if r.page.doc == nil {
		return nil, fmt.Errorf("no page with the form %s", r.formID)
	}
	for n := range r.page.doc.Descendants() {
		if n.Type != html.ElementNode || n.DataAtom != atom.Form || attr(n, "id") != r.formID {
			continue
		}
		values := url.Values{}
		for in := range n.Descendants() {
			if in.Type == html.ElementNode && in.DataAtom == atom.Input && strings.EqualFold(attr(in, "type"), "hidden") && attr(in, "name") != "" {
				values.Add(attr(in, "name"), attr(in, "value"))
			}
		}
		if values.Get("csrf_token") == "" {
			return nil, fmt.Errorf("the form %s has no csrf_token", r.formID)
		}
		if r.formID == "login-form" {
			values = url.Values{"csrf_token": {values.Get("csrf_token")}}
		}
		values.Set("decision", "allow")
		return values, nil
	}
	return nil, fmt.Errorf("no form %s on %s", r.formID, r.page.url.Path)
}

// post sends the run's form, edited by edit, to the consent page from the
// run's browser, with the browser's own Origin unless header replaces it.
func (r *consentRun) post(ctx context.Context, edit func(url.Values), header http.Header) (*Response, error) {
	form, err := r.form()
	if err != nil {
		return nil, err
	}
	if edit != nil {
		edit(form)
	}
	return r.send(ctx, form, header)
}

// send posts form to the consent page, redirects not followed.
func (r *consentRun) send(ctx context.Context, form url.Values, header http.Header) (*Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, issuerID+consentPath, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", issuerID)
	for k, vs := range header {
		req.Header[k] = vs
	}
	return r.do(req)
}

// get sends a GET for path on the issuer from the run's browser.
func (r *consentRun) get(ctx context.Context, path string) (*Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, issuerID+path, nil)
	if err != nil {
		return nil, err
	}
	return r.do(req)
}

func (r *consentRun) do(req *http.Request) (*Response, error) {
	resp, err := r.browser.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}, nil
}

// finish posts form honestly and follows the flow to the callback: the
// authorization code.
func (r *consentRun) finish(ctx context.Context, form url.Values) (string, error) {
	resp, err := r.send(ctx, form, nil)
	if err != nil {
		return "", err
	}
	return r.callback(ctx, resp)
}

// callback follows resp's redirects on the issuer to the client's callback
// and returns the code it carries, after checking the state.
func (r *consentRun) callback(ctx context.Context, resp *Response) (string, error) {
	loc := resp.Header.Get("Location")
	if resp.Status != http.StatusSeeOther || loc == "" {
		return "", fmt.Errorf("consent answer %d, want a 303 redirect", resp.Status)
	}
	next, err := url.Parse(issuerID)
	if err != nil {
		return "", err
	}
	if next, err = next.Parse(loc); err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, next.String(), nil)
	if err != nil {
		return "", err
	}
	p, err := follow(r.browser, req)
	if err != nil {
		return "", err
	}
	if p.away == nil || p.away.Path != callbackPath || p.away.Query().Get("state") != r.state || p.away.Query().Get("code") == "" {
		return "", errors.New("the flow did not end at the callback with a code and the state")
	}
	return p.away.Query().Get("code"), nil
}

// grantedOnly follows resp (the consent answer) to the code, exchanges it,
// and checks that the token response and the access token carry exactly
// scopes.
func (r *consentRun) grantedOnly(ctx context.Context, t *Target, resp *Response, scopes ...string) error {
	code, err := r.callback(ctx, resp)
	if err != nil {
		return err
	}
	answer, err := t.tokenRequest(ctx, "", "", codeExchange(code, r.verifier))
	if err != nil {
		return err
	}
	var body struct {
		AccessToken string `json:"access_token"`
		Scope       string `json:"scope"`
	}
	if err := json.Unmarshal(answer.Body, &body); err != nil || answer.Status != http.StatusOK {
		return fmt.Errorf("code exchange: %d (%v)", answer.Status, err)
	}
	at, err := parseJWT(body.AccessToken)
	if err != nil {
		return fmt.Errorf("access token: %w", err)
	}
	claimed, _ := at.claims["scope"].(string)
	want := slices.Sorted(slices.Values(scopes))
	for what, scope := range map[string]string{"token response's scope": body.Scope, "access token's scope": claimed} {
		got := strings.Fields(scope)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("%s %q, want %q", what, scope, want)
		}
	}
	return nil
}
