package consent_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/consent"
)

const grantedAt = "2030-06-01T12:00:00Z"

func grantTime() time.Time {
	t, err := time.Parse(time.RFC3339, grantedAt)
	if err != nil {
		panic(err)
	}
	return t
}

func valid() consent.Consent {
	granted := grantTime()
	return consent.Consent{
		ID: "c1", Subject: "alice", Tenant: "acme", ClientID: "invoice-web",
		Scopes:    []string{"invoice:read", "openid"},
		GrantedAt: granted, ExpiresAt: granted.Add(time.Hour),
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	granted := grantTime()
	tests := []struct {
		name    string
		mutate  func(*consent.Consent)
		wantErr bool
	}{
		{name: "valid", mutate: func(*consent.Consent) {}},
		{name: "withdrawn", mutate: func(c *consent.Consent) { c.WithdrawnAt = granted.Add(time.Minute) }},
		{name: "no id", mutate: func(c *consent.Consent) { c.ID = "" }, wantErr: true},
		{name: "no subject", mutate: func(c *consent.Consent) { c.Subject = "" }, wantErr: true},
		{name: "no client", mutate: func(c *consent.Consent) { c.ClientID = "" }, wantErr: true},
		{name: "long tenant", mutate: func(c *consent.Consent) { c.Tenant = strings.Repeat("t", consent.MaxIDLen+1) }, wantErr: true},
		{name: "no scopes", mutate: func(c *consent.Consent) { c.Scopes = nil }, wantErr: true},
		{name: "unsorted", mutate: func(c *consent.Consent) { c.Scopes = []string{"openid", "invoice:read"} }, wantErr: true},
		{name: "duplicate", mutate: func(c *consent.Consent) { c.Scopes = []string{"openid", "openid"} }, wantErr: true},
		{name: "space in scope", mutate: func(c *consent.Consent) { c.Scopes = []string{"a b"} }, wantErr: true},
		{name: "too many scopes", mutate: func(c *consent.Consent) {
			c.Scopes = nil
			for i := range consent.MaxScopes + 1 {
				c.Scopes = append(c.Scopes, string(rune('A'+i/26))+string(rune('a'+i%26)))
			}
		}, wantErr: true},
		{name: "no grant time", mutate: func(c *consent.Consent) { c.GrantedAt = time.Time{} }, wantErr: true},
		{name: "expires at grant", mutate: func(c *consent.Consent) { c.ExpiresAt = c.GrantedAt }, wantErr: true},
		{name: "withdrawn before grant", mutate: func(c *consent.Consent) { c.WithdrawnAt = granted.Add(-time.Second) }, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := valid()
			tc.mutate(&c)
			err := c.Validate()
			if tc.wantErr != (err != nil) || err != nil && !errors.Is(err, consent.ErrInvalid) {
				t.Fatalf("Validate = %v, want error %v (ErrInvalid)", err, tc.wantErr)
			}
		})
	}
}

func TestActiveAtAndCovers(t *testing.T) {
	t.Parallel()
	granted := grantTime()
	c := valid()
	for _, tc := range []struct {
		at   time.Time
		want bool
	}{
		{granted.Add(-time.Second), false},
		{granted, true},
		{c.ExpiresAt.Add(-time.Nanosecond), true},
		{c.ExpiresAt, false},
	} {
		if got := c.ActiveAt(tc.at); got != tc.want {
			t.Errorf("ActiveAt(%v) = %v, want %v", tc.at, got, tc.want)
		}
	}
	w := c
	w.WithdrawnAt = granted.Add(time.Minute)
	if w.ActiveAt(granted) {
		t.Error("a withdrawn consent is active")
	}
	for _, tc := range []struct {
		scopes []string
		want   bool
	}{
		{nil, true},
		{[]string{"openid"}, true},
		{[]string{"openid", "invoice:read"}, true},
		{[]string{"openid", "invoice:write"}, false},
	} {
		if got := c.Covers(tc.scopes); got != tc.want {
			t.Errorf("Covers(%v) = %v, want %v", tc.scopes, got, tc.want)
		}
	}
}

func TestNormalizeScopesAndClone(t *testing.T) {
	t.Parallel()
	in := []string{"openid", "invoice:read", "openid"}
	got := consent.NormalizeScopes(in)
	if !slices.Equal(got, []string{"invoice:read", "openid"}) || in[0] != "openid" {
		t.Fatalf("NormalizeScopes = %v (input now %v)", got, in)
	}
	if got := consent.NormalizeScopes(nil); got == nil || len(got) != 0 {
		t.Fatalf("NormalizeScopes(nil) = %#v, want empty", got)
	}
	c := valid()
	d := c.Clone()
	d.Scopes[0] = "admin"
	if c.Scopes[0] != "invoice:read" {
		t.Fatal("Clone shares scopes")
	}
}

func TestValidScope(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]bool{
		"openid": true, "invoice:read": true, "a!#[]~": true,
		"": false, "a b": false, `a"b`: false, `a\b`: false, "é": false, "a\x7f": false,
		strings.Repeat("a", consent.MaxScopeLen):   true,
		strings.Repeat("a", consent.MaxScopeLen+1): false,
	} {
		if got := consent.ValidScope(s); got != want {
			t.Errorf("ValidScope(%q) = %v, want %v", s, got, want)
		}
	}
}
