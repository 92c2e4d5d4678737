package stepup

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"

	"github.com/gatehouse/gatehouse/e2e/stack"
	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1/invoicev1connect"
)

// The challenges of the gateway's answers.
var (
	stepUpChallenge = fmt.Sprintf(`Bearer realm="gatehouse", error="insufficient_user_authentication", acr_values="mfa", max_age=%d`, maxAge)
	invalidToken    = `Bearer realm="gatehouse", error="invalid_token"`
	hex32           = regexp.MustCompile(`^[0-9a-f]{32}$`)
)

// TestStepUpTokens: what does not get a large approval through. A token is
// bound to its subject and signed: identity headers are the gateway's
// alone, an edited claim breaks the signature (401 invalid_token, never a
// challenge or an approval), bob is refused for his role whatever he claims,
// and a refresh never makes a sign-in younger: a refreshed token of an old
// MFA sign-in is challenged like the old token. Every answer is checked
// exactly, through the gateway.
func TestStepUpTokens(t *testing.T) {
	shortMaxAge(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	approvedFresh := createInvoice(t, largeAmount, "Hooli (approved with a fresh token)")
	draft := createInvoice(t, largeAmount, "Hooli (never approved)")
	scopes := []string{oidc.ScopeOpenID, "invoice:read", "invoice:approve"}

	_, bobTok := signInTokens(ctx, t, user{"bob", bobPassword, ""}, scopes...)
	web, aliceTok := signInTokens(ctx, t, user{"alice", alicePassword, aliceTOTPSecret}, append(scopes, oidc.ScopeOfflineAccess)...)
	alice := web.claims(t, aliceTok.AccessToken)
	signedIn := time.Unix(alice.AuthTime, 0)
	if alice.Subject != "alice" || alice.ACR != "mfa" || aliceTok.RefreshToken == "" {
		t.Fatalf("alice's tokens: sub %q acr %q refresh token %t; want alice, mfa, a refresh token", alice.Subject, alice.ACR, aliceTok.RefreshToken != "")
	}
	if age := time.Since(signedIn); age > (maxAge-4)*time.Second {
		t.Fatalf("alice's sign-in is already %v old: too slow to test a fresh token with max_age %ds", age, maxAge)
	}

	// While alice's sign-in is fresh.
	t.Run("alice's fresh token approves as alice whatever the identity headers say", func(t *testing.T) {
		call := approveCall(approvedFresh, aliceTok.AccessToken)
		call.header = http.Header{
			"X-Gatehouse-Subject":   {"bob"},
			"X-Gatehouse-Tenant":    {"globex"},
			"X-Gatehouse-Client-Id": {"billing-bot"},
		}
		a := call.do(t)
		var got struct {
			Invoice struct {
				ID, Tenant, Status, ApprovedBy string
			}
		}
		if err := json.Unmarshal(a.body, &got); err != nil || a.status != http.StatusOK {
			t.Fatalf("ApproveInvoice: %d %s (%v)", a.status, a.body, err)
		}
		if got.Invoice.ID != approvedFresh || got.Invoice.Tenant != "acme" || got.Invoice.Status != "INVOICE_STATUS_APPROVED" || got.Invoice.ApprovedBy != "alice" {
			t.Fatalf("approved %+v, want %s of acme approved by alice", got.Invoice, approvedFresh)
		}
		if inv := invoice(t, approvedFresh); inv.GetApprovedBy() != "alice" {
			t.Fatalf("stored approval by %q, want alice", inv.GetApprovedBy())
		}
	})
	t.Run("alice's fresh token with sub edited to bob", func(t *testing.T) {
		forged := forge(t, aliceTok.AccessToken, func(c map[string]any) { c["sub"] = "bob" })
		checkInvalidToken(t, approveCall(draft, forged).do(t))
	})

	t.Run("bob is refused for his role, whatever he claims", func(t *testing.T) {
		for _, header := range []http.Header{
			nil,
			{"X-Gatehouse-Subject": {"alice"}},
			{"X-Gatehouse-Subject": {"alice"}, "X-Gatehouse-Tenant": {"acme"}, "X-Gatehouse-Client-Id": {webClientID}},
		} {
			call := approveCall(draft, bobTok.AccessToken)
			call.header = header
			a := call.do(t)
			code, _, info := connectError(t, a)
			if a.status != http.StatusForbidden || code != "permission_denied" || info.GetReason() != "role_not_permitted" ||
				a.header.Get("WWW-Authenticate") != "" {
				t.Errorf("bob with headers %v: %d %s %q WWW-Authenticate %q; want 403 permission_denied role_not_permitted, no challenge",
					header, a.status, code, info.GetReason(), a.header.Get("WWW-Authenticate"))
			}
		}
	})
	t.Run("bob's token edited to an MFA approver", func(t *testing.T) {
		forged := forge(t, bobTok.AccessToken, func(c map[string]any) {
			c["acr"], c["amr"], c["roles"], c["auth_time"] = "mfa", []string{"pwd", "otp", "mfa"}, []string{"billing_approver"}, time.Now().Unix()
		})
		checkInvalidToken(t, approveCall(draft, forged).do(t))
	})

	// Past max_age: alice's sign-in is too old for a large approval.
	waitUntil(ctx, t, signedIn.Add((maxAge+1)*time.Second))

	t.Run("stale: the exact challenge over Connect JSON", func(t *testing.T) {
		checkStepUpChallenge(t, approveCall(draft, aliceTok.AccessToken).do(t))
	})
	t.Run("stale: the challenge over gRPC, in the ErrorInfo", func(t *testing.T) {
		transport := gh.HTTPClient().Transport.(*http.Transport)
		transport.Protocols = new(http.Protocols)
		transport.Protocols.SetUnencryptedHTTP2(true)
		client := invoicev1connect.NewInvoiceServiceClient(&http.Client{Transport: transport, Timeout: 30 * time.Second}, gh.GatewayURL, connect.WithGRPC())
		req := connect.NewRequest(&invoicev1.ApproveInvoiceRequest{Id: draft})
		req.Header().Set("Authorization", "Bearer "+aliceTok.AccessToken)
		_, err := client.ApproveInvoice(t.Context(), req)
		var ce *connect.Error
		if !errors.As(err, &ce) || ce.Code() != connect.CodeUnauthenticated {
			t.Fatalf("ApproveInvoice over gRPC: %v, want unauthenticated", err)
		}
		info := onlyErrorInfo(t, ce.Details())
		checkStepUpInfo(t, info)
	})
	t.Run("stale token, edited", func(t *testing.T) {
		now := time.Now().Unix()
		tests := []struct {
			name  string
			forge func() string
		}{
			{"auth_time moved to now", func() string {
				return forge(t, aliceTok.AccessToken, func(c map[string]any) { c["auth_time"] = now })
			}},
			{"auth_time, iat and exp moved", func() string {
				return forge(t, aliceTok.AccessToken, func(c map[string]any) { c["auth_time"], c["iat"], c["exp"] = now, now, now+300 })
			}},
			{"alg none, no signature", func() string {
				forged := forge(t, aliceTok.AccessToken, func(c map[string]any) { c["auth_time"] = now })
				parts := strings.Split(forged, ".")
				return b64(t, map[string]any{"alg": "none", "typ": "at+jwt"}) + "." + parts[1] + "."
			}},
			{"bob's signature under alice's claims", func() string {
				forged := forge(t, aliceTok.AccessToken, func(c map[string]any) { c["auth_time"] = now })
				return forged[:strings.LastIndex(forged, ".")] + bobTok.AccessToken[strings.LastIndex(bobTok.AccessToken, "."):]
			}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				checkInvalidToken(t, approveCall(draft, tc.forge()).do(t))
			})
		}
	})
	t.Run("a refresh keeps auth_time: still challenged", func(t *testing.T) {
		refreshed, err := web.cfg.TokenSource(web.ctx, &oauth2.Token{RefreshToken: aliceTok.RefreshToken}).Token()
		if err != nil {
			t.Fatalf("refresh: %v", err)
		}
		r := web.claims(t, refreshed.AccessToken)
		if r.Subject != "alice" || r.ACR != "mfa" || r.AuthTime != alice.AuthTime || r.JTI == alice.JTI || r.IssuedAt < alice.AuthTime+maxAge {
			t.Fatalf("refreshed access token sub %q acr %q auth_time %d jti new %t iat %d; want alice, mfa, the sign-in's auth_time %d, a new jti, iat now",
				r.Subject, r.ACR, r.AuthTime, r.JTI != alice.JTI, r.IssuedAt, alice.AuthTime)
		}
		// The token is good: reading works.
		if a := (gatewayCall{procedure: "GetInvoice", token: refreshed.AccessToken, body: fmt.Sprintf(`{"id":%q}`, draft)}).do(t); a.status != http.StatusOK {
			t.Fatalf("GetInvoice with the refreshed token: %d %s", a.status, a.body)
		}
		// But its sign-in is old.
		checkStepUpChallenge(t, approveCall(draft, refreshed.AccessToken).do(t))
	})

	if inv := invoice(t, draft); inv.GetStatus() != invoicev1.InvoiceStatus_INVOICE_STATUS_DRAFT || inv.GetApprovedBy() != "" {
		t.Errorf("invoice %s is %s approved by %q; nothing above may approve it", draft, inv.GetStatus(), inv.GetApprovedBy())
	}
}

