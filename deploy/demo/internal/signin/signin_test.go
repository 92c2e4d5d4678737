package signin_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/gatehouse/gatehouse/deploy/demo/internal/signin"
	"github.com/gatehouse/gatehouse/deploy/demo/internal/signin/signintest"
)

func TestAuthorize(t *testing.T) {
	authTime := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	bob := signintest.User{Subject: "bob", ACR: "pwd", AuthTime: authTime, AccessToken: "at-bob-secret-token"}
	sam := signintest.User{Subject: "sam", ACR: "mfa", AuthTime: authTime, AccessToken: "at-sam-secret-token"}
	clients := map[string]signintest.Client{
		"invoice-web":     {User: bob},
		"support-console": {Secret: "console-secret", User: sam},
	}
	tests := []struct {
		name   string
		client signin.Client
		req    signin.Request
		// browse stands in for the user's browser; nil: signintest.Browser.
		browse    func(string) error
		want      signin.Result
		wantBasic bool
		wantErr   string
		// wantAuthorization checks the accepted authorization request.
		wantAuthorization signintest.Authorization
	}{
		{
			name:              "a public client: PKCE, client_id in the body",
			client:            signin.Client{ID: "invoice-web", Scopes: []string{"openid", "invoice:read"}},
			want:              signin.Result{Subject: "bob", ACR: "pwd", AuthTime: authTime, AccessToken: bob.AccessToken},
			wantAuthorization: signintest.Authorization{ClientID: "invoice-web", Scope: "openid invoice:read"},
		},
		{
			name:              "a confidential client: client_secret_basic",
			client:            signin.Client{ID: "support-console", Secret: "console-secret", Scopes: []string{"openid", "support:read"}},
			want:              signin.Result{Subject: "sam", ACR: "mfa", AuthTime: authTime, AccessToken: sam.AccessToken},
			wantBasic:         true,
			wantAuthorization: signintest.Authorization{ClientID: "support-console", Scope: "openid support:read"},
		},
		{
			name:              "acr_values, max_age and prompt in the URL",
			client:            signin.Client{ID: "invoice-web", Scopes: []string{"openid"}},
			req:               signin.Request{ACRValues: "mfa", MaxAge: 300, HasMaxAge: true, Prompt: "login"},
			want:              signin.Result{Subject: "bob", ACR: "pwd", AuthTime: authTime, AccessToken: bob.AccessToken},
			wantAuthorization: signintest.Authorization{ClientID: "invoice-web", Scope: "openid", ACRValues: "mfa", MaxAge: "300", Prompt: "login"},
		},
		{
			name:    "a wrong client secret: the exchange fails",
			client:  signin.Client{ID: "support-console", Secret: "not-the-secret", Scopes: []string{"openid"}},
			wantErr: "exchange the code",
		},
		{
			name:    "no openid: the issuer redirects with an error",
			client:  signin.Client{ID: "invoice-web", Scopes: []string{"invoice:read"}},
			browse:  followToLoopback,
			wantErr: signin.ErrAuthorization.Error(),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			issuer := signintest.NewIssuer(t, clients)
			l, err := signin.Listen(t.Context(), 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = l.Close(context.Background()) })
			browse := tc.browse
			if browse == nil {
				browse = signintest.Browser
			}
			var out bytes.Buffer
			httpCtx := oidc.ClientContext(t.Context(), &http.Client{Timeout: 10 * time.Second})
			auth, err := signin.NewAuthorizer(httpCtx, issuer.URL, tc.client, l, &out, browse)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()

			got, err := auth.Authorize(ctx, tc.req)

			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Authorize = %+v, %v; want an error with %q", got, err, tc.wantErr)
				}
			} else {
				if err != nil {
					t.Fatalf("Authorize: %v\n%s", err, out.String())
				}
				if !got.AuthTime.Equal(tc.want.AuthTime) || got.Subject != tc.want.Subject || got.ACR != tc.want.ACR || got.AccessToken != tc.want.AccessToken {
					t.Errorf("Authorize = %+v, want %+v", got, tc.want)
				}
				auths := issuer.Authorizations()
				if len(auths) != 1 {
					t.Fatalf("authorizations %+v, want one", auths)
				}
				a := auths[0]
				if a.ClientID != tc.wantAuthorization.ClientID || a.Scope != tc.wantAuthorization.Scope || a.RedirectURI != l.RedirectURI() ||
					a.ACRValues != tc.wantAuthorization.ACRValues || a.MaxAge != tc.wantAuthorization.MaxAge || a.Prompt != tc.wantAuthorization.Prompt {
					t.Errorf("authorization %+v, want %+v at %s", a, tc.wantAuthorization, l.RedirectURI())
				}
				if reqs := issuer.TokenRequests(); !slices.Equal(reqs, []signintest.TokenRequest{{ClientID: tc.client.ID, Basic: tc.wantBasic}}) {
					t.Errorf("token requests %+v, want one by %s (basic %t)", reqs, tc.client.ID, tc.wantBasic)
				}
			}
			for _, line := range []string{"open this URL: " + issuer.URL + "/oauth2/authorize?", "waiting for the sign-in at " + l.RedirectURI() + " ..."} {
				if !strings.Contains(out.String(), line) {
					t.Errorf("output lacks %q:\n%s", line, out.String())
				}
			}
			for _, secret := range []string{tc.client.Secret, bob.AccessToken, sam.AccessToken} {
				if secret != "" && strings.Contains(out.String(), secret) {
					t.Errorf("the output shows a secret or token:\n%s", out.String())
				}
			}
		})
	}
}

// followToLoopback is a browser that follows the issuer's redirect whatever
// page the client shows at the end.
func followToLoopback(authURL string) error {
	resp, err := http.Get(authURL)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

func TestAuthorizeGivesUpWithTheContext(t *testing.T) {
	issuer := signintest.NewIssuer(t, map[string]signintest.Client{"invoice-web": {User: signintest.User{Subject: "bob", AuthTime: time.Now()}}})
	l, err := signin.Listen(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	var out bytes.Buffer
	auth, err := signin.NewAuthorizer(t.Context(), issuer.URL, signin.Client{ID: "invoice-web", Scopes: []string{"openid"}}, l, &out,
		func(string) error { return errors.New("no browser here") })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := auth.Authorize(ctx, signin.Request{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Authorize = %v, want context.Canceled", err)
	}
	if !strings.Contains(out.String(), "could not open a browser (no browser here): open the URL yourself") {
		t.Errorf("output lacks the browser failure:\n%s", out.String())
	}
	u, _ := url.Parse(strings.Fields(strings.TrimPrefix(out.String(), "open this URL: "))[0])
	if q := u.Query(); q.Get("code_challenge_method") != "S256" || q.Get("redirect_uri") != l.RedirectURI() || q.Get("state") == "" || q.Get("nonce") == "" {
		t.Errorf("authorization URL %s lacks PKCE S256, the redirect URI, state or nonce", u)
	}
}
