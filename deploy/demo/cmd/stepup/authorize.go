package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// authRequest is what one authorization request asks of the sign-in beyond
// the client's defaults.
type authRequest struct {
	// acrValues is the space-separated acr_values; empty: none.
	acrValues string
	// maxAge, when hasMaxAge, is max_age in seconds.
	maxAge    int
	hasMaxAge bool
	// prompt is the prompt parameter; empty: none.
	prompt string
}

// signIn is the outcome of one authorization: who signed in, how and when
// (from the verified ID token), and the access token for the API.
type signIn struct {
	subject  string
	acr      string
	authTime time.Time
	// accessToken is never printed.
	accessToken string
}

// authorizer sends the user through the authorization endpoint.
type authorizer interface {
	authorize(ctx context.Context, req authRequest) (signIn, error)
}

// oidcAuthorizer is the authorization-code flow of a public client with
// PKCE (S256) and a loopback redirect: it prints the authorization URL for
// the user to open (and opens it when open is set), waits for the redirect,
// exchanges the code and verifies the ID token.
type oidcAuthorizer struct {
	// httpCtx carries the HTTP client for x/oauth2 and go-oidc.
	httpCtx  context.Context
	config   oauth2.Config
	verifier *oidc.IDTokenVerifier
	callback *loopback
	out      io.Writer
	// open opens a URL in the user's browser; nil: print it only.
	open func(url string) error
}

// newOIDCAuthorizer discovers the issuer and returns an authorizer for
// clientID whose redirect URI is the loopback receiver's.
func newOIDCAuthorizer(httpCtx context.Context, issuer, clientID string, scopes []string, callback *loopback, out io.Writer, open func(string) error) (*oidcAuthorizer, error) {
	provider, err := oidc.NewProvider(httpCtx, issuer)
	if err != nil {
		return nil, fmt.Errorf("discover the issuer %s: %w", issuer, err)
	}
	endpoint := provider.Endpoint()
	// A public client: no secret, client_id in the token request's body.
	endpoint.AuthStyle = oauth2.AuthStyleInParams
	return &oidcAuthorizer{
		httpCtx:  httpCtx,
		config:   oauth2.Config{ClientID: clientID, Endpoint: endpoint, RedirectURL: callback.redirectURI, Scopes: scopes},
		verifier: provider.Verifier(&oidc.Config{ClientID: clientID, SupportedSigningAlgs: []string{oidc.ES256}}),
		callback: callback,
		out:      out,
		open:     open,
	}, nil
}

func (a *oidcAuthorizer) authorize(ctx context.Context, req authRequest) (signIn, error) {
	state, nonce, verifier := rand.Text(), rand.Text(), oauth2.GenerateVerifier()
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("nonce", nonce)}
	if req.acrValues != "" {
		opts = append(opts, oauth2.SetAuthURLParam("acr_values", req.acrValues))
	}
	if req.hasMaxAge {
		opts = append(opts, oauth2.SetAuthURLParam("max_age", strconv.Itoa(req.maxAge)))
	}
	if req.prompt != "" {
		opts = append(opts, oauth2.SetAuthURLParam("prompt", req.prompt))
	}
	authURL := a.config.AuthCodeURL(state, opts...)

	responses := a.callback.expect(state)
	defer a.callback.forget(state)
	_, _ = fmt.Fprintf(a.out, "open this URL: %s\n", authURL)
	if a.open != nil {
		if err := a.open(authURL); err != nil {
			_, _ = fmt.Fprintf(a.out, "could not open a browser (%v): open the URL yourself\n", err)
		}
	}
	_, _ = fmt.Fprintf(a.out, "waiting for the sign-in at %s ...\n", a.callback.redirectURI)
	var res callbackResult
	select {
	case res = <-responses:
	case <-ctx.Done():
		return signIn{}, fmt.Errorf("waiting for the sign-in: %w", ctx.Err())
	}
	if res.err != nil {
		return signIn{}, res.err
	}

	exchangeCtx, cancel := context.WithTimeout(a.httpCtx, 30*time.Second)
	defer cancel()
	tok, err := a.config.Exchange(exchangeCtx, res.code, oauth2.VerifierOption(verifier))
	if err != nil {
		return signIn{}, fmt.Errorf("exchange the code: %w", err)
	}
	rawID, _ := tok.Extra("id_token").(string)
	if rawID == "" {
		return signIn{}, errors.New("the token response has no ID token (is openid in -scope?)")
	}
	idt, err := a.verifier.Verify(exchangeCtx, rawID)
	if err != nil {
		return signIn{}, fmt.Errorf("verify the ID token: %w", err)
	}
	if idt.Nonce != nonce {
		return signIn{}, errors.New("the ID token's nonce is not this request's")
	}
	var claims struct {
		ACR      string `json:"acr"`
		AuthTime int64  `json:"auth_time"`
	}
	if err := idt.Claims(&claims); err != nil {
		return signIn{}, fmt.Errorf("ID token claims: %w", err)
	}
	if claims.AuthTime == 0 {
		return signIn{}, errors.New("the ID token has no auth_time")
	}
	if tok.AccessToken == "" {
		return signIn{}, errors.New("the token response has no access token")
	}
	return signIn{subject: idt.Subject, acr: claims.ACR, authTime: time.Unix(claims.AuthTime, 0), accessToken: tok.AccessToken}, nil
}
