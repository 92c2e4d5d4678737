package app_test

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/oauth2"

	revocationv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/revocation/v1/revocationv1connect"
)

// subscribe opens the revocation feed as id:secret.
func subscribe(ctx context.Context, t *testing.T, is *issuer, id, secret string) *connect.ServerStreamForClient[revocationv1.SubscribeResponse] {
	t.Helper()
	c := revocationv1connect.NewRevocationFeedServiceClient(http.DefaultClient, is.srv.URL)
	req := connect.NewRequest(&revocationv1.SubscribeRequest{})
	req.Header().Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(id+":"+secret)))
	stream, err := c.Subscribe(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

// nextEvent reads the stream until an event arrives.
func nextEvent(t *testing.T, stream *connect.ServerStreamForClient[revocationv1.SubscribeResponse]) *revocationv1.Event {
	t.Helper()
	for stream.Receive() {
		if ev := stream.Msg().GetEvent(); ev != nil {
			return ev
		}
	}
	t.Fatalf("stream ended: %v", stream.Err())
	return nil
}

func TestRevocationFeed(t *testing.T) {
	t.Parallel()
	is := start(t, demoConfig(t))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	t.Run("refuses unknown and unentitled subscribers", func(t *testing.T) {
		for _, tc := range []struct {
			id, secret string
			want       connect.Code
		}{
			{"gateway", "wrong-secret", connect.CodeUnauthenticated},
			{"nobody", "x", connect.CodeUnauthenticated},
			{"reporting-job", "reporting-job-secret", connect.CodePermissionDenied},
		} {
			stream := subscribe(ctx, t, is, tc.id, tc.secret)
			for stream.Receive() {
				t.Fatalf("%s received %v", tc.id, stream.Msg())
			}
			if got := connect.CodeOf(stream.Err()); got != tc.want {
				t.Errorf("%s: code %v (%v), want %v", tc.id, got, stream.Err(), tc.want)
			}
			_ = stream.Close()
		}
	})

	stream := subscribe(ctx, t, is, "gateway", "gateway-secret")
	defer stream.Close()
	if !stream.Receive() || stream.Msg().GetHeartbeat() == nil {
		t.Fatalf("first message is not a heartbeat: %v %v", stream.Msg(), stream.Err())
	}

	// An explicitly revoked access token: its jti.
	tok := is.token(t, oauth2.AuthStyleInHeader)
	revoke(t, is, tok.AccessToken, "reporting-job", "reporting-job-secret")
	ev := nextEvent(t, stream)
	if ev.GetKind() != revocationv1.Kind_KIND_TOKEN || len(ev.GetJtis()) != 1 || ev.GetJtis()[0] != ev.GetId() || ev.GetClientId() != "reporting-job" {
		t.Fatalf("token revocation event = %v", ev)
	}
	first := ev.GetCursor()

	// Refresh reuse: the family, with the live access token's jti.
	cfg := webConfig(is, "openid", "offline_access", "invoice:read")
	b := newBrowser(t, is)
	verifier := oauth2.GenerateVerifier()
	p := b.allow(b.login(b.authorize(cfg, verifier), "bob", "bob-demo-password", ""))
	code, err := cfg.Exchange(ctx, p.callback.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	refreshed, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: code.RefreshToken}).Token()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: code.RefreshToken}).Token(); err == nil {
		t.Fatal("reuse accepted")
	}
	ev = nextEvent(t, stream)
	_, claims := signedClaims(t, is, refreshed.AccessToken)
	if ev.GetKind() != revocationv1.Kind_KIND_REFRESH_FAMILY || ev.GetSubject() != "bob" || !slices.Contains(ev.GetJtis(), claims["jti"].(string)) || ev.GetCursor() <= first {
		t.Fatalf("family revocation event = %v, want bob's family with jti %v", ev, claims["jti"])
	}
	if ev.GetReason() != "refresh_token_reuse" {
		t.Errorf("reason = %q", ev.GetReason())
	}
	// Replaying a token of the dead family again adds no event: the next
	// one is the consent's.
	for range 3 {
		if _, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: code.RefreshToken}).Token(); err == nil {
			t.Fatal("replay accepted")
		}
	}

	// Consent withdrawal: a consent event bounding bob's invoice-web tokens.
	b.submitForm(b.get(is.srv.URL+"/account/consents"), `<form class="withdraw-form"`, nil)
	ev = nextEvent(t, stream)
	if ev.GetKind() != revocationv1.Kind_KIND_CONSENT || ev.GetSubject() != "bob" || ev.GetClientId() != webClient || ev.GetIssuedBefore() == nil {
		t.Fatalf("consent revocation event = %v", ev)
	}

	// Signing out: a session event with the session's live access token.
	v3 := oauth2.GenerateVerifier()
	p = b.allow(b.authorize(cfg, v3))
	if p.callback == nil {
		t.Fatalf("re-authorization: %d %s", p.status, p.body)
	}
	third, err := cfg.Exchange(ctx, p.callback.Query().Get("code"), oauth2.VerifierOption(v3))
	if err != nil {
		t.Fatal(err)
	}
	b.submit(b.get(is.srv.URL+"/account/consents"), "logout-form", nil)
	ev = nextEvent(t, stream)
	_, claims = signedClaims(t, is, third.AccessToken)
	if ev.GetKind() != revocationv1.Kind_KIND_SESSION || ev.GetSubject() != "bob" || !slices.Contains(ev.GetJtis(), claims["jti"].(string)) || ev.GetReason() != "user_logout" {
		t.Fatalf("sign-out event = %v, want bob's session with jti %v", ev, claims["jti"])
	}

	// A subscriber resuming after the first event gets the rest again.
	c := revocationv1connect.NewRevocationFeedServiceClient(http.DefaultClient, is.srv.URL)
	req := connect.NewRequest(&revocationv1.SubscribeRequest{AfterCursor: first})
	req.Header().Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("gateway:gateway-secret")))
	resumed, err := c.Subscribe(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Close()
	if ev := nextEvent(t, resumed); ev.GetCursor() != first+1 || ev.GetKind() != revocationv1.Kind_KIND_REFRESH_FAMILY {
		t.Fatalf("resumed at %d: first event %v", first, ev)
	}
}

func revoke(t *testing.T, is *issuer, tok, id, secret string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, is.srv.URL+"/oauth2/revoke", strings.NewReader(url.Values{"token": {tok}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %d", resp.StatusCode)
	}
}
