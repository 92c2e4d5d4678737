package flows

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/jackc/pgx/v5"
	"golang.org/x/oauth2"

	"github.com/gatehouse/gatehouse/libs/enforce"
	"github.com/gatehouse/gatehouse/libs/enforce/reason"
	invoicev1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/invoice/v1"
	supportv1 "github.com/gatehouse/gatehouse/proto/gen/gatehouse/support/v1"
	"github.com/gatehouse/gatehouse/proto/gen/gatehouse/support/v1/supportv1connect"
)

// The demo seed's support side (DESIGN.md).
const (
	consoleClientID = "support-console"
	consoleSecret   = "support-console-secret"
	exportClientID  = "support-export"
	exportSecret    = "support-export-secret"
	// consoleCallback is support-console's registered redirect URI.
	consoleCallback = "http://127.0.0.1/callback"

	tokenExchangeGrant = "urn:ietf:params:oauth:grant-type:token-exchange"
	accessTokenType    = "urn:ietf:params:oauth:token-type:access_token"
)

var (
	sam   = login{"sam", "sam-demo-password", "JBSWY3DPEHPK3PXPSAM23456"}
	bob   = login{"bob", bobPassword, ""}
	carol = login{"carol", "carol-demo-password", "JBSWY3DPEHPK3PXPCAROL234"}
)

// signedIn caches one sign-in per user and client for the whole package: a
// TOTP code is accepted once, so a second sign-in of sam or carol would
// wait for the next 30-second step. Tokens live 5 minutes, longer than the
// package runs.
var signedIn = struct {
	sync.Mutex
	tokens map[string]string
}{tokens: map[string]string{}}

// userToken signs l in through the authorization-code flow of client
// (invoice-web, public with PKCE; or support-console, confidential) and
// returns the access token.
func userToken(t *testing.T, l login, clientID string, scopes ...string) string {
	t.Helper()
	signedIn.Lock()
	defer signedIn.Unlock()
	key := l.username + " " + clientID
	if tok, ok := signedIn.tokens[key]; ok {
		return tok
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	ctx, provider := discover(ctx, t)
	cfg := webConfig(provider, loopbackCallback, scopes...)
	if clientID == consoleClientID {
		endpoint := provider.Endpoint()
		endpoint.AuthStyle = oauth2.AuthStyleInHeader
		cfg = &oauth2.Config{ClientID: consoleClientID, ClientSecret: consoleSecret, Endpoint: endpoint,
			RedirectURL: consoleCallback, Scopes: scopes}
	}
	verifier := oauth2.GenerateVerifier()
	code := authorize(ctx, t, cfg, verifier, l)
	tok, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("%s signs in through %s: %v", l.username, clientID, err)
	}
	signedIn.tokens[key] = tok.AccessToken
	return tok.AccessToken
}

// samToken is sam's token from the support console; bobToken and
// carolToken are the customers' from invoice-web.
func samToken(t *testing.T) string {
	return userToken(t, sam, consoleClientID, oidc.ScopeOpenID, "support:read", "support:impersonate", "invoice:read")
}

func bobToken(t *testing.T) string {
	return userToken(t, bob, webClientID, oidc.ScopeOpenID, "invoice:read", "support:write")
}

func carolToken(t *testing.T) string {
	return userToken(t, carol, webClientID, oidc.ScopeOpenID, "invoice:read", "support:write")
}

func support(bearer string) supportv1connect.SupportServiceClient {
	return supportv1connect.NewSupportServiceClient(&http.Client{Timeout: 15 * time.Second}, gh.GatewayURL,
		connect.WithInterceptors(bearerInterceptor(bearer)))
}

// openTicket opens a ticket as the customer whose token is given.
func openTicket(t *testing.T, customerToken string, access supportv1.TicketAccess) *supportv1.Ticket {
	t.Helper()
	resp, err := support(customerToken).OpenTicket(t.Context(), connect.NewRequest(&supportv1.OpenTicketRequest{
		Summary: "I cannot find last month's invoice", Access: access,
	}))
	if err != nil {
		t.Fatalf("open ticket: %v", err)
	}
	return resp.Msg.GetTicket()
}

