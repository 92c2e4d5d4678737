package catalogue

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
	"golang.org/x/oauth2"
)

// issuerID is the issuer identifier inside the stack (stack.IssuerID); the
// Target's HTTP client dials it to the issuer's published port.
const issuerID = "http://issuer:8080"

// callbackURL is invoice-web's loopback redirect URI: nothing listens on it,
// the sign-in stops at the redirect and reads the code from it.
const callbackURL = "http://127.0.0.1:49152/callback"

// user is a demo user (DESIGN.md's demo seed) and the client they sign in
// through (nil: invoice-web, webConfig).
type user struct {
	name, password, totpSecret string
	client                     func() *oauth2.Config
}

var (
	bob   = user{"bob", "bob-demo-password", "", nil}
	carol = user{"carol", "carol-demo-password", "JBSWY3DPEHPK3PXPCAROL234", nil}
	// sam is acme's support agent, signed in through support-console.
	sam = user{"sam", "sam-demo-password", "JBSWY3DPEHPK3PXPSAM23456", consoleConfig}
)

// config is the client u signs in through.
func (u user) config() *oauth2.Config {
	if u.client == nil {
		return webConfig()
	}
	return u.client()
}

// consoleConfig is support-console, a confidential client (HTTP Basic at
// the token endpoint) with the support scopes.
func consoleConfig() *oauth2.Config {
	return &oauth2.Config{
		ClientID:     "support-console",
		ClientSecret: "support-console-secret",
		RedirectURL:  "http://127.0.0.1/callback",
		Scopes:       []string{"openid", "support:read", "support:impersonate", "invoice:read"},
		Endpoint: oauth2.Endpoint{AuthURL: issuerID + "/oauth2/authorize", TokenURL: issuerID + "/oauth2/token",
			AuthStyle: oauth2.AuthStyleInHeader},
	}
}

// userTokens signs u in at the issuer's pages through u's client (code flow with
// PKCE S256, consent allowed) and returns the token response, with its
// refresh and ID tokens. A sign-in is made once per user and Target: a TOTP
// code is accepted once per time step.
func (t *Target) userTokens(ctx context.Context, u user) (*oauth2.Token, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tok, ok := t.signedIn[u.name]; ok {
		return tok, nil
	}
	tok, err := t.signIn(ctx, u)
	if err != nil {
		return nil, fmt.Errorf("sign in %s: %w", u.name, err)
	}
	if t.signedIn == nil {
		t.signedIn = map[string]*oauth2.Token{}
	}
	t.signedIn[u.name] = tok
	return tok, nil
}

// webConfig is invoice-web, a public client: no secret, the client_id in
// the token request's body.
func webConfig() *oauth2.Config {
	return &oauth2.Config{
		ClientID:    "invoice-web",
		RedirectURL: callbackURL,
		Scopes:      []string{"openid", "offline_access", "invoice:read", "invoice:approve"},
		Endpoint: oauth2.Endpoint{AuthURL: issuerID + "/oauth2/authorize", TokenURL: issuerID + "/oauth2/token",
			AuthStyle: oauth2.AuthStyleInParams},
	}
}

// signIn signs u in and exchanges the code.
func (t *Target) signIn(ctx context.Context, u user) (*oauth2.Token, error) {
	code, verifier, err := t.signInCode(ctx, u)
	if err != nil {
		return nil, err
	}
	return u.config().Exchange(context.WithValue(ctx, oauth2.HTTPClient, t.HTTP), code, oauth2.VerifierOption(verifier))
}

// signInCode signs u in through u's client and returns the authorization code
// and its PKCE verifier, the code not yet exchanged.
func (t *Target) signInCode(ctx context.Context, u user) (code, verifier string, err error) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return "", "", err
	}
	client := *t.HTTP
	client.Jar = jar
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	verifier, state := oauth2.GenerateVerifier(), rand.Text()
	authURL := u.config().AuthCodeURL(state, oauth2.S256ChallengeOption(verifier),
		oauth2.SetAuthURLParam("prompt", "consent"), oauth2.SetAuthURLParam("nonce", rand.Text()))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	if err != nil {
		return "", "", err
	}
	p, err := follow(&client, req)
	if err != nil {
		return "", "", err
	}
	if p, err = submit(ctx, &client, p, "login-form", url.Values{"username": {u.name}, "password": {u.password}}); err != nil {
		return "", "", err
	}
	if u.totpSecret != "" {
		code, err := t.TOTP(ctx, u.totpSecret)
		if err != nil {
			return "", "", err
		}
		if p, err = submit(ctx, &client, p, "mfa-form", url.Values{"code": {code}}); err != nil {
			return "", "", err
		}
	}
	if p, err = submit(ctx, &client, p, "consent-form", url.Values{"decision": {"allow"}}); err != nil {
		return "", "", err
	}
	if p.away == nil || p.away.Query().Get("state") != state || p.away.Query().Get("code") == "" {
		return "", "", errors.New("the sign-in did not end at the callback with a code and the state")
	}
	return p.away.Query().Get("code"), verifier, nil
}

// page is where a request ended: an issuer page, or (away) a redirect that
// leaves the issuer.
type page struct {
	url  *url.URL
	doc  *html.Node
	away *url.URL
}

// follow sends req and follows the redirects that stay on its host.
func follow(client *http.Client, req *http.Request) (page, error) {
	for range 10 {
		resp, err := client.Do(req)
		if err != nil {
			return page{}, err
		}
		raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
		_ = resp.Body.Close()
		if err != nil {
			return page{}, err
		}
		if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode >= 300 && resp.StatusCode < 400 {
			next, err := req.URL.Parse(loc)
			if err != nil {
				return page{}, err
			}
			if next.Host != req.URL.Host {
				return page{away: next}, nil
			}
			if req, err = http.NewRequestWithContext(req.Context(), http.MethodGet, next.String(), nil); err != nil {
				return page{}, err
			}
			continue
		}
		doc, err := html.Parse(strings.NewReader(string(raw)))
		if err != nil {
			return page{}, err
		}
		return page{url: req.URL, doc: doc}, nil
	}
	return page{}, errors.New("more than 10 redirects")
}

// submit posts the form formID of p with its hidden fields and fields.
func submit(ctx context.Context, client *http.Client, p page, formID string, fields url.Values) (page, error) {
	if p.doc == nil {
		return page{}, fmt.Errorf("want the form %s, got a redirect", formID)
	}
	var form *html.Node
	for n := range p.doc.Descendants() {
		if n.Type == html.ElementNode && n.DataAtom == atom.Form && attr(n, "id") == formID {
			form = n
			break
		}
	}
	if form == nil {
		return page{}, fmt.Errorf("no form %s on %s", formID, p.url.Path)
	}
	action, err := p.url.Parse(attr(form, "action"))
	if err != nil {
		return page{}, err
	}
	values := url.Values{}
	for n := range form.Descendants() {
		if n.Type == html.ElementNode && n.DataAtom == atom.Input && strings.EqualFold(attr(n, "type"), "hidden") && attr(n, "name") != "" {
			values.Add(attr(n, "name"), attr(n, "value"))
		}
	}
	for k, v := range fields {
		values[k] = v
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, action.String(), strings.NewReader(values.Encode()))
	if err != nil {
		return page{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", p.url.Scheme+"://"+p.url.Host)
	return follow(client, req)
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Namespace == "" && a.Key == key {
			return a.Val
		}
	}
	return ""
}