// webClient is invoice-web as the test plays it: the code flow with PKCE and
// a loopback callback of its own.
type webClient struct {
	// ctx carries the stack's HTTP client for x/oauth2 and go-oidc.
	ctx      context.Context
	provider *oidc.Provider
	cfg      *oauth2.Config
}

// tokenClaims are the access token claims the tests read.
type tokenClaims struct {
	Subject  string `json:"sub"`
	ACR      string `json:"acr"`
	AuthTime int64  `json:"auth_time"`
	IssuedAt int64  `json:"iat"`
	JTI      string `json:"jti"`
}

// signInTokens signs u in to invoice-web in a fresh Chromium (prompt=consent,
// so the consent page shows whatever was allowed before) and returns the
// client and its tokens.
func signInTokens(ctx context.Context, t *testing.T, u user, scopes ...string) (*webClient, *oauth2.Token) {
	t.Helper()
	callbacks := make(chan url.Values, 1)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		select {
		case callbacks <- r.URL.Query():
		default:
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!doctype html><title>invoice-web</title><p id="signed-in">Signed in.</p>`)
	}))
	t.Cleanup(app.Close)

	httpCtx := oidc.ClientContext(ctx, gh.HTTPClient())
	provider, err := oidc.NewProvider(httpCtx, stack.IssuerID)
	if err != nil {
		t.Fatalf("OIDC discovery: %v", err)
	}
	endpoint := provider.Endpoint()
	endpoint.AuthStyle = oauth2.AuthStyleInParams
	web := &webClient{ctx: httpCtx, provider: provider,
		cfg: &oauth2.Config{ClientID: webClientID, Endpoint: endpoint, RedirectURL: app.URL + "/callback", Scopes: scopes}}
	verifier, state := oauth2.GenerateVerifier(), rand.Text()
	authURL := web.cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier),
		oauth2.SetAuthURLParam("nonce", rand.Text()), oauth2.SetAuthURLParam("prompt", "consent"))

	newBrowser(t).signIn(ctx, authURL, u, true)
	var q url.Values
	select {
	case q = <-callbacks:
	case <-ctx.Done():
		t.Fatalf("the callback was never called: %v", ctx.Err())
	}
	if q.Get("code") == "" || q.Get("state") != state {
		t.Fatalf("callback: error %q, state matches %t; want a code for this request", q.Get("error"), q.Get("state") == state)
	}
	tok, err := web.cfg.Exchange(httpCtx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("code exchange: %v", err)
	}
	return web, tok
}

// claims verifies an access token against the issuer's JWKS (signature,
// iss, exp) and returns its claims.
func (w *webClient) claims(t *testing.T, raw string) tokenClaims {
	t.Helper()
	tok, err := w.provider.Verifier(&oidc.Config{SkipClientIDCheck: true, SupportedSigningAlgs: []string{oidc.ES256}}).Verify(w.ctx, raw)
	if err != nil {
		t.Fatalf("access token: %v", err)
	}
	var c tokenClaims
	if err := tok.Claims(&c); err != nil {
		t.Fatal(err)
	}
	return c
}

// forge returns token with its payload changed by edit and its header and
// signature kept: what an attacker can make of a token they hold.
func forge(t *testing.T, token string, edit func(claims map[string]any)) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWS compact token: %d parts", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil {
		t.Fatal(err)
	}
	edit(claims)
	forged := parts[0] + "." + b64(t, claims) + "." + parts[2]
	if forged == token {
		t.Fatal("the edit changed nothing")
	}
	return forged
}

func b64(t *testing.T, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(raw)
}

// connectError reads a Connect error body: its code, message and its one
// ErrorInfo.
func connectError(t *testing.T, a gatewayAnswer) (code, message string, info *errdetails.ErrorInfo) {
	t.Helper()
	var body struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Details []struct {
			Type  string `json:"type"`
			Value string `json:"value"`
		} `json:"details"`
	}
	if err := json.Unmarshal(a.body, &body); err != nil {
		t.Fatalf("not a Connect error body (%d): %s", a.status, a.body)
	}
	if len(body.Details) != 1 || body.Details[0].Type != "google.rpc.ErrorInfo" {
		t.Fatalf("details %+v, want one google.rpc.ErrorInfo", body.Details)
	}
	raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(body.Details[0].Value, "="))
	if err != nil {
		t.Fatalf("ErrorInfo value: %v", err)
	}
	info = new(errdetails.ErrorInfo)
	if err := proto.Unmarshal(raw, info); err != nil {
		t.Fatalf("ErrorInfo: %v", err)
	}
	return body.Code, body.Message, info
}

// checkStepUpChallenge checks RFC 9470's challenge, as the gateway passes
// the invoice service's answer on: 401, WWW-Authenticate, and the Connect
// error with its ErrorInfo.
func checkStepUpChallenge(t *testing.T, a gatewayAnswer) {
	t.Helper()
	if a.status != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401: %s", a.status, a.body)
	}
	if got := a.header.Values("WWW-Authenticate"); !slices.Equal(got, []string{stepUpChallenge}) {
		t.Errorf("WWW-Authenticate %q, want %q", got, stepUpChallenge)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	code, message, info := connectError(t, a)
	if code != "unauthenticated" || message != "a stronger or more recent authentication is required" {
		t.Errorf("code %q message %q, want unauthenticated, a stronger or more recent authentication is required", code, message)
	}
	checkStepUpInfo(t, info)
}

func checkStepUpInfo(t *testing.T, info *errdetails.ErrorInfo) {
	t.Helper()
	m := info.GetMetadata()
	if info.GetReason() != "step_up_required" || info.GetDomain() != "gatehouse.dev" ||
		m["acr_values"] != "mfa" || m["max_age"] != fmt.Sprint(maxAge) || !hex32.MatchString(m["decision_id"]) || !hex32.MatchString(m["trace_id"]) {
		t.Errorf("ErrorInfo %v, want step_up_required of gatehouse.dev with acr_values mfa, max_age %d, a decision id and a trace id", info, maxAge)
	}
	if keys := slices.Sorted(maps.Keys(m)); !slices.Equal(keys, []string{"acr_values", "decision_id", "max_age", "trace_id"}) {
		t.Errorf("ErrorInfo metadata keys %q, want acr_values, decision_id, max_age, trace_id", keys)
	}
}

// checkInvalidToken checks the gateway refused a token: 401 invalid_token,
// never a challenge (which would invite a step-up for a forged token).
func checkInvalidToken(t *testing.T, a gatewayAnswer) {
	t.Helper()
	if a.status != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401: %s", a.status, a.body)
	}
	if got := a.header.Values("WWW-Authenticate"); !slices.Equal(got, []string{invalidToken}) {
		t.Errorf("WWW-Authenticate %q, want %q", got, invalidToken)
	}
	if code, _, info := connectError(t, a); code != "unauthenticated" || info.GetReason() != "invalid_token" {
		t.Errorf("code %q reason %q, want unauthenticated, invalid_token", code, info.GetReason())
	}
}

func onlyErrorInfo(t *testing.T, details []*connect.ErrorDetail) *errdetails.ErrorInfo {
	t.Helper()
	if len(details) != 1 {
		t.Fatalf("%d error details, want one ErrorInfo", len(details))
	}
	v, err := details[0].Value()
	info, ok := v.(*errdetails.ErrorInfo)
	if err != nil || !ok {
		t.Fatalf("detail %v (%v), want an ErrorInfo", v, err)
	}
	return info
}
