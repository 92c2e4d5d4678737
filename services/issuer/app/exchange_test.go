package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/gatehouse/gatehouse/libs/audit"
	auditpostgres "github.com/gatehouse/gatehouse/libs/audit/postgres"
	"github.com/gatehouse/gatehouse/libs/postgres/pgtest"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1/authzv1connect"
	"github.com/gatehouse/gatehouse/services/issuer/app"
)

const (
	tokenExchangeGrant = "urn:ietf:params:oauth:grant-type:token-exchange"
	accessTokenType    = "urn:ietf:params:oauth:token-type:access_token"
	samTOTP            = "JBSWY3DPEHPK3PXPSAM23456"
)

// fakePDP is a Connect DecisionService that records every CheckRequest
// and allows, except for the tickets named "T-denied" (DENY,
// ticket_required) and "T-down" (an unavailable error).
type fakePDP struct {
	authzv1connect.UnimplementedDecisionServiceHandler
	mu       sync.Mutex
	requests []*authzv1.CheckRequest
}

func (f *fakePDP) Check(_ context.Context, req *connect.Request[authzv1.CheckRequest]) (*connect.Response[authzv1.CheckResponse], error) {
	f.mu.Lock()
	f.requests = append(f.requests, proto.CloneOf(req.Msg))
	f.mu.Unlock()
	switch req.Msg.GetResource().GetAttributes()["ticket_id"].GetStringValue() {
	case "T-down":
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("policy store down"))
	case "T-denied":
		return connect.NewResponse(&authzv1.CheckResponse{
			Decision: authzv1.Decision_DECISION_DENY, ReasonCode: "ticket_required", PolicyVersion: "test-policy-1", DecisionId: "d-deny",
		}), nil
	}
	return connect.NewResponse(&authzv1.CheckResponse{
		Decision: authzv1.Decision_DECISION_ALLOW, ReasonCode: "allowed", PolicyVersion: "test-policy-1", DecisionId: "d-allow",
	}), nil
}

func (f *fakePDP) last(t *testing.T) *authzv1.CheckRequest {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		t.Fatal("the PDP was not asked")
	}
	return f.requests[len(f.requests)-1]
}

func startPDP(t *testing.T) (*fakePDP, string) {
	t.Helper()
	pdp := &fakePDP{}
	mux := http.NewServeMux()
	mux.Handle(authzv1connect.NewDecisionServiceHandler(pdp))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return pdp, srv.URL
}

// TestTokenExchange runs impersonation and delegation through the wired
// issuer, on the memory store and on Postgres, with a fake PDP: sam logs
// in at the support console and impersonates alice on a ticket; the
// export job then acts for alice with that token (a chain of two actors).
// It checks the exact PDP inputs and minted claims, that an exchanged
// token is introspectable and revocable, that refusals carry reason_code
// and an unreachable PDP is 503, and (Postgres) the audit trail.
func TestTokenExchange(t *testing.T) {
	t.Parallel()
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		pdp, pdpURL := startPDP(t)
		cfg := demoConfig(t)
		cfg.PDPURL = pdpURL
		is := start(t, cfg)
		tokens := runExchange(t, is, pdp)
		logs := is.log.String()
		if !strings.Contains(logs, `"msg":"token request rejected"`) {
			t.Errorf("no log line for the refused exchanges:\n%s", logs)
		}
		for _, tok := range tokens {
			if sig := tok[strings.LastIndexByte(tok, '.')+1:]; tok != "" && (strings.Contains(logs, tok) || strings.Contains(logs, sig)) {
				t.Errorf("logs contain a token")
			}
		}
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		srv, err := pgtest.Start(t.Context())
		if err != nil {
			t.Fatalf("pgtest: %v", err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := srv.Terminate(ctx); err != nil {
				t.Errorf("terminate: %v", err)
			}
		})
		pdp, pdpURL := startPDP(t)
		cfg := demoConfig(t)
		cfg.PDPURL = pdpURL
		cfg.Store, cfg.DatabaseURL = app.StorePostgres, srv.NewDatabase(t)
		a, err := app.New(t.Context(), cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(a.Handler())
		tokens := runExchange(t, &issuer{srv: hs, log: &syncBuffer{}}, pdp)
		hs.Close()
		if err := a.Close(); err != nil { // drains the audit queue
			t.Fatal(err)
		}
		assertExchangeAudit(t, cfg.DatabaseURL, tokens)
	})
}

