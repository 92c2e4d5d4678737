package flows

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/gatehouse/gatehouse/e2e/browser"
	"github.com/gatehouse/gatehouse/e2e/stack"
)

// TestBrowserLoginWithTOTPAndConsent signs alice in to invoice-web in
// Chromium: the login page, her TOTP code, the consent page, then the
// redirect to the app's loopback callback, which this test serves. The app
// then exchanges the code with its PKCE verifier and verifies the ID token.
func TestBrowserLoginWithTOTPAndConsent(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	// The app's callback: the first request to it is the flow's result.
	callbacks := make(chan url.Values, 1)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		select {
		case callbacks <- r.URL.Query():
		default:
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!doctype html><title>invoice-web</title><p id="signed-in">Signed in.</p>`)
	}))
	defer app.Close()
	if !strings.HasPrefix(app.URL, "http://127.0.0.1:") {
		t.Fatalf("the callback server is at %s, want a 127.0.0.1 loopback address", app.URL)
	}

	oidcCtx, provider := discover(ctx, t)
	cfg := webConfig(provider, app.URL+"/callback", oidc.ScopeOpenID, "profile", "invoice:read")
	verifier, state, nonce := oauth2.GenerateVerifier(), randomValue(), randomValue()
	// The discovery document names the issuer as the stack does
	// (http://issuer:8080); the browser on the host reaches it at IssuerURL.
	// Every later URL of the flow is relative to the issuer's pages.
	authURL := cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier),
		oauth2.SetAuthURLParam("nonce", nonce), oauth2.SetAuthURLParam("acr_values", "mfa"), oauth2.SetAuthURLParam("prompt", "consent"))
	if !strings.HasPrefix(authURL, stack.IssuerID+"/") {
		t.Fatalf("authorization endpoint %s is not on the issuer %s", authURL, stack.IssuerID)
	}
	authURL = gh.IssuerURL + strings.TrimPrefix(authURL, stack.IssuerID)

	tab, stop, err := browser.Start(ctx, t.TempDir())
	if err != nil {
		t.Fatalf("cannot run the browser test: %v", err)
	}
	defer stop()
	step := func(name string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		stepCtx, cancel := context.WithTimeout(tab, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(stepCtx, actions...); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, browser.Page(tab))
		}
	}

	step("open the authorization URL and get the login page",
		chromedp.Navigate(authURL),
		chromedp.WaitVisible(chromedp.ID("login-form")),
	)
	step("sign in with the password and get the MFA page",
		chromedp.SendKeys(chromedp.CSS(`#login-form input[name="username"]`), "alice"),
		chromedp.SendKeys(chromedp.CSS(`#login-form input[name="password"]`), alicePassword),
		chromedp.Click(chromedp.ID("login-submit")),
		chromedp.WaitVisible(chromedp.ID("mfa-form")),
	)
	code, err := gh.TOTPCode(ctx, aliceTOTPSecret) // the code her app shows now
	if err != nil {
		t.Fatal(err)
	}
	step("enter the TOTP code and get the consent page",
		chromedp.SendKeys(chromedp.CSS(`#mfa-form input[name="code"]`), code),
		chromedp.Click(chromedp.ID("mfa-submit")),
		chromedp.WaitVisible(chromedp.ID("consent-allow")),
	)
	step("allow and land on the app's callback",
		chromedp.Click(chromedp.ID("consent-allow")),
		chromedp.WaitVisible(chromedp.ID("signed-in")),
	)
	var q url.Values
	select {
	case q = <-callbacks:
	case <-ctx.Done():
		t.Fatalf("the callback was never called: %v\n%s", ctx.Err(), browser.Page(tab))
	}
	if q.Get("error") != "" || q.Get("code") == "" {
		t.Fatalf("callback without a code: error %q (%s)", q.Get("error"), q.Get("error_description"))
	}
	if q.Get("state") != state {
		t.Fatalf("callback state %q, want the request's %q", q.Get("state"), state)
	}

	tok, err := cfg.Exchange(oidcCtx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("code exchange: %v", err)
	}
	rawID, _ := tok.Extra("id_token").(string)
	idt, err := idVerifier(provider).Verify(oidcCtx, rawID)
	if err != nil {
		t.Fatalf("ID token: %v", err)
	}
	var id userClaims
	if err := idt.Claims(&id); err != nil {
		t.Fatal(err)
	}
	if idt.Subject != "alice" || idt.Nonce != nonce || id.ACR != "mfa" {
		t.Fatalf("ID token sub %q nonce matches %t acr %q, want alice, the request's nonce, mfa", idt.Subject, idt.Nonce == nonce, id.ACR)
	}
	if at := accessToken(oidcCtx, t, provider, tok.AccessToken); at.Subject != "alice" || at.ACR != "mfa" {
		t.Fatalf("access token sub %q acr %q, want alice, mfa", at.Subject, at.ACR)
	}
}
