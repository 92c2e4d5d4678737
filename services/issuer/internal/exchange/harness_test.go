package exchange_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/protobuf/proto"

	"github.com/gatehouse/gatehouse/libs/audit"
	"github.com/gatehouse/gatehouse/libs/enforce"
	authzv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/authz/v1"
	"github.com/gatehouse/gatehouse/services/issuer/internal/client"
	"github.com/gatehouse/gatehouse/services/issuer/internal/clientsecret"
	"github.com/gatehouse/gatehouse/services/issuer/internal/demoseed"
	"github.com/gatehouse/gatehouse/services/issuer/internal/exchange"
	"github.com/gatehouse/gatehouse/services/issuer/internal/signingkey"
	"github.com/gatehouse/gatehouse/services/issuer/internal/store/memory"
	"github.com/gatehouse/gatehouse/services/issuer/internal/token"
	"github.com/gatehouse/gatehouse/services/issuer/internal/tokensession"
	"github.com/gatehouse/gatehouse/services/issuer/internal/user"
)

const (
	issuer   = "http://issuer.test"
	audience = demoseed.Audience
	// consoleLong is a test client like support-console whose access
	// tokens live 30 minutes.
	consoleLong = "console-long"
)

// fakePDP is an exchange.Decider that records what it was asked and
// answers with decision (or err).
type fakePDP struct {
	mu       sync.Mutex
	requests []*authzv1.CheckRequest
	decision enforce.Decision
	err      error
}

func (f *fakePDP) Check(_ context.Context, req *authzv1.CheckRequest) (enforce.Decision, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, proto.CloneOf(req))
	if f.err != nil {
		return enforce.Decision{ReasonCode: "pdp_unavailable"}, f.err
	}
	return f.decision, nil
}

func (f *fakePDP) calls() []*authzv1.CheckRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*authzv1.CheckRequest(nil), f.requests...)
}

// allow is the decision a permitting PDP gives.
var allow = enforce.Decision{
	State: authzv1.Decision_DECISION_ALLOW, ReasonCode: "allowed",
	PolicyVersion: "policy-7", DecisionID: "decision-1",
}

// auditLog collects audit events.
type auditLog struct {
	mu     sync.Mutex
	events []audit.Event
}

func (l *auditLog) record(_ context.Context, e audit.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e.Clone())
}

func (l *auditLog) all() []audit.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]audit.Event(nil), l.events...)
}

// countingStore counts stored token sessions.
type countingStore struct {
	*memory.Store
	mu      sync.Mutex
	created int
}

func (s *countingStore) CreateTokenSession(ctx context.Context, rec tokensession.Record) error {
	err := s.Store.CreateTokenSession(ctx, rec)
	if err == nil {
		s.mu.Lock()
		s.created++
		s.mu.Unlock()
	}
	return err
}

func (s *countingStore) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.created
}