// runExchange drives the exchanges against is and returns every token it
// saw, for the audit check.
func runExchange(t *testing.T, is *issuer, pdp *fakePDP) []string {
	t.Helper()
	ctx := context.WithValue(t.Context(), oauth2.HTTPClient, is.srv.Client())

	// The grant is advertised.
	_, raw := is.get(t, "/.well-known/openid-configuration")
	var meta struct {
		GrantTypes []string `json:"grant_types_supported"`
	}
	if err := json.Unmarshal(raw, &meta); err != nil || !slices.Contains(meta.GrantTypes, tokenExchangeGrant) {
		t.Fatalf("grant_types_supported = %v (%v)", meta.GrantTypes, err)
	}

	// sam signs in at the support console.
	console := &oauth2.Config{
		ClientID: "support-console", ClientSecret: "support-console-secret", RedirectURL: callbackURL,
		Scopes: []string{"openid", "support:read", "support:impersonate", "invoice:read"},
		Endpoint: oauth2.Endpoint{
			AuthURL: is.srv.URL + "/oauth2/authorize", TokenURL: is.srv.URL + "/oauth2/token", AuthStyle: oauth2.AuthStyleInHeader,
		},
	}
	b := newBrowser(t, is)
	verifier := oauth2.GenerateVerifier()
	p := b.allow(b.login(b.authorize(console, verifier), "sam", "sam-demo-password", samTOTP))
	if p.callback == nil {
		t.Fatalf("sam's login did not reach the callback: %d\n%s", p.status, p.body)
	}
	samTok, err := console.Exchange(ctx, p.callback.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("sam's code exchange: %v", err)
	}
	_, samClaims := signedClaims(t, is, samTok.AccessToken)

	// Impersonation.
	imp := postExchange(t, is, "support-console", url.Values{
		"subject_token": {samTok.AccessToken}, "subject_token_type": {accessTokenType},
		"requested_subject": {"alice"}, "support_ticket": {"T-42"}, "ticket_access": {"read"},
		"scope": {"invoice:read"}, "requested_lifetime": {"600"},
	})
	if imp.status != http.StatusOK {
		t.Fatalf("impersonation: %d %s", imp.status, imp.raw)
	}
	impTok := imp.token(t)
	if imp.body["issued_token_type"] != accessTokenType || imp.body["expires_in"] != float64(300) || imp.body["refresh_token"] != nil {
		t.Errorf("impersonation response: %s", imp.raw)
	}
	_, impClaims := signedClaims(t, is, impTok)
	assertExchanged(t, impClaims, map[string]any{
		"iss": "http://localhost:8080", "sub": "alice", "tenant": "acme", "client_id": "support-console",
		"scope": "invoice:read", "aud": []any{"gatehouse-api"}, "roles": []any{"billing_approver"},
		"act": map[string]any{"sub": "sam", "client_id": "support-console"},
	}, 300)
	assertPDPInput(t, pdp.last(t), &authzv1.CheckRequest{
		Principal: &authzv1.Principal{
			Subject: "sam", Tenant: "acme", Roles: []string{"support_agent"},
			Scopes:   []string{"openid", "support:read", "support:impersonate", "invoice:read"},
			ClientId: "support-console", Acr: "mfa", AuthTime: pdp.last(t).GetPrincipal().GetAuthTime(),
		},
		Action: "token:exchange",
		Resource: &authzv1.Resource{Type: "token", Id: "alice", Tenant: "acme", Attributes: map[string]*authzv1.AttributeValue{
			"mode": str("impersonation"), "client_id": str("support-console"), "audience": str("gatehouse-api"),
			"scope": str("invoice:read"), "lifetime_seconds": num(300), "subject_exchanged": boolean(false),
			"actor_subject": str(""), "actor_client_id": str(""), "actor_tenant": str(""),
			"target_roles": str("billing_approver"), "ticket_id": str("T-42"), "ticket_access": str("read"),
		}},
	})
	if got := pdp.last(t).GetPrincipal().GetAuthTime().AsTime().Unix(); float64(got) != samClaims["auth_time"] {
		t.Errorf("principal auth_time %d, sam's token %v", got, samClaims["auth_time"])
	}

	// Delegation with the impersonation token as subject: the export job
	// acts for alice, and sam stays in the chain below it.
	job := clientcredentials.Config{
		ClientID: "support-export", ClientSecret: "support-export-secret",
		TokenURL: is.srv.URL + "/oauth2/token", Scopes: []string{"invoice:read"},
	}
	jobTok, err := job.Token(ctx)
	if err != nil {
		t.Fatalf("support-export client_credentials: %v", err)
	}
	del := postExchange(t, is, "support-export", url.Values{
		"subject_token": {impTok}, "subject_token_type": {accessTokenType},
		"actor_token": {jobTok.AccessToken}, "actor_token_type": {accessTokenType},
		"audience": {"gatehouse-api"}, "requested_lifetime": {"120"},
	})
	if del.status != http.StatusOK {
		t.Fatalf("delegation: %d %s", del.status, del.raw)
	}
	delTok := del.token(t)
	_, delClaims := signedClaims(t, is, delTok)
	assertExchanged(t, delClaims, map[string]any{
		"iss": "http://localhost:8080", "sub": "alice", "tenant": "acme", "client_id": "support-export",
		"scope": "invoice:read", "aud": []any{"gatehouse-api"}, "roles": []any{"billing_approver"},
		"act": map[string]any{"sub": "support-export", "client_id": "support-export",
			"act": map[string]any{"sub": "sam", "client_id": "support-console"}},
	}, 120)
	assertPDPInput(t, pdp.last(t), &authzv1.CheckRequest{
		Principal: &authzv1.Principal{
			Subject: "alice", Tenant: "acme", Roles: []string{"billing_approver"}, Scopes: []string{"invoice:read"},
			ClientId: "support-console", ActorChain: []*authzv1.Actor{{Subject: "sam", ClientId: "support-console"}},
		},
		Action: "token:exchange",
		Resource: &authzv1.Resource{Type: "token", Id: "alice", Tenant: "acme", Attributes: map[string]*authzv1.AttributeValue{
			"mode": str("delegation"), "client_id": str("support-export"), "audience": str("gatehouse-api"),
			"scope": str("invoice:read"), "lifetime_seconds": num(120), "subject_exchanged": boolean(true),
			"actor_subject": str("support-export"), "actor_client_id": str("support-export"), "actor_tenant": str("acme"),
			"target_roles": str("billing_approver"), "ticket_id": str(""), "ticket_access": str(""),
		}},
	})

	// Both tokens are live at introspection; revoking the impersonation
	// token (as the support service ends the session) ends it, and it can
	// no longer be exchanged.
	if !introspect(t, is, impTok) || !introspect(t, is, delTok) {
		t.Fatal("exchanged tokens are not active")
	}
	revoke(t, is, impTok, "support-console", "support-console-secret")
	if introspect(t, is, impTok) {
		t.Fatal("revoked impersonation token is active")
	}
	again := postExchange(t, is, "support-export", url.Values{
		"subject_token": {impTok}, "subject_token_type": {accessTokenType},
		"actor_token": {jobTok.AccessToken}, "actor_token_type": {accessTokenType},
	})
	if again.status != http.StatusBadRequest || again.body["error"] != "invalid_grant" {
		t.Fatalf("exchange of a revoked token: %d %s", again.status, again.raw)
	}

	// Refusals over the wire: a policy denial with its reason code, an
	// unreachable PDP.
	for _, tc := range []struct {
		ticket        string
		status        int
		error, reason string
	}{
		{ticket: "T-denied", status: http.StatusBadRequest, error: "invalid_grant", reason: "ticket_required"},
		{ticket: "T-down", status: http.StatusServiceUnavailable, error: "temporarily_unavailable"},
	} {
		r := postExchange(t, is, "support-console", url.Values{
			"subject_token": {samTok.AccessToken}, "subject_token_type": {accessTokenType},
			"requested_subject": {"bob"}, "support_ticket": {tc.ticket}, "scope": {"invoice:read"},
		})
		if reasonCode, _ := r.body["reason_code"].(string); r.status != tc.status || r.body["error"] != tc.error || reasonCode != tc.reason {
			t.Errorf("ticket %s: %d %s", tc.ticket, r.status, r.raw)
		}
	}
	return []string{samTok.AccessToken, samTok.RefreshToken, impTok, jobTok.AccessToken, delTok}
}

