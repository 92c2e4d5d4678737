package revocation_test

import (
	"errors"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/services/issuer/internal/revocation"
)

func TestRevokes(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 25, 9, 30, 0, 0, time.UTC)
	before, after := at.Add(-time.Second), at.Add(time.Second)
	token := revocation.Event{Kind: revocation.KindToken, ID: "jti-1", JTIs: []string{"jti-1"}, Subject: "alice", ClientID: "invoice-web"}
	session := revocation.Event{Kind: revocation.KindSession, ID: "s-1", JTIs: []string{"jti-9"}, Subject: "alice", IssuedBefore: at}
	client := revocation.Event{Kind: revocation.KindClient, ID: "billing-bot", ClientID: "billing-bot", IssuedBefore: at}
	consent := revocation.Event{Kind: revocation.KindConsent, ID: "c-1", Subject: "alice", ClientID: "invoice-web", IssuedBefore: at, Tenant: "acme"}
	tests := []struct {
		name string
		ev   revocation.Event
		tok  revocation.Token
		want bool
	}{
		{"listed jti", token, revocation.Token{JTI: "jti-1", IssuedAt: after}, true},
		{"other jti", token, revocation.Token{JTI: "jti-2", Subject: "alice", ClientID: "invoice-web", IssuedAt: before}, false},
		{"session: listed jti issued later", session, revocation.Token{JTI: "jti-9", Subject: "bob", IssuedAt: after}, true},
		{"session: subject's older token", session, revocation.Token{JTI: "jti-2", Subject: "alice", ClientID: "any", IssuedAt: before}, true},
		{"session: subject's newer token", session, revocation.Token{JTI: "jti-2", Subject: "alice", IssuedAt: after}, false},
		{"session: issued at the instant", session, revocation.Token{JTI: "jti-2", Subject: "alice", IssuedAt: at}, false},
		{"session: other subject", session, revocation.Token{JTI: "jti-2", Subject: "bob", IssuedAt: before}, false},
		{"client: any subject", client, revocation.Token{JTI: "jti-2", Subject: "billing-bot", ClientID: "billing-bot", IssuedAt: before}, true},
		{"client: other client", client, revocation.Token{JTI: "jti-2", Subject: "billing-bot", ClientID: "reporting-job", IssuedAt: before}, false},
		{"consent: subject and client", consent, revocation.Token{JTI: "jti-2", Subject: "alice", ClientID: "invoice-web", IssuedAt: before}, true},
		{"consent: same subject, other client", consent, revocation.Token{JTI: "jti-2", Subject: "alice", ClientID: "support-console", IssuedAt: before}, false},
		{"consent: tenant plays no part", consent, revocation.Token{JTI: "jti-2", Subject: "alice", ClientID: "invoice-web", IssuedAt: before}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := tc.ev.Revokes(tc.tok); got != tc.want {
				t.Fatalf("Revokes = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 25, 9, 30, 0, 0, time.UTC)
	valid := revocation.Event{Kind: revocation.KindRefreshFamily, ID: "request-1", Subject: "alice", ClientID: "invoice-web",
		RevokedAt: at, ExpiresAt: at.Add(time.Hour), Reason: "refresh_token_reuse"}
	if err := valid.Validate(); err != nil {
		t.Fatalf("Validate(valid) = %v", err)
	}
	// A refresh family with no live access token revokes nothing at the
	// gateways, and is still recorded.
	empty := valid
	empty.JTIs = nil
	if err := empty.Validate(); err != nil {
		t.Fatalf("Validate(no jtis) = %v", err)
	}
	bad := valid
	bad.Reason = "eyJhbGciOiJFUzI1NiJ9.e30.sig" // a token never fits a reason
	if err := bad.Validate(); !errors.Is(err, revocation.ErrInvalid) {
		t.Fatalf("Validate(token in reason) = %v, want ErrInvalid", err)
	}
}

func TestSignal(t *testing.T) {
	t.Parallel()
	var s revocation.Signal
	first := s.Changed()
	if again := s.Changed(); again != first {
		t.Fatal("Changed returned a new channel before any Broadcast")
	}
	s.Broadcast()
	select {
	case <-first:
	default:
		t.Fatal("Broadcast did not close the channel")
	}
	next := s.Changed()
	select {
	case <-next:
		t.Fatal("the channel after a Broadcast is already closed")
	default:
	}
	s.Broadcast()
	s.Broadcast() // nobody waiting: nothing to close
	<-next
}
