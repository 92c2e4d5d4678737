package issuer_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/libs/accesstoken/accesstokentest"
	"github.com/gatehouse/gatehouse/services/support/internal/issuer"
	"github.com/gatehouse/gatehouse/services/support/internal/support"
	"github.com/gatehouse/gatehouse/services/support/internal/supporttest"
)

// TestClientSecretBasicIsFormEncoded: RFC 6749 section 2.3.1 has the id
// and secret form-urlencoded before the Basic encoding, so secrets with
// ':', '+' or '%' reach the issuer intact.
func TestClientSecretBasicIsFormEncoded(t *testing.T) {
	t.Parallel()
	const secret = "p@ss:w+rd%2F/é"
	var user, pass string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, _ = r.BasicAuth()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	c, err := issuer.New(issuer.Config{BaseURL: srv.URL, HTTPClient: srv.Client(), Timeout: time.Second,
		Console: issuer.Credentials{ID: "support console", Secret: secret}, Export: issuer.Credentials{ID: "e", Secret: "e"},
		Verifier: supporttest.NewIssuer(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Revoke(t.Context(), "tok"); err != nil {
		t.Fatal(err)
	}
	if user != "support+console" || pass != "p%40ss%3Aw%2Brd%252F%2F%C3%A9" {
		t.Fatalf("Basic credentials %q:%q, want both form-urlencoded", user, pass)
	}
}

// TestIssuedTokenMustVerify: a token the issuer returns is used only if it
// verifies and is an access token; anything else is the issuer failing.
func TestIssuedTokenMustVerify(t *testing.T) {
	t.Parallel()
	keys := supporttest.NewIssuer(t)
	stranger := accesstokentest.NewIssuer(t) // another key, same claims
	good := keys.Mint(t, supporttest.Bob, map[string]any{"act": map[string]any{"sub": "sam", "client_id": "support-console"}})
	tests := []struct {
		name string
		body map[string]any
		ok   bool
	}{
		{name: "valid", ok: true, body: map[string]any{"access_token": good, "issued_token_type": supporttest.TokenTypeAccessToken, "token_type": "Bearer"}},
		{name: "signed by another key", body: map[string]any{
			"access_token":      stranger.Mint(t, map[string]any{"iss": keys.Keys.URL, "sub": "bob"}, nil),
			"issued_token_type": supporttest.TokenTypeAccessToken, "token_type": "Bearer"}},
		{name: "not an access token", body: map[string]any{"access_token": good, "issued_token_type": "urn:ietf:params:oauth:token-type:id_token", "token_type": "N_A"}},
		{name: "no token", body: map[string]any{"issued_token_type": supporttest.TokenTypeAccessToken, "token_type": "Bearer"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(tc.body)
			}))
			t.Cleanup(srv.Close)
			c, err := issuer.New(issuer.Config{BaseURL: srv.URL, HTTPClient: srv.Client(), Timeout: time.Second,
				Console: issuer.Credentials{ID: "support-console", Secret: "s"}, Export: issuer.Credentials{ID: "support-export", Secret: "s"},
				Verifier: keys})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := c.Impersonate(t.Context(), support.ImpersonationRequest{AgentToken: "a", Customer: "bob", TicketID: "tkt_x",
				Access: support.AccessRead, Scopes: []string{"invoice:read"}, Lifetime: time.Minute})
			if tc.ok {
				if err != nil || tok.Subject != "bob" || tok.ActorSubject != "sam" || tok.ActorClientID != "support-console" || tok.JTI == "" || tok.Token != good {
					t.Fatalf("Impersonate = %+v, %v", tok, err)
				}
				return
			}
			if !errors.Is(err, support.ErrIssuerUnavailable) {
				t.Fatalf("Impersonate = %+v, %v; want ErrIssuerUnavailable", tok, err)
			}
			if strings.Contains(err.Error(), "eyJ") {
				t.Fatalf("error %v shows a token", err)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	t.Parallel()
	keys := supporttest.NewIssuer(t)
	valid := issuer.Config{BaseURL: "http://issuer:8080", HTTPClient: http.DefaultClient, Timeout: time.Second,
		Console: issuer.Credentials{ID: "c", Secret: "s"}, Export: issuer.Credentials{ID: "e", Secret: "s"}, Verifier: keys}
	for name, mutate := range map[string]func(*issuer.Config){
		"relative URL":      func(c *issuer.Config) { c.BaseURL = "issuer:8080" },
		"no HTTP client":    func(c *issuer.Config) { c.HTTPClient = nil },
		"no verifier":       func(c *issuer.Config) { c.Verifier = nil },
		"no timeout":        func(c *issuer.Config) { c.Timeout = 0 },
		"no console secret": func(c *issuer.Config) { c.Console.Secret = "" },
		"no export id":      func(c *issuer.Config) { c.Export.ID = "" },
	} {
		cfg := valid
		mutate(&cfg)
		if _, err := issuer.New(cfg); err == nil {
			t.Errorf("%s: New accepted the configuration", name)
		}
	}
}