// assertExchangeAudit checks the token.exchanged events: the two allowed
// exchanges with their actor chains, the refusals with their reasons, and
// no token anywhere.
func assertExchangeAudit(t *testing.T, databaseURL string, tokens []string) {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	events, err := auditpostgres.New(pool).List(t.Context(), audit.Query{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range events {
		for _, tok := range tokens {
			sig := tok[strings.LastIndexByte(tok, '.')+1:]
			text := e.Subject + e.ClientID + strings.Join(slices.Collect(mapValues(e.Attributes)), " ")
			if tok != "" && (strings.Contains(text, tok) || (len(sig) > 16 && strings.Contains(text, sig))) {
				t.Fatalf("audit event %s holds a token", e.Type)
			}
		}
		if e.Type == audit.TypeTokenIssued && e.Attributes["grant_type"] == tokenExchangeGrant {
			t.Errorf("exchange recorded as token.issued too: %+v", e)
		}
		if e.Type != audit.TypeTokenExchanged {
			continue
		}
		got = append(got, strings.Join([]string{e.Decision, e.ReasonCode, e.Subject, e.ClientID, e.Tenant,
			strings.Join(e.ActorChain, ">"), e.Attributes["mode"], e.Attributes["ticket_id"], e.PolicyVersion}, "|"))
	}
	want := []string{
		"ALLOW|allowed|alice|support-console|acme|sam|impersonation|T-42|test-policy-1",
		"ALLOW|allowed|alice|support-export|acme|support-export>sam|delegation||test-policy-1",
		"DENY|token_revoked||support-export|||delegation||",
		"DENY|ticket_required|bob|support-console|acme|sam|impersonation|T-denied|test-policy-1",
		"DENY|pdp_unavailable|bob|support-console|acme|sam|impersonation|T-down|",
	}
	if !slices.Equal(got, want) {
		t.Errorf("token.exchanged events:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// exchangeResponse is a token endpoint answer to an exchange.
type exchangeResponse struct {
	status int
	body   map[string]any
	raw    string
}

func (r exchangeResponse) token(t *testing.T) string {
	t.Helper()
	tok, _ := r.body["access_token"].(string)
	if tok == "" || r.body["token_type"] != "Bearer" {
		t.Fatalf("no bearer access token: %s", r.raw)
	}
	return tok
}

// postExchange posts a token exchange as client id (secret "<id>-secret",
// client_secret_basic): x/oauth2 has no token exchange of its own.
func postExchange(t *testing.T, is *issuer, id string, form url.Values) exchangeResponse {
	t.Helper()
	form.Set("grant_type", tokenExchangeGrant)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, is.srv.URL+"/oauth2/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, id+"-secret")
	resp, err := is.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := exchangeResponse{status: resp.StatusCode, raw: string(raw)}
	if err := json.Unmarshal(raw, &out.body); err != nil {
		t.Fatalf("not JSON: %s", raw)
	}
	return out
}

// assertExchanged checks an exchanged token's claims: exactly want's, plus
// exp, iat, nbf and jti, with exp - iat = lifetime seconds.
func assertExchanged(t *testing.T, claims, want map[string]any, lifetime float64) {
	t.Helper()
	if exp, iat := claims["exp"].(float64), claims["iat"].(float64); exp-iat != lifetime || claims["nbf"] != iat || claims["jti"] == "" {
		t.Errorf("exp %v iat %v nbf %v: want a lifetime of %v", exp, iat, claims["nbf"], lifetime)
	}
	rest := map[string]any{}
	for k, v := range claims {
		switch k {
		case "exp", "iat", "nbf", "jti":
		default:
			rest[k] = v
		}
	}
	gotJSON, _ := json.Marshal(rest)
	wantJSON, _ := json.Marshal(want)
	if string(gotJSON) != string(wantJSON) {
		t.Errorf("claims %s\nwant   %s", gotJSON, wantJSON)
	}
}

// assertPDPInput compares a CheckRequest with want; its context must carry
// a request id, a recent time and a source address.
func assertPDPInput(t *testing.T, got, want *authzv1.CheckRequest) {
	t.Helper()
	c := got.GetContext()
	if c.GetRequestId() == "" || time.Since(c.GetTime().AsTime()) > time.Minute || c.GetSourceIp() == "" {
		t.Errorf("context = %v", c)
	}
	got = proto.CloneOf(got)
	got.Context = nil
	if !proto.Equal(got, want) {
		t.Errorf("PDP input =\n%s\nwant\n%s", protojson.Format(got), protojson.Format(want))
	}
}

func str(s string) *authzv1.AttributeValue {
	return &authzv1.AttributeValue{Kind: &authzv1.AttributeValue_StringValue{StringValue: s}}
}

func num(n int64) *authzv1.AttributeValue {
	return &authzv1.AttributeValue{Kind: &authzv1.AttributeValue_IntValue{IntValue: n}}
}

func boolean(b bool) *authzv1.AttributeValue {
	return &authzv1.AttributeValue{Kind: &authzv1.AttributeValue_BoolValue{BoolValue: b}}
}
