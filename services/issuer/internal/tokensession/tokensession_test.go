package tokensession_test

import (
	"slices"
	"testing"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/token/jwt"

	"github.com/gatehouse/gatehouse/services/issuer/internal/client"
	"github.com/gatehouse/gatehouse/services/issuer/internal/tokensession"
)

func request(sess fosite.Session) *fosite.Request {
	r := fosite.NewRequest()
	r.ID = "req-1"
	r.RequestedAt = time.Now().UTC()
	r.Client = &client.Client{ID: "reporting-job"}
	r.Session = sess
	r.GrantScope("invoice:read")
	r.GrantAudience("gatehouse-api")
	return r
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	exp := time.Now().UTC().Add(5 * time.Minute).Truncate(time.Second)
	sess := &oauth2.JWTSession{
		JWTClaims: &jwt.JWTClaims{Subject: "reporting-job", JTI: "jti-1", Extra: map[string]any{"tenant": "acme"}},
		JWTHeader: &jwt.Headers{Extra: map[string]any{"typ": "at+jwt"}},
		Subject:   "reporting-job",
	}
	sess.SetExpiresAt(fosite.AccessToken, exp)
	rec, err := tokensession.FromRequester("sig", request(sess))
	if err != nil {
		t.Fatal(err)
	}
	if rec.Signature != "sig" || rec.JTI != "jti-1" || rec.RequestID != "req-1" || rec.ClientID != "reporting-job" ||
		rec.Subject != "reporting-job" || !rec.ExpiresAt.Equal(exp) ||
		!slices.Equal(rec.Scopes, []string{"invoice:read"}) || !slices.Equal(rec.Audiences, []string{"gatehouse-api"}) {
		t.Fatalf("record = %+v", rec)
	}

	out := new(oauth2.JWTSession)
	r, err := rec.Requester(&client.Client{ID: "reporting-job"}, out)
	if err != nil {
		t.Fatal(err)
	}
	if r.GetID() != "req-1" || !slices.Equal(r.GetGrantedScopes(), []string{"invoice:read"}) ||
		out.JWTClaims.JTI != "jti-1" || out.JWTClaims.Extra["tenant"] != "acme" || !out.GetExpiresAt(fosite.AccessToken).Equal(exp) {
		t.Fatalf("requester = %+v, session = %+v", r, out)
	}
	if _, err := rec.Requester(&client.Client{ID: "billing-bot"}, new(oauth2.JWTSession)); err == nil {
		t.Fatal("Requester accepted another client")
	}
}

func TestFromRequesterRejects(t *testing.T) {
	t.Parallel()
	withJTI := &oauth2.JWTSession{JWTClaims: &jwt.JWTClaims{JTI: "j"}}
	tests := []struct {
		name      string
		signature string
		session   fosite.Session
	}{
		{name: "empty signature", signature: "", session: withJTI},
		{name: "not a JWT session", signature: "sig", session: &fosite.DefaultSession{}},
		{name: "no jti", signature: "sig", session: &oauth2.JWTSession{JWTClaims: &jwt.JWTClaims{}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := tokensession.FromRequester(tc.signature, request(tc.session)); err == nil {
				t.Fatal("FromRequester accepted it")
			}
		})
	}
}
