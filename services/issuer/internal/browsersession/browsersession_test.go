package browsersession_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/browsersession"
)

func start() time.Time { return time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC) }

func session() browsersession.Session {
	return browsersession.Session{
		ID: strings.Repeat("0f", 32), Subject: "bob", Tenant: "acme", AuthTime: start(),
		AMR: []string{"pwd"}, ACR: browsersession.ACRPassword,
		ExpiresAt: start().Add(8 * time.Hour), IdleExpiresAt: start().Add(time.Hour),
	}
}

func pending() browsersession.Pending {
	return browsersession.Pending{
		ID: "abc_DEF-123", Browser: strings.Repeat("ab", 32), ClientID: "invoice-web",
		Query: url.Values{"state": {"s"}}, Scopes: []string{"openid"},
		CreatedAt: start(), ExpiresAt: start().Add(10 * time.Minute),
	}
}

func TestSessionValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		mutate  func(*browsersession.Session)
		wantErr bool
	}{
		{name: "valid", mutate: func(*browsersession.Session) {}},
		{name: "uppercase hex id", mutate: func(s *browsersession.Session) { s.ID = strings.Repeat("0F", 32) }, wantErr: true},
		{name: "no subject", mutate: func(s *browsersession.Session) { s.Subject = "" }, wantErr: true},
		{name: "unknown acr", mutate: func(s *browsersession.Session) { s.ACR = "loa3" }, wantErr: true},
		{name: "no amr", mutate: func(s *browsersession.Session) { s.AMR = nil }, wantErr: true},
		{name: "expires at auth time", mutate: func(s *browsersession.Session) { s.ExpiresAt = s.AuthTime }, wantErr: true},
		{name: "idle after expiry", mutate: func(s *browsersession.Session) { s.IdleExpiresAt = s.ExpiresAt.Add(time.Second) }, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := session()
			tc.mutate(&s)
			if err := s.Validate(); tc.wantErr != (err != nil) || err != nil && !errors.Is(err, browsersession.ErrInvalid) {
				t.Fatalf("Validate = %v, want error %v", err, tc.wantErr)
			}
		})
	}
}

func TestSessionActiveAt(t *testing.T) {
	t.Parallel()
	s := session()
	if !s.ActiveAt(start().Add(59*time.Minute)) || s.ActiveAt(s.IdleExpiresAt) {
		t.Fatal("idle expiry not honoured")
	}
	s.IdleExpiresAt = s.ExpiresAt
	if s.ActiveAt(s.ExpiresAt) {
		t.Fatal("absolute expiry not honoured")
	}
	c := s.Clone()
	c.AMR[0] = "x"
	if s.AMR[0] != "pwd" {
		t.Fatal("Clone shares AMR")
	}
}

func TestPendingValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		mutate  func(*browsersession.Pending)
		wantErr bool
	}{
		{name: "valid", mutate: func(*browsersession.Pending) {}},
		{name: "account login", mutate: func(p *browsersession.Pending) { p.ClientID, p.Next = "", "account" }},
		{name: "both client and next", mutate: func(p *browsersession.Pending) { p.Next = "account" }, wantErr: true},
		{name: "id too long", mutate: func(p *browsersession.Pending) { p.ID = strings.Repeat("a", browsersession.MaxIDLen+1) }, wantErr: true},
		{name: "id with dot", mutate: func(p *browsersession.Pending) { p.ID = "a.b" }, wantErr: true},
		{name: "no binding", mutate: func(p *browsersession.Pending) { p.Browser = "" }, wantErr: true},
		{name: "long redirect", mutate: func(p *browsersession.Pending) {
			p.RedirectURI = "http://x/" + strings.Repeat("a", browsersession.MaxRedirectURILen)
		}, wantErr: true},
		{name: "long subject", mutate: func(p *browsersession.Pending) { p.Subject = strings.Repeat("a", browsersession.MaxFieldLen+1) }, wantErr: true},
		{name: "consent id without grant", mutate: func(p *browsersession.Pending) { p.ConsentID = "c" }, wantErr: true},
		{name: "grant without consent id", mutate: func(p *browsersession.Pending) { p.ConsentGranted = true }, wantErr: true},
		{name: "verified time without user", mutate: func(p *browsersession.Pending) { p.PasswordVerifiedAt = start() }, wantErr: true},
		{name: "expires at creation", mutate: func(p *browsersession.Pending) { p.ExpiresAt = p.CreatedAt }, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := pending()
			tc.mutate(&p)
			if err := p.Validate(); tc.wantErr != (err != nil) || err != nil && !errors.Is(err, browsersession.ErrInvalid) {
				t.Fatalf("Validate = %v, want error %v", err, tc.wantErr)
			}
		})
	}
}

func TestPendingClone(t *testing.T) {
	t.Parallel()
	p := pending()
	c := p.Clone()
	c.Query.Set("state", "changed")
	c.Scopes[0] = "admin"
	if p.Query.Get("state") != "s" || p.Scopes[0] != "openid" {
		t.Fatal("Clone shares memory")
	}
}