// wantRefused checks that err is a Connect error with code and reason code.
func wantRefused(t *testing.T, what string, err error, code connect.Code, reasonCode string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: succeeded, want %s %s", what, code, reasonCode)
	}
	if got := connect.CodeOf(err); got != code {
		t.Fatalf("%s: %v; want code %s", what, err, code)
	}
	if reasonCode != "" {
		if got := enforce.ReasonOf(err); got != reasonCode {
			t.Fatalf("%s: reason %q (%v), want %q", what, got, err, reasonCode)
		}
	}
}

// payload decodes a JWT's claims without verifying it: for looking, not
// for trusting.
func payload(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %d parts", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

// exchangeAnswer is the issuer's token endpoint answer to an exchange.
type exchangeAnswer struct {
	status           int
	AccessToken      string `json:"access_token"`
	IssuedTokenType  string `json:"issued_token_type"`
	Scope            string `json:"scope"`
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
	ReasonCode       string `json:"reason_code"`
}

// exchange posts a token exchange to the issuer as a confidential client.
func exchange(t *testing.T, clientID, secret string, form url.Values) exchangeAnswer {
	t.Helper()
	form.Set("grant_type", tokenExchangeGrant)
	if form.Get("subject_token") != "" && form.Get("subject_token_type") == "" {
		form.Set("subject_token_type", accessTokenType)
	}
	if form.Get("actor_token") != "" && form.Get("actor_token_type") == "" {
		form.Set("actor_token_type", accessTokenType)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, gh.IssuerURL+"/oauth2/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(clientID, secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var a exchangeAnswer
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("token endpoint answer is not JSON: %v: %s", err, raw)
	}
	a.status = resp.StatusCode
	for _, tok := range []string{form.Get("subject_token"), form.Get("actor_token")} {
		if tok != "" && strings.Contains(string(raw), tok) {
			t.Fatal("the token endpoint echoes a presented token")
		}
	}
	return a
}

// wantExchangeRefused checks an RFC 6749 error answer.
func wantExchangeRefused(t *testing.T, what string, a exchangeAnswer, errCode, reasonCode string) {
	t.Helper()
	if a.status != http.StatusBadRequest || a.Error != errCode || a.AccessToken != "" {
		t.Fatalf("%s: %d %q (%s), token issued %t; want 400 %q", what, a.status, a.Error, a.ErrorDescription, a.AccessToken != "", errCode)
	}
	if a.ReasonCode != reasonCode {
		t.Fatalf("%s: reason_code %q, want %q", what, a.ReasonCode, reasonCode)
	}
}

// auditRow is what these tests read of an audit event.
type auditRow struct {
	Type, Subject, ClientID, Action, Decision, ReasonCode string
	Actors                                                []string
}

// auditEvents returns the events of db's audit log whose actor chain holds
// actor, oldest first.
func auditEvents(t *testing.T, db, actor string) []auditRow {
	t.Helper()
	dsn, err := gh.DatabaseURL(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(t.Context()))
	rows, err := conn.Query(t.Context(), `SELECT type, subject, client_id, action, decision, reason_code, actor_chain
		FROM audit_events WHERE $1 = ANY(actor_chain) ORDER BY seq`, actor)
	if err != nil {
		t.Fatal(err)
	}
	events, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (auditRow, error) {
		var e auditRow
		err := r.Scan(&e.Type, &e.Subject, &e.ClientID, &e.Action, &e.Decision, &e.ReasonCode, &e.Actors)
		return e, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return events
}

// awaitAudit polls db's audit log (the PDP's writer is asynchronous) until
// an event with actor matches want, for at most 5 seconds.
func awaitAudit(t *testing.T, db, actor string, want func(auditRow) bool, what string) auditRow {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		events := auditEvents(t, db, actor)
		if i := slices.IndexFunc(events, want); i >= 0 {
			return events[i]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s log: no event %s among %d with actor %s: %+v", db, what, len(events), actor, events)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSupportImpersonation is the happy path end to end: bob opens a
// ticket; sam, a support agent of acme, sees it, starts an impersonation
// session on it and reads bob's invoices as bob, read-only, with himself in
// the token's act claim; the issuer's and the PDP's audit logs record the
// exchange and every decision made for bob with sam as the actor; ending
// the session revokes the token at once.
func TestSupportImpersonation(t *testing.T) {
	ticket := openTicket(t, bobToken(t), supportv1.TicketAccess_TICKET_ACCESS_UNSPECIFIED)
	if ticket.GetCustomer() != "bob" || ticket.GetTenant() != "acme" || ticket.GetStatus() != supportv1.TicketStatus_TICKET_STATUS_OPEN ||
		ticket.GetAccess() != supportv1.TicketAccess_TICKET_ACCESS_READ {
		t.Fatalf("ticket %+v: want bob's open read-access ticket in acme", ticket)
	}
	agent := support(samToken(t))

	list, err := agent.ListTickets(t.Context(), connect.NewRequest(&supportv1.ListTicketsRequest{Status: supportv1.TicketStatus_TICKET_STATUS_OPEN}))
	if err != nil {
		t.Fatalf("sam lists tickets: %v", err)
	}
	if !slices.ContainsFunc(list.Msg.GetTickets(), func(tk *supportv1.Ticket) bool { return tk.GetId() == ticket.GetId() }) {
		t.Fatalf("sam's open tickets do not include bob's %s", ticket.GetId())
	}
	for _, tk := range list.Msg.GetTickets() {
		if tk.GetTenant() != "acme" {
			t.Errorf("sam sees ticket %s of tenant %s", tk.GetId(), tk.GetTenant())
		}
	}

	started, err := agent.StartImpersonation(t.Context(), connect.NewRequest(&supportv1.StartImpersonationRequest{TicketId: ticket.GetId()}))
	if err != nil {
		t.Fatalf("sam starts impersonating bob: %v", err)
	}
	session, impersonation := started.Msg.GetSession(), started.Msg.GetAccessToken()
	if session.GetCustomer() != "bob" || session.GetAgent() != "sam" || session.GetTicketId() != ticket.GetId() ||
		!slices.Equal(session.GetScopes(), []string{"invoice:read"}) {
		t.Fatalf("session %+v: want sam as bob on the ticket, invoice:read only", session)
	}
	if life := session.GetExpireTime().AsTime().Sub(session.GetStartTime().AsTime()); life <= 0 || life > 15*time.Minute {
		t.Errorf("session lasts %s, want at most 15 minutes", life)
	}
	claims := payload(t, impersonation)
	act, _ := claims["act"].(map[string]any)
	if claims["sub"] != "bob" || claims["tenant"] != "acme" || claims["client_id"] != consoleClientID || claims["scope"] != "invoice:read" ||
		act["sub"] != "sam" {
		t.Fatalf("impersonation token claims %v: want sub bob, tenant acme, client support-console, scope invoice:read, act.sub sam", claims)
	}
	for _, c := range []string{"acr", "amr", "auth_time"} {
		if _, ok := claims[c]; ok {
			t.Errorf("impersonation token carries %s: an exchange never carries authentication strength", c)
		}
	}

	// Acting as bob through the gateway: reading works, nothing else does.
	asBob := invoices(impersonation)
	got, err := asBob.ListInvoices(t.Context(), connect.NewRequest(&invoicev1.ListInvoicesRequest{}))
	if err != nil {
		t.Fatalf("list invoices as bob: %v", err)
	}
	if len(got.Msg.GetInvoices()) == 0 {
		t.Fatal("no invoices for acme as bob")
	}
	for _, inv := range got.Msg.GetInvoices() {
		if inv.GetTenant() != "acme" {
			t.Fatalf("invoice %s of tenant %s", inv.GetId(), inv.GetTenant())
		}
	}
	_, err = asBob.ApproveInvoice(t.Context(), connect.NewRequest(&invoicev1.ApproveInvoiceRequest{Id: "inv_demo_acme_3"}))
	wantRefused(t, "approve as bob", err, connect.CodePermissionDenied, reason.InsufficientScope)
	_, err = asBob.CreateInvoice(t.Context(), connect.NewRequest(&invoicev1.CreateInvoiceRequest{Customer: "Impersonated Ltd", AmountCents: 100, Currency: "EUR"}))
	wantRefused(t, "create as bob", err, connect.CodePermissionDenied, reason.InsufficientScope)

	overview, err := agent.GetCustomerOverview(t.Context(), connect.NewRequest(&supportv1.GetCustomerOverviewRequest{SessionId: session.GetId()}))
	if err != nil {
		t.Fatalf("customer overview: %v", err)
	}
	if len(overview.Msg.GetInvoices()) != len(got.Msg.GetInvoices()) {
		t.Errorf("overview shows %d invoices, bob's list %d", len(overview.Msg.GetInvoices()), len(got.Msg.GetInvoices()))
	}

	// The audit trail: the exchange at the issuer, and the PDP's decisions
	// for bob with sam as the actor, allowed and denied.
	exchanged := awaitAudit(t, "issuer", "sam", func(e auditRow) bool {
		return e.Type == "token.exchanged" && e.Subject == "bob" && e.Decision == "ALLOW"
	}, "token.exchanged for bob")
	if exchanged.ClientID != consoleClientID || !slices.Equal(exchanged.Actors, []string{"sam"}) {
		t.Errorf("exchange event %+v: want client support-console, actors [sam]", exchanged)
	}
	awaitAudit(t, "pdp", "sam", func(e auditRow) bool {
		return e.Type == "decision" && e.Subject == "bob" && e.Action == "invoice:read" && e.Decision == "ALLOW"
	}, "ALLOW invoice:read for bob")
	awaitAudit(t, "pdp", "sam", func(e auditRow) bool {
		return e.Type == "decision" && e.Subject == "bob" && e.Action == "invoice:approve" && e.Decision == "DENY"
	}, "DENY invoice:approve for bob")

	// Ending the session revokes the token: every gateway refuses it within
	// a second (the revocation feed), and the session is over.
	ended, err := agent.EndImpersonation(t.Context(), connect.NewRequest(&supportv1.EndImpersonationRequest{SessionId: session.GetId()}))
	if err != nil {
		t.Fatalf("end impersonation: %v", err)
	}
	if ended.Msg.GetSession().GetEndTime() == nil {
		t.Error("ended session has no end time")
	}
	endedAt := time.Now()
	for {
		_, err := asBob.ListInvoices(t.Context(), connect.NewRequest(&invoicev1.ListInvoicesRequest{}))
		if err != nil {
			wantRefused(t, "impersonation token after the session ended", err, connect.CodeUnauthenticated, reason.TokenRevoked)
			break
		}
		if time.Since(endedAt) > time.Second {
			t.Fatalf("impersonation token still accepted %s after EndImpersonation", time.Since(endedAt))
		}
		time.Sleep(25 * time.Millisecond)
	}
	_, err = agent.GetCustomerOverview(t.Context(), connect.NewRequest(&supportv1.GetCustomerOverviewRequest{SessionId: session.GetId()}))
	if err == nil {
		t.Error("customer overview of an ended session succeeded")
	}
}

// TestImpersonationRefused: every way in without a ticket of one's own
// tenant, or beyond what the ticket grants, is refused, at the support
// service and at the issuer's token endpoint alike.
func TestImpersonationRefused(t *testing.T) {
	samTok := samToken(t)
	agent := support(samTok)

	t.Run("no such ticket", func(t *testing.T) {
		_, err := agent.StartImpersonation(t.Context(), connect.NewRequest(&supportv1.StartImpersonationRequest{TicketId: "tkt_does_not_exist"}))
		wantRefused(t, "start on a missing ticket", err, connect.CodeNotFound, "")
	})
	t.Run("closed ticket", func(t *testing.T) {
		bobTok := bobToken(t)
		ticket := openTicket(t, bobTok, supportv1.TicketAccess_TICKET_ACCESS_READ)
		if _, err := support(bobTok).CloseTicket(t.Context(), connect.NewRequest(&supportv1.CloseTicketRequest{Id: ticket.GetId()})); err != nil {
			t.Fatalf("bob closes his ticket: %v", err)
		}
		_, err := agent.StartImpersonation(t.Context(), connect.NewRequest(&supportv1.StartImpersonationRequest{TicketId: ticket.GetId()}))
		wantRefused(t, "start on a closed ticket", err, connect.CodePermissionDenied, reason.NoOpenTicket)
	})
	t.Run("ticket of another tenant", func(t *testing.T) {
		ticket := openTicket(t, carolToken(t), supportv1.TicketAccess_TICKET_ACCESS_READ)
		if ticket.GetTenant() != "globex" {
			t.Fatalf("carol's ticket is in %s", ticket.GetTenant())
		}
		// Tenant-scoped: to sam, globex's ticket does not exist.
		_, err := agent.StartImpersonation(t.Context(), connect.NewRequest(&supportv1.StartImpersonationRequest{TicketId: ticket.GetId()}))
		wantRefused(t, "start on globex's ticket", err, connect.CodeNotFound, "")
	})
	t.Run("scope beyond the ticket", func(t *testing.T) {
		ticket := openTicket(t, bobToken(t), supportv1.TicketAccess_TICKET_ACCESS_READ)
		_, err := agent.StartImpersonation(t.Context(), connect.NewRequest(&supportv1.StartImpersonationRequest{
			TicketId: ticket.GetId(), Scopes: []string{"invoice:write"},
		}))
		if err == nil {
			t.Fatal("impersonation with invoice:write on a read-only ticket succeeded")
		}
		if code := connect.CodeOf(err); code != connect.CodePermissionDenied && code != connect.CodeInvalidArgument {
			t.Fatalf("start with invoice:write: %v; want permission_denied or invalid_argument", err)
		}
	})

	// Straight at the issuer, as the support service's client would ask.
	impersonate := func(subject, customer, ticket string) url.Values {
		return url.Values{"subject_token": {subject}, "requested_subject": {customer}, "support_ticket": {ticket},
			"scope": {"invoice:read"}}
	}
	t.Run("exchange without a ticket", func(t *testing.T) {
		form := impersonate(samTok, "bob", "")
		form.Del("support_ticket")
		wantExchangeRefused(t, "no ticket", exchange(t, consoleClientID, consoleSecret, form), "invalid_grant", reason.TicketRequired)
	})
	t.Run("exchange for a customer of another tenant", func(t *testing.T) {
		wantExchangeRefused(t, "sam as carol", exchange(t, consoleClientID, consoleSecret, impersonate(samTok, "carol", "tkt_stated")),
			"invalid_grant", reason.TenantMismatch)
	})
	t.Run("exchange widening the scope", func(t *testing.T) {
		form := impersonate(samTok, "bob", "tkt_stated")
		form.Set("scope", "invoice:read invoice:approve")
		a := exchange(t, consoleClientID, consoleSecret, form)
		if a.status != http.StatusBadRequest || a.Error != "invalid_scope" || a.AccessToken != "" {
			t.Fatalf("scope beyond sam's token: %d %q, token %t; want 400 invalid_scope", a.status, a.Error, a.AccessToken != "")
		}
	})
	t.Run("exchange of another tenant's token", func(t *testing.T) {
		// support-export (acme) delegating for carol (globex).
		actor := token(t, exportClientID, exportSecret, "invoice:read")
		a := exchange(t, exportClientID, exportSecret, url.Values{"subject_token": {carolToken(t)}, "actor_token": {actor}, "scope": {"invoice:read"}})
		wantExchangeRefused(t, "support-export for carol", a, "invalid_grant", reason.TenantMismatch)
	})
	t.Run("re-exchange of an impersonation token", func(t *testing.T) {
		ticket := openTicket(t, bobToken(t), supportv1.TicketAccess_TICKET_ACCESS_READ)
		started, err := agent.StartImpersonation(t.Context(), connect.NewRequest(&supportv1.StartImpersonationRequest{TicketId: ticket.GetId()}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_, _ = agent.EndImpersonation(context.WithoutCancel(t.Context()), connect.NewRequest(&supportv1.EndImpersonationRequest{SessionId: started.Msg.GetSession().GetId()}))
		})
		// The impersonation token (bob, acted for by sam) asks to become
		// alice.
		a := exchange(t, consoleClientID, consoleSecret, impersonate(started.Msg.GetAccessToken(), "alice", ticket.GetId()))
		if a.status != http.StatusBadRequest || a.Error != "invalid_grant" || a.AccessToken != "" {
			t.Fatalf("re-exchange: %d %q %q, token %t; want 400 invalid_grant", a.status, a.Error, a.ReasonCode, a.AccessToken != "")
		}
	})
}

// TestImpersonationTokenExpires: a session of a few seconds ends by
// itself; past its exp (and the verifiers' 30 s clock leeway) the gateway
// refuses the token.
func TestImpersonationTokenExpires(t *testing.T) {
	t.Parallel()
	ticket := openTicket(t, bobToken(t), supportv1.TicketAccess_TICKET_ACCESS_READ)
	started, err := support(samToken(t)).StartImpersonation(t.Context(), connect.NewRequest(&supportv1.StartImpersonationRequest{
		TicketId: ticket.GetId(), TtlSeconds: 2,
	}))
	if err != nil {
		t.Fatalf("start a 2 s session: %v", err)
	}
	exp, _ := payload(t, started.Msg.GetAccessToken())["exp"].(float64)
	if left := time.Until(time.Unix(int64(exp), 0)); left > 3*time.Second {
		t.Fatalf("a 2 s session's token expires in %s", left)
	}
	asBob := invoices(started.Msg.GetAccessToken())
	if _, err := asBob.ListInvoices(t.Context(), connect.NewRequest(&invoicev1.ListInvoicesRequest{})); err != nil {
		t.Fatalf("before expiry: %v", err)
	}
	// Past exp plus the verifiers' leeway (libs/accesstoken, 30 s).
	time.Sleep(time.Until(time.Unix(int64(exp), 0).Add(31 * time.Second)))
	_, err = asBob.ListInvoices(t.Context(), connect.NewRequest(&invoicev1.ListInvoicesRequest{}))
	wantRefused(t, "expired impersonation token", err, connect.CodeUnauthenticated, "")
}

// TestDelegationKeepsTheActorChain: the support export job acts for bob by
// delegation, and the invoice service and the PDP see both; a delegation of
// an impersonation token nests the actors (support-export acting for sam
// acting as bob) and the PDP records the whole chain.
func TestDelegationKeepsTheActorChain(t *testing.T) {
	export, err := support(bobToken(t)).ExportInvoices(t.Context(), connect.NewRequest(&supportv1.ExportInvoicesRequest{}))
	if err != nil {
		t.Fatalf("bob's export: %v", err)
	}
	if export.Msg.GetActor() != exportClientID || len(export.Msg.GetInvoices()) == 0 {
		t.Fatalf("export: actor %q, %d invoices; want support-export and acme's invoices", export.Msg.GetActor(), len(export.Msg.GetInvoices()))
	}
	awaitAudit(t, "pdp", exportClientID, func(e auditRow) bool {
		return e.Type == "decision" && e.Subject == "bob" && e.Action == "invoice:read" && e.Decision == "ALLOW" &&
			slices.Equal(e.Actors, []string{exportClientID})
	}, "ALLOW invoice:read for bob by support-export")

	// Two links: sam impersonates bob; support-export then acts for that.
	ticket := openTicket(t, bobToken(t), supportv1.TicketAccess_TICKET_ACCESS_READ)
	agent := support(samToken(t))
	started, err := agent.StartImpersonation(t.Context(), connect.NewRequest(&supportv1.StartImpersonationRequest{TicketId: ticket.GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = agent.EndImpersonation(context.WithoutCancel(t.Context()), connect.NewRequest(&supportv1.EndImpersonationRequest{SessionId: started.Msg.GetSession().GetId()}))
	})
	actor := token(t, exportClientID, exportSecret, "invoice:read")
	a := exchange(t, exportClientID, exportSecret, url.Values{
		"subject_token": {started.Msg.GetAccessToken()}, "actor_token": {actor}, "scope": {"invoice:read"},
	})
	if a.status != http.StatusOK || a.AccessToken == "" || a.IssuedTokenType != accessTokenType {
		t.Fatalf("delegation of the impersonation token: %d %q %q (%s)", a.status, a.Error, a.ReasonCode, a.ErrorDescription)
	}
	claims := payload(t, a.AccessToken)
	outer, _ := claims["act"].(map[string]any)
	inner, _ := outer["act"].(map[string]any)
	if claims["sub"] != "bob" || outer["sub"] != exportClientID || inner["sub"] != "sam" {
		t.Fatalf("delegated token: sub %v, act %v; want bob, support-export, then sam nested", claims["sub"], claims["act"])
	}
	if _, err := invoices(a.AccessToken).ListInvoices(t.Context(), connect.NewRequest(&invoicev1.ListInvoicesRequest{})); err != nil {
		t.Fatalf("list invoices with the two-link token: %v", err)
	}
	awaitAudit(t, "pdp", "sam", func(e auditRow) bool {
		return e.Type == "decision" && e.Subject == "bob" && e.Action == "invoice:read" &&
			slices.Equal(e.Actors, []string{exportClientID, "sam"})
	}, "a decision for bob with the chain [support-export sam]")
}

// TestForgedActorChainIsRejected: an impersonation token whose act claim
// was edited (sam replaced) no longer matches its signature, and the
// gateway refuses it.
func TestForgedActorChainIsRejected(t *testing.T) {
	ticket := openTicket(t, bobToken(t), supportv1.TicketAccess_TICKET_ACCESS_READ)
	agent := support(samToken(t))
	started, err := agent.StartImpersonation(t.Context(), connect.NewRequest(&supportv1.StartImpersonationRequest{TicketId: ticket.GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = agent.EndImpersonation(context.WithoutCancel(t.Context()), connect.NewRequest(&supportv1.EndImpersonationRequest{SessionId: started.Msg.GetSession().GetId()}))
	})
	parts := strings.Split(started.Msg.GetAccessToken(), ".")
	claims := payload(t, started.Msg.GetAccessToken())
	claims["act"] = map[string]any{"sub": "mallory"}
	edited, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	forged := parts[0] + "." + base64.RawURLEncoding.EncodeToString(edited) + "." + parts[2]
	_, err = invoices(forged).ListInvoices(t.Context(), connect.NewRequest(&invoicev1.ListInvoicesRequest{}))
	wantRefused(t, "forged act claim", err, connect.CodeUnauthenticated, "")
	var ce *connect.Error
	if errors.As(err, &ce) && strings.Contains(ce.Message(), "mallory") {
		t.Error("the error repeats the forged claim")
	}
}
