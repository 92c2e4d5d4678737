// Package signin is the browser sign-in of Gatehouse's demo clients
// (deploy/demo/cmd/stepup, deploy/demo/cmd/support): the OAuth 2.0
// authorization-code flow with PKCE (S256) and a loopback redirect URI
// (RFC 8252), for a public or a confidential client, with the ID token
// verified by go-oidc. It prints the authorization URL for the user to open
// (and opens it when asked); it never prints a token or a client secret.
package signin

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// exchangeTimeout bounds the code exchange and the ID token's verification.
const exchangeTimeout = 30 * time.Second

// Client is the OAuth client a user signs in to.
type Client struct {
	// ID is the client_id.
	ID string
	// Secret is a confidential client's secret, sent with
	// client_secret_basic; empty for a public client, which sends its
	// client_id in the token request's body. Never printed.
	Secret string
	// Scopes are the scopes to request; they must include openid.
	Scopes []string
}

// Request is what one authorization request asks of the sign-in beyond the
// client's defaults.
type Request struct {
	// ACRValues is the space-separated acr_values; empty: none.
	ACRValues string
	// MaxAge, when HasMaxAge, is max_age in seconds.
	MaxAge    int
	HasMaxAge bool
	// Prompt is the prompt parameter; empty: none.
	Prompt string
}

// Result is the outcome of one authorization: who signed in, how and when
// (from the verified ID token), and the access token for the API.
type Result struct {
	Subject  string
	ACR      string
	AuthTime time.Time
	// AccessToken is never printed.
	AccessToken string
}

// Authorizer sends the user through the authorization endpoint: it prints
// the authorization URL (and opens it when open is set), waits for the
// redirect, exchanges the code and verifies the ID token.
type Authorizer struct {
	// httpCtx carries the HTTP client for x/oauth2 and go-oidc.
	httpCtx  context.Context
	config   oauth2.Config
	verifier *oidc.IDTokenVerifier
	callback *Loopback
	out      io.Writer
	// open opens a URL in the user's browser; nil: print it only.
	open func(url string) error
}

// NewAuthorizer discovers the issuer and returns an Authorizer for client
// whose redirect URI is the loopback receiver's. httpCtx carries the HTTP
// client (oidc.ClientContext); progress lines go to out; open, when not nil,
// opens the authorization URL in a browser.
func NewAuthorizer(httpCtx context.Context, issuer string, client Client, callback *Loopback, out io.Writer, open func(string) error) (*Authorizer, error) {
	provider, err := oidc.NewProvider(httpCtx, issuer)
	if err != nil {
		return nil, fmt.Errorf("discover the issuer %s: %w", issuer, err)
	}
	endpoint := provider.Endpoint()
	if client.Secret == "" {
		// A public client: no secret, client_id in the token request's body.
		endpoint.AuthStyle = oauth2.AuthStyleInParams
	} else {
		// A confidential client: client_secret_basic, the issuer's default.
		endpoint.AuthStyle = oauth2.AuthStyleInHeader
	}
	return &Authorizer{
		httpCtx: httpCtx,
		config: oauth2.Config{
			ClientID: client.ID, ClientSecret: client.Secret, Endpoint: endpoint,
			RedirectURL: callback.RedirectURI(), Scopes: client.Scopes,
		},
		verifier: provider.Verifier(&oidc.Config{ClientID: client.ID, SupportedSigningAlgs: []string{oidc.ES256}}),
		callback: callback,
		out:      out,
		open:     open,
	}, nil
}

// Authorize runs one authorization-code flow with PKCE (S256), a fresh
// state and nonce, and returns the sign-in once the ID token verified.
func (a *Authorizer) Authorize(ctx context.Context, req Request) (Result, error) {
	state, nonce, verifier := rand.Text(), rand.Text(), oauth2.GenerateVerifier()
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("nonce", nonce)}
	if req.ACRValues != "" {
		opts = append(opts, oauth2.SetAuthURLParam("acr_values", req.ACRValues))
	}
	if req.HasMaxAge {
		opts = append(opts, oauth2.SetAuthURLParam("max_age", strconv.Itoa(req.MaxAge)))
	}
	if req.Prompt != "" {
		opts = append(opts, oauth2.SetAuthURLParam("prompt", req.Prompt))
	}
	authURL := a.config.AuthCodeURL(state, opts...)

	responses := a.callback.Expect(state)
	defer a.callback.Forget(state)
	_, _ = fmt.Fprintf(a.out, "open this URL: %s\n", authURL)
	if a.open != nil {
		if err := a.open(authURL); err != nil {
			_, _ = fmt.Fprintf(a.out, "could not open a browser (%v): open the URL yourself\n", err)
		}
	}
	_, _ = fmt.Fprintf(a.out, "waiting for the sign-in at %s ...\n", a.callback.RedirectURI())
	var res Redirect
	select {
	case res = <-responses:
	case <-ctx.Done():
		return Result{}, fmt.Errorf("waiting for the sign-in: %w", ctx.Err())
	}
	if res.Err != nil {
		return Result{}, res.Err
	}

	exchangeCtx, cancel := context.WithTimeout(a.httpCtx, exchangeTimeout)
	defer cancel()
	tok, err := a.config.Exchange(exchangeCtx, res.Code, oauth2.VerifierOption(verifier))
	if err != nil {
		return Result{}, fmt.Errorf("exchange the code: %w", err)
	}
	rawID, _ := tok.Extra("id_token").(string)
	if rawID == "" {
		return Result{}, errors.New("the token response has no ID token (is openid in -scope?)")
	}
	idt, err := a.verifier.Verify(exchangeCtx, rawID)
	if err != nil {
		return Result{}, fmt.Errorf("verify the ID token: %w", err)
	}
	if idt.Nonce != nonce {
		return Result{}, errors.New("the ID token's nonce is not this request's")
	}
	var claims struct {
		ACR      string `json:"acr"`
		AuthTime int64  `json:"auth_time"`
	}
	if err := idt.Claims(&claims); err != nil {
		return Result{}, fmt.Errorf("ID token claims: %w", err)
	}
	if claims.AuthTime == 0 {
		return Result{}, errors.New("the ID token has no auth_time")
	}
	if tok.AccessToken == "" {
		return Result{}, errors.New("the token response has no access token")
	}
	return Result{Subject: idt.Subject, ACR: claims.ACR, AuthTime: time.Unix(claims.AuthTime, 0), AccessToken: tok.AccessToken}, nil
}

// XDGOpen opens target in the desktop's browser, if xdg-open is installed.
func XDGOpen(target string) error {
	path, err := exec.LookPath("xdg-open")
	if err != nil {
		return err
	}
	// The URL is the issuer's authorization endpoint with this client's
	// own parameters, passed as one argument (no shell).
	cmd := exec.Command(path, target) //nolint:gosec // G204: see above
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }()
	return nil
}
