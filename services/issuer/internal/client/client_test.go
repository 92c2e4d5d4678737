package client_test

import (
	"errors"
	"testing"
	"time"

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
		}, valid: true},
		{name: "empty id", edit: func(c *client.Client) { c.ID = "" }},
		{name: "confidential without secret", edit: func(c *client.Client) { c.SecretHash = nil }},
		{name: "public with secret", edit: func(c *client.Client) { c.Public, c.GrantTypes = true, nil }},
		{name: "public with client_credentials", edit: func(c *client.Client) { c.Public, c.SecretHash = true, nil }},
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