// harness is a token endpoint serving the exchange grant over the demo
// clients and users, with a fake PDP and an audit log of its own.
type harness struct {
	srv   *httptest.Server
	key   *signingkey.Key
	store *countingStore
	pdp   *fakePDP
	audit *auditLog
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	ctx := t.Context()
	hasher, err := clientsecret.NewHasher(clientsecret.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	key, err := signingkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	mem := memory.New()
	clients, err := demoseed.Clients(ctx, hasher)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := hasher.Hash(ctx, []byte(consoleLong+"-secret"))
	if err != nil {
		t.Fatal(err)
	}
	clients = append(clients, &client.Client{
		ID: consoleLong, SecretHash: secret, GrantTypes: []string{client.GrantTokenExchange},
		Scopes: []string{"invoice:read", "support:impersonate"}, Audiences: []string{audience},
		AccessTokenLifespan: 30 * time.Minute,
	})
	for _, c := range clients {
		if err := mem.UpsertClient(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	users := memory.NewUserStore()
	if err := demoseed.SeedUsers(ctx, users, user.Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}); err != nil {
		t.Fatal(err)
	}
	h := &harness{key: key, store: &countingStore{Store: mem}, pdp: &fakePDP{decision: allow}, audit: &auditLog{}}
	grant, err := exchange.New(exchange.Config{
		Issuer: issuer, Keys: key, Tokens: h.store, Users: users, PDP: h.pdp, Audit: h.audit.record,
	})
	if err != nil {
		t.Fatal(err)
	}
	provider, err := token.NewProvider(token.Config{
		Issuer:              issuer,
		AccessTokenLifespan: 5 * time.Minute,
		MaxTokenLifetime:    time.Hour,
		Key:                 key,
		Hasher:              hasher,
		TokenHMACKey:        []byte("0123456789abcdef0123456789abcdef"),
		Store:               h.store,
		Grants:              []token.Grant{grant.TokenGrant()},
		Logger:              slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(token.Path, token.NewEndpoint(provider))
	mux.Handle(token.IntrospectionPath, token.NewIntrospectionEndpoint(provider))
	h.srv = httptest.NewServer(mux)
	t.Cleanup(h.srv.Close)
	return h
}

// tok describes an access token to mint.
type tok struct {
	sub, clientID, tenant string
	roles, scopes         []string
	aud                   []string
	act                   map[string]any
	mayAct                map[string]any
	exp                   time.Duration // from now; default 5 minutes
	iss                   string        // default issuer
	typ                   string        // default at+jwt
	signer                *signingkey.Key
	// kid overrides the signing key's kid.
	kid string
	// unstored: no token session (never issued here, or revoked).
	unstored bool
}

// Demo tokens: sam through the support console, the customers through
// invoice-web.
func sam() tok {
	return tok{sub: "sam", clientID: "support-console", tenant: "acme", roles: []string{"support_agent"},
		scopes: []string{"openid", "support:read", "support:impersonate", "invoice:read"}}
}

func alice() tok {
	return tok{sub: "alice", clientID: "invoice-web", tenant: "acme", roles: []string{"billing_approver"},
		scopes: []string{"openid", "invoice:read", "invoice:write", "support:write"}}
}

func carol() tok {
	return tok{sub: "carol", clientID: "invoice-web", tenant: "globex", roles: []string{"billing_approver"},
		scopes: []string{"invoice:read"}}
}

func exporter() tok {
	return tok{sub: "support-export", clientID: "support-export", tenant: "acme", scopes: []string{"invoice:read"}}
}

// minted is a minted token and the grant it belongs to.
type minted struct {
	raw, jti, requestID string
}

// mint signs spec as the issuer would (or as spec's forger would) and,
// unless unstored, stores its session as a grant of its own.
func (h *harness) mint(t *testing.T, spec tok) minted {
	t.Helper()
	now := time.Now().Truncate(time.Second)
	if spec.exp == 0 {
		spec.exp = 5 * time.Minute
	}
	if spec.iss == "" {
		spec.iss = issuer
	}
	if spec.typ == "" {
		spec.typ = "at+jwt"
	}
	if spec.aud == nil {
		spec.aud = []string{audience}
	}
	key := h.key
	if spec.signer != nil {
		key = spec.signer
	}
	kid := key.KeyID()
	if spec.kid != "" {
		kid = spec.kid
	}
	jti := rand.Text()
	claims := map[string]any{
		"iss": spec.iss, "sub": spec.sub, "aud": spec.aud, "jti": jti,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(spec.exp).Unix(),
		"client_id": spec.clientID, "tenant": spec.tenant, "scope": strings.Join(spec.scopes, " "),
	}
	if len(spec.roles) > 0 {
		claims["roles"] = spec.roles
	}
	if spec.clientID != spec.sub {
		claims["acr"], claims["amr"], claims["auth_time"] = "mfa", []string{"pwd", "otp", "mfa"}, now.Unix()
	}
	if spec.act != nil {
		claims["act"] = spec.act
	}
	if spec.mayAct != nil {
		claims["may_act"] = spec.mayAct
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key.Private()},
		(&jose.SignerOptions{}).WithType(jose.ContentType(spec.typ)).WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := josejwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	m := minted{raw: raw, jti: jti, requestID: "grant-" + jti}
	if spec.unstored {
		return m
	}
	sess := token.NewSession()
	sess.Subject = spec.sub
	sess.SetExpiresAt("access_token", now.Add(spec.exp))
	data, err := json.Marshal(sess)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.store.Store.CreateTokenSession(t.Context(), tokensession.Record{
		Signature: raw[strings.LastIndexByte(raw, '.')+1:], JTI: jti, RequestID: m.requestID,
		ClientID: spec.clientID, Subject: spec.sub, Scopes: spec.scopes, Audiences: spec.aud,
		RequestedAt: now, ExpiresAt: now.Add(spec.exp), Session: data,
	}); err != nil {
		t.Fatal(err)
	}
	return m
}

// response is a token endpoint answer.
type response struct {
	status int
	body   map[string]any
	raw    string
	header http.Header
}

// exchange posts form to the token endpoint as client id (secret
// "<id>-secret"; none when secret is false).
func (h *harness) exchange(t *testing.T, id string, secret bool, form url.Values) response {
	t.Helper()
	return h.exchangeWith(t, id, secret, form, nil)
}

// exchangeWith is exchange with extra request headers.
func (h *harness) exchangeWith(t *testing.T, id string, secret bool, form url.Values, header http.Header) response {
	t.Helper()
	if form.Get("grant_type") == "" {
		form.Set("grant_type", exchange.GrantType)
	}
	if !secret {
		form.Set("client_id", id)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, h.srv.URL+token.Path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if secret {
		req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(id+"-secret"))
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := response{status: resp.StatusCode, raw: string(raw), header: resp.Header}
	if err := json.Unmarshal(raw, &out.body); err != nil {
		t.Fatalf("body is not JSON: %s", raw)
	}
	return out
}

// claims verifies raw with h's key (ES256 only) and returns its header
// and claims.
func (h *harness) claims(t *testing.T, raw string) (jose.Header, map[string]any) {
	t.Helper()
	parsed, err := josejwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("parse token: %v", err)
	}
	var claims map[string]any
	if err := parsed.Claims(h.key.Public(), &claims); err != nil {
		t.Fatalf("verify token: %v", err)
	}
	return parsed.Headers[0], claims
}

// form builds url.Values from key, value pairs.
func form(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v
}

// introspect asks about raw as billing-bot (audience gatehouse-api).
func (h *harness) introspect(t *testing.T, raw string) map[string]any {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, h.srv.URL+token.IntrospectionPath, strings.NewReader(url.Values{"token": {raw}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("billing-bot", "billing-bot-secret")
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("introspect: %d %v", resp.StatusCode, err)
	}
	return out
}
