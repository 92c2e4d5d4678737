package client_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v3"
	"github.com/ory/fosite"

	"github.com/gatehouse/gatehouse/services/issuer/internal/client"
)

func valid() *client.Client {
	return &client.Client{
		ID:         "reporting-job",
		SecretHash: []byte("hash"),
		Tenant:     "acme",
		GrantTypes: []string{client.GrantClientCredentials},
		Scopes:     []string{"invoice:read"},
		Audiences:  []string{"gatehouse-api"},
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		edit  func(*client.Client)
		valid bool
	}{
		{name: "valid confidential", edit: func(*client.Client) {}, valid: true},
		{name: "valid public", edit: func(c *client.Client) {
			c.Public, c.SecretHash, c.GrantTypes = true, nil, []string{client.GrantAuthorizationCode}
			c.RedirectURIs = []string{"http://127.0.0.1/callback", "https://app.example/cb"}
		}, valid: true},
		{name: "valid private_key_jwt", edit: func(c *client.Client) {
			c.SecretHash, c.AuthMethod, c.JWKS = nil, client.AuthMethodPrivateKeyJWT, publicJWKS(t, "k1")
		}, valid: true},
		{name: "authorization_code without redirect uri", edit: func(c *client.Client) {
			c.GrantTypes = []string{client.GrantAuthorizationCode}
		}},
		{name: "http redirect uri off loopback", edit: func(c *client.Client) { c.RedirectURIs = []string{"http://app.example/cb"} }},
		{name: "localhost redirect uri", edit: func(c *client.Client) { c.RedirectURIs = []string{"http://localhost/cb"} }},
		{name: "redirect uri with fragment", edit: func(c *client.Client) { c.RedirectURIs = []string{"https://app.example/cb#x"} }},
		{name: "relative redirect uri", edit: func(c *client.Client) { c.RedirectURIs = []string{"/cb"} }},
		{name: "custom scheme redirect uri", edit: func(c *client.Client) { c.RedirectURIs = []string{"javascript:alert(1)"} }},
		{name: "redirect uri with user info", edit: func(c *client.Client) { c.RedirectURIs = []string{"https://evil@app.example/cb"} }},
		{name: "confidential with auth method none", edit: func(c *client.Client) { c.AuthMethod = client.AuthMethodNone }},
		{name: "public with secret auth method", edit: func(c *client.Client) {
			c.Public, c.SecretHash, c.GrantTypes, c.AuthMethod = true, nil, nil, client.AuthMethodClientSecretBasic
		}},
		{name: "private_key_jwt without keys", edit: func(c *client.Client) {
			c.SecretHash, c.AuthMethod = nil, client.AuthMethodPrivateKeyJWT
		}},
		{name: "private_key_jwt with a secret", edit: func(c *client.Client) {
			c.AuthMethod, c.JWKS = client.AuthMethodPrivateKeyJWT, publicJWKS(t, "k1")
		}},
		{name: "private_key_jwt with a private key", edit: func(c *client.Client) {
			c.SecretHash, c.AuthMethod, c.JWKS = nil, client.AuthMethodPrivateKeyJWT, privateJWKS(t)
		}},
		{name: "key set on a secret client", edit: func(c *client.Client) { c.JWKS = publicJWKS(t, "k1") }},
		{name: "unknown auth method", edit: func(c *client.Client) { c.AuthMethod = "client_secret_jwt" }},
		{name: "negative refresh lifespan", edit: func(c *client.Client) { c.RefreshTokenLifespan = -time.Second }},
		{name: "empty id", edit: func(c *client.Client) { c.ID = "" }},
		{name: "confidential without secret", edit: func(c *client.Client) { c.SecretHash = nil }},
		{name: "public with secret", edit: func(c *client.Client) { c.Public, c.GrantTypes = true, nil }},
		{name: "public with client_credentials", edit: func(c *client.Client) { c.Public, c.SecretHash = true, nil }},
		{name: "public with token exchange", edit: func(c *client.Client) {
			c.Public, c.SecretHash, c.AuthMethod, c.GrantTypes = true, nil, "", []string{client.GrantTokenExchange}
		}},
		{name: "confidential with token exchange", edit: func(c *client.Client) {
			c.GrantTypes = []string{client.GrantTokenExchange}
		}, valid: true},
		{name: "client_credentials without tenant", edit: func(c *client.Client) { c.Tenant = "" }},
		{name: "client_credentials without audience", edit: func(c *client.Client) { c.Audiences = nil }},
		{name: "unknown grant", edit: func(c *client.Client) { c.GrantTypes = append(c.GrantTypes, "password") }},
		{name: "negative lifespan", edit: func(c *client.Client) { c.AccessTokenLifespan = -time.Second }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := valid()
			tc.edit(c)
			err := c.Validate()
			if tc.valid != (err == nil) {
				t.Fatalf("Validate = %v, want valid %v", err, tc.valid)
			}
			if err != nil && !errors.Is(err, client.ErrInvalid) {
				t.Fatalf("Validate = %v, not ErrInvalid", err)
			}
		})
	}
}

func TestEffectiveLifespan(t *testing.T) {
	t.Parallel()
	c := valid()
	if got := fosite.GetEffectiveLifespan(c, fosite.GrantTypeClientCredentials, fosite.AccessToken, 5*time.Minute); got != 5*time.Minute {
		t.Errorf("no override: %v, want the fallback", got)
	}
	c.AccessTokenLifespan = time.Minute
	if got := fosite.GetEffectiveLifespan(c, fosite.GrantTypeClientCredentials, fosite.AccessToken, 5*time.Minute); got != time.Minute {
		t.Errorf("override: %v, want 1m", got)
	}
	if got := fosite.GetEffectiveLifespan(c, fosite.GrantTypeClientCredentials, fosite.RefreshToken, time.Hour); got != time.Hour {
		t.Errorf("refresh token: %v, want the fallback", got)
	}
}

func TestCloneIsDeep(t *testing.T) {
	t.Parallel()
	c := valid()
	d := c.Clone()
	d.Scopes[0] = "admin"
	d.SecretHash[0] = 'X'
	if c.Scopes[0] != "invoice:read" || c.SecretHash[0] != 'h' {
		t.Fatal("Clone shares memory")
	}
}

func privateJWKS(t *testing.T) *jose.JSONWebKeySet {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: k, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}}
}

func publicJWKS(t *testing.T, kid string) *jose.JSONWebKeySet {
	t.Helper()
	set := privateJWKS(t)
	set.Keys[0] = set.Keys[0].Public()
	set.Keys[0].KeyID = kid
	return set
}
